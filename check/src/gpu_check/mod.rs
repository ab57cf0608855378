//! `engine-train check`: every device op against the CPU backend (or, where the CPU has no twin, a
//! direct f64 evaluation of the formula), the heads, optimizers and whole training steps against the
//! CPU, and optionally PyTorch's fixtures, with the same random inputs: the norm-wise relative error of
//! each against a threshold, as a markdown report. Fails (non-zero exit) when the device cannot be
//! opened or any check misses its threshold; NaN never passes.

mod batch_norm;
mod conv;
mod head;
mod nccl;
mod ops;
mod training;

use crate::compare::{compare_values, Compared};
use crate::report::{checks_table, print_check, save_markdown};
use crate::{device_parity, step_parity, torch_fixtures, CmdResult};
use engine::backend::{for_device, Backend};
use engine::rng::Rng;
use engine::train::precision::Precision;
use engine::train::trainer::{OptimizerChoice, TrainerConfig};
use engine::{Device, Error, Tensor};
use std::path::{Path, PathBuf};

/// What the checks and the benchmarks share: the device, the report, and the step they run.
#[derive(clap::Args, Clone)]
pub struct CommonArgs {
    /// Device to check: cuda or cuda:N (--step-parity also takes cpu).
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Markdown report to write (parent directories are created).
    #[arg(long, default_value = "bench/results/gpu-check.md")]
    pub report: PathBuf,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 20261124)]
    pub seed: u64,
    /// Classes of the head (--step-parity, the benchmarks).
    #[arg(long, default_value_t = 93431)]
    pub classes: usize,
    /// Batch (--step-parity, the benchmarks).
    #[arg(long, visible_alias = "batch-size", default_value_t = 512)]
    pub batch: usize,
    /// Backbone (--step-parity, the training benchmark).
    #[arg(long, default_value = "r50")]
    pub backbone: String,
    /// Precision (--step-parity, the training benchmark): f32, bf16 or fp16 (convolutions and the head
    /// in 16 bits; fc stays f32).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Input height and width (a multiple of 16; default the backbone's, 112).
    #[arg(long)]
    pub input_size: Option<usize>,
}

#[derive(clap::Args, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also replay PyTorch's fixtures from this folder on the device: core_ops_f32.safetensors and the
    /// heads of heads_manifest.txt, written by tests/parity/core_ops.py and heads_ref.py (bench/gpu-check.sh
    /// runs them with --device cuda, so each op and head is checked against torch on the GPU).
    #[arg(long)]
    pub torch_fixtures: Option<PathBuf>,
    /// Instead of the checks, run one forward + backward of --backbone with an ArcFace head over
    /// --classes at --batch in --precision (f32 or bf16) on --device (cuda, or cpu for the reference) and
    /// write the weights (PyTorch layout), the batch and the engine's loss, embedding and gradients into
    /// this folder, for bench/step_parity.py to compare with PyTorch.
    #[arg(long)]
    pub step_parity: Option<PathBuf>,
}

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// The checks so far on one device.
struct Run {
    dev: Device,
    rng: Rng,
    checks: Vec<Compared>,
}

fn vals(t: &Tensor) -> R<Vec<f64>> {
    Ok(t.to_f64_vec()?)
}

/// The CPU backend's answer, or `None` when it does not implement the op.
fn cpu_or_none<T>(r: engine::Result<T>) -> R<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Unsupported(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Run {
    fn be(&self) -> &dyn Backend {
        for_device(&self.dev)
    }
    fn rand(&mut self, shape: &[usize], scale: f64) -> R<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (self.rng.normal() * scale) as f32).collect();
        Ok(Tensor::from_vec(v, shape.to_vec())?)
    }
    fn up(&self, t: &Tensor) -> R<Tensor> {
        Ok(t.to_device(&self.dev)?)
    }
    fn push(&mut self, c: Compared) {
        print_check(&c);
        self.checks.push(c);
    }
    fn record(
        &mut self,
        name: impl Into<String>,
        ours: &[f64],
        reference: &[f64],
        tol: f64,
        src: &'static str,
    ) {
        self.push(compare_values(name, ours, reference, tol, src));
    }
    /// Compares against the CPU backend when it has the op, else against `inline`.
    fn compare(
        &mut self,
        name: &str,
        ours: &Tensor,
        cpu: Option<Tensor>,
        inline: impl FnOnce() -> Vec<f64>,
        tol: f64,
    ) -> R<()> {
        let g = vals(ours)?;
        match cpu {
            Some(c) => self.record(name, &g, &vals(&c)?, tol, "CPU backend"),
            None => self.record(name, &g, &inline(), tol, "f64 formula"),
        }
        Ok(())
    }
    fn extend(&mut self, checks: Vec<Compared>) -> R<()> {
        checks.into_iter().for_each(|c| self.push(c));
        Ok(())
    }
}

/// The device of a command, which must not be the CPU (the CPU is the reference).
pub(crate) fn open_device(name: &str, what: &str) -> R<Device> {
    let dev = Device::parse(name)?;
    if dev.is_cpu() {
        return Err(format!("{what} needs a CUDA device (--device cuda)").into());
    }
    println!("{what} on {}", dev.describe());
    Ok(dev)
}

/// The IResNet-step sections' trainer (small backbone, CosFace) in `precision`.
fn step_config(precision: Precision) -> TrainerConfig {
    TrainerConfig { precision, ..device_parity::small_config(20, OptimizerChoice::Sgd) }
}

type Section = (&'static str, fn(&mut Run) -> R<()>);

const SECTIONS: [Section; 15] = [
    ("elementwise", ops::elementwise),
    ("reductions", ops::reductions),
    ("matmul", ops::matmul),
    ("conv2d", conv::conv2d),
    ("batch norm / prelu", batch_norm::batch_norm),
    ("dropout / l2 norm", ops::dropout_l2),
    ("optimizers / amp / input", training::training),
    ("margin head", head::margin_head),
    ("allocator", head::allocator),
    ("nccl (one rank)", nccl::one_rank),
    ("broadcasts / l2 backward (training ops)", |r| {
        r.extend(device_parity::broadcast_ops(&r.dev.clone(), 41)?)
    }),
    ("head through heads::loss", |r| {
        r.extend(device_parity::head_losses(&r.dev.clone(), 42, &engine::heads::names())?)
    }),
    ("optimizers through the Optimizer trait", |r| {
        r.extend(device_parity::optimizer_steps(&r.dev.clone(), 43)?)
    }),
    ("IResNet training step", |r| {
        r.extend(device_parity::backbone_step(&r.dev.clone(), &step_config(Precision::F32), 16, 3)?)
    }),
    ("IResNet training step, bf16 GEMMs against the CPU emulation", |r| {
        r.extend(device_parity::backbone_step(&r.dev.clone(), &step_config(Precision::Bf16), 16, 3)?)
    }),
];

/// `engine-train check`.
pub fn run(a: &CheckArgs) -> CmdResult {
    if let Some(dir) = &a.step_parity {
        return step_parity::run(&Device::parse(&a.common.device)?, dir, &a.common);
    }
    let dev = open_device(&a.common.device, "check")?;
    let mut r = Run { dev, rng: Rng::new(a.common.seed), checks: Vec::new() };
    let mut errors = Vec::new();
    for (name, f) in SECTIONS {
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
    r.be().synchronize()?;
    let failed = r.checks.iter().filter(|c| !c.ok()).count();
    let st = r.be().counters();
    let footer = format!(
        "\nAllocator: {} driver allocations, {} reuses, {:.1} MiB held.\n",
        st.driver_allocs,
        st.reuses,
        st.bytes_held as f64 / (1 << 20) as f64
    );
    let text = checks_table(&r.dev.describe(), &r.checks, &errors, &footer);
    save_markdown(&a.common.report, &text)?;
    println!("report: {}", a.common.report.display());
    if failed > 0 || !errors.is_empty() {
        return Err(
            format!("{failed} checks failed and {} sections stopped with an error", errors.len()).into()
        );
    }
    println!("all {} checks passed", r.checks.len());
    Ok(())
}

/// `--torch-fixtures DIR`: the core ops one row per output or gradient, the heads one row per head
/// configuration (its worst of loss, gradients and state over three inputs and five steps, each measured
/// against its own threshold).
fn torch_fixture_checks(r: &mut Run, dir: &Path) -> R<()> {
    r.extend(torch_fixtures::core_ops(&r.dev.clone(), &dir.join("core_ops_f32.safetensors"), 1e-4)?)?;
    let (heads, covered) = torch_fixtures::heads(&r.dev.clone(), dir, "f32")?;
    let missing: Vec<&str> =
        engine::heads::names().into_iter().filter(|n| !covered.iter().any(|c| c == n)).collect();
    if !missing.is_empty() {
        return Err(format!("no f32 head fixture for {}", missing.join(", ")).into());
    }
    // Group "heads_03_arcface_edge_f32 loss.2" by "heads_03_arcface"; keep the worst ratio to threshold.
    let mut groups: Vec<(String, Compared)> = Vec::new();
    for c in heads {
        let key = c.name.split('_').take(3).collect::<Vec<_>>().join("_");
        let ratio = |c: &Compared| if c.err.is_nan() { f64::INFINITY } else { c.err / c.tol };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, worst)) if ratio(&c) > ratio(worst) => *worst = c,
            Some(_) => {}
            None => groups.push((key, c)),
        }
    }
    let rows = groups
        .into_iter()
        .map(|(key, w)| Compared {
            name: format!("torch {key} (worst: {})", w.name.trim_start_matches(&key).trim_start_matches('_')),
            ..w
        })
        .collect();
    r.extend(rows)
}

/// `engine-train gpu-check`, the flags of the earlier command kept for scripts: the checks, or with
/// --bench-train / --bench-head / --train-demo STEPS the corresponding `bench`.
#[derive(clap::Args, Clone)]
pub struct GpuCheckArgs {
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub options: crate::bench::BenchOptions,
    /// Instead of the checks, `bench --head`.
    #[arg(long)]
    pub bench_head: bool,
    /// Instead of the checks, `bench --train`.
    #[arg(long)]
    pub bench_train: bool,
    /// Instead of the checks, `bench --demo STEPS`.
    #[arg(long)]
    pub train_demo: Option<u64>,
}

/// `engine-train gpu-check`.
pub fn run_gpu_check(a: &GpuCheckArgs) -> CmdResult {
    use crate::bench::{run_bench, Bench};
    let common = &a.check.common;
    match (a.bench_head, a.bench_train, a.train_demo) {
        (true, _, _) => run_bench(Bench::Head, common, &a.options),
        (_, true, _) => run_bench(Bench::Train, common, &a.options),
        (_, _, Some(steps)) => run_bench(Bench::Demo(steps), common, &a.options),
        _ => run(&a.check),
    }
}
