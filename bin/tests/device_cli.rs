//! `--device` on a machine where no GPU can be used: `cuda` and `cuda:N` stop with a sentence (never a
//! panic), `auto` trains on the CPU. CUDA_VISIBLE_DEVICES="" hides any GPU, so the outcome is the same on
//! machines with and without one.

mod common;

use common::{exe, scratch};
use std::process::{Command, Stdio};

fn train_on(device: &str, name: &str) -> std::process::Output {
    let root = scratch(name);
    Command::new(exe())
        .args(["train", "--device", device, "--threads", "2", "--seed", "7"])
        .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
        .args(["--synth-heldout", "4", "--synth-pairs", "20", "--batch-size", "16", "--epochs", "1"])
        .args(["--eval-every", "1000", "--lr", "0.05"])
        .arg("--cache")
        .arg(root.join("cache"))
        .arg("--output")
        .arg(root.join("out"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn cuda_without_a_usable_gpu_is_a_clear_error() {
    for dev in ["cuda", "cuda:1"] {
        let o = train_on(dev, &format!("nogpu-{}", dev.replace(':', "")));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--device {dev} succeeded without a GPU: {err}");
        assert!(!err.contains("panicked"), "--device {dev} panicked: {err}");
        assert!(err.contains("CUDA") && err.contains("device") || err.contains("no CUDA driver"), "--device {dev}: {err}");
    }
}

#[test]
fn auto_without_a_usable_gpu_trains_on_the_cpu() {
    let o = train_on("auto", "auto");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "--device auto failed: {err}");
    assert!(!err.contains("training on cuda"), "{err}");
}

#[test]
fn gpu_check_without_a_usable_gpu_fails_clearly() {
    let root = scratch("gpucheck");
    let o = Command::new(exe())
        .args(["gpu-check", "--train-demo", "10", "--report"])
        .arg(root.join("r.md"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked") && err.contains("CUDA"), "{err}");
}

/// Opt-in (needs a GPU): the demo set trained on the GPU for 300 steps; `gpu-check --train-demo` fails
/// unless the loss halves. Reported as ignored elsewhere, never as passed. Has not run yet.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_demo_training_loss_falls() {
    let root = scratch("gpudemo");
    let report = root.join("demo.md");
    let o = Command::new(exe())
        .args(["gpu-check", "--train-demo", "300", "--cache"])
        .arg(root.join("cache"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&report).unwrap().contains("| pass |"));
}
