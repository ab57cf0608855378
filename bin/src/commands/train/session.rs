//! The epochs of a run: batches from the loader through the feed into the trainer, with the progress
//! line, the metrics log, checkpoints every `--checkpoint-every` steps and at each epoch's end, and
//! verification every `eval_every` steps; then the run's summary, exported weights and plots.
//!
//! Every checkpoint is written right after a step, before any evaluation, from a trainer whose step and
//! epoch agree, so a kill at any moment leaves one that resumes. An error names the last checkpoint this
//! run wrote or resumed from (or says there is none). A SIGTERM or SIGINT ends the run after the current
//! step with a checkpoint (`stop_on_signal`).
//!
//! One rank of several (`group`): every rank steps; rank 0 alone prints the job's progress, writes the
//! metrics log (with every rank's own figures every `RANK_LOG_EVERY` steps), checkpoints and evaluates.
//! Whether to stop (a signal, the time limit) is agreed after every step, so that every rank stops after
//! the same one.

use super::data::TrainingData;
use super::figures::Figures;
use super::CmdResult;
use crate::signals;
use datasets::loader::Loader;
use engine::dist::{Communicator, ReduceOp, TcpGroup};
use engine::embed::PairEval;
use engine::eval::quality::spearman;
use engine::heads::Phase;
use engine::train::feed::{FedBatch, Feed};
use engine::train::metrics::{write_summary, MetricsLog, Progress};
use engine::train::recipe::{Recipe, StepPlan};
use engine::train::trainer::Trainer;
use engine::{Error, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps between the lines of every rank's own loss and speed in a job's metrics log.
const RANK_LOG_EVERY: u64 = 10;

pub struct Session {
    trainer: Trainer,
    plan: StepPlan,
    /// QCFace: the steps of ArcFace warm-up before hypersphere planning.
    warmup_steps: Option<u64>,
    evals: Vec<PairEval>,
    /// The first evaluation set's degradation level per image (the demo pairs').
    degradation: Option<Vec<f64>>,
    /// Rank 0's (or a lone run's); `None` on the other ranks.
    log: Option<MetricsLog>,
    /// The job this run is one rank of; `None` alone.
    group: Option<Arc<TcpGroup>>,
    /// This rank's images and the time at its last rank line.
    rank_mark: (u64, Instant),
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
    /// The step of the checkpoint on disk that this run wrote or resumed from: the last good one.
    saved_step: Option<u64>,
    /// The opt-in training figures (`figures.rs`); `None`: none asked for.
    figures: Option<Figures>,
}

/// How the epochs ended.
pub enum Ending {
    /// Every step taken, or the time limit reached: evaluate, export, summarize.
    Finished,
    /// SIGTERM or SIGINT (its number): checkpoint and exit.
    Signal(i32),
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
        resumed: bool,
        group: Option<Arc<TcpGroup>>,
    ) -> Result<Session> {
        let hw = trainer.model.config.input_hw;
        let evals = data.evals.iter().map(|p| PairEval::load(p, hw)).collect::<Result<_>>()?;
        let progress = Progress::new(plan.total_steps, trainer.step, Duration::from_secs(10));
        let trainer_step = trainer.step;
        let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
        Ok(Session {
            trainer,
            warmup_steps: recipe.warmup_steps(plan.steps_per_epoch),
            plan,
            evals,
            degradation: data.degradation.as_ref().map(|d| d.iter().map(|&v| f64::from(v)).collect()),
            log: lead.then(|| MetricsLog::open(&output.join("metrics.jsonl"))).transpose()?,
            group,
            rank_mark: (0, Instant::now()),
            progress,
            output: output.to_path_buf(),
            ckpt,
            checkpoint_every,
            limit,
            started: Instant::now(),
            eval_seconds: 0.0,
            images_seen: 0,
            last_accuracy: None,
            saved_step: resumed.then_some(trainer_step),
            figures: None,
        })
    }

    pub fn set_figures(&mut self, figures: Option<Figures>) {
        self.figures = figures;
    }

    /// The network's input (height, width).
    pub fn input_hw(&self) -> (usize, usize) {
        self.trainer.model.config.input_hw
    }

    /// Every remaining epoch; an error names the last good checkpoint.
    pub fn train(
        &mut self,
        loader: &Loader,
        feed: Feed,
    ) -> std::result::Result<Ending, Box<dyn std::error::Error>> {
        let r = self.epochs(loader, feed);
        r.map_err(|e| self.with_last_good(e.to_string()).into())
    }

    /// `error`, followed by where the last good checkpoint is.
    fn with_last_good(&self, error: String) -> String {
        match self.saved_step {
            Some(s) => format!("{error}; the last good checkpoint is {} (step {s})", self.ckpt.display()),
            None => format!("{error}; no checkpoint was written, there is nothing to resume"),
        }
    }

    /// The epochs from the trainer's step on (its epoch follows its step, so the batches to skip in a
    /// resumed epoch are the step's remainder).
    fn epochs(
        &mut self,
        loader: &Loader,
        mut feed: Feed,
    ) -> std::result::Result<Ending, Box<dyn std::error::Error>> {
        while self.trainer.step < self.plan.total_steps {
            // In a job, stopping is agreed after each step (`agreed_stop`) instead.
            if let Some(sig) = signals::received().filter(|_| self.group.is_none()) {
                return Ok(Ending::Signal(sig));
            }
            let epoch = self.trainer.epoch;
            let skip = self.trainer.step - epoch * self.plan.steps_per_epoch;
            if let Some(end) = self.epoch(loader, &mut feed, skip as usize)? {
                return Ok(end);
            }
            if self.trainer.epoch == epoch && self.trainer.step < self.plan.total_steps {
                let want = (epoch + 1) * self.plan.steps_per_epoch;
                let msg = format!(
                    "epoch {epoch} ended after step {}, expected step {want}: the loader produced too few batches",
                    self.trainer.step
                );
                return Err(Error::Invalid(msg).into());
            }
        }
        Ok(Ending::Finished)
    }

    /// One epoch's batches from `skip` on; `Some` when the time limit or a signal ends the run.
    fn epoch(
        &mut self,
        loader: &Loader,
        feed: &mut Feed,
        skip: usize,
    ) -> std::result::Result<Option<Ending>, Box<dyn std::error::Error>> {
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
            if let Some(end) = self.agreed_stop()? {
                return Ok(Some(end));
            }
            if self.trainer.step >= self.plan.total_steps {
                break;
            }
        }
        Ok(None)
    }

    /// Whether the run stops after this step: a signal, or the time limit. In a job every rank's view is
    /// combined (the largest signal number, any rank's limit), so every rank stops after the same step.
    fn agreed_stop(&mut self) -> Result<Option<Ending>> {
        let mut v = [
            f64::from(signals::received().unwrap_or(0)),
            f64::from(u8::from(self.limit.is_some_and(|l| self.trained() >= l))),
        ];
        if let Some(g) = &self.group {
            g.all_reduce(&mut v, ReduceOp::Max)?;
        }
        if v[0] > 0.0 {
            return Ok(Some(Ending::Signal(v[0] as i32)));
        }
        if v[1] > 0.0 {
            if self.is_lead() {
                eprintln!("time limit reached at step {}", self.trainer.step);
            }
            return Ok(Some(Ending::Finished));
        }
        Ok(None)
    }

    /// Rank 0 of a job, or a run alone: the one that prints, logs, checkpoints and evaluates.
    fn is_lead(&self) -> bool {
        self.log.is_some()
    }

    fn log(&mut self, event: &str, fields: &[(&str, f64)]) -> Result<()> {
        log_to(&mut self.log, event, fields)
    }

    /// Every `RANK_LOG_EVERY` steps of a job: each rank's own loss and images per second, gathered into
    /// rank 0's log.
    fn log_ranks(&mut self, images: u64) -> Result<()> {
        let Some(g) = self.group.clone() else { return Ok(()) };
        let step = self.trainer.step;
        if !step.is_multiple_of(RANK_LOG_EVERY) {
            return Ok(());
        }
        let (before, since) = self.rank_mark;
        let speed = (images - before) as f64 / since.elapsed().as_secs_f64().max(1e-9);
        self.rank_mark = (images, Instant::now());
        let all = g.all_gather(&[self.trainer.rank_loss().unwrap_or(f64::NAN), speed])?;
        for (r, v) in all.iter().enumerate() {
            let (loss, ips) = (v.first().copied().unwrap_or(f64::NAN), v.get(1).copied().unwrap_or(f64::NAN));
            self.log(
                "rank",
                &[("step", step as f64), ("rank", r as f64), ("loss", loss), ("images_per_second", ips)],
            )?;
        }
        Ok(())
    }

    /// Training time so far, evaluation excluded.
    fn trained(&self) -> Duration {
        self.progress.elapsed().saturating_sub(Duration::from_secs_f64(self.eval_seconds))
    }

    /// One training step with its logging, checkpoint and evaluation cadence.
    fn step(&mut self, images: &engine::Tensor, labels: &[i64]) -> Result<()> {
        let lead = self.is_lead();
        let t = &mut self.trainer;
        // QCFace: hypersphere planning from the first step after the warm-up (a resumed run included).
        if let Some(w) = self.warmup_steps {
            if t.step >= w && t.config.head_params.phase == Some(Phase::Warmup) {
                t.set_head_phase("planning")?;
                if lead {
                    eprintln!("step {}: QCFace in hypersphere planning (warm-up: {w} steps)", t.step + 1);
                }
            }
        }
        let out = t.train_step(images, labels)?;
        let world = self.group.as_ref().map_or(1, |g| g.world()) as u64;
        // The job's images: every rank takes a batch of the same size.
        self.images_seen += labels.len() as u64 * world;
        let mut fields = vec![("step", t.step as f64), ("loss", out.loss), ("lr", out.lr)];
        if self.warmup_steps.is_some() {
            // 1 when this step trained in QCFace's planning phase, 0 in its ArcFace warm-up.
            let planning = t.config.head_params.phase != Some(Phase::Warmup);
            fields.push(("planning", f64::from(u8::from(planning))));
        }
        if let (Some(scale), Some(s)) = (out.loss_scale, t.loss_scaler()) {
            self.progress.set_loss_scale(scale, s.skipped_steps());
            fields.extend([("loss_scale", scale), ("skipped", f64::from(u8::from(out.skipped)))]);
        }
        // The epoch this step belonged to (the trainer's has moved on after an epoch's last step).
        let epoch = (t.step - 1) / self.plan.steps_per_epoch;
        let step = t.step;
        if lead {
            self.progress.print(epoch as usize, step, out.loss, out.lr, self.images_seen);
        }
        self.log("step", &fields)?;
        self.log_ranks(self.images_seen / world)?;
        let epoch_end = step.is_multiple_of(self.plan.steps_per_epoch);
        if step == self.plan.total_steps {
            engine::kill_point::reached("last-step");
        }
        if epoch_end {
            engine::kill_point::reached("epoch-end");
        }
        if epoch_end || step.is_multiple_of(self.checkpoint_every) {
            self.save()?;
        }
        // The figures at each evaluation and after the last step (which `finish` evaluates).
        let evaluates = step.is_multiple_of(self.plan.eval_every) || step == self.plan.total_steps;
        if let (true, Some(f)) = (lead && evaluates, &self.figures) {
            f.after_step(&mut self.trainer, (images, labels), self.log.as_mut(), &self.output)?;
        }
        // A pending signal ends the run before an evaluation that could take minutes.
        if lead && step.is_multiple_of(self.plan.eval_every) && signals::received().is_none() {
            self.last_accuracy = self.evaluate()?.or(self.last_accuracy);
        }
        Ok(())
    }

    /// Writes the checkpoint unless the one on disk already holds this step (in a job, rank 0 writes it,
    /// from the backbone every rank holds and the classifier gathered from their shards).
    fn save(&mut self) -> Result<()> {
        let step = self.trainer.step;
        if self.saved_step != Some(step) {
            // Every rank: a sharded head's rows are gathered to rank 0.
            let lead = self.is_lead();
            self.trainer.save_if(&self.ckpt, lead)?;
            self.saved_step = Some(step);
        }
        Ok(())
    }

    /// After SIGTERM or SIGINT: the checkpoint of the current step, one line naming the signal and the
    /// checkpoint, and the shell's status for a process that signal ended (143, 130).
    pub fn stop_on_signal(mut self, sig: i32) -> CmdResult {
        self.save().map_err(|e| self.with_last_good(e.to_string()))?;
        if let Some(g) = &self.group {
            g.close();
        }
        if self.is_lead() {
            eprintln!(
                "stopped by {} at step {} (epoch {}): checkpoint {}; continue with --resume",
                signals::name(sig),
                self.trainer.step,
                self.trainer.epoch,
                self.ckpt.display()
            );
        }
        std::process::exit(128 + sig);
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
            engine::kill_point::reached("evaluation");
            eprintln!("step {} {} ({:.1}s)", t.step, r.report.summary(&ev.name), t0.elapsed().as_secs_f64());
            log_to(
                &mut self.log,
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
            // Embeddings of 2 or 3 dimensions (the papers' toy hyperspheres): the first set's, drawn with
            // the class centres (when this process holds them all) into hypersphere/step-N/.
            if k == 0 && (r.dim == 2 || r.dim == 3) {
                let dir = self.output.join("hypersphere").join(format!("step-{}", t.step));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::Io(format!("{}: cannot create: {e}", dir.display())))?;
                let centres = match t.class_shard() {
                    None => Some(t.classifier.get(engine::train::trainer::CLASSIFIER)?.to_f64_vec()?),
                    Some(_) => None,
                };
                let labels = vec![0i64; r.embeddings.len() / r.dim];
                let plot = crate::commands::analyze::write_hypersphere(
                    &dir,
                    &r.embeddings,
                    r.dim,
                    &labels,
                    self.degradation.as_deref(),
                    centres.as_deref(),
                )?;
                if let Some(f) = &self.figures {
                    f.hypersphere(t.step, &plot)?;
                }
            }
            // On the demo pairs the degradation of each image is known: a quality-aware embedding's
            // magnitude should fall as degradation rises (negative rank correlation).
            if let (0, Some(deg)) = (k, &self.degradation) {
                let rho = spearman(&r.norms, deg)?;
                eprintln!("step {} magnitude vs degradation: Spearman {rho:.3}", t.step);
                log_to(
                    &mut self.log,
                    "quality",
                    &[("step", t.step as f64), ("spearman_norm_degradation", rho)],
                )?;
            }
            first.get_or_insert(r.report.accuracy_mean);
        }
        self.eval_seconds += eval_start.elapsed().as_secs_f64();
        Ok(first)
    }

    /// The final checkpoint and evaluation, the weights in PyTorch layout, the plots and the summary.
    pub fn finish(mut self, recipe: &Recipe) -> CmdResult {
        self.save().map_err(|e| self.with_last_good(e.to_string()))?;
        if let Some(g) = self.group.as_ref().filter(|_| !self.is_lead()) {
            g.close();
            return Ok(());
        }
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
        if let Some(g) = &self.group {
            g.close();
        }
        Ok(())
    }
}

/// Appends to the log when this rank keeps one.
fn log_to(log: &mut Option<MetricsLog>, event: &str, fields: &[(&str, f64)]) -> Result<()> {
    match log {
        Some(l) => l.log(event, fields),
        None => Ok(()),
    }
}
