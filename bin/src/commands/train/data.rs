//! The training set of a run: `--data`, or the generated demo set (built once under `--cache`), with the
//! verification sets to evaluate on.

use super::Args;
use datasets::demo::ensure_demo_set;
use datasets::faceset::FaceSet;
use datasets::synth::SynthConfig;
use engine::train::demo;
use engine::train::recipe::DataShape;
use engine::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub struct TrainingData {
    pub faceset: Arc<FaceSet>,
    pub shape: DataShape,
    /// Verification sets evaluated during training: `--eval`, after the demo's own pairs.
    pub evals: Vec<PathBuf>,
    /// The demo pairs' degradation level per image (the first evaluation set's), for the quality check.
    pub degradation: Option<Vec<f32>>,
}

impl TrainingData {
    pub fn open(a: &Args) -> Result<TrainingData> {
        let mut evals = a.eval.clone();
        let mut degradation = None;
        let path = match &a.data {
            Some(p) => p.clone(),
            None => {
                if a.synth_pairs < 2 {
                    let m =
                        format!("--synth-pairs {}: the demo evaluates on at least 2 pairs", a.synth_pairs);
                    return Err(Error::Invalid(m));
                }
                let cfg = SynthConfig {
                    identities: a.synth_identities,
                    images_per_identity: a.synth_images,
                    heldout_identities: a.synth_heldout,
                    pairs: a.synth_pairs,
                    size: a.synth_size,
                    ..demo::synth_config()
                };
                let t0 = Instant::now();
                let set = ensure_demo_set(&a.cache, &cfg).map_err(|e| Error::Io(e.to_string()))?;
                if set.generated {
                    let secs = t0.elapsed().as_secs_f64();
                    eprintln!("generated the demo set in {secs:.1}s: {}", set.train.display());
                }
                evals.insert(0, set.pairs.clone());
                degradation = Some(set.pair_degradation);
                set.train
            }
        };
        let faceset = Arc::new(FaceSet::open(&path).map_err(|e| Error::Io(e.to_string()))?);
        let classes = faceset
            .classes()
            .ok_or_else(|| Error::Io(format!("{}: no 'property' file and no class count", path.display())))?;
        let image_hw = faceset.property().map(|p| (p.height as usize, p.width as usize));
        let shape = DataShape {
            demo: a.data.is_none(),
            name: path.display().to_string(),
            classes: classes as usize,
            images: faceset.len(),
            image_hw,
        };
        Ok(TrainingData { faceset, shape, evals, degradation })
    }
}
