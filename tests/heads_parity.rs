//! Parity of every head with the PyTorch autograd reference (tests/parity/heads_ref.py): loss, both
//! gradients and the running state over several steps, by norm-wise relative error, at most 1e-5 in f64
//! and 1e-4 in f32.

use engine::heads::{self, HeadParams, RunOptions};
use engine::io::safetensors;
use engine::tape::gradcheck::rel_error;
use engine::Tensor;
use std::path::{Path, PathBuf};

fn fixtures_dir() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().expect("host tensor")
}

/// Runs one fixture and returns its errors as (what, error, tolerance).
fn check_fixture(path: &Path) -> Vec<(String, f64, f64)> {
    let st = safetensors::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let meta = |k: &str| st.metadata.get(k).unwrap_or_else(|| panic!("{}: no metadata '{k}'", path.display())).clone();
    let name = meta("head");
    let dtype = meta("dtype");
    let steps: usize = meta("steps").parse().unwrap();
    let mut params = HeadParams::default();
    for (k, v) in &st.metadata {
        if let Some(flag) = k.strip_prefix("param.") {
            params.set(flag, v).unwrap();
        }
    }
    let mut head = heads::from_name(&name, &params).unwrap();
    let x = st.require("embeddings", path).unwrap();
    let w = st.require("weight", path).unwrap();
    let labels = st.require("labels", path).unwrap().to_vec::<i64>().unwrap();
    let dim = x.dims()[1];
    let tol = if dtype == "f64" { 1e-5 } else { 1e-4 };
    let mut errs = Vec::new();
    for k in 0..steps {
        let (loss, gx, gw) = if dtype == "f64" {
            let o = heads::run(x.as_slice::<f64>().unwrap(), w.as_slice::<f64>().unwrap(), &labels, dim, head.as_mut(), &RunOptions::default())
                .unwrap();
            (o.loss, o.grad_x, o.grad_w)
        } else {
            let o = heads::run(x.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap(), &labels, dim, head.as_mut(), &RunOptions::default())
                .unwrap();
            let up = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
            (o.loss, up(o.grad_x), up(o.grad_w))
        };
        let get = |n: &str| f64s(st.require(&format!("{n}.{k}"), path).unwrap());
        errs.push((format!("loss.{k}"), rel_error(&[loss], &get("loss")), tol));
        errs.push((format!("grad_embeddings.{k}"), rel_error(&gx, &get("grad_embeddings")), tol));
        errs.push((format!("grad_weight.{k}"), rel_error(&gw, &get("grad_weight")), tol));
        let state = head.state();
        for (sn, t) in &st.tensors {
            let Some(rest) = sn.strip_prefix("state.") else { continue };
            let Some(var) = rest.strip_suffix(&format!(".{k}")) else { continue };
            let ours = state.get(var).unwrap_or_else(|| panic!("{name}: no state '{var}'"));
            errs.push((format!("state.{var}.{k}"), rel_error(&[ours], &f64s(t)), tol));
        }
    }
    errs
}

#[test]
fn every_head_matches_pytorch() {
    let dir = fixtures_dir();
    let manifest = dir.join("heads_manifest.txt");
    let list = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Generate the fixtures with `python tests/parity/heads_ref.py {}` (tests/run.sh does this)",
            manifest.display(),
            dir.display()
        )
    });
    let files: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let mut failures = Vec::new();
    let mut worst = [(0.0f64, String::new()), (0.0f64, String::new())];
    let mut covered = std::collections::BTreeSet::new();
    for f in &files {
        let path = dir.join(f);
        assert!(path.exists(), "{} is listed in the manifest but missing", path.display());
        let head = f.split('_').nth(2).unwrap_or("").to_string();
        covered.insert(head);
        for (what, e, tol) in check_fixture(&path) {
            let slot = usize::from(tol > 1e-5);
            if e > worst[slot].0 || worst[slot].1.is_empty() {
                worst[slot] = (e, format!("{f} {what}"));
            }
            if !(e <= tol) {
                failures.push(format!("{f}: {what} error {e:e} > {tol:e}"));
            }
        }
    }
    eprintln!("heads parity: {} fixtures; worst f64 {:e} ({}), worst f32 {:e} ({})", files.len(), worst[0].0, worst[0].1, worst[1].0, worst[1].1);
    for n in heads::names() {
        assert!(covered.contains(n), "no PyTorch fixture covers head '{n}'");
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
