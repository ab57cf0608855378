//! `engine-train check --step-parity DIR`: one whole training step (backbone forward, ArcFace head,
//! backward; no optimizer step) on the device, written out for `bench/step_parity.py`, which repeats it
//! in PyTorch with the same weights and batch and compares. The GPU machine of `bench/gpu-check.sh` has
//! PyTorch but no Rust, so the engine side only writes files and the comparison is Python's.
//!
//! DIR receives:
//! - `model.safetensors`: the initial backbone in PyTorch layout (the `export` file, loads into
//!   insightface's IResNet with strict=True), written before the step moves the running statistics;
//! - `inputs.safetensors`: `classifier.weight` [C, D], `images` [B, H, W, 3] f32 normalized NHWC (as
//!   the loader gives them) and `labels` [B] i64;
//! - `config.json`: backbone shape, head and its hyper-parameters, precision, batch, device, seed;
//! - `engine.safetensors`: `loss` [1] (f64), `embedding` [B, D], `grad.<name>` for every trainable
//!   tensor (PyTorch names and layouts: conv OIHW, `fc.weight` columns CHW; `grad.classifier.weight`
//!   for the head) and `after.<name>` for the batch-norm buffers after the training-mode forward.
//!
//! `--device cpu` runs the same step on the CPU backend (the reference), which is how this path is
//! exercised without a GPU.

use crate::device_parity;
use crate::gpu_check::CommonArgs;
use crate::CmdResult;
use engine::heads::{self, HeadParams};
use engine::io::safetensors::{self, SafeTensors};
use engine::model::export::{export_pytorch, to_pytorch_layout};
use engine::model::{IResNetConfig, ParamKind};
use engine::rng::Rng;
use engine::train::precision::Precision;
use engine::train::trainer::{OptimizerChoice, Trainer, TrainerConfig, CLASSIFIER};
use engine::{Device, Tensor};
use std::path::Path;
use std::time::Instant;

/// The head of the step: ArcFace in EXACT mode with the fallback past pi - m (spec section 4).
const S: f64 = 64.0;
const M: f64 = 0.5;

pub fn run(dev: &Device, dir: &Path, a: &CommonArgs) -> CmdResult {
    let precision: Precision = a.precision.parse()?;
    if !matches!(precision, Precision::F32 | Precision::Bf16) {
        return Err(format!("--step-parity takes --precision f32 or bf16, not {}", a.precision).into());
    }
    let mut backbone = IResNetConfig::by_name(&a.backbone)?;
    if let Some(n) = a.input_size {
        backbone.input_hw = (n, n);
        backbone.validate()?;
    }
    if a.batch < 3 {
        // With two samples the output BatchNorm1d maps each feature to about +-1 and its backward cancels
        // to rounding noise (tests/parity/model_ref.py): the gradients would compare noise.
        return Err(format!("--step-parity needs --batch of at least 3 (got {})", a.batch).into());
    }
    let cfg = TrainerConfig {
        backbone: backbone.clone(),
        backbone_name: a.backbone.clone(),
        head: "arcface".into(),
        head_params: HeadParams { s: Some(S), m: Some(M), ..HeadParams::default() },
        grad_clip: None,
        seed: a.seed,
        precision,
        ..device_parity::small_config(a.classes, OptimizerChoice::Sgd)
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut t = Trainer::new(cfg)?;
    let clamp_eps = t.head.clamp_eps();
    // The initial weights, before the training-mode forward moves the running statistics.
    export_pytorch(&dir.join("model.safetensors"), &backbone, &t.params)?;

    // The batch: random u8 pixels normalized as the loader does ((v / 255 - 0.5) / 0.5), random labels.
    let (h, w) = backbone.input_hw;
    let b = a.batch;
    let mut rng = Rng::new(a.seed ^ 0x57e9_9a17);
    let px: Vec<f32> =
        (0..b * h * w * 3).map(|_| ((rng.below(256) as f64 / 255.0 - 0.5) / 0.5) as f32).collect();
    let images = Tensor::from_vec(px, [b, h, w, 3])?;
    let labels: Vec<i64> = (0..b).map(|_| rng.below(a.classes as u64) as i64).collect();
    let mut inputs = SafeTensors::default();
    inputs.push(CLASSIFIER, t.classifier.get(CLASSIFIER)?.to_device(&Device::Cpu)?);
    inputs.push("images", images.clone());
    inputs.push("labels", Tensor::from_vec(labels.clone(), [b])?);
    safetensors::write(&dir.join("inputs.safetensors"), &inputs)?;

    // One forward + backward on the device.
    t.to_device(dev)?;
    let be = engine::backend::for_device(dev);
    be.synchronize()?;
    let t0 = Instant::now();
    let step = t.forward_backward(&images, &labels, None)?;
    be.synchronize()?;
    let secs = t0.elapsed().as_secs_f64();
    let loss_value = step.loss.scalar_value()?;

    let mut out = SafeTensors::default();
    out.push("loss", Tensor::from_vec(vec![loss_value], [1])?);
    out.push("embedding", step.embeddings.to_device(&Device::Cpu)?);
    let mut n_grads = 0;
    for (name, g) in &step.grads {
        let g = g.to_device(&Device::Cpu)?;
        let g = if name == CLASSIFIER { g } else { to_pytorch_layout(&backbone, name, &g)? };
        out.push(format!("grad.{name}"), g);
        n_grads += 1;
    }
    for e in t.params.entries().iter().filter(|e| e.kind == ParamKind::Buffer) {
        out.push(format!("after.{}", e.name), e.value.to_device(&Device::Cpu)?);
    }
    let trainable = t.params.entries().iter().filter(|e| e.kind == ParamKind::Trainable).count() + 1;
    if n_grads != trainable {
        return Err(format!("the step produced {n_grads} gradients for {trainable} trainable tensors").into());
    }
    out.metadata.insert("layout".into(), "pytorch: OIHW conv weights, fc.weight columns CHW".into());
    safetensors::write(&dir.join("engine.safetensors"), &out)?;

    let device_name = dev.describe();
    let config = serde_json::json!({
        "backbone": a.backbone,
        "layers": backbone.layers,
        "widths": backbone.widths,
        "input_hw": [h, w],
        "in_channels": backbone.in_channels,
        "embedding_size": backbone.embedding_size,
        "dropout": backbone.dropout,
        "head": {
            "name": "arcface",
            "s": S,
            "m": M,
            "easy_margin": false,
            "grad_mode": "exact",
            "clamp_eps": clamp_eps,
            "ce_max": heads::CE_MAX,
        },
        "precision": precision.to_string(),
        "batch": b,
        "classes": a.classes,
        "seed": a.seed,
        "device": device_name,
        "engine_step_seconds": secs,
        "loss": loss_value,
    });
    let text = serde_json::to_string_pretty(&config)? + "\n";
    engine::io::atomic::write_atomic(&dir.join("config.json"), text.as_bytes())?;
    println!(
        "step parity: {} {} + ArcFace (s {S}, m {M}), batch {b}, {} classes, on {device_name}: loss {loss_value:.6}, \
         {n_grads} gradients, step {:.2} s; written to {}",
        a.backbone,
        precision,
        a.classes,
        secs,
        dir.display()
    );
    Ok(())
}
