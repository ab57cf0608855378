//! `eval --ijb DIR`: IJB-B/C 1:1 verification (and 1:N where the lists are present) on features from a
//! model (images aligned from the 5pts file) or from `--features`. The protocol is engine::eval::ijb.

use super::eval_flags::BenchmarkFlags;
use crate::aligned::{check_aligned_input, embed_items, Item};
use datasets::image::align::ARCFACE_112_EVAL_IJBC;
use engine::eval::ijb::identification::{gather, search, unique_templates, CMC_RANKS};
use engine::eval::ijb::meta::{self, Name5ptsScore, Target};
use engine::eval::ijb::roc_sklearn::far_key;
use engine::eval::ijb::templates::{template_features, PoolOptions, Templates};
use engine::eval::ijb::verification::{evaluate, pair_rows, score_pairs};
use engine::io::safetensors::{self, SafeTensors};
use engine::model::{IResNet, ParamStore};
use engine::{Error, Result, Tensor};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

pub type Model<'a> = Option<(&'a IResNet, &'a mut ParamStore)>;

/// `features` [N, D] f32 of a safetensors file, checked against the `rows` images it must describe.
pub fn load_features(path: &Path, rows: usize, listed_in: &Path) -> Result<(Vec<f32>, usize)> {
    let st = safetensors::read(path)?;
    let t = st.require("features", path)?;
    if t.dims().len() != 2 || t.dims()[0] != rows {
        return Err(Error::Io(format!(
            "{}: `features` has shape {:?}, but {} lists {rows} images (expected [{rows}, D])",
            path.display(),
            t.dims(),
            listed_in.display()
        )));
    }
    let v = t
        .to_vec::<f32>()
        .map_err(|e| Error::Io(format!("{}: `features` must be f32: {e}", path.display())))?;
    Ok((v, t.dims()[1]))
}

/// Writes the per-image features a model run used, for later runs and other tools.
pub fn save_features(path: &Path, feats: Vec<f32>, dim: usize, note: &str) -> Result<()> {
    let n = feats.len() / dim;
    let mut st = SafeTensors::default();
    st.push("features", Tensor::from_vec(feats, [n, dim])?);
    st.metadata.insert("rows".into(), note.into());
    safetensors::write(path, &st)?;
    eprintln!("wrote the features of {n} images to {}", path.display());
    Ok(())
}

fn embed_ijb(
    dir: &Path,
    target: Target,
    pts: &Name5ptsScore,
    model: Model,
    flip: bool,
) -> Result<(Vec<f32>, usize)> {
    let (model, params) = model.ok_or_else(|| Error::Invalid("--ijb needs a model or --features".into()))?;
    check_aligned_input(model)?;
    let list = target.name_5pts_score(dir);
    let items: Vec<Item> = (0..pts.images.len())
        .map(|i| Item {
            path: dir.join("loose_crop").join(&pts.images[i]),
            origin: format!("{}:{}", list.display(), pts.lines[i]),
            landmarks: Some(pts.landmarks[i].to_vec()),
        })
        .collect();
    embed_items(model, params, &items, &ARCFACE_112_EVAL_IJBC, flip, target.name())
}

/// Runs the IJB protocols and adds `"ijb"` to the report.
pub fn run(
    f: &BenchmarkFlags,
    dir: &Path,
    model: Model,
    out: Option<&Path>,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let target = Target::parse(&f.target)?;
    let (tid_path, pts_path) = (target.face_tid_mid(dir), target.name_5pts_score(dir));
    let tid = meta::read_face_tid_mid(&tid_path)?;
    let pts = meta::read_name_5pts_score(&pts_path)?;
    meta::check_same_images(&tid, &tid_path, &pts, &pts_path)?;
    let pairs = meta::read_pair_labels(&target.pair_label(dir))?;
    let (feats, dim) = match &f.features {
        Some(p) => load_features(p, pts.images.len(), &pts_path)?,
        None => {
            let (e, d) = embed_ijb(dir, target, &pts, model, !f.no_flip)?;
            if let Some(o) = out {
                let note = if f.no_flip { "image embedding" } else { "image + flipped image embeddings" };
                let name = format!("{}_features.safetensors", target.name().to_lowercase());
                save_features(
                    &o.join(name),
                    e.clone(),
                    d,
                    &format!("{note}, rows of {}", pts_path.display()),
                )?;
            }
            (e, d)
        }
    };
    let t0 = Instant::now();
    let opts = PoolOptions { keep_norm: !f.no_norm, detector_score: !f.no_detector_score };
    let t = template_features(&feats, dim, &pts.scores, &tid.templates, &tid.medias, opts)?;
    let rows =
        pair_rows(&t, &pairs.t1, &pairs.t2, &pairs.lines, &target.pair_label(dir).display().to_string())?;
    let scores = score_pairs(&t, &rows);
    let v = evaluate(&scores, &pairs.same)?;
    let secs = t0.elapsed().as_secs_f64();
    let mode =
        format!("N{}D{}F{}", u8::from(!f.no_norm), u8::from(!f.no_detector_score), u8::from(!f.no_flip));
    println!(
        "[{}] 1:1 verification, {} templates, {} pairs, TAR (%) at FAR, test mode {mode}:",
        target.name(),
        t.ids.len(),
        rows.len()
    );
    println!("{}\nAUC {:.4}%  (pooling + scoring + ROC: {secs:.1} s)", v.table(target.name()), v.auc * 100.0);
    let tar: serde_json::Map<String, Value> =
        v.tar_at_far.iter().map(|r| (far_key(r.far), json!(r.tar))).collect();
    let fpr: serde_json::Map<String, Value> =
        v.tar_at_far.iter().map(|r| (far_key(r.far), json!(r.fpr))).collect();
    let genuine = pairs.same.iter().filter(|&&s| s).count();
    let mut ijb = json!({
        "target": target.name(), "tar_at_far": tar, "fpr_read": fpr, "auc": v.auc,
        "templates": t.ids.len(), "pairs": rows.len(), "genuine": genuine, "impostor": rows.len() - genuine,
        "images": pts.images.len(), "mode": mode, "dim": dim,
    });
    if let Some(id) = identification(dir, target, &t)? {
        ijb["identification"] = id;
    }
    report.insert("ijb".into(), ijb);
    Ok(())
}

/// 1:N over both galleries when all three lists are present; None when none is.
fn identification(dir: &Path, target: Target, t: &Templates) -> Result<Option<Value>> {
    let [(g1, p1), (g2, p2)] = target.galleries(dir);
    let probes_path = target.probes(dir);
    let present = [&p1, &p2, &probes_path].iter().filter(|p| p.exists()).count();
    if present == 0 {
        println!(
            "[{}] 1:N: no gallery/probe lists in {}, skipped",
            target.name(),
            dir.join("meta").display()
        );
        return Ok(None);
    }
    for p in [&p1, &p2, &probes_path] {
        if !p.exists() {
            return Err(Error::Io(format!(
                "{}: file not found (1:N needs both galleries and the probes)",
                p.display()
            )));
        }
    }
    let plist = meta::read_template_subjects(&probes_path)?;
    let (pids, psub) = unique_templates(&plist.templates, &plist.subjects);
    let pf = gather(t, &pids, &probes_path.display().to_string())?;
    let mut out = serde_json::Map::new();
    let (mut hits, mut tpir_sum, mut tpir_count) = ([0usize; 3], vec![0.0f64; 2], 0);
    for (g, path) in [(g1, p1), (g2, p2)] {
        let list = meta::read_template_subjects(&path)?;
        let (gids, gsub) = unique_templates(&list.templates, &list.subjects);
        let gf = gather(t, &gids, &path.display().to_string())?;
        let r = search(&pf, &psub, &gf, &gsub, t.dim, g)?;
        let tp: Vec<Value> =
            r.tpir.iter().map(|(f, th, v)| json!({"fpir": f, "threshold": th, "tpir": v})).collect();
        r.tpir.iter().enumerate().for_each(|(j, x)| tpir_sum[j] += x.2 / 2.0);
        tpir_count += usize::from(!r.tpir.is_empty());
        (0..3).for_each(|k| hits[k] += r.hits[k]);
        let cmc: Vec<f64> = (0..3).map(|k| r.cmc(k)).collect();
        println!(
            "[{}] 1:N {g}: {} gallery templates, {} of {} probes mated: rank-1/5/10 {:.2} {:.2} {:.2} %, TPIR@FPIR 1e-2 {:.2} %, 1e-1 {:.2} %",
            target.name(), r.n_gallery, r.n_mated, r.n_probes, cmc[0] * 100.0, cmc[1] * 100.0, cmc[2] * 100.0,
            r.tpir.first().map_or(f64::NAN, |x| x.2 * 100.0), r.tpir.get(1).map_or(f64::NAN, |x| x.2 * 100.0)
        );
        out.insert(g.into(), json!({"gallery": r.n_gallery, "probes": r.n_probes, "mated": r.n_mated, "ranks": CMC_RANKS, "cmc": cmc, "tpir": tp}));
    }
    let cmc: Vec<f64> = hits.iter().map(|&h| h as f64 / pids.len() as f64).collect();
    // A TPIR needs non-mated probes in both galleries; without them there is no mean to report.
    let tpir_mean: Option<Vec<f64>> = (tpir_count == 2).then_some(tpir_sum);
    let tp = |j: usize| tpir_mean.as_ref().map_or("n/a".to_string(), |t| format!("{:.2} %", t[j] * 100.0));
    println!(
        "[{}] 1:N mean: rank-1/5/10 {:.2} {:.2} {:.2} %, TPIR@FPIR 1e-2 {}, 1e-1 {}",
        target.name(),
        cmc[0] * 100.0,
        cmc[1] * 100.0,
        cmc[2] * 100.0,
        tp(0),
        tp(1)
    );
    out.insert(
        "mean".into(),
        json!({"ranks": CMC_RANKS, "cmc": cmc, "fpir": [0.01, 0.1], "tpir": tpir_mean}),
    );
    Ok(Some(Value::Object(out)))
}
