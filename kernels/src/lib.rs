//! CUDA C sources of the engine's kernels, embedded in the binary and compiled by NVRTC at start-up.
//! Each source names the CPU function (in `engine::backend::cpu`) it must match.

/// One kernel source: its file name and text.
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
}

/// Every kernel source, for the NVRTC compile check and for the CUDA backend.
pub const ALL: &[KernelSource] = &[];
