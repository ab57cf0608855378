//! Whole training steps on the device: median step time, images/s, MFU, launches, allocations.

use super::{median_seconds, BenchOptions};
use crate::device_parity;
use crate::gpu_check::CommonArgs;
use crate::report::save_markdown;
use crate::CmdResult;
use engine::model::IResNetConfig;
use engine::rng::Rng;
use engine::train::trainer::{OptimizerChoice, Trainer, TrainerConfig};
use engine::{Device, Tensor};

/// `bench --train`: median time of whole training steps (the loss read each step is the step's only
/// host synchronisation besides the non-finite check).
pub fn run(dev: &Device, a: &CommonArgs, o: &BenchOptions) -> CmdResult {
    let be = engine::backend::for_device(dev);
    let mut backbone = IResNetConfig::by_name(&a.backbone)?;
    if let Some(n) = a.input_size {
        backbone.input_hw = (n, n);
        backbone.validate()?;
    }
    let (h, w) = backbone.input_hw;
    let gflop_fwd = backbone.forward_gflops();
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
    let before = be.counters();
    let (med, loss) = median_seconds(be, o.steps, || Ok(t.train_step(&x, &labels)?.loss))?;
    let after = be.counters();
    let launches = (after.kernel_launches - before.kernel_launches) as f64 / o.steps.max(1) as f64;
    // After the warm-up steps every buffer should come from the caching allocator's free lists.
    let step_allocs = after.driver_allocs - before.driver_allocs;
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
    let (floor, _) = median_seconds(be, o.steps, || Ok(t.train_step(&x2, &labels[..n2])?.loss))?;
    // Backward costs about twice the forward (data and filter gradients).
    let tflops = 3.0 * gflop_fwd * b as f64 / med / 1e3;
    let counters = be.counters();
    let held = counters.bytes_held as f64 / (1 << 30) as f64;
    let text = format!(
        "| run | batch | classes | images/s | step ms | model TFLOP/s (3x forward) | MFU (of {:.0}) | pool GiB held | loss |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | engine {} {} + ArcFace, SGD | {b} | {} | {:.0} | {:.1} | {tflops:.1} | {:.1}% | {held:.1} | {loss:.3} |\n\n\
         | kernel launches per step | driver allocations in the timed steps | step ms at batch 2 (host-bound) | bound on a CUDA graph's saving |\n\
         |---|---|---|---|\n\
         | {launches:.0} | {step_allocs} | {:.2} | {:.1}% |\n",
        o.peak_tflops,
        a.backbone,
        a.precision,
        a.classes,
        b as f64 / med,
        med * 1e3,
        100.0 * tflops / o.peak_tflops,
        floor * 1e3,
        100.0 * floor / med,
    );
    let algos: Vec<String> =
        counters.conv_algorithms.into_iter().map(|(name, n)| format!("{name} x{n}")).collect();
    let text = format!("{text}\ncuDNN's choices (convolution cases per algorithm): {}\n", algos.join(", "));
    print!("{text}");
    save_markdown(&a.report, &format!("# {} training step on {}\n\n{text}", a.precision, dev.describe()))?;
    Ok(())
}
