//! The chunked ArcFace head alone on the device (forward and backward through the backend's classifier,
//! cosines in bf16), with the memory it holds.

use super::{median_seconds, BenchOptions};
use crate::gpu_check::CommonArgs;
use crate::report::save_markdown;
use crate::CmdResult;
use engine::backend::MarginHeadCall;
use engine::heads::{self, HeadParams};
use engine::rng::Rng;
use engine::{DType, Device, Tensor};

/// `bench --head`: the ArcFace head over --classes at --batch, blocks of --block classes: normalization,
/// c_y, blockwise cosines (cuBLAS) and online log-sum-exp, then blockwise recomputed cosines, G and both
/// gradients, and the normalization backward.
pub fn run(dev: &Device, a: &CommonArgs, o: &BenchOptions) -> CmdResult {
    let be = engine::backend::for_device(dev);
    let (b, d, c) = (a.batch, 512usize, a.classes);
    let mut rng = Rng::new(a.seed);
    let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.uniform() - 0.5) as f32).collect() };
    let x = Tensor::from_vec(uniform(b * d), [b, d])?.to_device(dev)?;
    let w = Tensor::from_vec(uniform(c * d), [c, d])?.to_device(dev)?;
    let labels: Vec<i64> = (0..b).map(|i| ((i as u64 * 2654435761) % c as u64) as i64).collect();
    let mut head =
        heads::from_name("arcface", &HeadParams { s: Some(64.0), m: Some(0.5), ..HeadParams::default() })?;
    head.set_training(true);
    be.synchronize()?;
    let held_inputs = be.counters().bytes_held;
    let mut step = || -> Result<f64, Box<dyn std::error::Error>> {
        let call = MarginHeadCall {
            x: &x,
            w: &w,
            labels: &labels,
            head: head.as_mut(),
            grad: true,
            autocast: Some(DType::BF16),
            max_block_elems: b * o.block.max(1),
        };
        Ok(be.margin_head(call)?.loss.scalar_value()?)
    };
    for _ in 0..2 {
        step()?;
    }
    let (med, loss) = median_seconds(be, 5, &mut step)?;
    let held = be.counters().bytes_held.saturating_sub(held_inputs);
    if !loss.is_finite() {
        return Err(format!("chunked head loss is {loss}").into());
    }
    let text = format!(
        "| run | batch | classes | block | step ms (fwd+bwd) | pool MiB above inputs | loss |\n\
         |---|---|---|---|---|---|---|\n\
         | engine chunked ArcFace (bf16 cosines) | {b} | {c} | {} | {:.2} | {:.0} | {loss:.3} |\n",
        o.block,
        med * 1e3,
        held as f64 / (1 << 20) as f64,
    );
    print!("{text}");
    save_markdown(&a.report, &format!("# chunked head benchmark on {}\n\n{text}", dev.describe()))?;
    Ok(())
}
