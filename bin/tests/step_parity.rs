//! Opt-in (needs a CUDA device): one whole training step of the small IResNet + ArcFace on the GPU,
//! `engine-train gpu-check --step-parity`, against the same step in PyTorch (`bench/step_parity.py`, on
//! the CPU) with the same weights and batch: loss, embedding, every gradient, running statistics.
//! tests/run.sh runs these on the host emulation of the CUDA libraries (`--ignored gpu_`); on a GPU
//! machine they run on the card. 32x32 inputs keep the emulated step to a few seconds; bench/gpu-check.sh
//! (stage `parity`) does IR-50 at batch 64 on a real GPU. PyTorch comes from FACETRAIN_PYTHON (tests/run.sh
//! exports it); without it these fail rather than skip.

mod common;

use common::{exe, scratch};
use std::path::PathBuf;
use std::process::Command;

fn python() -> String {
    std::env::var("FACETRAIN_PYTHON")
        .expect("FACETRAIN_PYTHON is not set: a Python with torch (tests/run.sh sets it to .venv/bin/python)")
}

fn step_parity(precision: &str) {
    let dir = scratch(&format!("step-parity-{precision}"));
    let o = Command::new(exe())
        .args(["gpu-check", "--step-parity"])
        .arg(&dir)
        .args(["--backbone", "small", "--input-size", "32", "--batch", "8", "--classes", "100"])
        .args(["--precision", precision])
        .output()
        .unwrap();
    let engine_out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "gpu-check --step-parity failed: {engine_out}");
    for f in ["config.json", "model.safetensors", "inputs.safetensors", "engine.safetensors"] {
        assert!(dir.join(f).exists(), "{f} not written: {engine_out}");
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/step_parity.py");
    // PyTorch on the CPU, away from the emulated CUDA libraries on LD_LIBRARY_PATH.
    let o = Command::new(python())
        .arg(&script)
        .arg(&dir)
        .args(["--device", "cpu", "--f64"])
        .env_remove("LD_LIBRARY_PATH")
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&o.stdout);
    println!("{engine_out}{table}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.status.success(),
        "bench/step_parity.py reports a miss:\n{table}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every row of both tables, and the step's tensors all compared (58 gradients of the small IResNet +
    // the classifier's).
    assert!(
        table.contains("all 58 gradients together") && table.contains("num_batches_tracked (19 tensors)"),
        "{table}"
    );
    assert!(table.trim_end().ends_with("step parity: pass"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs a CUDA GPU (or tests/cuda_emu) and FACETRAIN_PYTHON with torch; run with --ignored gpu_"]
fn gpu_step_parity_small_f32_matches_pytorch() {
    step_parity("f32");
}

#[test]
#[ignore = "needs a CUDA GPU (or tests/cuda_emu) and FACETRAIN_PYTHON with torch; run with --ignored gpu_"]
fn gpu_step_parity_small_bf16_matches_pytorch() {
    step_parity("bf16");
}
