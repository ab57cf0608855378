//! The papers' figures drawn while training, each behind its own flag (an ordinary run computes and
//! writes nothing of this):
//!
//! - `--compare-head H` (`compare.rs`): a second head trained after `--head` on the same batches, the
//!   two hyperspheres side by side (MagFace Fig. 3, QCFace's toy figures).
//! - `--track-samples K`: at each evaluation, the feature norm and target-class probability of K chosen
//!   training samples as `"event":"sample"` lines of `metrics.jsonl` (AdaFace Fig. 6; drawn by
//!   `analyze --trajectories`).
//! - `--plot-terms`: at each evaluation, histograms of the head's per-row terms over the batch just
//!   trained on, into `terms/step-N/` (AdaFace Fig. 3, SMAFace's weight figures), as
//!   `head --input B --plot` draws them.
//!
//! The per-row terms of both come from one probe (`rows`): the images embedded by the current network
//! in evaluation mode (running batch-norm statistics: a sample's value does not depend on the others
//! of its batch, and `embed` on the step's checkpoint reproduces it), then the head's classifier on the
//! CPU against the whole current classifier, through a copy of the head with the trainer's running
//! state in evaluation mode (so the probe moves no running state: training stays bit-identical).

use super::compare::Side;
use super::data::TrainingData;
use crate::commands::head_plots::write_row_histograms;
use datasets::faceset::FaceSet;
use datasets::loader::extend_normalized;
use engine::embed::decode_for_model;
use engine::eval::svg::ScatterPlot;
use engine::heads::{self, Needs, RowReport, RunOptions};
use engine::train::metrics::MetricsLog;
use engine::train::trainer::{Trainer, CLASSIFIER};
use engine::{Error, Result, Tensor};
use std::path::Path;

/// The most samples `--track-samples` follows: one colour each in the plots' legend.
pub const MAX_TRACKED: usize = 8;

#[derive(clap::Args, Clone, Default)]
pub struct FigureFlags {
    /// Train this second head after --head, in this process, on the same batches (same --seed and
    /// recipe; the head takes its own default hyper-parameters), into OUTPUT/<head>/ each, and draw the
    /// two hyperspheres side by side into OUTPUT/hypersphere/compare-step-N.svg (data in .csv) at each
    /// evaluation: MagFace Fig. 3 (magnitude encodes quality for MagFace, not for ArcFace). Needs --head
    /// and --embedding-size 2 or 3.
    #[arg(long, value_name = "HEAD")]
    pub compare_head: Option<String>,
    /// At each evaluation, log the feature norm and the target-class probability (the head's softmax
    /// with its margin) of K training samples, records ⌊k·N/K⌋ for k < K, as "sample" events in
    /// metrics.jsonl (AdaFace Fig. 6; draw them with `analyze --trajectories`). K from 1 to 8.
    #[arg(long, value_name = "K")]
    pub track_samples: Option<usize>,
    /// At each evaluation, histogram the head's per-row terms (norm, p_y, and where the head has them
    /// ẑ, I, st, p_d) over the batch just trained on into OUTPUT/terms/step-N/, as `head --input
    /// --plot` draws them (AdaFace Fig. 3, SMAFace's weights during training).
    #[arg(long)]
    pub plot_terms: bool,
    /// Set by `compare` for each of its two runs: where this run's hypersphere goes beside the other's.
    #[arg(skip)]
    pub side: Option<Side>,
}

impl FigureFlags {
    fn any(&self) -> bool {
        self.compare_head.is_some() || self.track_samples.is_some() || self.plot_terms || self.side.is_some()
    }

    /// The first flag given, for messages.
    fn named(&self) -> &'static str {
        if self.compare_head.is_some() || self.side.is_some() {
            "--compare-head"
        } else if self.track_samples.is_some() {
            "--track-samples"
        } else {
            "--plot-terms"
        }
    }
}

/// Before anything starts: the flag combinations that cannot work, each refused naming its flag. The
/// figures read the whole classifier in the one process that evaluates.
pub fn check(flags: &FigureFlags, gpus: Option<usize>, sample_rate: Option<f64>, job: bool) -> Result<()> {
    if !flags.any() {
        return Ok(());
    }
    let flag = flags.named();
    if job || gpus.is_some_and(|n| n > 1) {
        return Err(Error::Invalid(format!(
            "{flag} runs in one process (it reads the whole classifier): leave out --gpus and the launcher"
        )));
    }
    if sample_rate.is_some_and(|r| r != 1.0) {
        return Err(Error::Invalid(format!(
            "{flag} reads the whole classifier: it cannot run with --sample-rate (Partial FC shards it)"
        )));
    }
    if let Some(k) = flags.track_samples {
        if !(1..=MAX_TRACKED).contains(&k) {
            return Err(Error::Invalid(format!(
                "--track-samples {k}: follow 1 to {MAX_TRACKED} samples (one line and colour each)"
            )));
        }
    }
    Ok(())
}

/// The records `--track-samples` follows.
struct Tracked {
    /// (record index, label) of each.
    samples: Vec<(usize, i64)>,
    /// Their normalized pixels, NHWC, one image after another.
    pixels: Vec<f32>,
}

/// What this run draws, built once the data and the trainer are known.
pub struct Figures {
    tracked: Option<Tracked>,
    plot_terms: bool,
    side: Option<Side>,
}

impl Figures {
    /// `None` when no figure flag is given: the run then goes exactly as without this module.
    pub fn new(flags: &FigureFlags, data: &TrainingData, hw: (usize, usize)) -> Result<Option<Figures>> {
        if !flags.any() {
            return Ok(None);
        }
        let tracked = flags.track_samples.map(|k| tracked_samples(&data.faceset, k, hw)).transpose()?;
        Ok(Some(Figures { tracked, plot_terms: flags.plot_terms, side: flags.side.clone() }))
    }

    /// After a step the run evaluates at (and after its last): the tracked samples' lines in the log,
    /// the batch's per-row histograms in `output/terms/step-N/`.
    pub fn after_step(
        &self,
        trainer: &mut Trainer,
        (images, labels): (&Tensor, &[i64]),
        log: Option<&mut MetricsLog>,
        output: &Path,
    ) -> Result<()> {
        let step = trainer.step;
        if let (Some(t), Some(log)) = (&self.tracked, log) {
            let (h, w) = trainer.model.config.input_hw;
            let x = Tensor::from_vec(t.pixels.clone(), [t.samples.len(), h, w, 3])?;
            let ys: Vec<i64> = t.samples.iter().map(|s| s.1).collect();
            let (rows, _) = rows(trainer, &x, &ys)?;
            for (&(index, label), r) in t.samples.iter().zip(&rows) {
                log.log(
                    "sample",
                    &[
                        ("step", step as f64),
                        ("sample", index as f64),
                        ("label", label as f64),
                        ("norm", r.norm),
                        ("p", r.log_p.exp()),
                    ],
                )?;
            }
        }
        if self.plot_terms {
            let (rows, needs) = rows(trainer, images, labels)?;
            let dir = output.join("terms").join(format!("step-{step}"));
            write_row_histograms(&dir, &rows, needs)?;
        }
        Ok(())
    }

    /// This run's hypersphere at `step`, drawn beside the other head's when it has one.
    pub fn hypersphere(&self, step: u64, plot: &ScatterPlot) -> Result<()> {
        match &self.side {
            Some(side) => side.record(step, plot),
            None => Ok(()),
        }
    }
}

/// K records spread evenly over the set, ⌊k·N/K⌋ (deterministic, whatever the seed), decoded and
/// normalized as `embed` does (no flip, no augmentation).
fn tracked_samples(set: &FaceSet, k: usize, hw: (usize, usize)) -> Result<Tracked> {
    let n = set.len();
    if k > n {
        return Err(Error::Invalid(format!("--track-samples {k}: the training set holds {n} records")));
    }
    let (mut samples, mut pixels) = (Vec::with_capacity(k), Vec::new());
    for i in (0..k).map(|j| j * n / k) {
        let s = set.sample(i).map_err(|e| Error::Io(e.to_string()))?;
        let img = decode_for_model(&s.image, hw, &format!("--track-samples: training record {i}"))?;
        extend_normalized(&mut pixels, &img.data, hw.1 * 3, false);
        samples.push((i, s.label as i64));
    }
    Ok(Tracked { samples, pixels })
}

/// The head's per-row terms of `images` under the current network and classifier (see the module's
/// comment), and what the head computes.
pub fn rows(trainer: &mut Trainer, images: &Tensor, labels: &[i64]) -> Result<(Vec<RowReport>, Needs)> {
    let x = trainer.embed(images)?;
    let dim = x.dims()[1];
    let w = trainer.classifier.get(CLASSIFIER)?.to_f64_vec()?;
    let mut head = heads::from_name(&trainer.config.head, &trainer.config.head_params)?;
    head.load_state(&trainer.head.state())?;
    head.set_training(false);
    let opts = RunOptions { compute_grad: false, frozen: None };
    let out = heads::run::<f64>(&x.to_f64_vec()?, &w, labels, dim, head.as_mut(), &opts)?;
    Ok((out.rows, head.needs()))
}
