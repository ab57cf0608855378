//! `train --gpus N`: one node's job without a launcher. This process starts N copies of itself, one rank
//! per GPU, with the variables torchrun would set (rendezvous on a free local port), and stays as their
//! supervisor:
//! - SIGTERM and SIGINT are forwarded to every rank, which checkpoint (rank 0) and exit together. The ranks
//!   run in their own process group, so a terminal's Ctrl-C reaches them once, through here.
//! - When a rank fails, the others learn it from their collectives or heartbeats and stop on their own;
//!   any still running `GRACE` later (hung, stopped) is killed.
//! - The exit status is the first failed rank's, or 0.
//! - Should this process die without a word (SIGKILL), every rank gets SIGTERM from the kernel
//!   (`PR_SET_PDEATHSIG`) and stops as after a Ctrl-C: no rank trains on unsupervised.

use engine::{Error, Result};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long ranks still running after one failed are given to stop by themselves.
const GRACE: Duration = Duration::from_secs(15);

/// Runs `gpus` ranks of this same command line (`args`, without the program name) writing to `output`;
/// returns the job's exit status.
pub fn launch(gpus: usize, args: Vec<OsString>, output: &Path) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::Io(format!("cannot find this program: {e}")))?;
    let port = free_port()?;
    let mut args = args;
    if !args.iter().any(|a| a == "--output" || a.to_string_lossy().starts_with("--output=")) {
        // Every rank must name the same folder: the default one is chosen here, once.
        args.extend(["--output".into(), output.as_os_str().to_owned()]);
    }
    eprintln!("starting {gpus} ranks on this machine (rendezvous 127.0.0.1:{port})");
    let mut children: Vec<Option<Child>> = Vec::with_capacity(gpus);
    for rank in 0..gpus {
        let mut c = Command::new(&exe);
        c.args(&args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", gpus.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", gpus.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .process_group(0);
        let parent = std::process::id() as i32;
        // SAFETY: between fork and exec the closure only makes async-signal-safe system calls (prctl,
        // getppid, kill) and touches no memory of the parent.
        unsafe {
            c.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the call: then no signal would come.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
        match c.spawn() {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                stop_all(&mut children, libc::SIGKILL);
                return Err(Error::Io(format!("cannot start rank {rank} ({}): {e}", exe.display())));
            }
        }
    }
    supervise(children)
}

/// Waits for every rank, forwarding signals and ending stragglers after a failure.
fn supervise(mut children: Vec<Option<Child>>) -> Result<i32> {
    let pids: Vec<i32> = children.iter().flatten().map(|c| c.id() as i32).collect();
    let mut forwarded = 0;
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    let mut failed_at: Option<Instant> = None;
    let code = |st: &ExitStatus| st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
    let mut stopped_by_signal = false;
    loop {
        if let Some(sig) = crate::signals::received().filter(|_| forwarded == 0) {
            forwarded = sig;
            for &pid in &pids {
                // SAFETY: kill(2) on a child's pid with a constant signal.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
        let mut failed_now: Vec<(usize, ExitStatus)> = Vec::new();
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(c) = slot else { continue };
            if let Some(st) = c.try_wait().map_err(|e| Error::Io(format!("waiting for rank {rank}: {e}")))? {
                *slot = None;
                // A rank ending as the forwarded signal asks (130, 143) has not failed.
                if forwarded != 0 && code(&st) == 128 + forwarded {
                    stopped_by_signal = true;
                } else if !st.success() {
                    failed_now.push((rank, st));
                }
            }
        }
        if first_failure.is_none() && !failed_now.is_empty() {
            // Seen in the same poll, a rank killed by a signal is the likelier cause of the others' errors.
            failed_now.sort_by_key(|(r, st)| (st.signal().is_none(), *r));
            first_failure = failed_now.first().copied();
            failed_at = Some(Instant::now());
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            let left: Vec<usize> = (0..children.len()).filter(|&r| children[r].is_some()).collect();
            eprintln!(
                "engine-train: ranks {left:?} still run {}s after a rank failed: killing them",
                GRACE.as_secs()
            );
            stop_all(&mut children, libc::SIGKILL);
            failed_at = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        None if stopped_by_signal => Ok(128 + forwarded),
        None => Ok(0),
        Some((rank, st)) => {
            let how = match (st.code(), st.signal()) {
                (Some(c), _) => format!("exited with status {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "ended".to_string(),
            };
            eprintln!("engine-train: rank {rank} {how}, the first rank to fail; the job stops");
            Ok(code(&st).max(1))
        }
    }
}

fn stop_all(children: &mut [Option<Child>], sig: i32) {
    for c in children.iter_mut().flatten() {
        // SAFETY: kill(2) on a child's pid with a constant signal.
        unsafe {
            libc::kill(c.id() as i32, sig);
        }
    }
}

/// A port nothing listens on now (the kernel's pick), for rank 0 to take.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::Io(format!("cannot find a free local port for the ranks to meet: {e}")))?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::Io(format!("cannot find a free local port: {e}")))
}
