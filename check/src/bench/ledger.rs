//! `engine-train bench --ledger`: the FLOP/byte ledger of one training step, without a GPU. The step runs
//! on the meta device (a dry run of the CUDA backend that records every launch with its FLOPs and bytes),
//! beside the same step of the PyTorch peer (eager, CUDA autocast bf16, channels-last), whose op trace
//! `bench/ledger/torch_peer.py` writes from PyTorch's own dispatch into `bench/ledger/*.json`. Both are
//! counted by the same rules (`engine::backend::ledger`) and costed on H100 and H200 numbers.

use super::BenchOptions;
use crate::device_parity;
use crate::gpu_check::CommonArgs;
use crate::CmdResult;
use engine::backend::ledger::{totals, Launch, Math, Peaks, Totals};
use engine::model::IResNetConfig;
use engine::train::trainer::{OptimizerChoice, Trainer, TrainerConfig};
use engine::{Device, Result, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The launches of one steady-state training step (the second: the first creates the optimizer's state)
/// of `a`'s backbone with ArcFace over `a.classes` at `a.batch` in `a.precision`, SGD, on the meta device;
/// with the trainable parameters of the backbone and of the classifier.
pub fn engine_step(a: &CommonArgs) -> Result<(Vec<Launch>, usize, usize)> {
    let mut backbone = IResNetConfig::by_name(&a.backbone)?;
    if let Some(n) = a.input_size {
        backbone.input_hw = (n, n);
        backbone.validate()?;
    }
    let (h, w) = backbone.input_hw;
    let cfg = TrainerConfig {
        backbone,
        backbone_name: a.backbone.clone(),
        head: "arcface".into(),
        head_params: engine::heads::HeadParams::default(),
        lr: 0.1,
        grad_clip: None,
        seed: a.seed,
        precision: a.precision.parse()?,
        ..device_parity::small_config(a.classes, OptimizerChoice::Sgd)
    };
    let _ = (h, w);
    step_ledger(&Device::meta(), cfg, a.batch)
}

/// The launches `dev` records for one steady-state training step of `cfg` at `batch` (the second step:
/// the first creates the optimizer's state and, on a GPU, lets cuDNN choose its algorithms). The batch is
/// on the device before recording starts, as the feed hands it over.
pub fn step_launches(dev: &Device, cfg: TrainerConfig, batch: usize) -> Result<Vec<Launch>> {
    Ok(step_ledger(dev, cfg, batch)?.0)
}

/// `step_launches` with the trainer's backbone and classifier parameter counts.
fn step_ledger(dev: &Device, cfg: TrainerConfig, batch: usize) -> Result<(Vec<Launch>, usize, usize)> {
    let (h, w) = cfg.backbone.input_hw;
    let classes = cfg.num_classes as i64;
    let mut t = Trainer::new(cfg)?;
    t.to_device(dev)?;
    // Random pixels: an all-zero batch makes every batch norm's variance 0 and the gradients overflow.
    let mut rng = engine::rng::Rng::new(7);
    let px: Vec<f32> = (0..batch * h * w * 3).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_vec(px, [batch, h, w, 3])?.to_device(dev)?;
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % classes).collect();
    t.train_step(&x, &labels)?;
    let be = engine::backend::for_device(dev);
    be.synchronize()?;
    be.start_ledger();
    t.train_step(&x, &labels)?;
    Ok((be.take_ledger(), t.params.parameter_count(), t.classifier.parameter_count()))
}

/// The peer's launches from a trace `torch_peer.py` wrote.
pub fn peer_step(path: &Path) -> Result<(Vec<Launch>, Value)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| engine::Error::Io(format!("{}: cannot read: {e}", path.display())))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| engine::Error::Io(format!("{}: not JSON: {e}", path.display())))?;
    let bad = |i: usize, what: &str| engine::Error::Io(format!("{}: kernel {i}: {what}", path.display()));
    let mut out = Vec::new();
    for (i, k) in v["kernels"].as_array().ok_or_else(|| bad(0, "no 'kernels' array"))?.iter().enumerate() {
        let num = |f: &str| k[f].as_f64().ok_or_else(|| bad(i, &format!("no number '{f}'")));
        let math = match k["math"].as_str() {
            Some("tensor16") => Math::Tensor16,
            Some("f32") => Math::F32,
            Some("memory") => Math::Memory,
            _ => return Err(bad(i, "'math' is not tensor16, f32 or memory")),
        };
        let family: &'static str = match k["family"].as_str().unwrap_or("other") {
            "conv" => "conv",
            "gemm" => "gemm",
            "batch norm" => "batch norm",
            "prelu" => "prelu",
            "elementwise" => "elementwise",
            "cast" => "cast",
            "reduction" => "reduction",
            "head" => "head",
            "optimizer" => "optimizer",
            "copy" => "copy",
            "checks" => "checks",
            "normalize" => "normalize",
            _ => "other",
        };
        let kernel = k["kernel"].as_str().unwrap_or("?").to_string();
        out.push(Launch { kernel, family, flops: num("flops")?, bytes: num("bytes")?, math });
    }
    Ok((out, v["meta"].clone()))
}

fn by_family(launches: &[Launch], p: &Peaks) -> BTreeMap<&'static str, Totals> {
    let mut m: BTreeMap<&'static str, Vec<&Launch>> = BTreeMap::new();
    for l in launches {
        m.entry(l.family).or_default().push(l);
    }
    m.into_iter().map(|(f, v)| (f, totals(v, p))).collect()
}

/// The JSON object of one side of the ledger.
fn side_json(launches: &[Launch], batch: usize) -> Value {
    let (h100, h200) = (totals(launches, &Peaks::H100), totals(launches, &Peaks::H200));
    let fam: BTreeMap<&str, Value> = by_family(launches, &Peaks::H100)
        .into_iter()
        .map(|(f, t)| (f, json!({"launches": t.launches, "flops": t.flops, "bytes": t.bytes, "predicted_ms_h100": t.seconds * 1e3})))
        .collect();
    json!({
        "flops_per_step": h100.flops,
        "bytes_per_step": h100.bytes,
        "launches_per_step": h100.launches,
        "predicted_ms": h100.seconds * 1e3,
        "predicted_ms_by_card": {"H100": h100.seconds * 1e3, "H200": h200.seconds * 1e3},
        "images_per_second_by_card": {"H100": batch as f64 / h100.seconds, "H200": batch as f64 / h200.seconds},
        "mfu_by_card": {"H100": h100.flops / h100.seconds / Peaks::H100.tensor16, "H200": h200.flops / h200.seconds / Peaks::H200.tensor16},
        "families": fam,
        "kernels": by_kernel(launches),
        "launches": launches.iter().map(|l| json!({"kernel": l.kernel, "family": l.family, "flops": l.flops, "bytes": l.bytes})).collect::<Vec<_>>(),
    })
}

/// Launches, FLOPs, bytes and H100 time per kernel name, most time first: where a family's time goes.
fn by_kernel(launches: &[Launch]) -> Vec<Value> {
    let mut m: BTreeMap<(&str, &str), Vec<&Launch>> = BTreeMap::new();
    for l in launches {
        m.entry((l.family, l.kernel.as_str())).or_default().push(l);
    }
    let mut rows: Vec<(f64, Value)> = m
        .into_iter()
        .map(|((family, kernel), v)| {
            let t = totals(v, &Peaks::H100);
            let row = json!({"kernel": kernel, "family": family, "launches": t.launches, "flops": t.flops, "bytes": t.bytes, "predicted_ms_h100": t.seconds * 1e3});
            (t.seconds, row)
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows.into_iter().map(|(_, v)| v).collect()
}

/// The ledger as a markdown table: per family and in total, ours beside the peer's, with the ratios.
fn table(ours: &[Launch], peer: Option<&[Launch]>, batch: usize) -> String {
    let mut s = String::from(
        "| family | launches | GFLOP | GB | ms H100 | peer launches | peer GFLOP | peer GB | peer ms H100 |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let p = Peaks::H100;
    let (mine, theirs) = (by_family(ours, &p), peer.map(|q| by_family(q, &p)).unwrap_or_default());
    let mut fams: Vec<&str> = mine.keys().chain(theirs.keys()).copied().collect();
    fams.sort();
    fams.dedup();
    let cell = |t: Option<&Totals>| match t {
        Some(t) => {
            format!("{} | {:.1} | {:.2} | {:.2}", t.launches, t.flops / 1e9, t.bytes / 1e9, t.seconds * 1e3)
        }
        None => "- | - | - | -".into(),
    };
    for f in fams {
        s.push_str(&format!("| {f} | {} | {} |\n", cell(mine.get(f)), cell(theirs.get(f))));
    }
    s.push_str(&format!(
        "| **total** | {} | {} |\n\n",
        cell(Some(&totals(ours, &p))),
        cell(peer.map(|q| totals(q, &p)).as_ref())
    ));
    s.push_str("| card | ours ms | ours images/s | ours MFU | peer ms | peer images/s | ratio (ours / peer) |\n|---|---|---|---|---|---|---|\n");
    for card in [Peaks::H100, Peaks::H200] {
        let o = totals(ours, &card);
        let (pm, pi, ratio) = match peer.map(|q| totals(q, &card)) {
            Some(q) => (
                format!("{:.1}", q.seconds * 1e3),
                format!("{:.0}", batch as f64 / q.seconds),
                format!("{:.2}", o.seconds / q.seconds),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        s.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.1}% | {pm} | {pi} | {ratio} |\n",
            card.name,
            o.seconds * 1e3,
            batch as f64 / o.seconds,
            100.0 * o.flops / o.seconds / card.tensor16
        ));
    }
    if let Some(q) = peer {
        let (o, t) = (totals(ours, &p), totals(q, &p));
        s.push_str(&format!(
            "\nRatios ours / peer: launches {:.2}, bytes {:.2}, FLOPs {:.3}.\n",
            o.launches as f64 / t.launches as f64,
            o.bytes / t.bytes,
            o.flops / t.flops
        ));
    }
    s
}

/// NVLink 4's bandwidth in one direction per GPU (H100/H200 SXM: 18 links x 25 GB/s), the ceiling of
/// NCCL's all-reduce bus bandwidth within one node.
const NVLINK_BUS: f64 = 450e9;

/// What data parallelism over `gpus` adds to the step of `ours`: each rank's f32 gradients (the
/// backbone's, and the whole classifier's when every rank holds it) through a ring all-reduce, whose
/// every GPU sends and receives 2 (n - 1) / n of them, at NVLink's bus bandwidth; beside the step, since
/// the buckets overlap the backward.
fn data_parallel(ours: &[Launch], batch: usize, gpus: usize, backbone: usize, classifier: usize) -> String {
    let ring = 2.0 * (gpus as f64 - 1.0) / gpus as f64;
    let mut s = format!(
        "\n## Data parallel over {gpus} GPUs of one node (NVLink 4, {:.0} GB/s bus bandwidth at best)\n\n\
         | classifier | gradient MB per rank | buckets of 25 MiB | ring traffic MB per GPU | all-reduce ms | card | step ms | job images/s, overlapped | not overlapped |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        NVLINK_BUS / 1e9
    );
    for (what, params) in [("whole on every rank", backbone + classifier), ("class-sharded", backbone)] {
        let bytes = 4.0 * params as f64;
        let comm = ring * bytes / NVLINK_BUS;
        for card in [Peaks::H100, Peaks::H200] {
            let step = totals(ours, &card).seconds;
            s.push_str(&format!(
                "| {what} | {:.0} | {} | {:.0} | {:.2} | {} | {:.1} | {:.0} | {:.0} |\n",
                bytes / 1e6,
                (bytes / (25u64 << 20) as f64).ceil(),
                ring * bytes / 1e6,
                comm * 1e3,
                card.name,
                step * 1e3,
                (gpus * batch) as f64 / step,
                (gpus * batch) as f64 / (step + comm)
            ));
        }
    }
    s.push_str(
        "\nThe class-sharded head's own traffic (the batch's embeddings gathered, their gradients reduced: \
         a few MB) is left out. Overlapped: every bucket's all-reduce hides under the rest of the backward, \
         which the first bucket (the classifier's, ready after the head) makes likely when the all-reduce \
         is under about half the step.\n",
    );
    s
}

/// `bench --ledger`.
pub fn run(a: &CommonArgs, o: &BenchOptions, as_json: bool) -> CmdResult {
    let (ours, backbone_params, classifier_params) = engine_step(a)?;
    let peer_path = o.peer.clone().unwrap_or_else(|| {
        Path::new("bench/ledger").join(format!("pytorch_{}_{}_b{}.json", a.backbone, a.precision, a.batch))
    });
    let peer = if peer_path.exists() { Some(peer_step(&peer_path)?) } else { None };
    if as_json {
        let mut v = side_json(&ours, a.batch);
        if let Some((p, meta)) = &peer {
            v["pytorch"] = side_json(p, a.batch);
            v["pytorch"]["trace"] = json!(peer_path.display().to_string());
            v["pytorch"]["meta"] = meta.clone();
        }
        v["config"] =
            json!({"backbone": a.backbone, "batch": a.batch, "classes": a.classes, "precision": a.precision});
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "# Step ledger: {} at batch {}, {}, ArcFace over {} classes, SGD (engine: dry run of the CUDA backend; peer: {})\n",
        a.backbone,
        a.batch,
        a.precision,
        a.classes,
        if peer.is_some() { peer_path.display().to_string() } else { "no trace found".into() }
    );
    print!("{}", table(&ours, peer.as_ref().map(|p| p.0.as_slice()), a.batch));
    if let Some(n) = o.gpus.filter(|&n| n > 1) {
        print!("{}", data_parallel(&ours, a.batch, n, backbone_params, classifier_params));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::train::precision::Precision;

    fn names(l: &[Launch]) -> Vec<&str> {
        l.iter().map(|l| l.kernel.as_str()).collect()
    }

    /// IR-50's FLOPs per image (forward and backward) against PyTorch's own FLOP counter on the same
    /// model (tests/parity/flops_ref.py: 37.736 GFLOP of convolutions and 0.077 of fc per image).
    #[test]
    fn ir50_flops_match_pytorchs_flop_counter() {
        let dir = std::env::var("FACETRAIN_FIXTURES").unwrap_or_else(|_| "tests/fixtures".into());
        let path = Path::new(&dir).join("ir50_flops.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (tests/parity/flops_ref.py writes it)", path.display()));
        let want: Value = serde_json::from_str(&text).unwrap();
        let a = CommonArgs {
            device: "meta".into(),
            report: "unused".into(),
            seed: 1,
            classes: 1000,
            batch: 4,
            backbone: "r50".into(),
            precision: "bf16".into(),
            input_size: None,
        };
        let l = engine_step(&a).unwrap().0;
        let sum = |f: &str| l.iter().filter(|l| l.family == f).map(|l| l.flops).sum::<f64>() / 4.0;
        // The head's three GEMMs (cosines, dL/dx, dL/dW) over 1000 classes of 512-d are not in the model.
        let head = 3.0 * 2.0 * 4.0 * 1000.0 * 512.0 / 4.0;
        let (conv, fc) = (sum("conv"), sum("gemm") - head);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
        let (wc, wf) =
            (want["conv_flops_per_image"].as_f64().unwrap(), want["gemm_flops_per_image"].as_f64().unwrap());
        assert!(close(conv, wc), "conv FLOPs per image {conv} vs PyTorch's {wc}");
        assert!(close(fc, wf), "fc FLOPs per image {fc} vs PyTorch's {wf}");
    }

    /// Opt-in (a GPU, or tests/cuda_emu in CI): the dry run on the meta device launches exactly what a real
    /// step launches, kernel for kernel, in f32 and bf16, through the fixed-parameter head (ArcFace) and
    /// the row-plan head (CurricularFace).
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_a_dry_run_launches_what_a_real_step_launches() {
        let gpu = Device::parse("cuda").expect("this test needs a GPU");
        for (precision, head) in
            [(Precision::F32, "arcface"), (Precision::Bf16, "arcface"), (Precision::Bf16, "curricularface")]
        {
            let cfg = TrainerConfig {
                head: head.into(),
                precision,
                ..device_parity::small_config(37, OptimizerChoice::Sgd)
            };
            let dry = step_launches(&Device::meta(), cfg.clone(), 8).unwrap();
            let real = step_launches(&gpu, cfg, 8).unwrap();
            assert!(dry.len() > 100, "{precision} {head}: only {} launches", dry.len());
            if names(&dry) != names(&real) {
                let at = names(&dry)
                    .iter()
                    .zip(names(&real))
                    .position(|(a, b)| *a != b)
                    .unwrap_or(dry.len().min(real.len()));
                let lo = at.saturating_sub(3);
                panic!(
                    "{precision} {head}: the dry run ({} launches) and the real step ({}) differ at launch {at}:\n dry  {:?}\n real {:?}",
                    dry.len(),
                    real.len(),
                    &names(&dry)[lo..(at + 4).min(dry.len())],
                    &names(&real)[lo..(at + 4).min(real.len())]
                );
            }
        }
    }
}
