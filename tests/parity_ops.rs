//! Parity of the core ops with PyTorch: tests/parity/core_ops.py writes inputs, upstream gradients,
//! torch's outputs and gradients, and three SGD / AdamW steps; check::torch_fixtures replays them
//! on the CPU backend, each compared by norm-wise relative error, at most 1e-10 in f64 and 1e-4 in f32.
//! The same replay runs on a GPU in the opt-in test below and in `engine-train gpu-check --torch-fixtures`.

use check::torch_fixtures;
use engine::Device;
use std::path::PathBuf;

fn fixture(tag: &str) -> PathBuf {
    let dir = std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let path = dir.join(format!("core_ops_{tag}.safetensors"));
    assert!(
        path.exists(),
        "missing fixture {}: generate it with `python tests/parity/core_ops.py {}` (tests/run.sh does)",
        path.display(),
        dir.display()
    );
    path
}

fn all_close(dev: &Device, tag: &str, tol: f64) {
    let checks = torch_fixtures::core_ops(dev, &fixture(tag), tol).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        checks.len(),
        41,
        "every output, input gradient, running statistic and optimizer state of the fixture"
    );
    let bad: Vec<String> =
        checks.iter().filter(|c| !c.ok()).map(|c| format!("{}: {:e} > {:e}", c.name, c.err, c.tol)).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn core_ops_match_pytorch_in_f64() {
    all_close(&Device::Cpu, "f64", 1e-10);
}

#[test]
fn core_ops_match_pytorch_in_f32() {
    all_close(&Device::Cpu, "f32", 1e-4);
}

/// Opt-in (needs a GPU; runs in CI on tests/cuda_emu): the same ops on the CUDA backend (cuDNN
/// convolutions, batch norm and PReLU kernels, cuBLAS linear) against torch's f32 results.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_core_ops_match_pytorch_in_f32() {
    all_close(&Device::parse("cuda").expect("this test needs a CUDA GPU"), "f32", 1e-4);
}
