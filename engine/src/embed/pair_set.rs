//! Verification on a pair set during and after training: images decoded and normalized once, each pair
//! image embedded with its horizontal flip and the two embeddings summed (insightface's protocol).

use super::{decode_for_model, embed_pixels};
use crate::eval::quality::row_norms;
use crate::eval::verification::{sum_with_flipped, verify_embeddings, VerificationReport};
use crate::model::{IResNet, ParamStore};
use crate::{Error, Result};
use datasets::loader::extend_normalized;
use datasets::verification::read_pair_set;
use std::path::Path;

pub struct PairEval {
    pub name: String,
    /// [2P, H, W, 3] normalized, and the same images flipped.
    plain: Vec<f32>,
    flipped: Vec<f32>,
    pub same: Vec<bool>,
}

pub struct PairEvalResult {
    pub report: VerificationReport,
    /// Feature magnitude of each pair image (unflipped embedding), for quality plots.
    pub norms: Vec<f64>,
    /// Image-plus-flip embeddings, `dim` values per image, pair i at rows 2i and 2i + 1.
    pub embeddings: Vec<f64>,
    pub dim: usize,
}

impl PairEval {
    /// Reads a `.bin` (or text pairs list); every image must decode to `hw`.
    pub fn load(path: &Path, hw: (usize, usize)) -> Result<PairEval> {
        let set = read_pair_set(path).map_err(|e| Error::Io(e.to_string()))?;
        let n = hw.0 * hw.1 * 3;
        let mut plain = Vec::with_capacity(set.images.len() * n);
        let mut flipped = Vec::with_capacity(set.images.len() * n);
        for (i, bytes) in set.images.iter().enumerate() {
            let img = decode_for_model(bytes, hw, &format!("{}: image {i}", path.display()))?;
            extend_normalized(&mut plain, &img.data, hw.1 * 3, false);
            extend_normalized(&mut flipped, &img.data, hw.1 * 3, true);
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(PairEval { name, plain, flipped, same: set.same })
    }

    pub fn run(&self, model: &IResNet, params: &mut ParamStore) -> Result<PairEvalResult> {
        let (plain, dim) = embed_pixels(model, params, &self.plain)?;
        let (flipped, _) = embed_pixels(model, params, &self.flipped)?;
        let norms = row_norms(&plain, dim)?;
        let summed = sum_with_flipped(&plain, &flipped)?;
        let report = verify_embeddings(&summed, dim, &self.same)?;
        Ok(PairEvalResult { report, norms, embeddings: summed, dim })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IResNetConfig;
    use crate::rng::Rng;
    use crate::train::demo as demo_defaults;
    use crate::DType;
    use datasets::demo::ensure_demo_set;

    /// The demo's held-out pairs, written by the real demo path, must not be solved by an untrained
    /// small backbone: otherwise a high demo accuracy would say little about training.
    #[test]
    fn untrained_small_backbone_stays_near_chance_on_the_demo_pairs() {
        let cache = std::env::temp_dir().join(format!("facetrain-untrained-{}", std::process::id()));
        let set = ensure_demo_set(&cache, &demo_defaults::synth_config()).unwrap();
        let mut config = IResNetConfig::by_name(demo_defaults::BACKBONE).unwrap();
        config.input_hw = (demo_defaults::SIZE, demo_defaults::SIZE);
        let model = IResNet::new(config).unwrap();
        let eval = PairEval::load(&set.pairs, (demo_defaults::SIZE, demo_defaults::SIZE)).unwrap();
        let mut accuracies = Vec::new();
        for seed in [0, 1] {
            let mut params = model.init(&mut Rng::new(seed).fork(1), DType::F32).unwrap();
            accuracies.push(eval.run(&model, &mut params).unwrap().report.accuracy_mean);
        }
        let _ = std::fs::remove_dir_all(&cache);
        eprintln!("untrained small backbone, 10-fold accuracy on the demo pairs: {accuracies:?}");
        for acc in accuracies {
            assert!(
                acc <= 0.70,
                "an untrained network verifies the demo pairs at {acc}: the task is too easy"
            );
            assert!(acc >= 0.4, "accuracy {acc} is below chance: the pair labels look broken");
        }
    }
}
