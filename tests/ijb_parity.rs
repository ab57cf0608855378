//! IJB-B/C 1:1 and 1:N against tests/parity/ijb_ref.py (insightface's eval_ijbc.py and ijb_evals.py
//! re-derived in numpy with scikit-learn's roc_curve/auc) on generated IJB-style data: uneven media per
//! template, sparse template ids, duplicated templates and pairs (tied scores), FARs below 1 / impostors,
//! the N0 and D0 modes, IJB-B and IJB-C file names.
//!
//! Pooled float32 template sums must be the same bits; scores agree to 1e-12 (numpy sums the dot product
//! in another order); TAR@FAR, AUC, CMC and TPIR@FPIR to a norm-wise relative error of 1e-6.

use engine::eval::ijb::identification::{gather, search, unique_templates};
use engine::eval::ijb::meta::{self, Target};
use engine::eval::ijb::roc_sklearn::far_key;
use engine::eval::ijb::templates::{image_inputs, normalize, pool, PoolOptions, Templates};
use engine::eval::ijb::verification::{evaluate, pair_rows, score_pairs};
use engine::io::safetensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[allow(dead_code)] // only fixtures_dir is used here
mod eval_fixture;

fn case_dirs() -> Vec<PathBuf> {
    let root = eval_fixture::fixtures_dir().join("ijb");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "missing fixture {} ({e}): generate it with `python tests/parity/ijb_ref.py <dir>` \
                 (tests/run.sh does this) and point FACETRAIN_FIXTURES at <dir>",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 4, "ijb_ref.py writes four cases");
    dirs
}

fn rel_err(ours: &[f64], theirs: &[f64]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let num: f64 = ours.iter().zip(theirs).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
    let den: f64 = theirs.iter().map(|b| b * b).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

fn raw<T: Copy>(path: &Path, conv: impl Fn([u8; 8]) -> T, width: usize) -> Vec<T> {
    let b = std::fs::read(path).unwrap();
    b.chunks(width)
        .map(|c| {
            let mut a = [0u8; 8];
            a[..width].copy_from_slice(c);
            conv(a)
        })
        .collect()
}

struct Loaded {
    target: Target,
    tid: meta::FaceTidMid,
    pts: meta::Name5ptsScore,
    feats: Vec<f32>,
    dim: usize,
    opts: PoolOptions,
}

fn load(dir: &Path, exp: &Value) -> Loaded {
    let target = Target::parse(exp["target"].as_str().unwrap()).unwrap();
    let tid = meta::read_face_tid_mid(&target.face_tid_mid(dir)).unwrap();
    let pts = meta::read_name_5pts_score(&target.name_5pts_score(dir)).unwrap();
    meta::check_same_images(&tid, &target.face_tid_mid(dir), &pts, &target.name_5pts_score(dir)).unwrap();
    let st = safetensors::read(&dir.join("features.safetensors")).unwrap();
    let t = st.require("features", &dir.join("features.safetensors")).unwrap();
    let dim = t.dims()[1];
    let feats = t.to_vec::<f32>().unwrap();
    let opts = PoolOptions {
        keep_norm: exp["keep_norm"].as_bool().unwrap(),
        detector_score: exp["detector_score"].as_bool().unwrap(),
    };
    Loaded { target, tid, pts, feats, dim, opts }
}

#[test]
fn ijb_one_to_one_matches_eval_ijbc_reference() {
    for dir in case_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let l = load(&dir, &exp);
        let inputs = image_inputs(&l.feats, l.dim, &l.pts.scores, l.opts).unwrap();
        let sums = pool(&inputs, l.dim, &l.tid.templates, &l.tid.medias).unwrap();
        let want_sums: Vec<f32> =
            raw(&dir.join("template_sums.f32"), |a| f32::from_le_bytes(a[..4].try_into().unwrap()), 4);
        assert_eq!(sums.sums.len(), want_sums.len(), "{name}: template count");
        let differ = sums.sums.iter().zip(&want_sums).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{name}: {differ} pooled float32 values differ from numpy's");
        let t = Templates { feats: normalize(&sums), ids: sums.ids, dim: l.dim, images: sums.images };
        let pairs = meta::read_pair_labels(&l.target.pair_label(&dir)).unwrap();
        let rows = pair_rows(&t, &pairs.t1, &pairs.t2, &pairs.lines, "pairs").unwrap();
        let scores = score_pairs(&t, &rows);
        let want_scores: Vec<f64> = raw(&dir.join("scores.f64"), f64::from_le_bytes, 8);
        let max = scores.iter().zip(&want_scores).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(max < 1e-12, "{name}: scores differ by up to {max}");
        // Score the pairs with numpy's own scores too: the ROC must then be identical to the last bit.
        for (s, label) in [(&scores, "our scores"), (&want_scores, "numpy's scores")] {
            let r = evaluate(s, &pairs.same).unwrap();
            assert_eq!(
                r.roc.fpr.len(),
                exp["roc_points"].as_u64().unwrap() as usize,
                "{name} ({label}): ROC points"
            );
            let (mut ours, mut theirs) = (vec![], vec![]);
            for row in &r.tar_at_far {
                let e = &exp["tar_at_far"][far_key(row.far)];
                ours.extend([row.tar, row.fpr]);
                theirs.extend([e["tar"].as_f64().unwrap(), e["fpr"].as_f64().unwrap()]);
            }
            ours.push(r.auc);
            theirs.push(exp["auc"].as_f64().unwrap());
            let err = rel_err(&ours, &theirs);
            assert!(
                err <= 1e-6,
                "{name} ({label}): TAR/FPR/AUC relative error {err}: {ours:?} vs {theirs:?}"
            );
        }
        assert_eq!(t.ids.len() as u64, exp["templates"].as_u64().unwrap(), "{name}");
        assert_eq!(pairs.t1.len() as u64, exp["pairs"].as_u64().unwrap(), "{name}");
        if name == "ijbc_small" {
            // 50 impostors: FPR 0 and 0.02 are equally far from 1e-2; the script's rule takes 0.02.
            assert_eq!(exp["impostor"].as_u64(), Some(50));
            assert_eq!(exp["tar_at_far"]["1e-02"]["fpr"].as_f64(), Some(0.02));
            assert_eq!(evaluate(&scores, &pairs.same).unwrap().tar_at_far[4].fpr, 0.02);
        }
        // Some FAR of the table must lie below 1 / impostors for the case to test that reading.
        let impostors = exp["impostor"].as_f64().unwrap();
        assert!(1e-6 * impostors < 1.0, "{name}: every FAR is measurable");
    }
}

#[test]
fn ijb_one_to_n_matches_ijb_evals_reference() {
    let mut checked = 0;
    for dir in case_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        if exp.get("identification").is_none() {
            continue;
        }
        let l = load(&dir, &exp);
        let inputs = image_inputs(&l.feats, l.dim, &l.pts.scores, l.opts).unwrap();
        let sums = pool(&inputs, l.dim, &l.tid.templates, &l.tid.medias).unwrap();
        let t = Templates { feats: normalize(&sums), ids: sums.ids, dim: l.dim, images: sums.images };
        let plist = meta::read_template_subjects(&l.target.probes(&dir)).unwrap();
        let (pids, psub) = unique_templates(&plist.templates, &plist.subjects);
        let pf = gather(&t, &pids, "probes").unwrap();
        let (mut ours, mut theirs) = (vec![], vec![]);
        let mut hits_total = [0usize; 3];
        let mut tpir_mean = [0.0f64; 2];
        for (g, path) in l.target.galleries(&dir) {
            let glist = meta::read_template_subjects(&path).unwrap();
            let (gids, gsub) = unique_templates(&glist.templates, &glist.subjects);
            let gf = gather(&t, &gids, g).unwrap();
            let r = search(&pf, &psub, &gf, &gsub, l.dim, g).unwrap();
            let e = &exp["identification"][g];
            assert_eq!(r.n_mated as u64, e["mated"].as_u64().unwrap(), "{name} {g}: mated probes");
            assert_eq!(r.n_gallery as u64, e["gallery"].as_u64().unwrap(), "{name} {g}: gallery size");
            for k in 0..3 {
                assert_eq!(
                    r.hits[k] as u64,
                    e["hits"][k].as_u64().unwrap(),
                    "{name} {g}: hits at rank index {k}"
                );
                ours.push(r.cmc(k));
                theirs.push(e["hits"][k].as_f64().unwrap() / e["mated"].as_f64().unwrap());
                hits_total[k] += r.hits[k];
            }
            for (j, (fpir, th, tpir)) in r.tpir.iter().enumerate() {
                let et = &e["tpir"][j];
                assert_eq!(*fpir, et["fpir"].as_f64().unwrap());
                ours.extend([*th, *tpir]);
                theirs.extend([et["threshold"].as_f64().unwrap(), et["tpir"].as_f64().unwrap()]);
                tpir_mean[j] += tpir / 2.0;
            }
        }
        let m = &exp["identification"]["mean"];
        for k in 0..3 {
            ours.push(hits_total[k] as f64 / pids.len() as f64);
            theirs.push(m["cmc"][k].as_f64().unwrap());
        }
        for j in 0..2 {
            ours.push(tpir_mean[j]);
            theirs.push(m["tpir"][j].as_f64().unwrap());
        }
        let err = rel_err(&ours, &theirs);
        assert!(err <= 1e-6, "{name}: 1:N relative error {err}: {ours:?} vs {theirs:?}");
        checked += 1;
    }
    assert_eq!(checked, 2, "two cases (IJB-C G1/G2 and IJB-B S1/S2) carry the 1:N lists");
}
