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
}
