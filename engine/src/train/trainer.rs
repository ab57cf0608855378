//! One training run in memory: backbone parameters, the classifier weight, the head (with its running
//! state), the optimizer and the step counter. `train_step` is the whole step (forward, head loss,
//! backward, clip, update); the command line drives epochs, evaluation and checkpoints around it.
//!
//! A non-finite loss or gradient never reaches the weights: the step is undone (batch-norm running
//! statistics and the head's running state are restored too) and an error says which step failed.

use crate::heads::{self, Head, HeadParams, HeadState};
use crate::model::{IResNet, IResNetConfig, ParamKind, ParamStore};
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroups, Sgd, SgdConfig};
use crate::rng::Rng;
use crate::tape::Tape;
use crate::tensor::{DType, Device, Tensor};
use crate::train::checkpoint::{self, CheckpointRef};
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
}

#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub lr: f64,
}

pub struct Trainer {
    pub config: TrainerConfig,
    pub model: IResNet,
    pub params: ParamStore,
    pub classifier: ParamStore,
    pub head: Box<dyn Head>,
    optimizer: Box<dyn Optimizer>,
    /// Optimizer steps taken so far.
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
        Ok(Trainer { config, model, params, classifier, head, optimizer, step: 0, epoch: 0, rng, device: Device::Cpu })
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

    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.config.schedule.lr(self.config.lr, self.step as usize)
    }

    /// One optimizer step on a batch: `images` NHWC f32 normalized, `labels` in 0..classes.
    pub fn train_step(&mut self, images: &Tensor, labels: &[i64]) -> Result<StepOutcome> {
        let classes = self.config.num_classes as i64;
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l >= classes) {
            return Err(Error::Invalid(format!("label {l} of sample {i} is outside [0, {classes})")));
        }
        // Shared-storage copies: restoring them undoes the running-statistics updates of a failed step.
        let params_before = self.params.clone();
        let head_before = self.head.state();
        let rng_before = self.rng.clone();
        match self.try_step(images, labels) {
            Ok(o) => Ok(o),
            Err(e) => {
                self.params = params_before;
                self.head.load_state(&head_before)?;
                self.rng = rng_before;
                Err(e)
            }
        }
    }

    fn try_step(&mut self, images: &Tensor, labels: &[i64]) -> Result<StepOutcome> {
        self.head.set_training(true);
        let mut tape = Tape::new();
        let x = tape.constant(images.to_device(&self.device)?);
        let emb = self.model.forward(&mut tape, &mut self.params, x, true, &mut self.rng)?;
        let w = self.classifier.var(&mut tape, CLASSIFIER)?;
        let loss = heads::loss(&mut tape, emb, w, labels, self.head.as_mut())?;
        let loss_value = tape.value(loss).scalar_value()?;
        if !loss_value.is_finite() {
            return Err(Error::Invalid(format!(
                "loss is {loss_value} at step {}: the step was not applied (lower --lr, or check the data)",
                self.step
            )));
        }
        let grads = tape.backward(loss)?;
        let (mut backbone, head_grads): (Vec<_>, Vec<_>) =
            grads.params().iter().cloned().partition(|(n, _)| n != CLASSIFIER);
        // On a GPU one flag covers every gradient (a single device read); the per-name search below
        // runs only when it is raised.
        let search = match &self.device {
            Device::Cpu => true,
            Device::Cuda(ctx) => {
                let all: Vec<&Tensor> = backbone.iter().chain(&head_grads).map(|(_, g)| g).collect();
                crate::backend::cuda::train_ops::any_nonfinite(ctx, &all)?
            }
        };
        for (n, g) in backbone.iter().chain(&head_grads).filter(|_| search) {
            if !g.to_f64_vec()?.iter().all(|v| v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "gradient of '{n}' is not finite at step {}: the step was not applied",
                    self.step
                )));
            }
        }
        if let Some(max) = self.config.grad_clip {
            clip_grad_norm(&mut backbone, max)?;
        }
        let lr = self.current_lr();
        self.optimizer.step(&mut self.params, &backbone, lr)?;
        self.optimizer.step(&mut self.classifier, &head_grads, lr)?;
        self.step += 1;
        Ok(StepOutcome { loss: loss_value, lr })
    }

    /// Embeddings `[N, D]` of NHWC images in evaluation mode (running statistics, no dropout).
    pub fn embed(&mut self, images: &Tensor) -> Result<Tensor> {
        embed_with(&self.model, &mut self.params, images)
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
        m
    }

    /// Writes a checkpoint atomically (temporary name, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let head = self.head_tensors()?;
        let extra = self.run_metadata();
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
            if k == "seed" {
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

/// Embeddings in evaluation mode for any backbone and parameters (used by `eval` and `embed` too).
/// Images go to the parameters' device; the embeddings come back to the CPU.
pub fn embed_with(model: &IResNet, params: &mut ParamStore, images: &Tensor) -> Result<Tensor> {
    let device = params.entries().iter().find(|e| e.value.dtype().is_float()).map_or(Device::Cpu, |e| e.value.device());
    let mut tape = Tape::no_grad();
    let x = tape.constant(images.to_device(&device)?);
    // Evaluation draws no random numbers; the generator is only a required argument.
    let mut unused = Rng::new(0);
    let e = model.forward(&mut tape, params, x, false, &mut unused)?;
    tape.value(e).to_device(&Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_trainer() -> Trainer {
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
}
