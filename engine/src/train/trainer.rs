//! One training run in memory: backbone parameters, the classifier weight, the head (with its running
//! state), the optimizer and the step counter. `train_step` is the whole step (forward, head loss,
//! backward, clip, update); the command line drives epochs, evaluation and checkpoints around it.
//!
//! A non-finite loss or gradient never reaches the weights: the step is undone (batch-norm running
//! statistics and the head's running state are restored too). In f32 and bf16 an error then says which
//! step failed; in fp16 the step is skipped, the loss scale lowered, and training goes on (see
//! `train::loss_scale`), until the scaler gives up.

use crate::heads::{self, Head, HeadParams, HeadState};
use crate::model::{IResNet, IResNetConfig, ParamKind, ParamStore};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroups, Sgd, SgdConfig};
use crate::rng::Rng;
use crate::tape::Tape;
use crate::tensor::{DType, Device, Tensor};
use crate::train::checkpoint::{self, CheckpointRef};
use crate::train::loss_scale::{LossScaleConfig, LossScaler};
use crate::train::precision::Precision;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Name of the classifier weight `[classes, embedding]` (insightface's partial_fc keeps it apart too).
pub const CLASSIFIER: &str = "classifier.weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerChoice {
    Sgd,
    AdamW,
}

#[derive(Debug, Clone)]
pub struct TrainerConfig {
    pub backbone: IResNetConfig,
    /// Backbone name as given on the command line (stored in checkpoints and checked on resume).
    pub backbone_name: String,
    pub head: String,
    pub head_params: HeadParams,
    pub num_classes: usize,
    pub optimizer: OptimizerChoice,
    pub lr: f64,
    pub schedule: LrSchedule,
    pub momentum: f64,
    pub weight_decay: f64,
    pub no_bn_weight_decay: bool,
    /// Clip the backbone's gradient norm (insightface clips at 5).
    pub grad_clip: Option<f64>,
    pub seed: u64,
    pub precision: Precision,
    /// Used when `precision` is fp16.
    pub loss_scale: LossScaleConfig,
}

#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub lr: f64,
    /// fp16: the gradients overflowed, nothing was updated and the loss scale was lowered.
    pub skipped: bool,
    /// fp16: the loss scale after this step (the one the next step uses).
    pub loss_scale: Option<f64>,
}

/// What `Trainer::forward_backward` computed.
pub struct ForwardBackward {
    /// The batch-mean loss (rank 0, on the trainer's device).
    pub loss: Tensor,
    /// The backbone's embeddings `[B, D]`.
    pub embeddings: Tensor,
    /// Every trainable tensor's gradient by name, the classifier's as `CLASSIFIER`.
    pub grads: Vec<(String, Tensor)>,
}

/// What one attempt at a step came to, before the scaler moves.
enum Attempt {
    Applied(StepOutcome),
    /// fp16 only: a non-finite loss or gradient; `why` says which.
    Overflow {
        loss: f64,
        lr: f64,
        why: String,
    },
}

pub struct Trainer {
    pub config: TrainerConfig,
    pub model: IResNet,
    pub params: ParamStore,
    pub classifier: ParamStore,
    pub head: Box<dyn Head>,
    optimizer: Box<dyn Optimizer>,
    /// Present iff training in fp16.
    scaler: Option<LossScaler>,
    /// Steps taken so far, skipped fp16 steps included (the schedule and the data order count them).
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    rng: Rng,
    /// Where parameters, classifier and optimizer state live (`to_device`); checkpoints stay host-side.
    device: Device,
}

impl Trainer {
    pub fn new(config: TrainerConfig) -> Result<Trainer> {
        if config.num_classes < 2 {
            return Err(Error::Invalid(format!("{} classes: training needs at least 2", config.num_classes)));
        }
        config.schedule.validate()?;
        let model = IResNet::new(config.backbone.clone())?;
        let rng = Rng::new(config.seed);
        let params = model.init(&mut rng.fork(1), DType::F32)?;
        let mut classifier = ParamStore::new();
        // insightface's partial_fc draws the class centres from N(0, 0.01).
        let mut crng = rng.fork(2);
        let d = config.backbone.embedding_size;
        let w: Vec<f32> = (0..config.num_classes * d).map(|_| (0.01 * crng.normal()) as f32).collect();
        classifier.insert(CLASSIFIER, Tensor::from_vec(w, [config.num_classes, d])?, ParamKind::Trainable)?;
        let head = heads::from_name(&config.head, &config.head_params)?;
        let groups = if config.no_bn_weight_decay {
            ParamGroups::no_decay_on_batchnorm(config.weight_decay)
        } else {
            ParamGroups::uniform(config.weight_decay)
        };
        let optimizer: Box<dyn Optimizer> = match config.optimizer {
            OptimizerChoice::Sgd => {
                Box::new(Sgd::new(SgdConfig { momentum: config.momentum, ..SgdConfig::default() }, groups))
            }
            OptimizerChoice::AdamW => Box::new(AdamW::new(AdamWConfig::default(), groups)),
        };
        let scaler = if config.precision.needs_loss_scaling() {
            Some(LossScaler::new(config.loss_scale.clone())?)
        } else {
            None
        };
        Ok(Trainer {
            config,
            model,
            params,
            classifier,
            head,
            optimizer,
            scaler,
            step: 0,
            epoch: 0,
            rng,
            device: Device::Cpu,
        })
    }

    /// Switches a two-phase head (QCFace: `warmup`, then `planning`); a no-op when already there.
    pub fn set_head_phase(&mut self, phase: &str) -> Result<()> {
        let mut p = self.config.head_params.clone();
        p.phase = Some(phase.parse()?);
        if p.phase != self.config.head_params.phase {
            // QCFace's only running state is its phase, which the new head holds.
            self.head = heads::from_name(&self.config.head, &p)?;
            self.config.head_params = p;
        }
        Ok(())
    }

    /// Moves the backbone and the classifier to `device` once (optimizer state follows on its next
    /// update); batches given to `train_step` are uploaded there. Training on CUDA is f32.
    pub fn to_device(&mut self, device: &Device) -> Result<()> {
        self.params = self.params.to_device(device)?;
        self.classifier = self.classifier.to_device(device)?;
        self.device = device.clone();
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The fp16 loss scaler (`None` in f32 and bf16).
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.config.schedule.lr(self.config.lr, self.step as usize)
    }

    /// One optimizer step on a batch: `images` NHWC f32 normalized, `labels` in 0..classes. `images` may
    /// be on the host (uploaded here) or already on the trainer's device, used as it is: on a GPU the
    /// training loop passes `BatchUploader::take`'s tensor, whose copy overlapped the previous step.
    pub fn train_step(&mut self, images: &Tensor, labels: &[i64]) -> Result<StepOutcome> {
        let classes = self.config.num_classes as i64;
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= classes) {
            return Err(Error::Invalid(format!("label {l} of sample {i} is outside [0, {classes})")));
        }
        // Shared-storage copies: restoring them undoes the running-statistics updates of a failed step.
        let params_before = self.params.clone();
        let head_before = self.head.state();
        let rng_before = self.rng.clone();
        let attempt = self.try_step(images, labels);
        if !matches!(attempt, Ok(Attempt::Applied(_))) {
            self.params = params_before;
            self.head.load_state(&head_before)?;
            self.rng = rng_before;
        }
        match attempt? {
            Attempt::Applied(mut o) => {
                if let Some(s) = &mut self.scaler {
                    s.update(false);
                    o.loss_scale = Some(s.scale() as f64);
                }
                Ok(o)
            }
            Attempt::Overflow { loss, lr, why } => {
                let s = self.scaler.as_mut().expect("only fp16 (with a scaler) reports overflows");
                s.update(true);
                if let Some(reason) = s.exhausted() {
                    return Err(Error::Invalid(format!(
                        "fp16: {why} at step {}: the step was not applied, and {reason}; stopping (try --precision bf16, or a lower --lr)",
                        self.step
                    )));
                }
                let scale = s.scale() as f64;
                self.step += 1;
                Ok(StepOutcome { loss, lr, skipped: true, loss_scale: Some(scale) })
            }
        }
    }

    /// One forward and backward on a batch in training mode (batch-norm running statistics and the head's
    /// running state move), the loss gradient seeded with `loss_scale` (fp16) or 1: the loss, the
    /// embeddings and every gradient by name (the classifier's as `CLASSIFIER`). No update. The step, the
    /// device start-up check and the parity checks all run this.
    pub fn forward_backward(
        &mut self,
        images: &Tensor,
        labels: &[i64],
        loss_scale: Option<f64>,
    ) -> Result<ForwardBackward> {
        self.head.set_training(true);
        let mut tape = Tape::new();
        tape.set_autocast(self.config.precision.half_dtype())?;
        let x = tape.constant(images.to_device(&self.device)?);
        let emb = self.model.forward(&mut tape, &mut self.params, x, true, &mut self.rng)?;
        let w = self.classifier.var(&mut tape, CLASSIFIER)?;
        let loss = heads::loss(&mut tape, emb, w, labels, self.head.as_mut())?;
        // The backward is queued before the loss is read: on a GPU, reading it first would leave the
        // device idle while the host queues the backward. A non-finite loss only costs a wasted backward.
        let grads = match loss_scale {
            None => tape.backward(loss)?,
            Some(scale) => {
                // Scaling the loss is scaling the gradient it seeds.
                let v = tape.value(loss);
                let seed = Tensor::full(v.shape().clone(), scale, v.dtype(), &v.device())?;
                tape.backward_with(loss, seed)?
            }
        };
        Ok(ForwardBackward {
            loss: tape.value(loss).clone(),
            embeddings: tape.value(emb).clone(),
            grads: grads.params().to_vec(),
        })
    }

    fn try_step(&mut self, images: &Tensor, labels: &[i64]) -> Result<Attempt> {
        let scale = self.scaler.as_ref().map(|s| s.scale() as f64);
        let ForwardBackward { loss, grads, .. } = self.forward_backward(images, labels, scale)?;
        let loss_value = loss.scalar_value()?;
        let lr = self.current_lr();
        let overflow = |why: String| Ok(Attempt::Overflow { loss: loss_value, lr, why });
        if !loss_value.is_finite() {
            if self.scaler.is_some() {
                return overflow(format!("loss is {loss_value}"));
            }
            return Err(Error::Invalid(format!(
                "loss is {loss_value} at step {}: the step was not applied (lower --lr, or check the data)",
                self.step
            )));
        }
        let (mut backbone, mut head_grads): (Vec<_>, Vec<_>) =
            grads.into_iter().partition(|(n, _)| n != CLASSIFIER);
        if let Some(s) = &self.scaler {
            let bad_backbone = s.unscale(&mut backbone)?;
            if let Some(n) = bad_backbone.or(s.unscale(&mut head_grads)?) {
                return overflow(format!("gradient of '{n}' is not finite"));
            }
        } else {
            let all: Vec<&Tensor> = backbone.iter().chain(&head_grads).map(|(_, g)| g).collect();
            if let Some(i) = crate::backend::for_device(&self.device).first_nonfinite(&all)? {
                let n = if i < backbone.len() { &backbone[i].0 } else { &head_grads[i - backbone.len()].0 };
                return Err(Error::Invalid(format!(
                    "gradient of '{n}' is not finite at step {}: the step was not applied",
                    self.step
                )));
            }
        }
        if let Some(max) = self.config.grad_clip {
            clip_grad_norm(&mut backbone, max)?;
        }
        self.optimizer.step(&mut self.params, &backbone, lr)?;
        self.optimizer.step(&mut self.classifier, &head_grads, lr)?;
        self.step += 1;
        Ok(Attempt::Applied(StepOutcome { loss: loss_value, lr, skipped: false, loss_scale: None }))
    }

    /// Embeddings `[N, D]` of NHWC images in evaluation mode (running statistics, no dropout).
    pub fn embed(&mut self, images: &Tensor) -> Result<Tensor> {
        crate::embed::embed_with(&self.model, &mut self.params, images)
    }

    fn head_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut v = vec![(CLASSIFIER.to_string(), self.classifier.get(CLASSIFIER)?.clone())];
        v.extend(self.head.state().to_tensors());
        Ok(v)
    }

    fn run_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("backbone".into(), self.config.backbone_name.clone());
        m.insert("head".into(), self.config.head.clone());
        m.insert("num_classes".into(), self.config.num_classes.to_string());
        let (h, w) = self.config.backbone.input_hw;
        m.insert("input".into(), format!("{h}x{w}"));
        m.insert("seed".into(), self.config.seed.to_string());
        m.insert("precision".into(), self.config.precision.to_string());
        m
    }

    /// Writes a checkpoint atomically (temporary name, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let head = self.head_tensors()?;
        let mut extra = self.run_metadata();
        if let Some(s) = &self.scaler {
            extra.extend(s.to_metadata());
        }
        checkpoint::save(
            path,
            &CheckpointRef {
                step: self.step,
                epoch: self.epoch,
                model: &self.params,
                optimizer: self.optimizer.as_ref(),
                head: &head,
                rngs: &[("train", &self.rng)],
                extra: &extra,
            },
        )
    }

    /// Restores everything `save` wrote; the run's backbone, head and classes must be the same.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let c = checkpoint::load(path)?;
        for (k, v) in self.run_metadata() {
            // A run may change its seed or precision when it resumes (bit-identity then needs neither).
            if k == "seed" || k == "precision" {
                continue;
            }
            if let Some(saved) = c.extra.get(&k) {
                if *saved != v {
                    return Err(Error::Io(format!(
                        "{}: checkpoint was made with {k} = {saved}, this run has {k} = {v}",
                        path.display()
                    )));
                }
            }
        }
        if let Some(s) = &mut self.scaler {
            // A checkpoint of an f32 or bf16 run has no scaler state: fp16 then starts from the initial scale.
            s.load_metadata(&c.extra, &path.display().to_string())?;
        }
        let head = c.head_checked(&self.head_tensors()?)?.to_vec();
        c.restore(&mut self.params, self.optimizer.as_mut())?;
        let (w, state): (Vec<_>, Vec<_>) = head.into_iter().partition(|(n, _)| n == CLASSIFIER);
        self.classifier.set(CLASSIFIER, w[0].1.clone())?;
        self.head.load_state(&HeadState::from_tensors(&state)?)?;
        self.rng = c.rng("train")?;
        self.step = c.step;
        self.epoch = c.epoch;
        if !self.device.is_cpu() {
            let dev = self.device.clone();
            self.to_device(&dev)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_trainer() -> Trainer {
        tiny_trainer_in(Precision::F32, LossScaleConfig::default())
    }

    fn tiny_trainer_in(precision: Precision, loss_scale: LossScaleConfig) -> Trainer {
        let mut backbone = IResNetConfig::small();
        backbone.input_hw = (16, 16);
        backbone.widths = [4, 4, 4, 4];
        backbone.embedding_size = 8;
        Trainer::new(TrainerConfig {
            backbone,
            backbone_name: "small".into(),
            head: "cosface".into(),
            head_params: HeadParams { s: Some(16.0), ..HeadParams::default() },
            num_classes: 3,
            optimizer: OptimizerChoice::Sgd,
            lr: 0.1,
            schedule: LrSchedule::Constant,
            momentum: 0.9,
            weight_decay: 5e-4,
            no_bn_weight_decay: false,
            grad_clip: None,
            seed: 3,
            precision,
            loss_scale,
        })
        .unwrap()
    }

    fn batch(v: f32) -> Tensor {
        let mut rng = Rng::new(9);
        let px: Vec<f32> = (0..4 * 16 * 16 * 3).map(|_| v * rng.normal() as f32).collect();
        Tensor::from_vec(px, [4, 16, 16, 3]).unwrap()
    }

    fn snapshot(t: &Trainer) -> Vec<Vec<f64>> {
        let mut v: Vec<Vec<f64>> = t.params.entries().iter().map(|e| e.value.to_f64_vec().unwrap()).collect();
        v.push(t.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap());
        v
    }

    #[test]
    fn a_non_finite_loss_never_reaches_the_weights() {
        let mut t = tiny_trainer();
        t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        let before = snapshot(&t);
        let mut bad = batch(1.0);
        bad.as_mut_slice::<f32>().unwrap()[5] = f32::NAN;
        let err = t.train_step(&bad, &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(err.contains("step 1") && err.contains("not applied"), "{err}");
        assert_eq!(t.step, 1);
        // Weights, batch-norm running statistics and the classifier are exactly as before the bad step.
        assert!(snapshot(&t) == before);
        // And training goes on from there.
        t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        assert_eq!(t.step, 2);
    }

    #[test]
    fn labels_out_of_range_are_refused_before_any_work() {
        let mut t = tiny_trainer();
        let e = t.train_step(&batch(1.0), &[0, 1, 3, 0]).unwrap_err().to_string();
        assert!(e.contains("label 3") && e.contains("[0, 3)"), "{e}");
        assert_eq!(t.step, 0);
    }

    #[test]
    fn loss_decreases_on_a_repeated_batch() {
        let mut t = tiny_trainer();
        let x = batch(1.0);
        let first = t.train_step(&x, &[0, 1, 2, 0]).unwrap().loss;
        let mut last = first;
        for _ in 0..15 {
            last = t.train_step(&x, &[0, 1, 2, 0]).unwrap().loss;
        }
        assert!(last < 0.5 * first, "loss went from {first} to {last}");
    }

    /// Named tensors as bit patterns (exact comparison, NaN included).
    fn bits(v: Vec<(String, Tensor)>) -> Vec<(String, Vec<u64>)> {
        v.into_iter()
            .map(|(n, t)| (n, t.to_f64_vec().unwrap().iter().map(|x| x.to_bits()).collect()))
            .collect()
    }

    fn scaled(init_scale: f32) -> LossScaleConfig {
        LossScaleConfig { init_scale, ..LossScaleConfig::default() }
    }

    #[test]
    fn fp16_overflow_skips_the_step_halves_the_scale_and_training_goes_on() {
        let mut t = tiny_trainer_in(Precision::Fp16, scaled(2f32.powi(40)));
        let before = snapshot(&t);
        let optim_before = bits(t.optimizer.state());
        let head_before = bits(t.head.state().to_tensors());
        let out = t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        assert!(out.skipped && out.loss.is_finite(), "{out:?}");
        assert_eq!(out.loss_scale, Some(2f64.powi(39)));
        // Weights, batch-norm running statistics, classifier, optimizer and head state: bit for bit.
        assert!(snapshot(&t) == before);
        assert!(bits(t.optimizer.state()) == optim_before);
        assert!(bits(t.head.state().to_tensors()) == head_before);
        assert_eq!(t.step, 1, "a skipped step still counts (schedule and data order)");
        let s = t.loss_scaler().unwrap();
        assert_eq!((s.skipped_steps(), s.consecutive_skips(), s.growth_tracker()), (1, 1, 0));
        // The scale keeps halving until the gradients fit fp16, then steps are applied.
        let mut applied = 0;
        for _ in 0..45 {
            if !t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap().skipped {
                applied += 1;
            }
        }
        assert!(applied >= 5, "only {applied} of 45 steps were applied");
        assert!(snapshot(&t) != before);
        let s = t.loss_scaler().unwrap();
        assert!(s.scale() < 2f32.powi(30) && s.consecutive_skips() == 0, "{s:?}");
    }

    #[test]
    fn a_skipped_fp16_step_leaves_a_heads_running_state_alone() {
        // CurricularFace moves its running t on every training forward; a skipped step must undo that.
        let mut t = tiny_trainer_in(Precision::Fp16, scaled(2f32.powi(40)));
        t.config.head = "curricularface".into();
        t.head = heads::from_name("curricularface", &HeadParams::default()).unwrap();
        let before = bits(t.head.state().to_tensors());
        assert!(t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap().skipped);
        assert!(bits(t.head.state().to_tensors()) == before);
        while t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap().skipped {}
        assert!(bits(t.head.state().to_tensors()) != before, "an applied step did not move the head's state");
    }

    #[test]
    fn fp16_stops_with_a_clear_message_when_every_step_overflows() {
        let cfg = LossScaleConfig {
            init_scale: 2f32.powi(60),
            max_consecutive_skips: 2,
            ..LossScaleConfig::default()
        };
        let mut t = tiny_trainer_in(Precision::Fp16, cfg);
        let before = snapshot(&t);
        assert!(t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap().skipped);
        let e = t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(e.contains("fp16") && e.contains("step 1") && e.contains("2 steps in a row"), "{e}");
        assert!(snapshot(&t) == before);
    }

    #[test]
    fn fp16_skips_a_non_finite_step_where_f32_and_bf16_stop() {
        // A NaN pixel: (the head clamps cosines, so the loss may stay finite) the gradients are not.
        let mut bad = batch(1.0);
        bad.as_mut_slice::<f32>().unwrap()[5] = f32::NAN;
        let mut h = tiny_trainer_in(Precision::Fp16, scaled(1.0));
        let before = snapshot(&h);
        let out = h.train_step(&bad, &[0, 1, 2, 0]).unwrap();
        assert!(out.skipped, "{out:?}");
        assert_eq!(h.loss_scaler().unwrap().scale(), 0.5);
        assert!(snapshot(&h) == before);
        let mut b = tiny_trainer_in(Precision::Bf16, LossScaleConfig::default());
        let e = b.train_step(&bad, &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(e.contains("step 0") && e.contains("not applied"), "{e}");
        assert!(b.loss_scaler().is_none());
    }

    #[test]
    fn bf16_and_fp16_training_still_lowers_the_loss_and_really_rounds() {
        let x = batch(1.0);
        let labels = [0, 1, 2, 0];
        let run = |p: Precision| {
            let mut t = tiny_trainer_in(p, LossScaleConfig::default());
            let steps: Vec<StepOutcome> = (0..24).map(|_| t.train_step(&x, &labels).unwrap()).collect();
            (steps, snapshot(&t))
        };
        let (f32_run, f32_weights) = run(Precision::F32);
        for p in [Precision::Bf16, Precision::Fp16] {
            let (steps, weights) = run(p);
            // This tiny net's weight gradients reach ~40, beyond fp16 at 2^16: the first steps overflow
            // and are skipped until the scale fits (as torch's GradScaler would), then none is.
            let applied: Vec<&StepOutcome> = steps.iter().skip_while(|s| s.skipped).collect();
            assert!(applied.iter().all(|s| !s.skipped), "{p}: skipped after settling: {steps:?}");
            assert!(applied.len() >= 14, "{p}: only {} steps applied", applied.len());
            let (first, last) = (applied[0].loss, applied[applied.len() - 1].loss);
            assert!(last < 0.5 * first, "{p}: loss went from {first} to {last}");
            assert_eq!(steps[0].loss_scale.is_some(), p == Precision::Fp16);
            if p == Precision::Bf16 {
                assert!(steps.iter().all(|s| !s.skipped));
            }
            // Same start, different rounding: close to f32's first loss but not equal to it.
            assert!(weights != f32_weights, "{p}: weights equal f32's, nothing was rounded");
            let rel = (steps[0].loss - f32_run[0].loss).abs() / f32_run[0].loss;
            assert!(rel > 0.0 && rel < 2e-2, "{p}: first loss {} vs f32 {}", steps[0].loss, f32_run[0].loss);
        }
    }

    #[test]
    fn fp16_resume_continues_bit_identically_with_the_scaler_state() {
        let dir = std::env::temp_dir().join(format!("trainer-fp16-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ckpt = dir.join("c.safetensors");
        // A huge first scale (one skipped step at least) and a short growth interval move the scaler.
        let cfg =
            LossScaleConfig { init_scale: 2f32.powi(34), growth_interval: 3, ..LossScaleConfig::default() };
        let batches: Vec<Tensor> = (0..9).map(|i| batch(1.0 + 0.1 * i as f32)).collect();
        let mut a = tiny_trainer_in(Precision::Fp16, cfg.clone());
        for x in &batches[..5] {
            a.train_step(x, &[0, 1, 2, 0]).unwrap();
        }
        a.save(&ckpt).unwrap();
        let saved = a.loss_scaler().unwrap().clone();
        assert!(saved.skipped_steps() >= 1 && saved.scale() != 2f32.powi(34), "{saved:?}");
        for x in &batches[5..] {
            a.train_step(x, &[0, 1, 2, 0]).unwrap();
        }
        let mut b = tiny_trainer_in(Precision::Fp16, cfg);
        b.resume(&ckpt).unwrap();
        assert_eq!(b.loss_scaler().unwrap(), &saved);
        for x in &batches[5..] {
            b.train_step(x, &[0, 1, 2, 0]).unwrap();
        }
        assert_eq!(b.step, a.step);
        assert!(snapshot(&a) == snapshot(&b), "resumed fp16 weights differ");
        assert!(bits(a.optimizer.state()) == bits(b.optimizer.state()));
        assert_eq!(a.loss_scaler(), b.loss_scaler());
        // An f32 checkpoint resumed in fp16 starts from the initial scale.
        let mut f = tiny_trainer();
        f.train_step(&batches[0], &[0, 1, 2, 0]).unwrap();
        f.save(&ckpt).unwrap();
        let mut h = tiny_trainer_in(Precision::Fp16, LossScaleConfig::default());
        h.resume(&ckpt).unwrap();
        assert_eq!(h.loss_scaler().unwrap().scale(), 65536.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
