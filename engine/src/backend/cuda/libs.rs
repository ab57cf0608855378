//! Finding the CUDA libraries that cudarc loads by name. cudarc dlopens `libnvrtc.so.13` and friends by
//! bare name, so they must be on the loader's path; when they live in a directory the loader does not
//! search (a pip wheel, say), loading each by full path first makes the later by-name dlopen find the
//! already-loaded library through its soname.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Libraries loaded by full path; kept open for the life of the process.
static PRELOADED: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());

/// Loads every file in `dir` whose name starts with one of `prefixes` and contains ".so".
/// Returns the paths loaded.
pub fn preload_dir(dir: &Path, prefixes: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Device(format!("cannot list CUDA library directory {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.contains(".so") && prefixes.iter().any(|pre| name.starts_with(pre))
        })
        .collect();
    // Builtins first: libnvrtc opens them by name while compiling.
    paths.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    let mut loaded = Vec::new();
    let mut keep = PRELOADED.lock().map_err(|_| Error::Device("library registry poisoned".into()))?;
    for p in paths {
        // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(&p) } {
            Ok(lib) => {
                keep.push(lib);
                loaded.push(p);
            }
            Err(e) => return Err(Error::Device(format!("cannot load {}: {e}", p.display()))),
        }
    }
    Ok(loaded)
}

/// Makes libnvrtc loadable: from `$FACETRAIN_NVRTC_DIR` when set, else from the loader's path.
pub fn ensure_nvrtc() -> Result<()> {
    if let Some(dir) = std::env::var_os("FACETRAIN_NVRTC_DIR") {
        let dir = PathBuf::from(dir);
        let loaded = preload_dir(&dir, &["libnvrtc"])?;
        if loaded.is_empty() {
            return Err(Error::Device(format!(
                "FACETRAIN_NVRTC_DIR={} holds no libnvrtc*.so*",
                dir.display()
            )));
        }
    }
    // SAFETY: only tries to dlopen the library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Device(
            "libnvrtc (CUDA 13) not found: set FACETRAIN_NVRTC_DIR to the directory holding libnvrtc.so.13 \
             (pip install nvidia-cuda-nvrtc==13.0.88; tests/run.sh does this) or put it on LD_LIBRARY_PATH"
                .into(),
        ))
    }
}
