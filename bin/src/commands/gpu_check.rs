//! `engine-train gpu-check`: runs every CUDA op on the GPU and on the CPU with the same random inputs
//! and reports the norm-wise relative error ||gpu - ref|| / ||ref|| of each against a threshold, as a
//! markdown report. The reference is the CPU backend where it implements the op, else a direct f64
//! evaluation of the formula written here (named in the report). Fails (non-zero exit) when no GPU
//! can be opened or any check misses its threshold; NaN never passes.

use super::CmdResult;
use engine::backend::cpu::CpuBackend;
use engine::backend::cuda::head::{self, launch as mh, HeadParams};
use engine::backend::cuda::{ops as cops, train_ops, CudaContext};
use engine::backend::{Backend, BinaryOp, Conv2dParams, UnaryOp};
use engine::rng::Rng;
use engine::train::trainer::{OptimizerChoice, Trainer};
use engine::train::{gpu_parity, torch_fixtures};
use engine::{DType, Device, Error, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

mod step_parity;

#[derive(clap::Args)]
pub struct Args {
    /// GPU to check: cuda or cuda:N (--step-parity also takes cpu).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Markdown report to write (parent directories are created).
    #[arg(long, default_value = "bench/results/gpu-check.md")]
    report: PathBuf,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 20261124)]
    seed: u64,
    /// Instead of the checks, time the chunked ArcFace head (forward + backward, bf16 GEMMs).
    #[arg(long)]
    bench_head: bool,
    /// Classes of the head benchmark (and of --bench-train and --step-parity).
    #[arg(long, default_value_t = 93431)]
    classes: usize,
    /// Batch of the head benchmark (and of --bench-train and --step-parity).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Classes per block of the chunked head.
    #[arg(long, default_value_t = 16384)]
    block: usize,
    /// Instead of the checks, train the small backbone on the generated demo set for this many steps on
    /// the GPU (f32): the loss must fall, and the held-out pairs' verification accuracy is reported.
    #[arg(long)]
    train_demo: Option<u64>,
    /// Instead of the checks, time whole training steps (forward, ArcFace head over --classes, backward,
    /// SGD) of --backbone at --batch in --precision on random 112x112 data.
    #[arg(long)]
    bench_train: bool,
    /// Backbone of --bench-train and --step-parity.
    #[arg(long, default_value = "r50")]
    backbone: String,
    /// Precision of --bench-train and --step-parity: f32, bf16 or fp16 (convolutions and the head in 16 bits; fc stays f32).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Dense bf16 peak of the card in TFLOP/s for --bench-train's model-FLOPs utilization (H100/H200 SXM:
    /// 989, as bench/torch_ir50.py assumes, so both MFUs share one denominator).
    #[arg(long, default_value_t = 989.0)]
    peak_tflops: f64,
    /// Timed steps of --bench-train (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Where the demo set is generated (once) for --train-demo.
    #[arg(long, default_value = ".cache/demo")]
    cache: PathBuf,
    /// Instead of the checks, run one forward + backward of --backbone with an ArcFace head over --classes
    /// at --batch in --precision (f32 or bf16) on --device (cuda, or cpu for the reference) and write the
    /// weights (PyTorch layout), the batch and the engine's loss, embedding and gradients into this folder,
    /// for bench/step_parity.py to compare with PyTorch.
    #[arg(long)]
    step_parity: Option<PathBuf>,
    /// Input height and width of --step-parity and --bench-train (a multiple of 16; default the backbone's, 112).
    #[arg(long)]
    input_size: Option<usize>,
    /// Also replay PyTorch's fixtures from this folder on the GPU: core_ops_f32.safetensors and the heads
    /// of heads_manifest.txt, written by tests/parity/core_ops.py and heads_ref.py (bench/gpu-check.sh
    /// runs them with --device cuda, so each op and head is checked against torch on the GPU).
    #[arg(long)]
    torch_fixtures: Option<PathBuf>,
}

struct Check {
    name: String,
    err: f64,
    tol: f64,
    reference: &'static str,
}

struct Run {
    gpu: Arc<CudaContext>,
    dev: Device,
    rng: Rng,
    checks: Vec<Check>,
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

fn vals(t: &Tensor) -> R<Vec<f64>> {
    Ok(t.to_f64_vec()?)
}

/// The CPU backend's answer, or `None` when it does not implement the op yet.
fn cpu_or_none<T>(r: engine::Result<T>) -> R<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Run {
    fn rand(&mut self, shape: &[usize], scale: f64) -> R<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.rng.normal() * scale) as f32).collect();
        Ok(Tensor::from_vec(v, shape.to_vec())?)
    }
    fn up(&self, t: &Tensor) -> R<Tensor> {
        Ok(t.to_device(&self.dev)?)
    }
    fn record(
        &mut self,
        name: impl Into<String>,
        gpu: &[f64],
        reference: &[f64],
        tol: f64,
        src: &'static str,
    ) {
        let err = rel_error(gpu, reference);
        let name = name.into();
        let ok = err <= tol;
        println!(
            "{:<44} {:>11.3e}  (threshold {:.0e}, {src}) {}",
            name,
            err,
            tol,
            if ok { "ok" } else { "FAIL" }
        );
        self.checks.push(Check { name, err, tol, reference: src });
    }
    /// Compares against the CPU backend when it has the op, else against `inline`.
    fn compare(
        &mut self,
        name: &str,
        gpu: &Tensor,
        cpu: Option<Tensor>,
        inline: impl FnOnce() -> Vec<f64>,
        tol: f64,
    ) -> R<()> {
        let g = vals(gpu)?;
        match cpu {
            Some(c) => self.record(name, &g, &vals(&c)?, tol, "CPU backend"),
            None => self.record(name, &g, &inline(), tol, "f64 formula"),
        }
        Ok(())
    }
}

pub fn run(a: Args) -> CmdResult {
    let dev = Device::parse(&a.device)?;
    if let Some(dir) = &a.step_parity {
        return step_parity::run(&dev, dir, &a);
    }
    let gpu = match &dev {
        Device::Cuda(c) => c.clone(),
        Device::Cpu => return Err("gpu-check needs a CUDA device (--device cuda)".into()),
    };
    println!("gpu-check on {} (sm_{}), seed {}", gpu.device_name(), gpu.arch(), a.seed);
    if a.bench_head {
        return bench_head(&gpu, &dev, &a);
    }
    if a.bench_train {
        return bench_train(&gpu, &dev, &a);
    }
    if let Some(steps) = a.train_demo {
        return train_demo(&gpu, &dev, steps, &a);
    }
    let mut r = Run { gpu, dev, rng: Rng::new(a.seed), checks: Vec::new() };
    let sections: [(&str, fn(&mut Run) -> R<()>); 14] = [
        ("elementwise", elementwise),
        ("reductions", reductions),
        ("matmul", matmul),
        ("conv2d", conv2d),
        ("batch norm / prelu", batch_norm),
        ("dropout / l2 norm", dropout_l2),
        ("optimizers / amp / input", training),
        ("margin head", margin_head),
        ("allocator", allocator),
        ("broadcasts / l2 backward (training ops)", |r| {
            parity(r, gpu_parity::broadcast_ops(&r.dev.clone(), 41)?)
        }),
        ("head through heads::loss", |r| {
            parity(r, gpu_parity::head_losses(&r.dev.clone(), 42, &engine::heads::names())?)
        }),
        ("optimizers through the Optimizer trait", |r| {
            parity(r, gpu_parity::optimizer_steps(&r.dev.clone(), 43)?)
        }),
        ("IResNet training step", |r| {
            let cfg = gpu_parity::small_config(20, OptimizerChoice::Sgd);
            parity(r, gpu_parity::backbone_step(&r.dev.clone(), &cfg, 16, 3)?)
        }),
        ("IResNet training step, bf16 GEMMs against the CPU emulation", |r| {
            let cfg = engine::train::trainer::TrainerConfig {
                precision: engine::train::precision::Precision::Bf16,
                ..gpu_parity::small_config(20, OptimizerChoice::Sgd)
            };
            parity(r, gpu_parity::backbone_step(&r.dev.clone(), &cfg, 16, 3)?)
        }),
    ];
    let mut errors = Vec::new();
    for (name, f) in sections {
        if let Err(e) = f(&mut r) {
            println!("{name}: ERROR {e}");
            errors.push(format!("{name}: {e}"));
        }
    }
    if let Some(dir) = &a.torch_fixtures {
        if let Err(e) = torch_fixture_checks(&mut r, dir) {
            println!("PyTorch fixtures: ERROR {e}");
            errors.push(format!("PyTorch fixtures ({}): {e}", dir.display()));
        }
    }
    r.gpu.synchronize()?;
    let failed: Vec<&Check> = r.checks.iter().filter(|c| !(c.err <= c.tol)).collect();
    write_report(&a.report, &r, &errors)?;
    println!("report: {}", a.report.display());
    if !failed.is_empty() || !errors.is_empty() {
        return Err(format!(
            "{} checks failed and {} sections stopped with an error",
            failed.len(),
            errors.len()
        )
        .into());
    }
    println!("all {} checks passed", r.checks.len());
    Ok(())
}

fn write_report(path: &PathBuf, r: &Run, errors: &[String]) -> R<()> {
    let mut s = String::new();
    s.push_str("# engine-train gpu-check\n\n");
    s.push_str(&format!("Device: {} (sm_{})\n\n", r.gpu.device_name(), r.gpu.arch()));
    s.push_str("Norm-wise relative error ||gpu - ref|| / ||ref|| on random inputs.\n\n");
    s.push_str("| check | rel. error | threshold | reference | result |\n|---|---|---|---|---|\n");
    for c in &r.checks {
        let ok = c.err <= c.tol;
        s.push_str(&format!(
            "| {} | {:.3e} | {:.0e} | {} | {} |\n",
            c.name,
            c.err,
            c.tol,
            c.reference,
            if ok { "pass" } else { "FAIL" }
        ));
    }
    for e in errors {
        s.push_str(&format!("\nERROR: {e}\n"));
    }
    let st = r.gpu.pool_stats();
    s.push_str(&format!(
        "\nAllocator: {} driver allocations, {} reuses, {:.1} MiB held.\n",
        st.driver_allocs,
        st.reuses,
        st.bytes_held as f64 / (1 << 20) as f64
    ));
    save_markdown(path, &s)
}

/// Writes a report (its folder created) under a temporary name, then renames it into place.
fn save_markdown(path: &std::path::Path, text: &str) -> R<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    engine::io::atomic::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Records the device-vs-CPU comparisons of `engine::train::gpu_parity`.
fn parity(r: &mut Run, checks: Vec<gpu_parity::Compared>) -> R<()> {
    record_compared(r, checks, "CPU backend");
    Ok(())
}

fn record_compared(r: &mut Run, checks: Vec<gpu_parity::Compared>, src: &'static str) {
    for c in checks {
        println!(
            "{:<44} {:>11.3e}  (threshold {:.0e}, {src}) {}",
            c.name,
            c.err,
            c.tol,
            if c.ok() { "ok" } else { "FAIL" }
        );
        r.checks.push(Check { name: c.name, err: c.err, tol: c.tol, reference: src });
    }
}

/// `--torch-fixtures DIR`: the core ops one row per output or gradient, the heads one row per head
/// configuration (its worst of loss, gradients and state over three inputs and five steps, each measured
/// against its own threshold).
fn torch_fixture_checks(r: &mut Run, dir: &std::path::Path) -> R<()> {
    const SRC: &str = "PyTorch fixture";
    let ops = torch_fixtures::core_ops(&r.dev, &dir.join("core_ops_f32.safetensors"), 1e-4)?;
    record_compared(r, ops, SRC);
    let (heads, covered) = torch_fixtures::heads(&r.dev, dir, "f32")?;
    let missing: Vec<&str> =
        engine::heads::names().into_iter().filter(|n| !covered.iter().any(|c| c == n)).collect();
    if !missing.is_empty() {
        return Err(format!("no f32 head fixture for {}", missing.join(", ")).into());
    }
    // Group "heads_03_arcface_edge_f32 loss.2" by "heads_03_arcface"; keep the worst ratio to threshold.
    let mut groups: Vec<(String, gpu_parity::Compared)> = Vec::new();
    for c in heads {
        let key = c.name.split('_').take(3).collect::<Vec<_>>().join("_");
        let ratio = |c: &gpu_parity::Compared| if c.err.is_nan() { f64::INFINITY } else { c.err / c.tol };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, worst)) if ratio(&c) > ratio(worst) => *worst = c,
            Some(_) => {}
            None => groups.push((key, c)),
        }
    }
    let rows = groups
        .into_iter()
        .map(|(key, w)| gpu_parity::Compared {
            name: format!("torch {key} (worst: {})", w.name.trim_start_matches(&key).trim_start_matches('_')),
            ..w
        })
        .collect();
    record_compared(r, rows, SRC);
    Ok(())
}

/// `--train-demo STEPS`: the demo's data path (generated set, loader with u8 batches normalized on the
/// GPU) and the small backbone with CosFace and AdamW on the GPU; passes when the mean loss of the last
/// 20 steps is under half that of the first 20.
fn train_demo(gpu: &Arc<CudaContext>, dev: &Device, steps: u64, a: &Args) -> CmdResult {
    use crate::demo_defaults;
    use datasets::augment::AugmentConfig;
    use datasets::loader::{Loader, LoaderConfig, PixelFormat, Pixels};
    use std::time::Instant;
    let set = datasets::demo::ensure_demo_set(&a.cache, &demo_defaults::synth_config())?;
    let faceset = Arc::new(datasets::faceset::FaceSet::open(&set.train)?);
    let classes = faceset.classes().ok_or("demo set without a class count")? as usize;
    let mut cfg = gpu_parity::small_config(classes, OptimizerChoice::AdamW);
    cfg.backbone.input_hw = (demo_defaults::SIZE, demo_defaults::SIZE);
    cfg.head_params.s = Some(demo_defaults::HEAD_S);
    cfg.lr = demo_defaults::LR;
    cfg.grad_clip = None;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let loader = Loader::new(
        faceset.clone(),
        LoaderConfig {
            batch_size: demo_defaults::BATCH_SIZE,
            seed: a.seed,
            threads,
            prefetch: 2 * threads,
            augment: AugmentConfig::flip_only(),
            format: PixelFormat::U8,
            ..LoaderConfig::default()
        },
    )?;
    let mut trainer = Trainer::new(cfg)?;
    trainer.to_device(dev)?;
    let (h, w) = trainer.model.config.input_hw;
    // The input path as training uses it: a u8 batch normalized by input.cu against the same batch as
    // the loader itself normalizes it for the CPU (same seed, same order and flips).
    let f32_loader = Loader::new(
        faceset.clone(),
        LoaderConfig { format: PixelFormat::F32Normalized, ..loader.config().clone() },
    )?;
    let (Some(bu), Some(bf)) = (loader.epoch(0).next(), f32_loader.epoch(0).next()) else {
        return Err("the demo set made no batch".into());
    };
    let (bu, bf) = (bu?, bf?);
    let (Pixels::U8(pu), Pixels::F32(pf)) = (bu.pixels, bf.pixels) else {
        return Err("unexpected pixel formats".into());
    };
    let n0 = bu.labels.len();
    let on_gpu = train_ops::images_to_nhwc(gpu, &pu, n0, h, w, &vec![false; n0], DType::F32)?;
    let input_err = rel_error(&vals(&on_gpu)?, &pf.iter().map(|&v| v as f64).collect::<Vec<_>>());
    println!("u8 batch normalized on the GPU vs the loader's f32 batch: {input_err:.3e} (threshold 1e-6)");
    if !(input_err <= 1e-6) {
        return Err(format!("input.cu disagrees with the loader's normalization: {input_err:.3e}").into());
    }
    let mut losses = Vec::new();
    let mut images = 0usize;
    let t0 = Instant::now();
    'run: for epoch in 0.. {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let Pixels::U8(px) = batch.pixels else { return Err("loader returned f32 pixels".into()) };
            let n = batch.labels.len();
            let x = train_ops::images_to_nhwc(gpu, &px, n, h, w, &vec![false; n], DType::F32)?;
            let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
            losses.push(trainer.train_step(&x, &labels)?.loss);
            images += n;
            if losses.len() as u64 >= steps {
                break 'run;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let pairs = crate::pair_eval::PairEval::load(&set.pairs, (h, w))?;
    let acc = pairs.run(&trainer.model, &mut trainer.params)?.report.accuracy_mean;
    let (first, last) = gpu_parity::ends(&losses, 20);
    let ok = losses.iter().all(|l| l.is_finite()) && last < 0.5 * first;
    let text = format!(
        "| steps | batch | images/s (incl. loading) | loss, first 20 | loss, last 20 | held-out pair accuracy | result |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {:.0} | {first:.3} | {last:.3} | {:.4} | {} |\n",
        losses.len(),
        demo_defaults::BATCH_SIZE,
        images as f64 / secs.max(1e-9),
        acc,
        if ok { "pass" } else { "FAIL" }
    );
    print!("{text}");
    save_markdown(&a.report, &format!("# demo training on {} (f32)\n\n{text}", gpu.device_name()))?;
    if !ok {
        return Err(format!("the demo loss did not fall by half: {first:.3} -> {last:.3}").into());
    }
    Ok(())
}

/// `--bench-train`: median time of whole training steps on the GPU (the loss read each step is the
/// step's only host synchronisation besides the non-finite check).
fn bench_train(gpu: &Arc<CudaContext>, dev: &Device, a: &Args) -> CmdResult {
    use engine::model::IResNetConfig;
    use engine::train::trainer::TrainerConfig;
    use std::time::Instant;
    let mut backbone = IResNetConfig::by_name(&a.backbone)?;
    if let Some(n) = a.input_size {
        backbone.input_hw = (n, n);
        backbone.validate()?;
    }
    let (h, w) = backbone.input_hw;
    let gflop_fwd = backbone.forward_gflops();
    // Built on small_config, so a new TrainerConfig field is added in one place only.
    let cfg = TrainerConfig {
        backbone,
        backbone_name: a.backbone.clone(),
        head: "arcface".into(),
        head_params: engine::heads::HeadParams::default(),
        lr: 0.1,
        grad_clip: None,
        seed: a.seed,
        precision: a.precision.parse()?,
        ..gpu_parity::small_config(a.classes, OptimizerChoice::Sgd)
    };
    let mut t = Trainer::new(cfg)?;
    t.to_device(dev)?;
    let mut rng = Rng::new(a.seed);
    let b = a.batch;
    let px: Vec<f32> = (0..b * h * w * 3).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_vec(px, [b, h, w, 3])?.to_device(dev)?;
    let labels: Vec<i64> = (0..b).map(|_| rng.below(a.classes as u64) as i64).collect();
    for _ in 0..2 {
        t.train_step(&x, &labels)?;
    }
    let median_step = |t: &mut Trainer, x: &Tensor, labels: &[i64]| -> R<(f64, f64)> {
        let mut times = Vec::new();
        let mut loss = 0.0;
        for _ in 0..a.steps.max(1) {
            gpu.synchronize()?;
            let t0 = Instant::now();
            loss = t.train_step(x, labels)?.loss;
            gpu.synchronize()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(|p, q| p.total_cmp(q));
        Ok((times[times.len() / 2], loss))
    };
    let (launches0, allocs0) = (gpu.kernel_launches(), gpu.pool_stats().driver_allocs);
    let (med, loss) = median_step(&mut t, &x, &labels)?;
    let launches = (gpu.kernel_launches() - launches0) as f64 / a.steps.max(1) as f64;
    // After the warm-up steps every buffer should come from the caching allocator's free lists.
    let step_allocs = gpu.pool_stats().driver_allocs - allocs0;
    if !loss.is_finite() {
        return Err(format!("training loss is {loss}").into());
    }
    // What a CUDA graph could save at most: replaying a captured step removes the host's cost of queuing
    // it. At batch 2 the device finishes most kernels before the host has queued the next, so that step
    // takes about the host's queuing time (plus its own small work: an overestimate). At the benchmark's
    // batch the queuing overlaps the device's work except after each host read.
    let n2 = b.min(2);
    let x2 = Tensor::from_vec(
        (0..n2 * h * w * 3).map(|_| rng.normal() as f32).collect::<Vec<f32>>(),
        [n2, h, w, 3],
    )?
    .to_device(dev)?;
    for _ in 0..2 {
        t.train_step(&x2, &labels[..n2])?;
    }
    let (floor, _) = median_step(&mut t, &x2, &labels[..n2])?;
    // Backward costs about twice the forward (data and filter gradients).
    let tflops = 3.0 * gflop_fwd * b as f64 / med / 1e3;
    let held = gpu.pool_stats().bytes_held as f64 / (1 << 30) as f64;
    let text = format!(
        "| run | batch | classes | images/s | step ms | model TFLOP/s (3x forward) | MFU (of {:.0}) | pool GiB held | loss |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | engine {} {} + ArcFace, SGD | {b} | {} | {:.0} | {:.1} | {tflops:.1} | {:.1}% | {held:.1} | {loss:.3} |\n\n\
         | kernel launches per step | driver allocations in the timed steps | step ms at batch 2 (host-bound) | bound on a CUDA graph's saving |\n\
         |---|---|---|---|\n\
         | {launches:.0} | {step_allocs} | {:.2} | {:.1}% |\n",
        a.peak_tflops,
        a.backbone,
        a.precision,
        a.classes,
        b as f64 / med,
        med * 1e3,
        100.0 * tflops / a.peak_tflops,
        floor * 1e3,
        100.0 * floor / med,
    );
    let algos: Vec<String> =
        gpu.conv_algorithms().into_iter().map(|(name, n)| format!("{name} x{n}")).collect();
    let text = format!("{text}\ncuDNN's choices (convolution cases per algorithm): {}\n", algos.join(", "));
    print!("{text}");
    save_markdown(&a.report, &format!("# {} training step on {}\n\n{text}", a.precision, gpu.device_name()))?;
    Ok(())
}

fn elementwise(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let a = r.rand(&[1000, 37], 1.0)?;
    let b = r.rand(&[1000, 37], 1.0)?;
    // Positive inputs for log/sqrt/recip/div.
    let pos = cpu.affine(&cpu.unary(UnaryOp::Square, &a)?, 1.0, 0.5)?;
    let (ga, gb, gp) = (r.up(&a)?, r.up(&b)?, r.up(&pos)?);
    for (op, name) in
        [(BinaryOp::Add, "add"), (BinaryOp::Sub, "sub"), (BinaryOp::Mul, "mul"), (BinaryOp::Div, "div")]
    {
        let (x, y, gx, gy) = if op == BinaryOp::Div { (&a, &pos, &ga, &gp) } else { (&a, &b, &ga, &gb) };
        let g = r.gpu.binary(op, gx, gy)?;
        let c = cpu.binary(op, x, y)?;
        r.compare(&format!("binary {name} f32"), &g, Some(c), Vec::new, 1e-6)?;
    }
    for (op, name, pos_only) in [
        (UnaryOp::Neg, "neg", false),
        (UnaryOp::Exp, "exp", false),
        (UnaryOp::Log, "log", true),
        (UnaryOp::Sqrt, "sqrt", true),
        (UnaryOp::Square, "square", false),
        (UnaryOp::Recip, "recip", true),
    ] {
        let (x, gx) = if pos_only { (&pos, &gp) } else { (&a, &ga) };
        let g = r.gpu.unary(op, gx)?;
        let c = cpu.unary(op, x)?;
        r.compare(&format!("unary {name} f32"), &g, Some(c), Vec::new, 1e-6)?;
    }
    let g = r.gpu.affine(&ga, 0.7, -0.3)?;
    r.compare("affine f32", &g, Some(cpu.affine(&a, 0.7, -0.3)?), Vec::new, 1e-6)?;
    // Residual add in bf16 against the f32 sum rounded once (the kernel sums in f32, rounds once).
    let (ab, bb) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    let g = cops::residual_add(&r.gpu, &r.up(&ab)?, &r.up(&bb)?)?;
    let want: Vec<f64> = vals(&ab)?.iter().zip(vals(&bb)?).map(|(x, y)| x + y).collect();
    r.record("residual add bf16", &vals(&g)?, &want, 8e-3, "f64 formula");
    let g = cops::cast(&r.gpu, &ga, DType::BF16)?;
    r.record("cast f32->bf16 (exact rounding)", &vals(&g)?, &vals(&ab)?, 0.0, "CPU cast");
    Ok(())
}

fn reductions(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    for (rows, c) in [(100_000, 64), (3, 517), (4097, 3)] {
        let a = r.rand(&[rows, c], 1.0)?;
        let g = r.gpu.sum_rows(&r.up(&a)?)?;
        r.compare(&format!("sum_rows [{rows}, {c}]"), &g, Some(cpu.sum_rows(&a)?), Vec::new, 1e-5)?;
    }
    let a = r.rand(&[1_000_003], 1.0)?;
    let g = r.gpu.sum_all(&r.up(&a)?)?;
    r.compare("sum_all [1000003]", &g, Some(cpu.sum_all(&a)?), Vec::new, 1e-5)?;
    Ok(())
}

fn matmul(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let (m, k, n) = (129, 70, 33);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = r.rand(&if ta { [k, m] } else { [m, k] }, 1.0)?;
        let b = r.rand(&if tb { [n, k] } else { [k, n] }, 1.0)?;
        let g = r.gpu.matmul(&r.up(&a)?, &r.up(&b)?, ta, tb)?;
        r.compare(
            &format!("matmul f32 ta={ta} tb={tb}"),
            &g,
            Some(cpu.matmul(&a, &b, ta, tb)?),
            Vec::new,
            1e-5,
        )?;
        let (ab, bb) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
        let g = r.gpu.matmul(&r.up(&ab)?, &r.up(&bb)?, ta, tb)?;
        let c = cpu.matmul(&ab.to_dtype(DType::F32)?, &bb.to_dtype(DType::F32)?, ta, tb)?;
        r.compare(&format!("matmul bf16 ta={ta} tb={tb}"), &g, Some(c), Vec::new, 1e-2)?;
    }
    Ok(())
}

/// Direct NHWC/OHWI convolution in f64: (y, dx, dw) for dy.
#[allow(clippy::type_complexity)]
fn conv_ref(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    dy: &[f64],
    p: Conv2dParams,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, h, wd, c] = xs;
    let [o, kh, kw, _] = ws;
    let (ho, wo) = (p.out_size(h), p.out_size(wd));
    let mut y = vec![0.0; n * ho * wo * o];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for oc in 0..o {
                    let yi = ((b * ho + oy) * wo + ox) * o + oc;
                    let mut acc = 0.0;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                            let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for ic in 0..c {
                                let xi = ((b * h + iy as usize) * wd + ix as usize) * c + ic;
                                let wi = ((oc * kh + ky) * kw + kx) * c + ic;
                                acc += x[xi] * w[wi];
                                dx[xi] += dy[yi] * w[wi];
                                dw[wi] += dy[yi] * x[xi];
                            }
                        }
                    }
                    y[yi] = acc;
                }
            }
        }
    }
    (y, dx, dw)
}

fn conv2d(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    for (k, s, pd, c, o) in [(3, 1, 1, 16, 32), (3, 2, 1, 32, 16), (1, 2, 0, 16, 24)] {
        let p = Conv2dParams { kernel: k, stride: s, padding: pd };
        let (n, h) = (2, 9);
        let x = r.rand(&[n, h, h, c], 1.0)?;
        let w = r.rand(&[o, k, k, c], 0.2)?;
        let ho = p.out_size(h);
        let dy = r.rand(&[n, ho, ho, o], 1.0)?;
        let (xv, wv, dyv) = (vals(&x)?, vals(&w)?, vals(&dy)?);
        let (yr, dxr, dwr) = conv_ref(&xv, [n, h, h, c], &wv, [o, k, k, c], &dyv, p);
        let (gx, gw, gdy) = (r.up(&x)?, r.up(&w)?, r.up(&dy)?);
        let tag = format!("k{k} s{s} p{pd} {c}->{o}");
        // cuDNN picks the fastest algorithm by timing; in f32 that may be FFT or Winograd, whose
        // transforms round more than a direct sum (Winograd's larger tiles up to ~1e-5..1e-4 norm-wise).
        let tol = 1e-4;
        let g = r.gpu.conv2d_forward(&gx, &gw, p)?;
        let c0 = cpu_or_none(cpu.conv2d_forward(&x, &w, p))?;
        r.compare(&format!("conv2d fwd f32 {tag}"), &g, c0, || yr.clone(), tol)?;
        let g = r.gpu.conv2d_backward_data(&gdy, &gw, x.shape(), p)?;
        let c1 = cpu_or_none(cpu.conv2d_backward_data(&dy, &w, x.shape(), p))?;
        r.compare(&format!("conv2d bwd data f32 {tag}"), &g, c1, || dxr.clone(), tol)?;
        let g = r.gpu.conv2d_backward_filter(&gdy, &gx, w.shape(), p)?;
        let c2 = cpu_or_none(cpu.conv2d_backward_filter(&dy, &x, w.shape(), p))?;
        r.compare(&format!("conv2d bwd filter f32 {tag}"), &g, c2, || dwr.clone(), tol)?;
        let (xb, wb) = (r.up(&x.to_dtype(DType::BF16)?)?, r.up(&w.to_dtype(DType::BF16)?)?);
        let g = r.gpu.conv2d_forward(&xb, &wb, p)?;
        r.record(format!("conv2d fwd bf16 {tag}"), &vals(&g)?, &yr, 2e-2, "f64 formula");
    }
    Ok(())
}

/// f64 batch norm (train) over the last dim, optionally followed by PReLU: (out, dx, dgamma, dbeta, dalpha).
#[allow(clippy::type_complexity)]
fn bn_ref(
    x: &[f64],
    c: usize,
    g: &[f64],
    b: &[f64],
    alpha: Option<&[f64]>,
    dy: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for i in 0..x.len() {
        mean[i % c] += x[i] / rows as f64;
    }
    for i in 0..x.len() {
        var[i % c] += (x[i] - mean[i % c]).powi(2) / rows as f64;
    }
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let xhat: Vec<f64> = (0..x.len()).map(|i| (x[i] - mean[i % c]) * inv[i % c]).collect();
    let z: Vec<f64> = (0..x.len()).map(|i| xhat[i] * g[i % c] + b[i % c]).collect();
    let mut out = z.clone();
    let mut dz = dy.to_vec();
    let mut dalpha = vec![0.0; c];
    if let Some(a) = alpha {
        for i in 0..x.len() {
            if z[i] <= 0.0 {
                out[i] = a[i % c] * z[i];
                dalpha[i % c] += dy[i] * z[i];
                dz[i] = a[i % c] * dy[i];
            }
        }
    }
    let mut sdz = vec![0.0; c];
    let mut sdzx = vec![0.0; c];
    for i in 0..x.len() {
        sdz[i % c] += dz[i];
        sdzx[i % c] += dz[i] * xhat[i];
    }
    let nf = rows as f64;
    let dx: Vec<f64> = (0..x.len())
        .map(|i| {
            let ch = i % c;
            g[ch] * inv[ch] / nf * (nf * dz[i] - sdz[ch] - xhat[i] * sdzx[ch])
        })
        .collect();
    (out, dx, sdzx, sdz, dalpha)
}

fn batch_norm(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let (rows, c, eps) = (3000, 48, 1e-5);
    let x = cpu.affine(&r.rand(&[rows, c], 2.0)?, 1.0, 0.7)?;
    let gamma = cpu.affine(&r.rand(&[c], 0.2)?, 1.0, 1.0)?;
    let beta = r.rand(&[c], 0.3)?;
    let alpha = cpu.affine(&r.rand(&[c], 0.05)?, 1.0, 0.25)?;
    let dy = r.rand(&[rows, c], 1.0)?;
    let (xv, gv, bv, av, dyv) = (vals(&x)?, vals(&gamma)?, vals(&beta)?, vals(&alpha)?, vals(&dy)?);
    let (gx, gg, gb, ga, gdy) = (r.up(&x)?, r.up(&gamma)?, r.up(&beta)?, r.up(&alpha)?, r.up(&dy)?);

    let (y, saved) = r.gpu.batch_norm_forward_train(&gx, Some(&gg), Some(&gb), eps)?;
    let cpu_fwd = cpu_or_none(cpu.batch_norm_forward_train(&x, Some(&gamma), Some(&beta), eps))?;
    let (yr, dxr, dgr, dbr, _) = bn_ref(&xv, c, &gv, &bv, None, &dyv, eps);
    r.compare("batch norm train fwd f32", &y, cpu_fwd.as_ref().map(|t| t.0.clone()), || yr.clone(), 1e-5)?;
    let (dx, dg, db) = r.gpu.batch_norm_backward(&gdy, &gx, Some(&gg), &saved)?;
    let cpu_bwd = match &cpu_fwd {
        Some((_, s)) => cpu_or_none(cpu.batch_norm_backward(&dy, &x, Some(&gamma), s))?,
        None => None,
    };
    r.compare("batch norm bwd dx f32", &dx, cpu_bwd.as_ref().map(|t| t.0.clone()), || dxr.clone(), 1e-4)?;
    r.compare("batch norm bwd dgamma f32", &dg, cpu_bwd.as_ref().map(|t| t.1.clone()), || dgr.clone(), 1e-4)?;
    r.compare("batch norm bwd dbeta f32", &db, cpu_bwd.as_ref().map(|t| t.2.clone()), || dbr.clone(), 1e-4)?;

    let rm = cpu.affine(&r.rand(&[c], 0.1)?, 1.0, 0.5)?;
    let rv = cpu.affine(&cpu.unary(UnaryOp::Square, &r.rand(&[c], 1.0)?)?, 1.0, 0.5)?;
    let y = r.gpu.batch_norm_forward_eval(&gx, Some(&gg), Some(&gb), &r.up(&rm)?, &r.up(&rv)?, eps)?;
    let (rmv, rvv) = (vals(&rm)?, vals(&rv)?);
    let eval_ref = || {
        (0..xv.len())
            .map(|i| (xv[i] - rmv[i % c]) / (rvv[i % c] + eps).sqrt() * gv[i % c] + bv[i % c])
            .collect()
    };
    let cpu_eval = cpu_or_none(cpu.batch_norm_forward_eval(&x, Some(&gamma), Some(&beta), &rm, &rv, eps))?;
    r.compare("batch norm eval f32", &y, cpu_eval, eval_ref, 1e-5)?;

    // Fused BN + PReLU against the f64 composition.
    let (y, saved) = cops::batch_norm_prelu_train(&r.gpu, &gx, Some(&gg), Some(&gb), Some(&ga), eps)?;
    let (yr, dxr, dgr, dbr, dar) = bn_ref(&xv, c, &gv, &bv, Some(&av), &dyv, eps);
    r.record("fused bn+prelu fwd f32", &vals(&y)?, &yr, 1e-5, "f64 formula");
    let (dx, dg, db, da) =
        cops::batch_norm_prelu_backward(&r.gpu, &gdy, &gx, Some(&gg), Some(&gb), Some(&ga), &saved)?;
    r.record("fused bn+prelu bwd dx f32", &vals(&dx)?, &dxr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dgamma f32", &vals(&dg)?, &dgr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dbeta f32", &vals(&db)?, &dbr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dalpha f32", &vals(&da.ok_or("no dalpha")?)?, &dar, 1e-4, "f64 formula");
    let (yb, _) = cops::batch_norm_prelu_train(
        &r.gpu,
        &r.up(&x.to_dtype(DType::BF16)?)?,
        Some(&gg),
        Some(&gb),
        Some(&ga),
        eps,
    )?;
    r.record("fused bn+prelu fwd bf16", &vals(&yb)?, &yr, 1e-2, "f64 formula");

    // PReLU alone.
    let y = r.gpu.prelu_forward(&gx, &ga)?;
    let pre_ref = || (0..xv.len()).map(|i| if xv[i] > 0.0 { xv[i] } else { av[i % c] * xv[i] }).collect();
    let cpu_p = cpu_or_none(cpu.prelu_forward(&x, &alpha))?;
    r.compare("prelu fwd f32", &y, cpu_p, pre_ref, 1e-6)?;
    let (dx, da) = r.gpu.prelu_backward(&gdy, &gx, &ga)?;
    let cpu_pb = cpu_or_none(cpu.prelu_backward(&dy, &x, &alpha))?;
    let dx_ref = || (0..xv.len()).map(|i| if xv[i] > 0.0 { dyv[i] } else { av[i % c] * dyv[i] }).collect();
    let mut da_ref = vec![0.0; c];
    for i in 0..xv.len() {
        if xv[i] <= 0.0 {
            da_ref[i % c] += dyv[i] * xv[i];
        }
    }
    r.compare("prelu bwd dx f32", &dx, cpu_pb.as_ref().map(|t| t.0.clone()), dx_ref, 1e-6)?;
    r.compare("prelu bwd dalpha f32", &da, cpu_pb.map(|t| t.1), || da_ref, 1e-5)?;
    Ok(())
}

fn dropout_l2(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let x = r.rand(&[300, 512], 1.0)?;
    let (p, seed) = (0.4, 1234u64);
    let (y, mask) = r.gpu.dropout(&r.up(&x)?, p, seed)?;
    let xv = vals(&x)?;
    // The kernel's scale is an f32 division; the mask holds that f32 exactly.
    let scale = (1.0f32 / (1.0 - p as f32)) as f64;
    let want_mask: Vec<f64> = (0..xv.len())
        .map(|i| if engine::backend::cuda::dropout_keep(seed, i as u64, p as f32) { scale } else { 0.0 })
        .collect();
    r.record("dropout mask (exact, host mirror)", &vals(&mask)?, &want_mask, 0.0, "f64 formula");
    let want_y: Vec<f64> = xv.iter().zip(&want_mask).map(|(a, m)| a * m).collect();
    r.record("dropout y f32", &vals(&y)?, &want_y, 1e-6, "f64 formula");

    let eps = 1e-12;
    let (y, norms) = r.gpu.l2_normalize_rows(&r.up(&x)?, eps)?;
    let d = 512;
    let nr: Vec<f64> = xv.chunks(d).map(|row| row.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let yr: Vec<f64> = (0..xv.len()).map(|i| xv[i] / nr[i / d]).collect();
    let cpu_l2 = cpu_or_none(cpu.l2_normalize_rows(&x, eps))?;
    r.compare("l2 normalize fwd f32", &y, cpu_l2.as_ref().map(|t| t.0.clone()), || yr.clone(), 1e-6)?;
    r.compare("l2 normalize norms f32", &norms, cpu_l2.as_ref().map(|t| t.1.clone()), || nr.clone(), 1e-6)?;
    let dy = r.rand(&[300, 512], 1.0)?;
    let dyv = vals(&dy)?;
    let dx = r.gpu.l2_normalize_rows_backward(&r.up(&dy)?, &y, &norms)?;
    let mut dxr = vec![0.0; xv.len()];
    for row in 0..300 {
        let o = row * d;
        let dot: f64 = (0..d).map(|k| dyv[o + k] * yr[o + k]).sum();
        for k in 0..d {
            dxr[o + k] = (dyv[o + k] - yr[o + k] * dot) / nr[row];
        }
    }
    let cpu_l2b = match &cpu_l2 {
        Some((cy, cn)) => cpu_or_none(cpu.l2_normalize_rows_backward(&dy, cy, cn))?,
        None => None,
    };
    r.compare("l2 normalize bwd f32", &dx, cpu_l2b, || dxr, 1e-5)?;
    Ok(())
}

fn training(r: &mut Run) -> R<()> {
    let n = 10_007;
    let p0 = r.rand(&[n], 1.0)?;
    let g1 = r.rand(&[n], 0.1)?;
    let g2 = r.rand(&[n], 0.1)?;
    let (pv, g1v, g2v) = (vals(&p0)?, vals(&g1)?, vals(&g2)?);
    // SGD, two steps (torch semantics, momentum buffer starts as the first gradient).
    let cfg =
        train_ops::SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false };
    let gs = 0.5f32; // grad_scale: the gradients are given at twice their size
    let (p1, b1, _) =
        train_ops::sgd_step(&r.gpu, cfg, &r.up(&p0)?, &r.up(&cpu_scale(&g1, 2.0)?)?, None, true, gs, false)?;
    let (p2, _, h2) =
        train_ops::sgd_step(&r.gpu, cfg, &p1, &r.up(&cpu_scale(&g2, 2.0)?)?, b1.as_ref(), false, gs, true)?;
    let mut p = pv.clone();
    let mut buf = vec![0.0; n];
    for (step, g) in [&g1v, &g2v].iter().enumerate() {
        for i in 0..n {
            let d = g[i] + 5e-4 * p[i];
            buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
            p[i] -= 0.1 * buf[i];
        }
    }
    r.record("sgd momentum+wd, 2 steps", &vals(&p2)?, &p, 1e-6, "f64 formula");
    r.record("sgd bf16 copy of weights", &vals(&h2.ok_or("no bf16 copy")?)?, &p, 5e-3, "f64 formula");
    // AdamW, two steps.
    let acfg = train_ops::AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
    let zeros = Tensor::zeros([n], DType::F32, &r.dev)?;
    let (p1, m1, v1, _) =
        train_ops::adamw_step(&r.gpu, acfg, 1, &r.up(&p0)?, &r.up(&g1)?, &zeros, &zeros, 1.0, false)?;
    let (p2, _, _, _) = train_ops::adamw_step(&r.gpu, acfg, 2, &p1, &r.up(&g2)?, &m1, &v1, 1.0, false)?;
    let mut p = pv.clone();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for (t, g) in [&g1v, &g2v].iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..n {
            p[i] *= 1.0 - 1e-3 * 0.05;
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            p[i] -= 1e-3 / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
        }
    }
    r.record("adamw, 2 steps", &vals(&p2)?, &p, 1e-6, "f64 formula");
    // Overflow check.
    let clean = r.up(&g1)?;
    let mut bad = g2.clone();
    bad.as_mut_slice::<f32>()?[n / 2] = f32::INFINITY;
    let found_clean = train_ops::any_nonfinite(&r.gpu, &[&clean])? as i32 as f64;
    let found_bad = train_ops::any_nonfinite(&r.gpu, &[&clean, &r.up(&bad)?])? as i32 as f64;
    r.record(
        "overflow check (clean, then one inf)",
        &[found_clean, found_bad],
        &[0.0, 1.0],
        0.0,
        "f64 formula",
    );
    // uint8 images -> normalized NHWC with flips.
    let (ni, h, w) = (3, 5, 7);
    let img: Vec<u8> = (0..ni * h * w * 3).map(|_| r.rng.below(256) as u8).collect();
    let flips = [false, true, true];
    let t = train_ops::images_to_nhwc(&r.gpu, &img, ni, h, w, &flips, DType::F32)?;
    let mut want = vec![0.0; img.len()];
    for b in 0..ni {
        for y in 0..h {
            for x in 0..w {
                let sx = if flips[b] { w - 1 - x } else { x };
                for ch in 0..3 {
                    let v = img[((b * h + y) * w + sx) * 3 + ch] as f64;
                    want[((b * h + y) * w + x) * 3 + ch] = (v / 255.0 - 0.5) / 0.5;
                }
            }
        }
    }
    r.record("uint8 HWC -> normalized NHWC + flip", &vals(&t)?, &want, 1e-6, "f64 formula");
    Ok(())
}

fn cpu_scale(t: &Tensor, s: f64) -> R<Tensor> {
    Ok(CpuBackend.affine(t, s, 0.0)?)
}

/// f64 reference of one head over all classes: (loss per row, G [B, C]). The target uses the
/// pre-gathered `cys` (as the kernel does), the other columns the cosines the GEMM produced.
fn head_ref(
    cos: &[f64],
    cys: &[f64],
    b: usize,
    c: usize,
    labels: &[usize],
    hp: &HeadParams,
    kind: &str,
) -> (Vec<f64>, Vec<f64>) {
    let (s, m, t) = (hp.s as f64, hp.m2 as f64, hp.t as f64);
    let pi = std::f64::consts::PI;
    let mut loss = vec![0.0; b];
    let mut g = vec![0.0; b * c];
    for i in 0..b {
        let row = &cos[i * c..(i + 1) * c];
        let y = labels[i];
        let cy = cys[i];
        let st = |c: f64| (1.0 - c * c).max(0.0).sqrt();
        let (zy, zpy) = match kind {
            "qam" => {
                let cc = cy.clamp(-1.0 + 1e-7, 1.0 - 1e-7);
                let th = cc.acos();
                (s * (2.0 * pi - th - m).powi(2), 2.0 * s * (2.0 * pi - th - m) / st(cc))
            }
            _ => {
                if cy > (pi - m).cos() {
                    (s * (cy.acos() + m).cos(), s * (m.cos() + cy * m.sin() / st(cy)))
                } else {
                    (s * (cy - m * m.sin()), s)
                }
            }
        };
        let tau = (cy.acos() + m).cos();
        let z: Vec<(f64, f64)> = (0..c)
            .map(|j| {
                if j == y {
                    return (zy, zpy);
                }
                let cj = row[j];
                match kind {
                    "qam" => {
                        let cc = cj.clamp(-1.0 + 1e-7, 1.0 - 1e-7);
                        let a = 2.0 * pi - cc.acos();
                        (s * a * a, 2.0 * s * a / st(cc))
                    }
                    "curricular" if cj > tau => (s * cj * (t + cj), s * (t + 2.0 * cj)),
                    _ => (s * cj, s),
                }
            })
            .collect();
        let mx = z.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + z.iter().map(|v| (v.0 - mx).exp()).sum::<f64>().ln();
        // The loss value clamps CE at -ln(1e-30) as insightface does; G does not.
        loss[i] = (lse - zy).min(engine::heads::CE_MAX);
        for j in 0..c {
            let p = (z[j].0 - lse).exp();
            g[i * c + j] = (p - if j == y { 1.0 } else { 0.0 }) * z[j].1 / b as f64;
        }
    }
    (loss, g)
}

fn margin_head(r: &mut Run) -> R<()> {
    let (b, d, c, block) = (64usize, 32usize, 1000usize, 384usize);
    // Unit rows, normalized here in f64 (independent of the backends under test).
    let unit = |t: Tensor, rows: usize| -> R<Tensor> {
        let v = vals(&t)?;
        let mut out = Vec::with_capacity(v.len());
        for row in v.chunks(v.len() / rows) {
            let n = row.iter().map(|a| a * a).sum::<f64>().sqrt();
            out.extend(row.iter().map(|a| (a / n) as f32));
        }
        Ok(Tensor::from_vec(out, t.shape().clone())?)
    };
    let xh = unit(r.rand(&[b, d], 1.0)?, b)?;
    let wh = unit(r.rand(&[c, d], 1.0)?, c)?;
    let labels: Vec<usize> = (0..b).map(|_| r.rng.below(c as u64) as usize).collect();
    // Make some targets easy (large cosines) so margins and hard negatives are exercised.
    let (xv, wv) = (vals(&xh)?, vals(&wh)?);
    let cos: Vec<f64> = (0..b * c)
        .map(|k| {
            let (i, j) = (k / c, k % c);
            (0..d).map(|q| xv[i * d + q] as f32 as f64 * wv[j * d + q] as f32 as f64).sum()
        })
        .collect();
    let cy: Vec<f32> = (0..b).map(|i| cos[i * c + labels[i]] as f32).collect();
    let cys: Vec<f64> = cy.iter().map(|&v| v as f64).collect();
    let labels_t = r.up(&Tensor::from_vec(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [b])?)?;
    let cy_t = r.up(&Tensor::from_vec(cy, [b])?)?;
    let gx = r.up(&xh)?;
    let blocks_for_gather: Vec<(usize, Tensor)> = (0..c)
        .step_by(block)
        .map(|j0| {
            let nb = block.min(c - j0);
            let w = Tensor::from_vec(
                wv[j0 * d..(j0 + nb) * d].iter().map(|&v| v as f32).collect::<Vec<_>>(),
                [nb, d],
            )?;
            Ok((j0, r.up(&w)?))
        })
        .collect::<R<_>>()?;
    let mut cy_g = Tensor::zeros([b], DType::F32, &r.dev)?;
    for (j0, w) in &blocks_for_gather {
        cy_g = mh::gather_cy(&r.gpu, &gx, w, *j0, &labels_t, &cy_g)?;
    }
    r.record("margin head gather c_y (3 blocks)", &vals(&cy_g)?, &cys, 1e-6, "f64 formula");
    let blocks: Vec<(usize, Tensor)> = (0..c)
        .step_by(block)
        .map(|j0| {
            let nb = block.min(c - j0);
            let w = Tensor::from_vec(
                wv[j0 * d..(j0 + nb) * d].iter().map(|&v| v as f32).collect::<Vec<_>>(),
                [nb, d],
            )?;
            Ok((j0, r.up(&w)?))
        })
        .collect::<R<_>>()?;
    let heads = [
        ("arcface", HeadParams::arcface(64.0, 0.5, b)),
        (
            "curricular",
            HeadParams { t: 0.3, nontarget_kind: head::NT_CURRICULAR, ..HeadParams::arcface(64.0, 0.5, b) },
        ),
        (
            "qam",
            HeadParams {
                eps: 1e-7,
                target_kind: head::TGT_QAM,
                nontarget_kind: head::NT_QAM,
                ..HeadParams { m2: 0.5, ..HeadParams::plain(6.0, b) }
            },
        ),
    ];
    for (kind, hp) in heads {
        for dtype in [DType::F32, DType::BF16] {
            let terms = mh::target(&r.gpu, &cy_t, None, None, &hp)?;
            let mut state = mh::lse_init(&r.gpu, b)?;
            let mut cos_blocks = Vec::new();
            for (j0, w) in &blocks {
                let (xg, wg) = if dtype == DType::F32 {
                    (gx.clone(), w.clone())
                } else {
                    (cops::cast(&r.gpu, &gx, dtype)?, cops::cast(&r.gpu, w, dtype)?)
                };
                let cb = r.gpu.matmul(&xg, &wg, false, true)?;
                state = mh::forward_block(&r.gpu, &cb, *j0, &labels_t, &terms, &hp, &state)?;
                cos_blocks.push((*j0, cb));
            }
            let rl = mh::finish(&r.gpu, &labels_t, &state, &terms, 0.0, &hp)?;
            let mut g_full = vec![0.0; b * c];
            let mut cos_used = vec![0.0; b * c];
            for (j0, cb) in &cos_blocks {
                let cv = vals(cb)?;
                let nb = cv.len() / b;
                for i in 0..b {
                    cos_used[i * c + j0..i * c + j0 + nb].copy_from_slice(&cv[i * nb..(i + 1) * nb]);
                }
                let g = vals(&mh::backward_block(&r.gpu, cb, *j0, &labels_t, &terms, &rl, &hp)?)?;
                let nb = g.len() / b;
                for i in 0..b {
                    g_full[i * c + j0..i * c + j0 + nb].copy_from_slice(&g[i * nb..(i + 1) * nb]);
                }
            }
            // The reference takes the GEMM's own cosines, so this checks the head, not bf16 rounding.
            let (loss_ref, g_ref) = head_ref(&cos_used, &cys, b, c, &labels, &hp, kind);
            let tol = 1e-4;
            // G is written in the GEMM dtype: bf16 storage alone rounds each element by up to 2^-9.
            let tol_g = if dtype == DType::F32 { tol } else { 2.5e-3 };
            r.record(
                format!("margin head {kind} loss ({dtype} cosines, 3 blocks)"),
                &vals(&rl.loss)?,
                &loss_ref,
                tol,
                "f64 formula",
            );
            r.record(
                format!("margin head {kind} G ({dtype} cosines, 3 blocks)"),
                &g_full,
                &g_ref,
                tol_g,
                "f64 formula",
            );
        }
    }
    Ok(())
}

fn allocator(r: &mut Run) -> R<()> {
    // The same shapes again must come from the free lists, not the driver.
    let before = r.gpu.pool_stats();
    for _ in 0..3 {
        let host = r.rand(&[256, 256], 1.0)?;
        let a = r.up(&host)?;
        let _ = r.gpu.affine(&a, 2.0, 1.0)?;
    }
    r.gpu.synchronize()?;
    let mid = r.gpu.pool_stats();
    for _ in 0..3 {
        let host = r.rand(&[256, 256], 1.0)?;
        let a = r.up(&host)?;
        let _ = r.gpu.affine(&a, 2.0, 1.0)?;
    }
    let after = r.gpu.pool_stats();
    let new_allocs = (after.driver_allocs - mid.driver_allocs) as f64;
    println!("allocator: {} driver allocations before, {} reuses", before.driver_allocs, after.reuses);
    r.record("allocator: no driver allocation in steady state", &[new_allocs], &[0.0], 0.0, "count");
    Ok(())
}

/// Times the chunked ArcFace head: normalize x and every W block to bf16, gather c_y, blockwise
/// cosines (cuBLAS) + online log-sum-exp, then blockwise recomputed cosines, G, gx += G·Ŵ_b and
/// gŴ_b = Gᵀ·x̂. The normalization backward (two row projections) is not included.
fn bench_head(gpu: &Arc<CudaContext>, dev: &Device, a: &Args) -> CmdResult {
    use std::time::Instant;
    let (b, d, c, block) = (a.batch, 512usize, a.classes, a.block.max(1));
    let mut rng = Rng::new(a.seed);
    let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.uniform() - 0.5) as f32).collect() };
    let x = Tensor::from_vec(uniform(b * d), [b, d])?.to_device(dev)?;
    let mut w_blocks = Vec::new();
    for j0 in (0..c).step_by(block) {
        let nb = block.min(c - j0);
        w_blocks.push((j0, Tensor::from_vec(uniform(nb * d), [nb, d])?.to_device(dev)?));
    }
    let labels: Vec<i64> = (0..b).map(|i| ((i as u64 * 2654435761) % c as u64) as i64).collect();
    let labels = Tensor::from_vec(labels, [b])?.to_device(dev)?;
    let hp = HeadParams::arcface(64.0, 0.5, b);
    gpu.synchronize()?;
    let held_inputs = gpu.pool_stats().bytes_held;
    let (free_before, _) = gpu.cudarc_context().mem_get_info().unwrap_or((0, 0));
    let step = || -> R<f64> {
        let (xh, _) = cops::l2_normalize_rows_to(gpu, &x, 1e-12, DType::BF16)?;
        let mut wh = Vec::with_capacity(w_blocks.len());
        let mut cy = Tensor::zeros([b], DType::F32, dev)?;
        for (j0, w) in &w_blocks {
            let (n, _) = cops::l2_normalize_rows_to(gpu, w, 1e-12, DType::BF16)?;
            cy = mh::gather_cy(gpu, &xh, &n, *j0, &labels, &cy)?;
            wh.push((*j0, n));
        }
        let terms = mh::target(gpu, &cy, None, None, &hp)?;
        let mut state = mh::lse_init(gpu, b)?;
        for (j0, w) in &wh {
            let cos = gpu.matmul(&xh, w, false, true)?;
            state = mh::forward_block(gpu, &cos, *j0, &labels, &terms, &hp, &state)?;
        }
        let rl = mh::finish(gpu, &labels, &state, &terms, 0.0, &hp)?;
        let mut gx = Tensor::zeros([b, d], DType::F32, dev)?;
        for (j0, w) in &wh {
            let cos = gpu.matmul(&xh, w, false, true)?;
            let g = mh::backward_block(gpu, &cos, *j0, &labels, &terms, &rl, &hp)?;
            let part = cops::cast(gpu, &gpu.matmul(&g, w, false, false)?, DType::F32)?;
            gx = gpu.binary(BinaryOp::Add, &gx, &part)?;
            let _gw = gpu.matmul(&g, &xh, true, false)?;
        }
        let loss = gpu.sum_all(&rl.loss)?.scalar_value()? / b as f64;
        let _ = gx;
        Ok(loss)
    };
    let mut loss = 0.0;
    for _ in 0..2 {
        loss = step()?;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        gpu.synchronize()?;
        let t = Instant::now();
        loss = step()?;
        gpu.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let med = times[times.len() / 2];
    let held = gpu.pool_stats().bytes_held.saturating_sub(held_inputs);
    let (free_after, _) = gpu.cudarc_context().mem_get_info().unwrap_or((0, 0));
    if !loss.is_finite() {
        return Err(format!("chunked head loss is {loss}").into());
    }
    let text = format!(
        "| run | batch | classes | block | step ms (fwd+bwd) | pool MiB above inputs | device MiB used since start | loss |\n\
         |---|---|---|---|---|---|---|---|\n\
         | engine chunked ArcFace (bf16 GEMMs) | {b} | {c} | {block} | {:.2} | {:.0} | {:.0} | {loss:.3} |\n",
        med * 1e3,
        held as f64 / (1 << 20) as f64,
        free_before.saturating_sub(free_after) as f64 / (1 << 20) as f64,
    );
    print!("{text}");
    save_markdown(&a.report, &format!("# chunked head benchmark on {}\n\n{text}", gpu.device_name()))?;
    Ok(())
}
