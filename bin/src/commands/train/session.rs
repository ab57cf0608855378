//! The epochs of a run: batches from the loader through the feed into the trainer, with the progress
//! line, the metrics log, checkpoints every `--checkpoint-every` steps and at each epoch's end, and
//! verification every `eval_every` steps; then the run's summary, exported weights and plots.

use super::data::TrainingData;
use super::CmdResult;
use datasets::loader::Loader;
use engine::embed::PairEval;
use engine::eval::quality::spearman;
use engine::train::feed::{FedBatch, Feed};
use engine::train::metrics::{write_summary, MetricsLog, Progress};
use engine::train::recipe::{Recipe, StepPlan};
use engine::train::trainer::Trainer;
use engine::{Error, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Session {
    trainer: Trainer,
    plan: StepPlan,
    qcface_warmup: Option<f64>,
    evals: Vec<PairEval>,
    degradation: Option<Vec<f32>>,
    log: MetricsLog,
    progress: Progress,
    output: PathBuf,
    ckpt: PathBuf,
    checkpoint_every: u64,
    limit: Option<Duration>,
    started: Instant,
    /// Time spent evaluating, so that "train_seconds" counts training alone.
    eval_seconds: f64,
    images_seen: u64,
    last_accuracy: Option<f64>,
}

/// A batch the loader made, on its way to the device (or the error met making it, kept for its turn).
type Ahead = std::result::Result<FedBatch, Box<dyn std::error::Error>>;

impl Session {
    pub fn new(
        trainer: Trainer,
        recipe: &Recipe,
        plan: StepPlan,
        data: &TrainingData,
        output: &Path,
        ckpt: PathBuf,
        checkpoint_every: u64,
        limit: Option<Duration>,
    ) -> Result<Session> {
        let hw = trainer.model.config.input_hw;
        let evals = data.evals.iter().map(|p| PairEval::load(p, hw)).collect::<Result<_>>()?;
        let progress = Progress::new(plan.total_steps, trainer.step, Duration::from_secs(10));
        Ok(Session {
            trainer,
            plan,
            qcface_warmup: recipe.qcface_warmup,
            evals,
            degradation: data.degradation.clone(),
            log: MetricsLog::open(&output.join("metrics.jsonl"))?,
            progress,
            output: output.to_path_buf(),
            ckpt,
            checkpoint_every,
            limit,
            started: Instant::now(),
            eval_seconds: 0.0,
            images_seen: 0,
            last_accuracy: None,
        })
    }

    /// Every remaining epoch. Invariant at an epoch's start: step == epoch * steps_per_epoch + batches
    /// already taken (resume).
    pub fn train(&mut self, loader: &Loader, mut feed: Feed) -> CmdResult {
        while self.trainer.step < self.plan.total_steps && self.trainer.epoch < self.plan.total_epochs {
            let epoch = self.trainer.epoch;
            if self.qcface_warmup.is_some_and(|w| epoch as f64 >= w) {
                self.trainer.set_head_phase("planning")?;
            }
            let epoch_start = epoch * self.plan.steps_per_epoch;
            let skip = self
                .trainer
                .step
                .checked_sub(epoch_start)
                .filter(|&s| s < self.plan.steps_per_epoch)
                .ok_or_else(|| {
                    let (c, s) = (self.ckpt.display(), self.trainer.step);
                    Error::Io(format!("{c}: step {s} does not fall in epoch {epoch}"))
                })?;
            if self.epoch(loader, &mut feed, skip as usize)? {
                return Ok(());
            }
            if self.trainer.step == epoch_start + self.plan.steps_per_epoch {
                self.trainer.epoch += 1;
                self.trainer.save(&self.ckpt)?;
            } else if self.trainer.step < self.plan.total_steps {
                let want = epoch_start + self.plan.steps_per_epoch;
                let msg = format!(
                    "epoch {epoch} ended after step {}, expected step {want}: the loader produced too few batches",
                    self.trainer.step
                );
                return Err(Error::Invalid(msg).into());
            }
        }
        Ok(())
    }

    /// One epoch's batches from `skip` on; true when the time limit stopped the run.
    fn epoch(
        &mut self,
        loader: &Loader,
        feed: &mut Feed,
        skip: usize,
    ) -> std::result::Result<bool, Box<dyn std::error::Error>> {
        let mut batches = loader.epoch(self.trainer.epoch).skip(skip);
        // On a staging device, the batch after the current one, already staged (its copy queued).
        let mut ahead: Option<Ahead> = None;
        let prepare = |feed: &mut Feed, b: std::result::Result<_, datasets::DataError>| -> Ahead {
            Ok(feed.prepare(b?)?)
        };
        while let Some(fed) = ahead.take().or_else(|| batches.next().map(|b| prepare(feed, b))) {
            let fed = fed?;
            for (key, why) in &fed.skipped {
                eprintln!("skipped record {key}: {why}");
            }
            let batch = feed.take(fed)?;
            if feed.stages_ahead() {
                // Queued before step k's kernels, batch k+1's copy runs beside them; a loader error is
                // kept for its turn, after step k (as without staging).
                ahead = batches.next().map(|b| prepare(feed, b));
            }
            self.step(&batch.images, &batch.labels)?;
            if self.limit.is_some_and(|l| self.trained() >= l) {
                eprintln!("time limit reached at step {}", self.trainer.step);
                return Ok(true);
            }
            if self.trainer.step >= self.plan.total_steps {
                break;
            }
        }
        Ok(false)
    }

    /// Training time so far, evaluation excluded.
    fn trained(&self) -> Duration {
        self.progress.elapsed().saturating_sub(Duration::from_secs_f64(self.eval_seconds))
    }

    /// One training step with its logging, checkpoint and evaluation cadence.
    fn step(&mut self, images: &engine::Tensor, labels: &[i64]) -> Result<()> {
        let t = &mut self.trainer;
        let out = t.train_step(images, labels).map_err(|e| {
            Error::Invalid(format!("{e}; the last good checkpoint is {}", self.ckpt.display()))
        })?;
        self.images_seen += labels.len() as u64;
        let mut fields = vec![("step", t.step as f64), ("loss", out.loss), ("lr", out.lr)];
        if let (Some(scale), Some(s)) = (out.loss_scale, t.loss_scaler()) {
            self.progress.set_loss_scale(scale, s.skipped_steps());
            fields.extend([("loss_scale", scale), ("skipped", f64::from(u8::from(out.skipped)))]);
        }
        self.progress.print(t.epoch as usize, t.step, out.loss, out.lr, self.images_seen);
        self.log.log("step", &fields)?;
        if t.step.is_multiple_of(self.checkpoint_every) {
            t.save(&self.ckpt)?;
        }
        if t.step.is_multiple_of(self.plan.eval_every) {
            self.last_accuracy = self.evaluate()?.or(self.last_accuracy);
        }
        Ok(())
    }

    /// Verification on every set; returns the first set's accuracy.
    fn evaluate(&mut self) -> Result<Option<f64>> {
        let mut first = None;
        let eval_start = Instant::now();
        let train_seconds = self.started.elapsed().as_secs_f64() - self.eval_seconds;
        let t = &mut self.trainer;
        for (k, ev) in self.evals.iter().enumerate() {
            let t0 = Instant::now();
            let r = ev.run(&t.model, &mut t.params)?;
            eprintln!("step {} {} ({:.1}s)", t.step, r.report.summary(&ev.name), t0.elapsed().as_secs_f64());
            self.log.log(
                "eval",
                &[
                    ("step", t.step as f64),
                    ("epoch", t.epoch as f64),
                    ("seconds", self.started.elapsed().as_secs_f64()),
                    ("train_seconds", train_seconds),
                    ("accuracy", r.report.accuracy_mean),
                    ("accuracy_std", r.report.accuracy_std),
                    ("auc", r.report.auc),
                ],
            )?;
            // On the demo pairs the degradation of each image is known: a quality-aware embedding's
            // magnitude should fall as degradation rises (negative rank correlation).
            if let (0, Some(deg)) = (k, &self.degradation) {
                let d: Vec<f64> = deg.iter().map(|&v| v as f64).collect();
                let rho = spearman(&r.norms, &d)?;
                eprintln!("step {} magnitude vs degradation: Spearman {rho:.3}", t.step);
                self.log.log("quality", &[("step", t.step as f64), ("spearman_norm_degradation", rho)])?;
            }
            first.get_or_insert(r.report.accuracy_mean);
        }
        self.eval_seconds += eval_start.elapsed().as_secs_f64();
        Ok(first)
    }

    /// The final checkpoint and evaluation, the weights in PyTorch layout, the plots and the summary.
    pub fn finish(mut self, recipe: &Recipe) -> CmdResult {
        self.trainer.save(&self.ckpt)?;
        if !self.trainer.step.is_multiple_of(self.plan.eval_every) || self.last_accuracy.is_none() {
            self.last_accuracy = self.evaluate()?.or(self.last_accuracy);
        }
        let secs = self.started.elapsed().as_secs_f64();
        let train_secs = secs - self.eval_seconds;
        let model_path = self.output.join("model.safetensors");
        let t = &self.trainer;
        engine::model::export::export_pytorch(&model_path, &t.model.config, &t.params)?;
        crate::run_plots::write_training_plots(&self.output)?;
        write_summary(
            &self.output.join("summary.json"),
            &[
                ("backbone", json!(recipe.backbone_name)),
                ("head", json!(recipe.head)),
                ("steps", json!(t.step)),
                ("precision", json!(recipe.precision.name())),
                ("skipped_steps", json!(t.loss_scaler().map_or(0, |s| s.skipped_steps()))),
                ("epochs", json!(t.epoch)),
                ("seconds", json!(secs)),
                ("train_seconds", json!(train_secs)),
                ("images_per_second", json!(self.images_seen as f64 / train_secs.max(1e-9))),
                ("verification_accuracy", json!(self.last_accuracy)),
            ],
        )?;
        eprintln!(
            "done: {} steps in {secs:.1}s ({train_secs:.1}s training, the rest evaluation); verification accuracy {}; weights {} (PyTorch layout), checkpoint {}",
            t.step,
            self.last_accuracy.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or("n/a".into()),
            model_path.display(),
            self.ckpt.display()
        );
        Ok(())
    }
}
