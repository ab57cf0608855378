//! Parity of every head with the PyTorch autograd reference (tests/parity/heads_ref.py): loss, both
//! gradients and the running state over several steps, by norm-wise relative error, at most 1e-5 in f64
//! and 1e-4 in f32. check::torch_fixtures replays the fixtures through `heads::loss`, here on
//! the CPU backend (on a GPU in the opt-in test below and `engine-train gpu-check --torch-fixtures`).

use check::torch_fixtures;
use engine::heads;
use engine::Device;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn every_head_matches(dev: &Device, dtypes: &[&str]) {
    let dir = fixtures_dir();
    let mut failures = Vec::new();
    for &dtype in dtypes {
        let (checks, covered) = torch_fixtures::heads(dev, &dir, dtype).unwrap_or_else(|e| {
            panic!("{e}. Generate the fixtures with `python tests/parity/heads_ref.py {}` (tests/run.sh does this)", dir.display())
        });
        let worst = checks.iter().max_by(|a, b| a.err.total_cmp(&b.err)).expect("no comparisons");
        eprintln!(
            "heads parity {dtype}: {} comparisons; worst {:e} ({})",
            checks.len(),
            worst.err,
            worst.name
        );
        for n in heads::names() {
            assert!(covered.iter().any(|c| c == n), "no {dtype} PyTorch fixture covers head '{n}'");
        }
        failures.extend(
            checks.iter().filter(|c| !c.ok()).map(|c| format!("{}: error {:e} > {:e}", c.name, c.err, c.tol)),
        );
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_head_matches_pytorch() {
    every_head_matches(&Device::Cpu, &["f64", "f32"]);
}

/// Opt-in (needs a GPU; runs in CI on tests/cuda_emu): every head on the CUDA backend (margin_head.cu,
/// with fixed parameters or row plans) against torch's f32 fixtures.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_every_head_matches_pytorch() {
    every_head_matches(&Device::parse("cuda").expect("this test needs a CUDA GPU"), &["f32"]);
}
