//! A test hook for the kill-and-resume tests: with `FACETRAIN_TEST_KILL_AT=<point>` (or `<point>@<n>`)
//! in its environment, the process sends itself SIGKILL the first (n-th) time it reaches the named
//! point, so a test can kill a run at an exact place (inside a checkpoint write, between the rename and
//! the next step, during evaluation) instead of hoping a timer lands there. Without the variable a point
//! costs one load of a once-initialized value.
//!
//! Points: `nccl-init` (before a rank joins the job's NCCL communicator), `step-start` (before a step's
//! forward), `mid-step` (after the forward and backward, before the
//! update), `epoch-end` (after an epoch's
//! last step, before its checkpoint), `last-step` (after the run's last step, before the final
//! checkpoint), `evaluation` (between the embeddings of an evaluation and its report), and
//! `before-rename:<file>` / `after-rename:<file>` inside an atomic write of `<file>`.
//!
//! In a job of several ranks, `FACETRAIN_TEST_KILL_RANK=<r>` arms the point in rank r alone (its `RANK`),
//! and `FACETRAIN_TEST_KILL_SIGNAL=SIGSTOP` stops the process there instead (a hung rank, silent on its
//! heartbeat links too), `FACETRAIN_TEST_KILL_SIGNAL=HANG` blocks the thread that reached it forever (a
//! rank stuck in its own work whose other threads still answer: only a collective's timeout sees it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms a kill point.
pub const VAR: &str = "FACETRAIN_TEST_KILL_AT";

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var(VAR).ok()?;
        if let Ok(r) = std::env::var("FACETRAIN_TEST_KILL_RANK") {
            if std::env::var("RANK").ok() != Some(r) {
                return None;
            }
        }
        match v.rsplit_once('@') {
            Some((name, n)) => Some((name.to_string(), n.parse().ok().filter(|&n| n >= 1)?)),
            None => Some((v, 1)),
        }
    })
}

/// Kills the process here if `FACETRAIN_TEST_KILL_AT` names this point and this is its n-th pass.
pub fn reached(point: &str) {
    let Some((name, nth)) = target() else { return };
    if name != point || PASSES.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    let how = std::env::var("FACETRAIN_TEST_KILL_SIGNAL").unwrap_or_default();
    if how == "HANG" {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let stop = how == "SIGSTOP";
    // SAFETY: kill(2) on our own pid with a constant signal; it has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), if stop { libc::SIGSTOP } else { libc::SIGKILL });
    }
    if stop {
        // Continued (SIGCONT): carry on as if nothing happened.
        return;
    }
    // SIGKILL to oneself is delivered before kill returns; abort is only a fallback.
    std::process::abort();
}
