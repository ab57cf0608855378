//! CUDA C sources of the engine's kernels, embedded in the binary and compiled by NVRTC at start-up.
//! Each source names the CPU function it must match in its first comment. `common.cuh` (16-bit
//! conversions, reductions) is prepended to every source, so NVRTC needs no include path.

/// One kernel source: its module name and full text (common header included).
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! source {
    ($name:literal) => {
        KernelSource {
            name: $name,
            source: concat!(
                include_str!("../cuda/common.cuh"),
                "\n",
                include_str!(concat!("../cuda/", $name, ".cu"))
            ),
        }
    };
}

pub const ELEMENTWISE: KernelSource = source!("elementwise");
pub const REDUCE: KernelSource = source!("reduce");
pub const BATCH_NORM: KernelSource = source!("batch_norm");
pub const PRELU: KernelSource = source!("prelu");
pub const DROPOUT: KernelSource = source!("dropout");
pub const L2NORM: KernelSource = source!("l2norm");
pub const OPTIM: KernelSource = source!("optim");
pub const AMP: KernelSource = source!("amp");
pub const INPUT: KernelSource = source!("input");
pub const MARGIN_HEAD: KernelSource = source!("margin_head");

/// Every kernel source, for the NVRTC compile check and for the CUDA backend.
pub const ALL: &[KernelSource] =
    &[ELEMENTWISE, REDUCE, BATCH_NORM, PRELU, DROPOUT, L2NORM, OPTIM, AMP, INPUT, MARGIN_HEAD];

/// Kernels on the training step's hot path, with the most registers each may use on sm_90 before the
/// ptxas check calls it a regression (none may spill). The bounds leave room for 8 blocks of 256
/// threads per SM (64K registers / 2048 threads = 32) except where one block per row is the design.
pub const HOT_KERNELS: &[(&str, u32)] = &[
    ("channel_affine_bf16", 32),
    ("bn_stats_partial_bf16", 40),
    ("bn_bwd_partial_bf16", 40),
    ("bn_bwd_dx_bf16", 40),
    ("residual_add_bf16", 32),
    ("sgd_f32", 32),
    ("adamw_f32", 40),
    ("margin_fwd_block_bf16", 64),
    ("margin_bwd_block_bf16", 64),
    ("u8_to_nhwc_bf16", 32),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_is_named_once_and_states_its_cpu_reference() {
        let mut names: Vec<_> = ALL.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for k in ALL {
            let body = k.source.split_once("#define ROWS_Y 8").map(|(_, b)| b).unwrap_or("");
            assert!(body.contains("engine::"), "{} does not name the CPU function it must match", k.name);
            assert!(body.contains("extern \"C\" __global__"), "{} has no kernel", k.name);
        }
    }

    #[test]
    fn hot_kernels_exist() {
        for (name, _) in HOT_KERNELS {
            let hit = ALL.iter().any(|k| {
                k.source.contains(&format!("void {name}(")) || {
                    // Macro-instantiated: NAME_##SUF with the suffix after the last '_'.
                    let (stem, suf) = name.rsplit_once('_').unwrap();
                    k.source.contains(&format!("void {stem}_##SUF("))
                        && k.source.contains(&format!("({suf},"))
                }
            });
            assert!(hit, "hot kernel {name} not found in any source");
        }
    }

    /// The Rust paths (`engine::...`, `datasets::...`) a source's leading comment names, brace groups
    /// expanded: `engine::a::{b, c}` gives `engine::a::b` and `engine::a::c`.
    fn named_paths(header: &str) -> Vec<String> {
        let text: String =
            header.lines().map(|l| l.trim_start_matches("//").trim()).collect::<Vec<_>>().join(" ");
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = ["engine::", "datasets::"].iter().filter_map(|p| rest.find(p)).min() {
            rest = &rest[at..];
            let end =
                rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let (path, after) = rest.split_at(end);
            match after.strip_prefix('{').and_then(|a| a.split_once('}')) {
                Some((group, tail)) if path.ends_with("::") => {
                    out.extend(group.split(',').map(|n| format!("{path}{}", n.trim())));
                    rest = tail;
                }
                _ => {
                    out.push(path.trim_end_matches(':').to_string());
                    rest = after;
                }
            }
        }
        out
    }

    /// Whether `text` defines `item` (`fn`, `struct`, `enum`, `const` or `trait` followed by the name).
    fn defines(text: &str, item: &str) -> bool {
        ["fn ", "struct ", "enum ", "const ", "trait "].iter().any(|k| {
            let pat = format!("{k}{item}");
            text.match_indices(&pat).any(|(at, _)| {
                let next = text[at + pat.len()..].chars().next();
                !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
    }

    /// The file defining `item` for a reference resolved to `file` (a module in `dir`): `file` itself, or,
    /// when `file` re-exports the name (`pub use`), the file of `dir` that defines it.
    fn defining_file(
        file: &std::path::Path,
        dir: &std::path::Path,
        item: &str,
    ) -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string(file).ok()?;
        if defines(&text, item) {
            return Some(file.to_path_buf());
        }
        let word = |l: &str| l.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|w| w == item);
        let reexported = text.split(';').any(|stmt| stmt.trim_start().starts_with("pub use") && word(stmt));
        if !reexported {
            return None;
        }
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs")
                    && std::fs::read_to_string(&p).is_ok_and(|t| defines(&t, item))
                {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Every "must match" path of every kernel source names a module that exists and items defined
    /// there: `engine::a::b::f` needs `engine/src/a/b.rs` (or `b/mod.rs`) to define `f`.
    #[test]
    fn every_named_cpu_reference_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        for k in ALL {
            let own = k.source.split_once("#define ROWS_Y 8").map(|(_, b)| b).unwrap_or(k.source);
            let header: String =
                own.trim_start().lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
            let paths = named_paths(&header);
            assert!(!paths.is_empty(), "{}: its first comment names no engine:: function", k.name);
            for path in paths {
                let mut segs = path.split("::");
                let krate = segs.next().unwrap();
                let mut dir = root.join(krate).join("src");
                let mut file = dir.join("lib.rs");
                let mut items = Vec::new();
                for seg in segs {
                    if items.is_empty() && dir.join(format!("{seg}.rs")).is_file() {
                        file = dir.join(format!("{seg}.rs"));
                        dir = dir.join(seg);
                    } else if items.is_empty() && dir.join(seg).join("mod.rs").is_file() {
                        dir = dir.join(seg);
                        file = dir.join("mod.rs");
                    } else {
                        items.push(seg);
                    }
                }
                let scope = if dir.is_dir() { dir.clone() } else { file.parent().unwrap().to_path_buf() };
                assert!(!items.is_empty(), "{}: {path} names a module, not a function", k.name);
                // The first item in the module (or re-exported by it), the rest (methods) beside it.
                let mut at = file.clone();
                for item in items {
                    at = defining_file(&at, &scope, item)
                        .unwrap_or_else(|| panic!("{}: {path}: no `{item}` in {}", k.name, at.display()));
                }
                checked += 1;
            }
        }
        assert!(checked >= ALL.len());
    }

    #[test]
    fn a_wrong_reference_is_caught() {
        assert_eq!(
            named_paths("// must match engine::a::{b, c} and datasets::x::y."),
            ["engine::a::b", "engine::a::c", "datasets::x::y"]
        );
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src/heads");
        // The reference margin_head.cu used to give: no heads/margin.rs, no `margin` in heads/mod.rs (a
        // `fn margin` elsewhere in the folder, MagFace's, does not count).
        assert!(defining_file(&root.join("mod.rs"), &root, "margin").is_none());
        assert!(defining_file(&root.join("maps.rs"), &root, "target_logit").is_some());
        // Re-exported from a sibling file.
        let backend = root.join("../backend");
        assert!(defining_file(&backend.join("mod.rs"), &backend, "dropout_keep").is_some());
    }
}
