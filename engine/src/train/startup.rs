//! Choosing the device of a run (`--device`). `cuda[:N]` opens that GPU or says why it cannot; `auto`
//! takes GPU 0 only when it opens and a tiny training step on it reproduces the CPU's (about a second:
//! `startup_check`), so a GPU whose path misbehaves is never used silently, and otherwise runs on the CPU.

use crate::heads::HeadParams;
use crate::model::IResNetConfig;
use crate::optim::LrSchedule;
use crate::rng::Rng;
use crate::tape::gradcheck::rel_error;
use crate::tensor::{Device, Tensor};
use crate::train::precision::Precision;
use crate::train::trainer::{OptimizerChoice, Trainer, TrainerConfig, CLASSIFIER};
use crate::Result;

/// The device `name` (cpu, cuda, cuda:N or auto) for a run in `precision`, and a note for the user when
/// `auto` chose the CPU although a GPU driver was there.
pub fn choose_device(name: &str, precision: Precision) -> Result<(Device, Option<String>)> {
    // `auto:N` (one rank of a job on a node): GPU N instead of GPU 0.
    let index = match name.strip_prefix("auto") {
        Some("") => 0,
        Some(n) => n.strip_prefix(':').and_then(|n| n.parse().ok()).ok_or_else(|| {
            crate::Error::Invalid(format!("--device {name}: expected auto, cpu, cuda or cuda:N"))
        })?,
        None => return Ok((Device::parse(name)?, None)),
    };
    match Device::gpu(index) {
        Ok(gpu) => match startup_check(&gpu, precision) {
            Ok(()) => Ok((gpu, None)),
            Err(why) => Ok((
                Device::Cpu,
                Some(format!(
                    "GPU {index} failed the start-up check against the CPU ({why}); using the CPU (--device cuda insists on the GPU)"
                )),
            )),
        },
        Err(e) if Device::gpu_driver_present() => {
            Ok((Device::Cpu, Some(format!("a GPU driver is present but no GPU could be used ({e}); using the CPU"))))
        }
        Err(_) => Ok((Device::Cpu, None)),
    }
}

/// A tiny IResNet (16x16 inputs, widths 4/4/8/8, 16-d) with CosFace and SGD: a training step that takes
/// well under a second anywhere.
pub fn tiny_config(classes: usize) -> TrainerConfig {
    let mut backbone = IResNetConfig::small();
    backbone.input_hw = (16, 16);
    backbone.widths = [4, 4, 8, 8];
    backbone.embedding_size = 16;
    TrainerConfig {
        backbone,
        backbone_name: "small".into(),
        head: "cosface".into(),
        head_params: HeadParams { s: Some(30.0), ..HeadParams::default() },
        num_classes: classes,
        optimizer: OptimizerChoice::Sgd,
        lr: 0.05,
        schedule: LrSchedule::Constant,
        momentum: 0.9,
        weight_decay: 5e-4,
        no_bn_weight_decay: false,
        grad_clip: Some(5.0),
        seed: 11,
        precision: Precision::F32,
        loss_scale: Default::default(),
        grad_accum: 1,
    }
}

/// Every value a trainer holds, flattened: weights, batch-norm statistics and the classifier.
fn state_values(t: &Trainer) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    for e in t.params.entries().iter().filter(|e| e.value.dtype().is_float()) {
        v.extend(e.value.to_f64_vec()?);
    }
    v.extend(t.classifier.get(CLASSIFIER)?.to_f64_vec()?);
    Ok(v)
}

/// One forward + backward and one trainer step of the tiny IResNet on `dev` against the CPU, same
/// weights and batch, in `precision`: loss, every gradient, and everything the trainer holds after the
/// step. Err names what differed (or the error met). Under bf16/fp16 the device's real 16-bit GEMMs are
/// held against the CPU's emulation at 300 times the f32 tolerances (values near a rounding boundary may
/// round the other way).
pub fn startup_check(dev: &Device, precision: Precision) -> std::result::Result<(), String> {
    let run = || -> Result<Vec<(&'static str, f64, f64)>> {
        let cfg = TrainerConfig { precision, ..tiny_config(5) };
        let k = if precision == Precision::F32 { 1.0 } else { 300.0 };
        let (h, w) = cfg.backbone.input_hw;
        let mut rng = Rng::new(cfg.seed ^ 0x5eed);
        let x = Tensor::from_vec(
            (0..6 * h * w * 3).map(|_| rng.normal() as f32).collect::<Vec<f32>>(),
            [6, h, w, 3],
        )?;
        let labels: Vec<i64> = (0..6).map(|i| i % 5).collect();
        let (mut on_dev, mut on_cpu) = (Trainer::new(cfg.clone())?, Trainer::new(cfg)?);
        on_dev.to_device(dev)?;
        let (a, b) =
            (on_dev.forward_backward(&x, &labels, None)?, on_cpu.forward_backward(&x, &labels, None)?);
        let flat = |g: &[(String, Tensor)]| -> Result<Vec<f64>> {
            let mut v = Vec::new();
            for (_, t) in g {
                v.extend(t.to_f64_vec()?);
            }
            Ok(v)
        };
        let mut out = vec![
            ("loss", rel_error(&a.loss.to_f64_vec()?, &b.loss.to_f64_vec()?), 1e-5 * k),
            ("gradients", rel_error(&flat(&a.grads)?, &flat(&b.grads)?), 1e-4 * k),
        ];
        on_dev.train_step(&x, &labels)?;
        on_cpu.train_step(&x, &labels)?;
        out.push((
            "weights after a step",
            rel_error(&state_values(&on_dev)?, &state_values(&on_cpu)?),
            1e-4 * k,
        ));
        Ok(out)
    };
    let checks = run().map_err(|e| e.to_string())?;
    let bad: Vec<String> = checks
        .iter()
        .filter(|(_, err, tol)| !(err <= tol))
        .map(|(name, err, tol)| format!("{name} {err:.1e} > {tol:.0e}"))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_check_passes_on_the_cpu_in_every_precision() {
        for p in [Precision::F32, Precision::Bf16, Precision::Fp16] {
            startup_check(&Device::Cpu, p).unwrap();
        }
    }

    #[test]
    fn cpu_is_taken_as_named_and_auto_falls_back_without_a_gpu() {
        assert!(choose_device("cpu", Precision::F32).unwrap().0.is_cpu());
        // This machine (and CI) has no GPU: auto must land on the CPU, never panic.
        if !Device::gpu_driver_present() {
            let (d, note) = choose_device("auto", Precision::Bf16).unwrap();
            assert!(d.is_cpu() && note.is_none());
            let err = choose_device("cuda:0", Precision::F32).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("cuda"), "{err}");
        }
        assert!(choose_device("tpu", Precision::F32).is_err());
    }
}
