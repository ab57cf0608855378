//! A device against the CPU backend with the same inputs: the broadcasts, every head, the optimizers and
//! whole training steps (same weights, same batch). The checks behind the opt-in GPU tests below and
//! `engine-train check`'s training sections.
//!
//! Every function takes the device to check; given `Device::Cpu` it compares the CPU with itself, which
//! is how the CPU test suite keeps this harness running (all errors must then be exactly 0). The
//! comparisons on CUDA have never run: this was written on a machine without a GPU, and the f32
//! tolerances below are estimates (f32 summation-order differences through BN at small batches), to be
//! confirmed by the first GPU run.

use crate::compare::{compare, rel_error, Compared};
use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, MarginHeadCall};
use engine::heads::{self, HeadParams};
use engine::model::{ParamKind, ParamStore};
use engine::optim::{AdamW, AdamWConfig, Optimizer, ParamGroups, Sgd, SgdConfig};
use engine::rng::Rng;
use engine::tape::Tape;
use engine::train::startup::tiny_config;
use engine::train::trainer::{OptimizerChoice, Trainer, TrainerConfig, CLASSIFIER};
use engine::{Device, Result, Tensor};

fn randn(rng: &mut Rng, shape: &[usize], scale: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| (rng.normal() * scale) as f32).collect::<Vec<f32>>(), shape.to_vec())
}

/// The broadcasts and the eps-aware L2 backward the CUDA backend gained for training.
pub fn broadcast_ops(dev: &Device, seed: u64) -> Result<Vec<Compared>> {
    let mut rng = Rng::new(seed);
    let (x, v, s) =
        (randn(&mut rng, &[37, 3, 5, 24], 1.0)?, randn(&mut rng, &[24], 1.0)?, randn(&mut rng, &[37], 1.0)?);
    let (dx, dv, ds) = (x.to_device(dev)?, v.to_device(dev)?, s.to_device(dev)?);
    let (be, cpu) = (dx.backend(), CpuBackend);
    // Broadcasts are one f32 operation per element: bit-equal results expected.
    let mut out = vec![
        compare("add_channels", &be.add_channels(&dx, &dv)?, &cpu.add_channels(&x, &v)?, 1e-7)?,
        compare("mul_channels", &be.mul_channels(&dx, &dv)?, &cpu.mul_channels(&x, &v)?, 1e-7)?,
        compare("scale_rows", &be.scale_rows(&dx, &ds)?, &cpu.scale_rows(&x, &s)?, 1e-7)?,
    ];
    // L2 backward with a row below eps (gradient dy / eps there) and ordinary rows.
    let mut m = randn(&mut rng, &[9, 24], 1.0)?;
    m.as_mut_slice::<f32>()?[24..48].iter_mut().for_each(|e| *e *= 1e-9);
    let dy = randn(&mut rng, &[9, 24], 1.0)?;
    let eps = 1e-6;
    let (y, n) = cpu.l2_normalize_rows(&m, eps)?;
    let want = cpu.l2_normalize_rows_backward_eps(&dy, &y, &n, eps)?;
    let got =
        be.l2_normalize_rows_backward_eps(&dy.to_device(dev)?, &y.to_device(dev)?, &n.to_device(dev)?, eps)?;
    out.push(compare("l2_normalize_rows_backward_eps (one row below eps)", &got, &want, 1e-5)?);
    // Rows of finite values whose squares overflow f32 (entries ~1e20): measured rescaled, not infinite.
    let mut big = randn(&mut rng, &[4, 24], 1.0)?;
    big.as_mut_slice::<f32>()?[24..72].iter_mut().for_each(|e| *e *= 1e20);
    let (cy, cn) = cpu.l2_normalize_rows(&big, 1e-12)?;
    let (gy, gn) = be.l2_normalize_rows(&big.to_device(dev)?, 1e-12)?;
    out.push(compare("l2_normalize_rows norms, rows of ~1e20", &gn, &cn, 1e-6)?);
    out.push(compare("l2_normalize_rows y, rows of ~1e20", &gy, &cy, 1e-6)?);
    // The backward of ops::mean_all (sum_all then scale) broadcasts its seed without a host read there.
    let grad_of_mean = |d: &Device| -> Result<Tensor> {
        let mut tape = Tape::new();
        let v = tape.leaf(x.to_device(d)?);
        let m = engine::ops::mean_all(&mut tape, v)?;
        let g = tape.backward(m)?;
        g.get(v).cloned().ok_or_else(|| engine::Error::Invalid("mean_all: no gradient".into()))
    };
    out.push(compare(
        "mean_all backward (seed broadcast)",
        &grad_of_mean(dev)?,
        &grad_of_mean(&Device::Cpu)?,
        1e-7,
    )?);
    let parts = [be.slice_rows(&dx, 0, 10)?, be.slice_rows(&dx, 10, 11)?, be.slice_rows(&dx, 11, 37)?];
    out.push(compare("slice_rows + concat_rows round trip", &be.concat_rows(&parts)?, &x, 0.0)?);
    Ok(out)
}

/// s = 30 for every head (64 saturates the small random problem); QCFace in its planning phase.
fn test_head(name: &str) -> Result<Box<dyn heads::Head>> {
    let phase = heads::has_phases(name).then_some(heads::Phase::Planning);
    heads::from_name(name, &HeadParams { s: Some(30.0), phase, ..HeadParams::default() })
}

fn head_step(
    dev: &Device,
    name: &str,
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut head = test_head(name)?;
    head.set_training(true);
    let mut tape = Tape::new();
    let (vx, vw) = (tape.leaf(x.to_device(dev)?), tape.leaf(w.to_device(dev)?));
    let l = heads::loss(&mut tape, vx, vw, labels, head.as_mut())?;
    let g = tape.backward(l)?;
    let missing = || engine::Error::Invalid(format!("{name}: no gradient"));
    Ok((
        tape.value(l).clone(),
        g.get(vx).ok_or_else(missing)?.clone(),
        g.get(vw).ok_or_else(missing)?.clone(),
    ))
}

/// One head step through the backend's classifier with the classes in blocks of at most `block`
/// elements (several blocks on a chunked device) and the cosine GEMM in `autocast`.
fn blocked_step(
    dev: &Device,
    name: &str,
    (x, w, labels): (&Tensor, &Tensor, &[i64]),
    block: usize,
    autocast: Option<engine::DType>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut head = test_head(name)?;
    head.set_training(true);
    let (x, w) = (x.to_device(dev)?, w.to_device(dev)?);
    let call = MarginHeadCall {
        x: &x,
        w: &w,
        labels,
        head: head.as_mut(),
        grad: true,
        autocast,
        max_block_elems: block,
    };
    let out = x.backend().margin_head(call)?;
    let (gx, gw) = out.grads.ok_or_else(|| engine::Error::Invalid(format!("{name}: no gradients")))?;
    Ok((out.loss, gx, gw))
}

/// Heads run through `heads::loss` on the device (margin_head.cu with fixed parameters or with row plans)
/// against the CPU: loss, dL/dx and dL/dW. Also ArcFace, MagFace and QCFace-Cur (its margin-free sum
/// beside CurricularFace's negatives) with the classes split into several blocks, in f32 and with bf16
/// cosines.
pub fn head_losses(dev: &Device, seed: u64, names: &[&str]) -> Result<Vec<Compared>> {
    let mut rng = Rng::new(seed);
    let (b, d, c) = (24, 32, 50);
    let x = randn(&mut rng, &[b, d], 3.0)?;
    let w = randn(&mut rng, &[c, d], 0.1)?;
    let labels: Vec<i64> = (0..b).map(|_| rng.below(c as u64) as i64).collect();
    let mut out = Vec::new();
    for &name in names {
        let fixed = heads::kernel_plan::kernel_params(test_head(name)?.as_ref(), b).is_some();
        let path = if fixed { "fixed params" } else { "row plans" };
        let (l1, x1, w1) = head_step(dev, name, &x, &w, &labels)?;
        let (l0, x0, w0) = head_step(&Device::Cpu, name, &x, &w, &labels)?;
        out.push(compare(format!("head {name} ({path}): loss"), &l1, &l0, 1e-5)?);
        out.push(compare(format!("head {name} ({path}): dL/dx"), &x1, &x0, 1e-4)?);
        out.push(compare(format!("head {name} ({path}): dL/dW"), &w1, &w0, 1e-4)?);
    }
    if dev.is_cpu() {
        // The CPU classifier has no blocks, and its bf16 is an emulation: nothing more to compare.
        return Ok(out);
    }
    // Several class blocks (16 classes each): one head per path. And with the cosines in bf16 (autocast),
    // at bf16's tolerance (its 8-bit mantissa moves a cosine by up to 2^-9, a logit by s times that).
    for (gemm, what, k) in [(None, "", 1.0), (Some(engine::DType::BF16), " in bf16", 300.0)] {
        for name in ["arcface", "magface", "qcface-cur"] {
            let (l1, g1x, g1w) = blocked_step(dev, name, (&x, &w, &labels), b * 16, gemm)?;
            let (l0, x0, w0) = head_step(&Device::Cpu, name, &x, &w, &labels)?;
            out.push(compare(format!("head {name}, 4 class blocks{what}: loss"), &l1, &l0, 1e-5 * k)?);
            out.push(compare(format!("head {name}, 4 class blocks{what}: dL/dx"), &g1x, &x0, 1e-4 * k)?);
            out.push(compare(format!("head {name}, 4 class blocks{what}: dL/dW"), &g1w, &w0, 1e-4 * k)?);
        }
    }
    Ok(out)
}

/// Makes a fresh optimizer.
pub(crate) type MakeOptimizer = fn() -> Box<dyn Optimizer>;

/// The optimizers the parity checks step: SGD (momentum 0.9, weight decay 5e-4) and AdamW (weight decay
/// 0.05), as tests/parity/core_ops.py sets up torch.optim's.
pub(crate) fn checked_optimizers() -> [(&'static str, MakeOptimizer); 2] {
    [
        ("sgd", || Box::new(Sgd::new(SgdConfig::default(), ParamGroups::uniform(5e-4)))),
        ("adamw", || Box::new(AdamW::new(AdamWConfig::default(), ParamGroups::uniform(0.05)))),
    ]
}

/// Three SGD (momentum, weight decay) and AdamW steps through the `Optimizer` trait on the device against
/// the CPU: parameters and optimizer state.
pub fn optimizer_steps(dev: &Device, seed: u64) -> Result<Vec<Compared>> {
    let mut rng = Rng::new(seed);
    let p0 = randn(&mut rng, &[1001], 1.0)?;
    let grads: Vec<Tensor> = (0..3).map(|_| randn(&mut rng, &[1001], 0.1)).collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (kind, make) in checked_optimizers() {
        let mut finals = Vec::new();
        for d in [dev, &Device::Cpu] {
            let mut store = ParamStore::new();
            store.insert("w", p0.to_device(d)?, ParamKind::Trainable)?;
            let mut opt = make();
            for g in &grads {
                opt.step(&mut store, &[("w".to_string(), g.to_device(d)?)], 0.01)?;
            }
            let state: Vec<Tensor> =
                opt.state().into_iter().filter(|(n, _)| !n.ends_with(".step")).map(|(_, t)| t).collect();
            finals.push((store.get("w")?.clone(), state));
        }
        let (dev_run, cpu_run) = (&finals[0], &finals[1]);
        out.push(compare(format!("{kind}: weights after 3 steps"), &dev_run.0, &cpu_run.0, 1e-6)?);
        for (k, (a, b)) in dev_run.1.iter().zip(&cpu_run.1).enumerate() {
            out.push(compare(format!("{kind}: state tensor {k} after 3 steps"), a, b, 1e-5)?);
        }
    }
    Ok(out)
}

/// A small IResNet + CosFace trainer config (32x32 inputs) for the step checks.
pub fn small_config(classes: usize, optimizer: OptimizerChoice) -> TrainerConfig {
    let mut cfg = tiny_config(classes);
    cfg.backbone = engine::model::IResNetConfig::small();
    cfg.backbone.input_hw = (32, 32);
    cfg.optimizer = optimizer;
    cfg
}

/// Loss and named gradients of one forward + backward (the stores' running statistics move).
fn gradients(t: &mut Trainer, x: &Tensor, labels: &[i64]) -> Result<(Tensor, Vec<(String, Tensor)>)> {
    let fb = t.forward_backward(x, labels, None)?;
    Ok((fb.loss, fb.grads))
}

/// One IResNet forward + backward on `dev` against the CPU with the same weights and batch (every
/// parameter's gradient, the BN running statistics), then `steps` whole trainer steps (loss per step,
/// all weights after them). Under bf16/fp16 the device's real 16-bit GEMMs are held against the CPU's
/// emulation: values near a rounding boundary may round the other way, and the GPU head's GEMM stays
/// f32, so the f32 tolerances are widened 300 times (1e-4 becomes 3e-2).
pub fn backbone_step(dev: &Device, cfg: &TrainerConfig, batch: usize, steps: usize) -> Result<Vec<Compared>> {
    let k = if cfg.precision == engine::train::precision::Precision::F32 { 1.0 } else { 300.0 };
    let (h, w) = cfg.backbone.input_hw;
    let mut rng = Rng::new(cfg.seed ^ 0x5eed);
    let x = randn(&mut rng, &[batch, h, w, 3], 1.0)?;
    let labels: Vec<i64> = (0..batch).map(|i| (i % cfg.num_classes) as i64).collect();
    let mut on_cpu = Trainer::new(cfg.clone())?;
    let mut on_dev = Trainer::new(cfg.clone())?;
    on_dev.to_device(dev)?;
    let mut out = Vec::new();
    {
        // Gradients on copies of the stores, so that the trainers below start from the same state.
        let (mut a, mut b) = (Trainer::new(cfg.clone())?, Trainer::new(cfg.clone())?);
        a.to_device(dev)?;
        let ((la, ga), (lb, gb)) = (gradients(&mut a, &x, &labels)?, gradients(&mut b, &x, &labels)?);
        out.push(compare("IResNet step: loss", &la, &lb, 1e-5 * k)?);
        let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
        let mut worst = Compared {
            name: "IResNet step: worst single gradient".into(),
            err: 0.0,
            tol: 1e-3 * k,
            reference: "CPU backend",
        };
        // A bias followed by a training-mode batch norm (fc.bias before `features`, the last block's
        // bn3.bias before the final bn2) has a gradient that is zero up to rounding: its own norm is
        // noise, so each gradient's error is taken against at least 1e-3 of the largest gradient norm.
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let pairs: Vec<(Vec<f64>, Vec<f64>)> = ga
            .iter()
            .zip(&gb)
            .map(|((_, ta), (_, tb))| Ok((ta.to_f64_vec()?, tb.to_f64_vec()?)))
            .collect::<Result<_>>()?;
        let floor = 1e-3 * pairs.iter().map(|(_, b)| norm(b)).fold(0.0, f64::max);
        for ((na, _), (a, b)) in ga.iter().zip(&pairs) {
            let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
            let err = if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
                f64::INFINITY
            } else {
                norm(&diff) / norm(b).max(floor)
            };
            if err > worst.err || err.is_nan() {
                worst.err = err;
                worst.name = format!("IResNet step: worst single gradient ({na})");
            }
            all_a.extend_from_slice(a);
            all_b.extend_from_slice(b);
        }
        let all = rel_error(&all_a, &all_b);
        out.push(Compared {
            name: format!("IResNet step: all {} gradients", ga.len()),
            err: all,
            tol: 1e-4 * k,
            reference: "CPU backend",
        });
        out.push(worst);
        let stats = |t: &Trainer| -> Result<Vec<f64>> {
            let mut v = Vec::new();
            for e in t
                .params
                .entries()
                .iter()
                .filter(|e| e.name.ends_with("running_var") || e.name.ends_with("running_mean"))
            {
                v.extend(e.value.to_f64_vec()?);
            }
            Ok(v)
        };
        out.push(Compared {
            name: "IResNet step: BN running statistics".into(),
            err: rel_error(&stats(&a)?, &stats(&b)?),
            tol: 1e-5 * k,
            reference: "CPU backend",
        });
    }
    for s in 0..steps {
        let (ld, lc) = (on_dev.train_step(&x, &labels)?.loss, on_cpu.train_step(&x, &labels)?.loss);
        // Relative to the loss, or to ln(classes) (a uniform guess's loss) once the batch is nearly
        // memorised: after one step at lr 0.05 the loss falls from ~15 to ~0.015, where a bf16 logit's
        // rounding (~s * 2^-9) moves it by several percent while the weights agree to 1e-3.
        let scale = lc.abs().max((cfg.num_classes as f64).ln());
        let err = if ld.is_finite() { (ld - lc).abs() / scale } else { f64::INFINITY };
        out.push(Compared {
            name: format!("trainer step {}: loss", s + 1),
            err,
            tol: 1e-4 * k,
            reference: "CPU backend",
        });
    }
    let flat = |t: &Trainer| -> Result<Vec<f64>> {
        let mut v = Vec::new();
        for e in t.params.entries() {
            v.extend(e.value.to_f64_vec()?);
        }
        v.extend(t.classifier.get(CLASSIFIER)?.to_f64_vec()?);
        Ok(v)
    };
    let err = rel_error(&flat(&on_dev)?, &flat(&on_cpu)?);
    out.push(Compared {
        name: format!("trainer: all weights after {steps} steps"),
        err,
        tol: 1e-4 * k,
        reference: "CPU backend",
    });
    Ok(out)
}

/// Losses of `steps` trainer steps on `dev` over a fixed learnable problem: `classes` noisy templates
/// (each class its own random image), a fresh noise draw per batch.
pub fn learning_curve(dev: &Device, cfg: &TrainerConfig, batch: usize, steps: usize) -> Result<Vec<f64>> {
    let (h, w) = cfg.backbone.input_hw;
    let mut rng = Rng::new(cfg.seed ^ 0xc1a55);
    let plane = h * w * 3;
    let templates: Vec<f32> = (0..cfg.num_classes * plane).map(|_| rng.normal() as f32).collect();
    let mut t = Trainer::new(cfg.clone())?;
    t.to_device(dev)?;
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let labels: Vec<i64> = (0..batch).map(|_| rng.below(cfg.num_classes as u64) as i64).collect();
        let mut px = Vec::with_capacity(batch * plane);
        for &l in &labels {
            let tpl = &templates[l as usize * plane..(l as usize + 1) * plane];
            px.extend(tpl.iter().map(|&v| v + 0.8 * rng.normal() as f32));
        }
        let x = Tensor::from_vec(px, [batch, h, w, 3])?;
        losses.push(t.train_step(&x, &labels)?.loss);
    }
    Ok(losses)
}

/// Mean of the first and of the last `k` values.
pub fn ends(v: &[f64], k: usize) -> (f64, f64) {
    let k = k.min(v.len()).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    (mean(&v[..k.min(v.len())]), mean(&v[v.len().saturating_sub(k)..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_all(checks: &[Compared]) {
        for c in checks {
            println!("{:<64} {:>10.3e}  (threshold {:.0e})", c.name, c.err, c.tol);
        }
        let bad: Vec<&Compared> = checks.iter().filter(|c| !c.ok()).collect();
        assert!(bad.is_empty(), "failed: {bad:?}");
    }

    /// The harness itself, CPU against CPU: every comparison must be exactly 0, so a harness that
    /// compared the wrong tensors (or none) fails here before it reaches a GPU.
    #[test]
    fn the_harness_compares_the_cpu_with_itself_exactly() {
        let mut all = broadcast_ops(&Device::Cpu, 1).unwrap();
        all.extend(head_losses(&Device::Cpu, 2, &heads::names()).unwrap());
        all.extend(optimizer_steps(&Device::Cpu, 3).unwrap());
        all.extend(backbone_step(&Device::Cpu, &tiny_config(5), 6, 2).unwrap());
        let tiny_bf16 =
            TrainerConfig { precision: engine::train::precision::Precision::Bf16, ..tiny_config(5) };
        all.extend(backbone_step(&Device::Cpu, &tiny_bf16, 6, 2).unwrap());
        assert!(all.len() >= 15);
        for c in &all {
            assert_eq!(c.err, 0.0, "{}", c.name);
        }
    }

    /// The problem the GPU learning test uses is learnable (tiny net, a few steps on the CPU).
    #[test]
    fn the_learning_problem_is_learnable_on_the_cpu() {
        let cfg = TrainerConfig { lr: 3e-3, optimizer: OptimizerChoice::AdamW, ..tiny_config(4) };
        let losses = learning_curve(&Device::Cpu, &cfg, 16, 40).unwrap();
        let (first, last) = ends(&losses, 5);
        assert!(last < 0.7 * first, "loss went from {first} to {last}");
    }

    fn gpu() -> Device {
        Device::parse("cuda").expect("this test needs a CUDA GPU")
    }

    // Opt-in GPU tests (the repository's pattern): `cargo test -p engine -- --ignored gpu_` on a machine
    // with a GPU. Without one they are reported as ignored, never as passed. CI runs them on
    // tests/cuda_emu; none has run on a real GPU yet.

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_broadcasts_and_l2_backward_match_the_cpu() {
        assert_all(&broadcast_ops(&gpu(), 1).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_head_matches_the_cpu_reference() {
        assert_all(&head_losses(&gpu(), 2, &heads::names()).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_optimizers_match_the_cpu() {
        assert_all(&optimizer_steps(&gpu(), 3).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_iresnet_step_matches_the_cpu() {
        assert_all(&backbone_step(&gpu(), &small_config(20, OptimizerChoice::Sgd), 16, 3).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_steps_in_micro_batches_match_the_cpu() {
        let cfg = TrainerConfig { grad_accum: 4, ..small_config(20, OptimizerChoice::Sgd) };
        assert_all(&backbone_step(&gpu(), &cfg, 16, 2).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_bf16_iresnet_step_matches_the_cpu_emulation() {
        let cfg = TrainerConfig {
            precision: engine::train::precision::Precision::Bf16,
            ..small_config(20, OptimizerChoice::Sgd)
        };
        assert_all(&backbone_step(&gpu(), &cfg, 16, 3).unwrap());
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_non_finite_step_never_reaches_the_weights() {
        let cfg = tiny_config(3);
        let mut t = Trainer::new(cfg.clone()).unwrap();
        t.to_device(&gpu()).unwrap();
        let mut rng = Rng::new(4);
        let x = randn(&mut rng, &[4, 16, 16, 3], 1.0).unwrap();
        t.train_step(&x, &[0, 1, 2, 0]).unwrap();
        let snap = |t: &Trainer| -> Vec<Vec<f64>> {
            t.params.entries().iter().map(|e| e.value.to_f64_vec().unwrap()).collect()
        };
        let before = snap(&t);
        let mut bad = x.clone();
        bad.as_mut_slice::<f32>().unwrap()[7] = f32::NAN;
        let err = t.train_step(&bad, &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(err.contains("not applied"), "{err}");
        assert!(snap(&t) == before, "weights or running statistics moved");
        t.train_step(&x, &[0, 1, 2, 0]).unwrap();
        assert_eq!(t.step, 2);
    }

    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_training_loss_falls() {
        let cfg = TrainerConfig { lr: 3e-3, ..small_config(10, OptimizerChoice::AdamW) };
        let losses = learning_curve(&gpu(), &cfg, 64, 300).unwrap();
        let (first, last) = ends(&losses, 20);
        assert!(losses.iter().all(|l| l.is_finite()), "non-finite loss");
        assert!(last < 0.5 * first, "loss went from {first} to {last}");
    }
}
