//! TinyFace rank-1/5/20 against tests/parity/tinyface_ref.py, which runs AdaFace's protocol
//! (tinyface_helper.py: folder listing, name-prefix labels, aligned copies found by name, DIR_FAR with
//! FAR 1.0) on a generated set in the release layout: our reading of the layout (the .mat lists, one
//! compressed and one not; aligned .png probes under .jpg names; distractors in sub-folders; a probe
//! without a gallery match) must give the same images, and the ranks must agree to 1e-6.

use datasets::tinyface::open;
use engine::eval::tinyface::{identify, RANKS};
use engine::io::safetensors;
use serde_json::Value;

#[allow(dead_code)] // only fixtures_dir is used here
mod eval_fixture;

#[test]
fn tinyface_matches_adaface_reference() {
    let dir = eval_fixture::fixtures_dir().join("tinyface");
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap_or_else(|e| {
        panic!(
            "missing fixture {} ({e}): generate it with `python tests/parity/tinyface_ref.py <dir>` (tests/run.sh does)",
            dir.display()
        )
    }))
    .unwrap();
    let root = dir.join("root");
    let set = open(&root, "aligned_pad_0.1_pad_high").unwrap();
    let rows: Vec<String> =
        set.all().map(|im| im.path.strip_prefix(&root).unwrap().display().to_string()).collect();
    let want_rows: Vec<String> =
        std::fs::read_to_string(dir.join("rows.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(rows, want_rows, "image order");
    assert_eq!(set.distractors.len() as u64, exp["distractors"].as_u64().unwrap());
    assert_eq!(set.gallery_match.len() as u64, exp["gallery_match"].as_u64().unwrap());
    assert_eq!(set.probes.len() as u64, exp["probes"].as_u64().unwrap());
    let st = safetensors::read(&dir.join("features.safetensors")).unwrap();
    let t = st.require("features", &dir.join("features.safetensors")).unwrap();
    let (feats, dim) = (t.to_vec::<f32>().unwrap(), t.dims()[1]);
    let np = set.probes.len();
    let pl: Vec<i64> = set.probes.iter().map(|p| p.label.unwrap()).collect();
    let gl: Vec<Option<i64>> = set.gallery_match.iter().chain(&set.distractors).map(|g| g.label).collect();
    let r = identify(&feats[..np * dim], &pl, &feats[np * dim..], &gl, dim, &RANKS).unwrap();
    assert_eq!(r.n_mated as u64, exp["mated"].as_u64().unwrap(), "probes with a match");
    for (k, v) in &r.ranks {
        let want = exp[format!("rank{k}")].as_f64().unwrap();
        // AdaFace averages in float32; the counts are the same, the fractions differ below 1e-7.
        assert!((v - want).abs() <= 1e-6 * want, "rank-{k}: {v} vs AdaFace's {want}");
    }
    assert!(r.ranks[0].1 < r.ranks[2].1, "the generated set should not be solved at rank 1");
}
