//! `eval --tinyface DIR`: TinyFace rank-1/5/20 with the distractors (engine::eval::tinyface), on a
//! model's features (aligned 112x112 images embedded with their flips) or on `--features`.

use super::eval_flags::BenchmarkFlags;
use super::eval_ijb::{load_features, save_features, Model};
use crate::aligned::{check_aligned_input, embed_items, Item};
use datasets::image::align::ARCFACE_112;
use datasets::tinyface::{open, TinyFaceSet};
use engine::eval::tinyface::{identify, RANKS};
use engine::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The list of images in feature-row order, relative to DIR, one per line.
pub const IMAGE_LIST: &str = "tinyface_images.txt";

fn image_list(set: &TinyFaceSet, dir: &Path) -> String {
    set.all().map(|im| im.path.strip_prefix(dir).unwrap_or(&im.path).display().to_string() + "\n").collect()
}

fn embed(set: &TinyFaceSet, model: Model, flip: bool) -> Result<(Vec<f32>, usize)> {
    let (model, params) =
        model.ok_or_else(|| Error::Invalid("--tinyface needs a model or --features".into()))?;
    check_aligned_input(model)?;
    let items: Vec<Item> = set
        .all()
        .map(|im| Item { path: im.path.clone(), origin: "the TinyFace lists".into(), landmarks: None })
        .collect();
    embed_items(model, params, &items, &ARCFACE_112, flip, "TinyFace")
}

pub fn run(
    f: &BenchmarkFlags,
    dir: &Path,
    model: Model,
    out: Option<&Path>,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let set = open(dir, &f.tinyface_aligned).map_err(|e| Error::Io(e.to_string()))?;
    let n = set.probes.len() + set.gallery_match.len() + set.distractors.len();
    let (feats, dim) = match &f.features {
        Some(p) => load_features(p, n, &dir.join(IMAGE_LIST))?,
        None => {
            let (e, d) = embed(&set, model, !f.no_flip)?;
            if let Some(o) = out {
                std::fs::write(o.join(IMAGE_LIST), image_list(&set, dir))
                    .map_err(|e| Error::Io(format!("{}: cannot write: {e}", o.join(IMAGE_LIST).display())))?;
                save_features(
                    &o.join("tinyface_features.safetensors"),
                    e.clone(),
                    d,
                    &format!("rows of {IMAGE_LIST}"),
                )?;
            }
            (e, d)
        }
    };
    let np = set.probes.len();
    let probe_labels: Vec<i64> = set.probes.iter().map(|p| p.label.unwrap_or(-1)).collect();
    let gallery_labels: Vec<Option<i64>> =
        set.gallery_match.iter().chain(&set.distractors).map(|g| g.label).collect();
    let r = identify(&feats[..np * dim], &probe_labels, &feats[np * dim..], &gallery_labels, dim, &RANKS)?;
    let rate = |k: usize| r.ranks.iter().find(|x| x.0 == k).map_or(f64::NAN, |x| x.1);
    println!(
        "[TinyFace] {} probes ({} with a match), {} gallery images ({} distractors): rank-1 {:.2} %, rank-5 {:.2} %, rank-20 {:.2} %",
        r.n_probes, r.n_mated, r.n_gallery, set.distractors.len(), rate(1) * 100.0, rate(5) * 100.0, rate(20) * 100.0
    );
    report.insert(
        "tinyface".into(),
        json!({
            "rank1": rate(1), "rank5": rate(5), "rank20": rate(20), "probes": r.n_probes, "mated_probes": r.n_mated,
            "gallery_match": set.gallery_match.len(), "distractors": set.distractors.len(), "dim": dim,
        }),
    );
    Ok(())
}
