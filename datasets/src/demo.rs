//! The embedded default data set on disk: the synthetic identities packed as a real insightface face set
//! (`train.rec`/`train.idx`/`property`, each image's degradation level stored as an extra header label)
//! and a `.bin` verification set of held-out identities, so the demo runs the exact path of real data.
//! Built once per configuration into a cache folder (written under a temporary name, then renamed).

use crate::error::{DataError, Result};
use crate::faceset::FaceSetWriter;
use crate::image::{encode_jpeg, Image};
use crate::synth::{generate, SynthConfig};
use crate::verification::{write_bin, PairSet};
use std::path::{Path, PathBuf};

/// JPEG quality of the packed images (insightface's packs use 95 too).
const QUALITY: u8 = 95;

pub struct DemoSet {
    /// The face set folder (open with `FaceSet::open`).
    pub train: PathBuf,
    /// The verification pairs (`pairs.bin`).
    pub pairs: PathBuf,
    /// Degradation level of every pair image, in `.bin` order (2 per pair).
    pub pair_degradation: Vec<f32>,
    /// True when this call generated the set (false: found in the cache).
    pub generated: bool,
}

fn key(cfg: &SynthConfig) -> String {
    format!(
        "synth-v2-id{}-n{}-h{}-p{}-s{}-seed{}",
        cfg.identities, cfg.images_per_identity, cfg.heldout_identities, cfg.pairs, cfg.size, cfg.seed
    )
}

fn degradation_path(dir: &Path) -> PathBuf {
    dir.join("pairs.degradation")
}

/// Returns the cached set for `cfg` under `cache`, generating it first when absent.
pub fn ensure_demo_set(cache: &Path, cfg: &SynthConfig) -> Result<DemoSet> {
    let dir = cache.join(key(cfg));
    let mut generated = false;
    if !dir.join("pairs.bin").is_file() {
        let tmp = cache.join(format!(".{}.tmp-{}", key(cfg), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        if let Err(e) = write_demo_set(&tmp, cfg) {
            // A failed generation leaves nothing behind in the cache.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // A rename onto a folder that holds files fails: then another process (a rank of the same job)
        // finished the same set meanwhile, and it is in use: keep it. Only a leftover without its
        // pairs.bin (an older, broken cache) is removed for ours.
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => generated = true,
            Err(_) if dir.join("pairs.bin").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                if let Err(e) = std::fs::rename(&tmp, &dir) {
                    let _ = std::fs::remove_dir_all(&tmp);
                    if !dir.join("pairs.bin").is_file() {
                        return Err(DataError::io(&dir, e));
                    }
                } else {
                    generated = true;
                }
            }
        }
    }
    let deg_path = degradation_path(&dir);
    let text = std::fs::read_to_string(&deg_path).map_err(|e| DataError::io(&deg_path, e))?;
    let pair_degradation = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            l.trim().parse::<f32>().map_err(|_| DataError::BadLine {
                path: deg_path.clone(),
                line: i + 1,
                detail: format!("'{l}' is not a number"),
            })
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok(DemoSet { train: dir.join("train"), pairs: dir.join("pairs.bin"), pair_degradation, generated })
}

/// Generates and packs `cfg` into `dir` (train/, pairs.bin, pairs.degradation).
pub fn write_demo_set(dir: &Path, cfg: &SynthConfig) -> Result<()> {
    let set = generate(cfg).map_err(|e| DataError::Invalid { what: e.to_string() })?;
    let size = set.size;
    let encode = |rgb: &[u8]| {
        encode_jpeg(&Image::from_rgb(size, size, rgb.to_vec()), QUALITY)
            .map_err(|e| DataError::Invalid { what: format!("synthetic image: {e}") })
    };
    let train_dir = dir.join("train");
    std::fs::create_dir_all(&train_dir).map_err(|e| DataError::io(&train_dir, e))?;
    let mut w = FaceSetWriter::create(&train_dir, set.classes as u32, size as u32, size as u32)?;
    for img in &set.train {
        w.add(img.label, &[img.degradation], &encode(&img.rgb)?)?;
    }
    w.finish()?;
    let mut images = Vec::with_capacity(2 * set.pairs.len());
    let mut degradation = String::new();
    for (a, b, _) in &set.pairs {
        for img in [a, b] {
            images.push(encode(&img.rgb)?);
            degradation.push_str(&format!("{}\n", img.degradation));
        }
    }
    let same = set.pairs.iter().map(|p| p.2).collect();
    write_bin(&dir.join("pairs.bin"), &PairSet { images, same })?;
    let p = degradation_path(dir);
    std::fs::write(&p, degradation).map_err(|e| DataError::io(&p, e))
}
