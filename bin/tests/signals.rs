//! SIGTERM (Slurm's pre-emption) and SIGINT (Ctrl-C) stop a training run cleanly: a checkpoint of the
//! current step, one last line naming the signal and the checkpoint, exit status 143 / 130, and the
//! resumed run ends bit-identical to an uninterrupted one. A second signal ends the process at once.

mod common;

use common::{run_ok, scratch, train_cmd};
use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("\"event\":\"step\"")).count())
        .unwrap_or(0)
}

/// Waits until the run has logged `steps` steps.
fn wait_for_steps(child: &mut Child, out: &Path, steps: usize) {
    let start = Instant::now();
    while logged_steps(out) < steps {
        assert!(start.elapsed() < Duration::from_secs(300), "the run made no progress");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before the signal: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn send(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we spawned and have not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn finish(mut child: Child) -> (Option<i32>, String) {
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap().code(), err)
}

fn stopped_by(sig: i32, name: &str, status: i32) {
    let root = scratch(&format!("signal-{name}"));
    let cache = root.join("cache");
    let (full, stopped) = (root.join("full"), root.join("stopped"));
    run_ok(train_cmd(&cache, &full));

    let mut child = train_cmd(&cache, &stopped).spawn().unwrap();
    wait_for_steps(&mut child, &stopped, 3);
    send(&child, sig);
    let (code, err) = finish(child);
    assert_eq!(code, Some(status), "{err}");
    let last = err.lines().last().unwrap_or_default();
    let ckpt = stopped.join("checkpoint.safetensors");
    assert!(
        last.contains(&format!("stopped by {name} at step")) && last.contains(&ckpt.display().to_string()),
        "last line: {last}"
    );
    assert!(!stopped.join("model.safetensors").exists(), "the stopped run went on to finish");
    // The checkpoint holds the step the run stopped at (every 2 steps is the cadence; this one is
    // written whatever the step).
    let step: u64 = last.split("at step ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let mut resume = train_cmd(&cache, &stopped);
    resume.arg("--resume");
    let o = resume.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = String::from_utf8_lossy(&o.stderr);
    assert!(resumed.contains(&format!("at step {step} ")), "{resumed}");
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(stopped.join("model.safetensors")).unwrap();
    assert!(a == b, "the run resumed after {name} differs from the uninterrupted one");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sigterm_writes_a_checkpoint_names_it_and_exits_143() {
    stopped_by(libc::SIGTERM, "SIGTERM", 143);
}

#[test]
fn sigint_writes_a_checkpoint_names_it_and_exits_130() {
    stopped_by(libc::SIGINT, "SIGINT", 130);
}

#[test]
fn a_second_signal_ends_the_process_at_once_and_the_checkpoint_stays_whole() {
    let root = scratch("signal-twice");
    let cache = root.join("cache");
    let out = root.join("out");
    let mut child = train_cmd(&cache, &out).spawn().unwrap();
    wait_for_steps(&mut child, &out, 3);
    // The second arrives while the step the first one waits for is still running (a step takes tens of
    // milliseconds; the two signals are microseconds apart). Two different signals: a second SIGTERM
    // sent while the first is still pending would merge with it (POSIX does not queue them).
    send(&child, libc::SIGTERM);
    send(&child, libc::SIGINT);
    let (code, err) = finish(child);
    // The exit status is the signal handled second's: SIGINT's 130, or SIGTERM's 143 when both were
    // pending at once (Linux delivers the lower-numbered SIGINT first).
    assert!(matches!(code, Some(130) | Some(143)), "{code:?}: {err}");
    assert!(err.contains("second signal, exiting now"), "{err}");
    assert!(!err.contains("stopped by SIGTERM"), "the first signal's checkpoint was written anyway: {err}");
    // Whatever checkpoint is on disk resumes (the periodic ones are written atomically).
    let mut resume = train_cmd(&cache, &out);
    resume.arg("--resume");
    run_ok(resume);
    let _ = std::fs::remove_dir_all(&root);
}
