//! Shared by the command-line tests: a tiny demo training run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_engine-train")
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("facetrain-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny demo run: 20 identities x 8 images of 32 px, batch 16 (10 steps per epoch), 2 epochs.
pub fn train_cmd(cache: &Path, out: &Path) -> Command {
    let mut c = Command::new(exe());
    c.args(["train", "--device", "cpu", "--threads", "2", "--seed", "7"])
        .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
        .args(["--synth-heldout", "4", "--synth-pairs", "20", "--batch-size", "16", "--epochs", "2"])
        .args(["--checkpoint-every", "2", "--eval-every", "1000", "--lr", "0.05"])
        .arg("--cache")
        .arg(cache)
        .arg("--output")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

pub fn run_ok(mut c: Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "engine-train failed: {}", String::from_utf8_lossy(&o.stderr));
}
