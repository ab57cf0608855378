//! The chaos test: one tiny CPU training run killed with SIGKILL 25 times, at named places (inside a
//! checkpoint write before and after the rename, mid-step, during an evaluation, at an epoch's end, on
//! the last step, inside the export) and at random moments, resumed after every kill, ends with weights,
//! optimizer and head state and checkpoint metadata bit-identical to an uninterrupted run.

mod common;

use common::{exe, scratch};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 20 identities x 8 images, batch 16: 10 steps per epoch, 20 epochs; checkpoints every 2 steps,
/// evaluation every 3 (so kills land inside evaluations and between checkpoint and evaluation). The run
/// is long enough that the resumed runs, each killed within half a second, cannot finish it before the
/// last kill even on a fast idle machine (with 6 epochs one did).
fn run(cache: &Path, out: &Path, kill_at: Option<&str>) -> Command {
    let mut c = Command::new(exe());
    c.args(["train", "--device", "cpu", "--threads", "2", "--seed", "11"])
        .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
        .args(["--synth-heldout", "4", "--synth-pairs", "20", "--batch-size", "16", "--epochs", "20"])
        .args(["--checkpoint-every", "2", "--eval-every", "3", "--lr", "0.05"])
        .arg("--cache")
        .arg(cache)
        .arg("--output")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove(engine::kill_point::VAR);
    if out.join("checkpoint.safetensors").exists() {
        c.arg("--resume");
    }
    if let Some(point) = kill_at {
        c.env(engine::kill_point::VAR, point);
    }
    c
}

/// A small generator for the random kill delays (fixed seed: the test is repeatable in its choices).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs until the named point kills the process; fails if it ends any other way.
fn kill_at_point(cache: &Path, out: &Path, point: &str) {
    let o = run(cache, out, Some(point)).output().unwrap();
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGKILL),
        "kill point {point} was not reached ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Kills the run after `delay` from its start (startup included: that is a moment too).
fn kill_after(cache: &Path, out: &Path, delay: Duration) {
    let mut child = run(cache, out, None).spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the random kill at {delay:?}: the chaos run is too short"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

/// The checkpoint's JSON header and its tensor bytes.
fn checkpoint_parts(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let b = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header, b[8 + n..].to_vec())
}

#[test]
fn a_run_killed_25_times_at_named_points_and_random_moments_ends_bit_identical() {
    let root = scratch("chaos");
    let cache = root.join("cache");
    let (reference, chaos) = (root.join("reference"), root.join("chaos"));
    let o = run(&cache, &reference, None).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let ckpt = "checkpoint.safetensors";
    let named = [
        format!("before-rename:{ckpt}@1"), // before any checkpoint exists: the next run starts afresh
        "mid-step@3".to_string(),
        "evaluation@1".into(),
        format!("after-rename:{ckpt}@2"),
        "epoch-end@1".into(),
        format!("before-rename:{ckpt}@3"),
        "evaluation@2".into(),
        "mid-step@1".into(),
        format!("after-rename:{ckpt}@1"),
        "epoch-end@1".into(),
    ];
    let mut rng = Lcg(2024);
    let mut kills = 0;
    for point in &named {
        kill_at_point(&cache, &chaos, point);
        let delay = Duration::from_secs_f64(0.05 + 0.4 * rng.next());
        kill_after(&cache, &chaos, delay);
        kills += 2;
    }
    for _ in 0..2 {
        kill_after(&cache, &chaos, Duration::from_secs_f64(0.05 + 0.4 * rng.next()));
        kills += 1;
    }
    // The end of the run: after its last step (before the final checkpoint), then inside the export.
    kill_at_point(&cache, &chaos, "last-step@1");
    kill_at_point(&cache, &chaos, "before-rename:model.safetensors@1");
    kills += 2;
    assert!(kills >= 20);
    let o = run(&cache, &chaos, None).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let a = std::fs::read(reference.join("model.safetensors")).unwrap();
    let b = std::fs::read(chaos.join("model.safetensors")).unwrap();
    assert!(a == b, "after {kills} kills the weights differ from the uninterrupted run");
    let (ha, ta) = checkpoint_parts(&reference);
    let (hb, tb) = checkpoint_parts(&chaos);
    assert!(ta == tb, "optimizer, head or batch-norm state differs after {kills} kills");
    assert_eq!(ha["__metadata__"], hb["__metadata__"]);
    assert_eq!(hb["__metadata__"]["step"], "200");
    let leftovers: Vec<String> = std::fs::read_dir(&chaos)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&root);
}
