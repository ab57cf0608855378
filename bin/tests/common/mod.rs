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

/// Training on the tiny demo set: 20 identities x 8 images of 32 px, batch 16 (10 steps per epoch), on
/// the CPU; the recipe is left to the caller.
pub fn tiny_train_cmd(cache: &Path, out: &Path) -> Command {
    tiny_train_cmd_with(cache, out, 16, 2)
}

/// `tiny_train_cmd` with `batch` images per step (per rank) and `threads` threads.
pub fn tiny_train_cmd_with(cache: &Path, out: &Path, batch: usize, threads: usize) -> Command {
    tiny_train_cmd_evaluating(cache, out, batch, threads, 1000)
}

/// `tiny_train_cmd_with`, evaluating every `eval_every` steps.
pub fn tiny_train_cmd_evaluating(
    cache: &Path,
    out: &Path,
    batch: usize,
    threads: usize,
    eval_every: u64,
) -> Command {
    let mut c = Command::new(exe());
    c.args(["train", "--device", "cpu", "--threads", &threads.to_string(), "--seed", "7"])
        .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
        .args(["--synth-heldout", "4", "--synth-pairs", "20", "--batch-size", &batch.to_string()])
        .args(["--eval-every", &eval_every.to_string()])
        .arg("--cache")
        .arg(cache)
        .arg("--output")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A tiny demo run: `tiny_train_cmd` for 2 epochs at lr 0.05, a checkpoint every 2 steps.
pub fn train_cmd(cache: &Path, out: &Path) -> Command {
    let mut c = tiny_train_cmd(cache, out);
    c.args(["--epochs", "2", "--checkpoint-every", "2", "--lr", "0.05"]);
    c
}

/// The `step` events of the run's metrics log, in order.
pub fn step_events(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .collect()
}

pub fn run_ok(mut c: Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "engine-train failed: {}", String::from_utf8_lossy(&o.stderr));
}
