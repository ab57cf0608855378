//! Writes that never leave a half-written file behind: write to a temporary name beside the target
//! (`.<name>.tmp-<pid>`), sync, then rename over it (atomic on POSIX file systems) and sync the folder so
//! that the rename itself survives a crash. Every error path removes the temporary file (a full disk
//! must not stay full because of us); a process killed mid-write leaves one behind, which
//! `remove_stale_temporaries` deletes the next time a run starts in that folder.

use crate::kill_point;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

const TMP_MARK: &str = ".tmp-";

fn temporary_for(path: &Path) -> Result<(PathBuf, String)> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Io(format!("{}: not a file path", path.display())))?;
    let name = name.to_string_lossy().into_owned();
    Ok((dir.join(format!(".{name}{TMP_MARK}{}", std::process::id())), name))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (tmp, name) = temporary_for(path)?;
    let result = write_then_rename(&tmp, path, &name, bytes);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(tmp: &Path, path: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error, what: &str| Error::Io(format!("{}: {what}: {e}", path.display()));
    let mut f = std::fs::File::create(tmp).map_err(|e| io(e, "cannot create temporary file"))?;
    f.write_all(bytes).map_err(|e| io(e, "write failed"))?;
    f.sync_all().map_err(|e| io(e, "sync failed"))?;
    drop(f);
    kill_point::reached(&format!("before-rename:{name}"));
    std::fs::rename(tmp, path).map_err(|e| io(e, "rename failed"))?;
    // The rename lives in the folder's entries: sync them too (a failure here is not worth an error,
    // the data itself is already on disk under one of the two names).
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    kill_point::reached(&format!("after-rename:{name}"));
    Ok(())
}

/// Whether process `pid` still runs (a pid we may not signal belongs to a live process too).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) with signal 0 only checks that the process exists; no memory is involved.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes the temporary files (`.<name>.tmp-<pid>`) in `dir` left by processes that no longer run,
/// and returns them. Our own pid counts as dead: this runs before we write anything, and in a container
/// a killed run's pid is often the next run's too.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Io(format!("{}: cannot list: {e}", dir.display()))),
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(TMP_MARK))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && alive(pid) {
            continue;
        }
        let p = entry.path();
        std::fs::remove_file(&p).map_err(|e| Error::Io(format!("{}: cannot remove: {e}", p.display())))?;
        removed.push(p);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("atomic-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_keeps_the_old_one() {
        let d = scratch("fail");
        let target = d.join("c.safetensors");
        write_atomic(&target, b"old").unwrap();
        // A rename onto a non-empty folder fails after the temporary file was written in full.
        let blocked = d.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let e = write_atomic(&blocked, b"new").unwrap_err().to_string();
        assert!(e.contains("rename failed"), "{e}");
        assert_eq!(names(&d), ["blocked", "c.safetensors"]);
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed_live_ones_kept() {
        let d = scratch("stale");
        // pid 1 always runs (in a container it is the container's init); a pid above the kernel's
        // maximum (4194304) never does.
        for f in [".c.safetensors.tmp-1", ".c.safetensors.tmp-4194400", ".summary.json.tmp-4194401"] {
            std::fs::write(d.join(f), b"partial").unwrap();
        }
        std::fs::write(d.join(format!(".c.safetensors.tmp-{}", std::process::id())), b"x").unwrap();
        std::fs::write(d.join("notes.tmp-4194400"), b"not ours: no leading dot").unwrap();
        let removed = remove_stale_temporaries(&d).unwrap();
        let removed: Vec<String> =
            removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into()).collect();
        let own = format!(".c.safetensors.tmp-{}", std::process::id());
        let mut want =
            vec![own, ".c.safetensors.tmp-4194400".to_string(), ".summary.json.tmp-4194401".into()];
        want.sort();
        assert_eq!(removed, want);
        assert_eq!(names(&d), [".c.safetensors.tmp-1", "notes.tmp-4194400"]);
        assert!(remove_stale_temporaries(&d.join("absent")).unwrap().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
