//! Kill-and-resume: a CPU run killed with SIGKILL in the middle of an epoch and resumed with `--resume`
//! ends with weights bit-identical to an uninterrupted run with the same seed.

mod common;

use common::{run_ok, scratch, train_cmd};
use std::path::Path;
use std::time::{Duration, Instant};

fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"event\":\"step\"")).count())
        .unwrap_or(0)
}

#[test]
fn killed_and_resumed_run_matches_an_uninterrupted_one() {
    kill_and_resume("run", &[]);
}

/// fp16 (emulated on the CPU) too: the loss scaler's state travels in the checkpoint.
#[test]
fn killed_and_resumed_fp16_run_matches_an_uninterrupted_one() {
    kill_and_resume("run-fp16", &["--precision", "fp16"]);
}

fn kill_and_resume(name: &str, extra: &[&str]) {
    let root = scratch(name);
    let cache = root.join("cache");
    let (full, killed) = (root.join("full"), root.join("killed"));
    let cmd = |out: &Path| {
        let mut c = train_cmd(&cache, out);
        c.args(extra);
        c
    };
    run_ok(cmd(&full));

    let mut child = cmd(&killed).spawn().unwrap();
    let start = Instant::now();
    // Kill in the middle of the first epoch, after at least one checkpoint (every 2 steps).
    while logged_steps(&killed) < 5 {
        assert!(start.elapsed() < Duration::from_secs(300), "the run to be killed made no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(!killed.join("model.safetensors").exists(), "the killed run finished anyway");
    assert!(killed.join("checkpoint.safetensors").exists());

    let mut resume = cmd(&killed);
    resume.arg("--resume");
    run_ok(resume);

    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let ca = engine_checkpoint_tensors(&full.join("checkpoint.safetensors"));
    let cb = engine_checkpoint_tensors(&killed.join("checkpoint.safetensors"));
    assert!(ca == cb, "optimizer or head state differs after resume");
    let (ma, mb) = (checkpoint_metadata(&full), checkpoint_metadata(&killed));
    assert!(ma == mb, "checkpoint metadata differs after resume: {ma} vs {mb}");
    if !extra.is_empty() {
        assert!(ma["loss_scale"].is_string(), "no loss scale in {ma}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The checkpoint's metadata (step, epoch, run settings, the fp16 loss scaler's state).
fn checkpoint_metadata(dir: &Path) -> serde_json::Value {
    let b = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

/// The checkpoint's bytes after its JSON header (tensor data only: the header has the same names).
fn engine_checkpoint_tensors(p: &Path) -> Vec<u8> {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    b[8 + n..].to_vec()
}

#[test]
fn resume_without_a_checkpoint_and_an_occupied_output_are_clear_errors() {
    let root = scratch("errors");
    let out = root.join("out");
    let mut c = train_cmd(&root.join("cache"), &out);
    c.arg("--resume");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("checkpoint.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
