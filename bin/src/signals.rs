//! SIGTERM (Slurm's pre-emption, `kill`) and SIGINT (Ctrl-C) during training. The first one is only
//! recorded: the training loop sees it after the current step, writes a checkpoint and exits with
//! 128 + the signal's number (143, 130), as a shell reports a process the signal ended. A second one ends
//! the process at once: checkpoints are written to a temporary name and renamed, so no file is torn, and
//! the next run removes the temporary file. SIGXFSZ (a file-size limit reached) is ignored so that the
//! write fails with an error naming the file instead of the process dying without a word.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
        const MSG: &[u8] = b"engine-train: second signal, exiting now without a new checkpoint\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(128 + sig);
        }
    }
}

/// Installs the handlers; the train command calls this before it starts any work.
pub fn install() -> Result<(), String> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags) that is then filled in; the
        // handler only touches an atomic and async-signal-safe calls.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(format!(
                "cannot install a handler for {}: {}",
                name(sig),
                std::io::Error::last_os_error()
            ));
        }
    }
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    Ok(())
}

/// The first signal received, if any.
pub fn received() -> Option<i32> {
    Some(RECEIVED.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}
