//! Writes that never leave a half-written file behind: write to a temporary name beside the target, sync,
//! then rename over it (atomic on POSIX file systems).

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Io(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let io = |e: std::io::Error, what: &str| Error::Io(format!("{}: {what}: {e}", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, "cannot create temporary file"))?;
    f.write_all(bytes).map_err(|e| io(e, "write failed"))?;
    f.sync_all().map_err(|e| io(e, "sync failed"))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e, "rename failed")
    })
}
