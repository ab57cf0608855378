//! NVRTC compilation of the embedded kernel sources, with an on-disk PTX cache keyed by a hash of the
//! source, the target architecture, the options and the NVRTC version: start-up compiles each source
//! once per machine, not once per run.

use crate::{Error, Result};
use std::path::PathBuf;

/// Options every kernel is compiled with. No fast-math: the margin head and batch-norm statistics need
/// IEEE division and square root; kernels call __expf explicitly where its error is acceptable.
const NVRTC_OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; the library was found by the caller (ensure_nvrtc).
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Device(format!("nvrtcVersion failed: {r:?}")));
    }
    Ok((major, minor))
}

/// Compiles one source to PTX for `compute_<arch>` (e.g. 90), naming the source in any error.
pub fn compile_ptx(name: &str, source: &str, arch: u32) -> Result<String> {
    let mut options: Vec<String> = NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture=compute_{arch}"));
    let opts =
        cudarc::nvrtc::CompileOptions { options, name: Some(format!("{name}.cu")), ..Default::default() };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::Device(format!(
            "NVRTC could not compile kernels/{name}.cu for compute_{arch}:\n{}",
            log.to_string_lossy()
        )),
        other => Error::Device(format!("NVRTC failed on kernels/{name}.cu for compute_{arch}: {other}")),
    })?;
    Ok(ptx.to_src())
}

/// FNV-1a, 64 bits: stable across Rust versions (std's hasher is not promised to be).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Where compiled PTX is kept: `$FACETRAIN_KERNEL_CACHE`, else `$XDG_CACHE_HOME/facetrain/ptx`, else
/// `~/.cache/facetrain/ptx`; `None` when none can be named (then every start compiles).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FACETRAIN_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("facetrain").join("ptx"))
}

/// The cache file name for a source compiled for `arch` by NVRTC `version`.
pub fn cache_key(name: &str, source: &str, arch: u32, version: (i32, i32)) -> String {
    let v = format!("{}.{}", version.0, version.1);
    let h =
        fnv1a(&[source.as_bytes(), &arch.to_le_bytes(), v.as_bytes(), NVRTC_OPTIONS.join(" ").as_bytes()]);
    format!("{name}-sm{arch}-{h:016x}.ptx")
}

/// PTX for one source, from the cache when present, else compiled and stored (written to a temporary
/// name, then renamed, so a concurrent start never reads half a file). Cache failures only cost time.
pub fn cached_ptx(name: &str, source: &str, arch: u32) -> Result<String> {
    let version = nvrtc_version()?;
    let dir = cache_dir();
    let path = dir.as_ref().map(|d| d.join(cache_key(name, source, arch, version)));
    if let Some(p) = &path {
        if let Ok(text) = std::fs::read_to_string(p) {
            if text.contains(".entry") {
                return Ok(text);
            }
        }
    }
    let ptx = compile_ptx(name, source, arch)?;
    if let (Some(d), Some(p)) = (&dir, &path) {
        if std::fs::create_dir_all(d).is_ok() {
            let tmp = p.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &ptx).is_ok() && std::fs::rename(&tmp, p).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::libs::ensure_nvrtc;
    use std::collections::BTreeMap;
    use std::process::Command;

    /// ptxas from the nvidia-cuda-nvcc wheel sits in ../bin of the NVRTC wheel's lib directory;
    /// `$FACETRAIN_PTXAS` overrides.
    fn find_ptxas() -> PathBuf {
        if let Some(p) = std::env::var_os("FACETRAIN_PTXAS") {
            return PathBuf::from(p);
        }
        if let Some(d) = std::env::var_os("FACETRAIN_NVRTC_DIR") {
            let p = PathBuf::from(d).join("..").join("bin").join("ptxas");
            if p.exists() {
                return p;
            }
        }
        if let Ok(out) = Command::new("sh").arg("-c").arg("command -v ptxas").output() {
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !s.is_empty() {
                return PathBuf::from(s);
            }
        }
        panic!(
            "ptxas not found: set FACETRAIN_PTXAS, or FACETRAIN_NVRTC_DIR with the nvidia-cuda-nvcc==13.0.88 \
             wheel installed beside it (tests/run.sh does both)"
        );
    }

    #[derive(Debug, Default)]
    struct Resources {
        registers: u32,
        spill_bytes: u32,
        stack_bytes: u32,
    }

    /// Parses `ptxas -v` output into per-kernel resources.
    fn parse_ptxas(log: &str) -> BTreeMap<String, Resources> {
        let mut out = BTreeMap::new();
        let mut current: Option<String> = None;
        let num_before = |line: &str, unit: &str| -> Option<u32> {
            let idx = line.find(unit)?;
            line[..idx].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        for line in log.lines() {
            if let Some(i) = line.find("Compiling entry function '") {
                let rest = &line[i + "Compiling entry function '".len()..];
                current = rest.split('\'').next().map(str::to_string);
                out.insert(current.clone().unwrap(), Resources::default());
            } else if let Some(name) = &current {
                let r = out.get_mut(name).unwrap();
                if line.contains("bytes stack frame") {
                    r.stack_bytes = num_before(line, "bytes stack frame").unwrap_or(0);
                    r.spill_bytes = num_before(line, "bytes spill stores").unwrap_or(0)
                        + num_before(line, "bytes spill loads").unwrap_or(0);
                }
                if line.contains("Used ") && line.contains(" registers") {
                    r.registers = num_before(line, "registers").unwrap_or(0);
                }
            }
        }
        out
    }

    /// Every kernel name the Rust launch code can ask for exists in the compiled PTX: a typo would
    /// otherwise surface only on a GPU. Names come from string literals ending in a dtype suffix and
    /// from `kname!("stem", ...)`, which expands to the f32/bf16/f16 variants.
    fn check_launched_names_exist(entries: &BTreeMap<String, Resources>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda");
        let mut wanted = Vec::new();
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("rs") || path.ends_with("compile.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, piece) in text.split('"').enumerate() {
                let ident = !piece.is_empty()
                    && !piece.starts_with('_')
                    && piece.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if i % 2 == 0 || !ident || kernels::ALL.iter().any(|k| k.name == piece) {
                    continue;
                }
                let stem_of_kname = text.contains(&format!("kname!(\"{piece}\""));
                if stem_of_kname {
                    wanted.extend(["f32", "bf16", "f16"].map(|s| format!("{piece}_{s}")));
                } else if piece.ends_with("_f32")
                    || piece.ends_with("_bf16")
                    || piece.ends_with("_f16")
                    || piece.starts_with("bn_")
                    || piece.starts_with("margin_")
                {
                    wanted.push(piece.to_string());
                }
            }
        }
        assert!(wanted.len() > 40, "found only {} kernel names in the launch code", wanted.len());
        for name in wanted {
            assert!(
                entries.contains_key(&name),
                "the launch code asks for kernel {name}, which no source defines"
            );
        }
    }

    #[test]
    fn parse_ptxas_reads_registers_and_spills() {
        let log = "ptxas info    : Compiling entry function 'k' for 'sm_90'\n\
                   ptxas info    : Function properties for k\n\
                   \x20   16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
                   ptxas info    : Used 40 registers, used 1 barriers, 384 bytes cmem[0]\n";
        let r = parse_ptxas(log);
        assert_eq!(r["k"].registers, 40);
        assert_eq!(r["k"].spill_bytes, 12);
        assert_eq!(r["k"].stack_bytes, 16);
    }

    #[test]
    fn cache_key_changes_with_source_and_arch() {
        let a = cache_key("k", "src", 90, (13, 0));
        assert_ne!(a, cache_key("k", "src2", 90, (13, 0)));
        assert_ne!(a, cache_key("k", "src", 80, (13, 0)));
        assert_ne!(a, cache_key("k", "src", 90, (13, 1)));
        assert_eq!(a, cache_key("k", "src", 90, (13, 0)));
    }

    /// Every kernel source compiles with NVRTC for sm_80 and sm_90; ptxas then assembles the sm_90 PTX
    /// and no kernel may spill, and the hot kernels stay within their register bounds.
    #[test]
    fn every_kernel_compiles_to_ptx_and_assembles_without_spills() {
        ensure_nvrtc().unwrap_or_else(|e| panic!("{e}"));
        let (major, minor) = nvrtc_version().unwrap();
        println!("NVRTC {major}.{minor}");
        let ptxas = find_ptxas();
        let dir = std::env::temp_dir().join(format!("facetrain-ptx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut all = BTreeMap::new();
        for k in kernels::ALL {
            for arch in [80u32, 90] {
                let ptx = compile_ptx(k.name, k.source, arch).unwrap_or_else(|e| panic!("{e}"));
                assert!(ptx.contains(".entry"), "{} for sm_{arch} produced no kernel", k.name);
                assert!(ptx.contains(&format!(".target sm_{arch}")), "{}: wrong target", k.name);
                if arch != 90 {
                    continue;
                }
                let file = dir.join(format!("{}.ptx", k.name));
                std::fs::write(&file, &ptx).unwrap();
                let out = Command::new(&ptxas)
                    .args(["-arch=sm_90", "-v", "-o", "/dev/null"])
                    .arg(&file)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
                let log =
                    String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "ptxas rejected {}.ptx:\n{log}", k.name);
                let res = parse_ptxas(&log);
                assert!(!res.is_empty(), "no kernels in ptxas output for {}:\n{log}", k.name);
                all.extend(res);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        check_launched_names_exist(&all);
        println!("{:<32} {:>5} {:>6} {:>6}", "kernel (sm_90)", "regs", "stack", "spill");
        for (name, r) in &all {
            println!("{name:<32} {:>5} {:>6} {:>6}", r.registers, r.stack_bytes, r.spill_bytes);
        }
        for (name, r) in &all {
            assert_eq!(r.spill_bytes, 0, "{name} spills {} bytes", r.spill_bytes);
        }
        for (name, bound) in kernels::HOT_KERNELS {
            let r = all.get(*name).unwrap_or_else(|| panic!("hot kernel {name} missing from the PTX"));
            assert!(r.registers <= *bound, "{name} uses {} registers, bound {bound}", r.registers);
        }
    }
}
