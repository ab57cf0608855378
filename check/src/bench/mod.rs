//! `engine-train bench`: throughput on a device. `--train`: whole training steps of a backbone with an
//! ArcFace head (MFU, kernel launches, driver allocations, cuDNN's algorithm choices); `--head`: the
//! chunked ArcFace head alone; `--demo STEPS`: the demo's training on the device through the loader.

mod demo;
mod head;
pub mod ledger;
mod train_step;

use crate::gpu_check::{open_device, CommonArgs};
use crate::CmdResult;
use std::path::PathBuf;

/// The benchmarks' own settings.
#[derive(clap::Args, Clone)]
pub struct BenchOptions {
    /// Classes per block of the chunked head (--head).
    #[arg(long, default_value_t = 16384)]
    pub block: usize,
    /// Dense bf16 peak of the card in TFLOP/s for the training benchmark's model-FLOPs utilization
    /// (H100/H200 SXM: 989, as bench/torch_ir50.py assumes, so both MFUs share one denominator).
    #[arg(long, default_value_t = 989.0)]
    pub peak_tflops: f64,
    /// Timed steps of the training benchmark (after 2 warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Where the demo set is generated (once) for --demo.
    #[arg(long, default_value = ".cache/demo")]
    pub cache: PathBuf,
    /// The peer's trace for --ledger (default: bench/ledger/pytorch_<backbone>_<precision>_b<batch>.json).
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// With --ledger: what data parallelism over N GPUs of one node adds (the gradients' all-reduce).
    #[arg(long, value_name = "N")]
    pub gpus: Option<usize>,
}

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: crate::gpu_check::CommonArgs,
    #[command(flatten)]
    pub options: BenchOptions,
    /// Time whole training steps (forward, ArcFace head over --classes, backward, SGD) of --backbone at
    /// --batch in --precision on random data.
    #[arg(long)]
    pub train: bool,
    /// Time the chunked ArcFace head alone (forward + backward, bf16 cosines).
    #[arg(long)]
    pub head: bool,
    /// Train the small backbone on the generated demo set for this many steps on the device (f32): the
    /// loss must fall, and the held-out pairs' verification accuracy is reported.
    #[arg(long)]
    pub demo: Option<u64>,
    /// The FLOP/byte ledger of one training step (no GPU needed: a dry run of the CUDA backend), beside
    /// PyTorch eager's from its committed trace; predicted times on H100 and H200 numbers.
    #[arg(long)]
    pub ledger: bool,
    /// With --ledger: print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// Which benchmark to run.
pub enum Bench {
    Train,
    Head,
    Demo(u64),
}

/// Runs one benchmark on the device of `common`.
pub fn run_bench(which: Bench, common: &CommonArgs, options: &BenchOptions) -> CmdResult {
    let dev = open_device(&common.device, "bench")?;
    match which {
        Bench::Train => train_step::run(&dev, common, options),
        Bench::Head => head::run(&dev, common, options),
        Bench::Demo(steps) => demo::run(&dev, steps, common, options),
    }
}

/// `engine-train bench`.
pub fn run(a: &BenchArgs) -> CmdResult {
    if a.ledger {
        return ledger::run(&a.common, &a.options, a.json);
    }
    let which = match (a.train, a.head, a.demo) {
        (true, false, None) => Bench::Train,
        (false, true, None) => Bench::Head,
        (false, false, Some(steps)) => Bench::Demo(steps),
        _ => return Err("bench: give exactly one of --train, --head, --demo STEPS or --ledger".into()),
    };
    run_bench(which, &a.common, &a.options)
}

/// Median wall time of `f` over `n` runs (at least one), synchronizing the device around each.
fn median_seconds(
    be: &dyn engine::backend::Backend,
    n: usize,
    mut f: impl FnMut() -> Result<f64, Box<dyn std::error::Error>>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut times = Vec::new();
    let mut last = 0.0;
    for _ in 0..n.max(1) {
        be.synchronize()?;
        let t0 = std::time::Instant::now();
        last = f()?;
        be.synchronize()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(|p, q| p.total_cmp(q));
    Ok((times[times.len() / 2], last))
}
