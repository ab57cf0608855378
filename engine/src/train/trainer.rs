//! One training run in memory: backbone parameters, the classifier weight, the head (with its running
//! state), the optimizer and the step counter. `train_step` is the whole step (forward, head loss,
//! backward, clip, update); the command line drives epochs, evaluation and checkpoints around it.
//!
//! A non-finite loss or gradient never reaches the weights: the step is undone (batch-norm running
//! statistics and the head's running state are restored too). In f32 and bf16 an error then says which
//! step failed; in fp16 the step is skipped, the loss scale lowered, and training goes on (see
//! `train::loss_scale`), until the scaler gives up. Batch-norm running statistics are checked with the
//! gradients (a forward pass can overflow them while the loss stays finite). An update that makes a
//! weight or the optimizer's state non-finite (finite gradients times a huge learning rate) cannot be
//! undone cheaply: it stops the run, and the trainer refuses to step or save from then on.
//!
//! Steps and epochs: once the command line tells the trainer how many steps make an epoch
//! (`set_epoch_length`), `epoch` is `step / steps_per_epoch` after every step, so a checkpoint written at
//! any moment records a step and an epoch that agree, and resume checks both.

use crate::backend::BinaryOp;
use crate::dist::nccl::{DeviceGroup, NcclOp};
use crate::dist::{Communicator, ReduceOp};
use crate::heads::{self, Head, HeadParams, HeadState};
use crate::model::{IResNet, IResNetConfig, ParamKind, ParamStore};
use crate::optim::{
    clip_coefficient, AdamW, AdamWConfig, LrSchedule, Optimizer, ParamGroups, Sgd, SgdConfig, UpdateCheck,
};
use crate::rng::Rng;
use crate::tape::Tape;
use crate::tensor::{DType, Device, Tensor};
use crate::train::checkpoint::{self, CheckpointRef};
use crate::train::loss_scale::{LossScaleConfig, LossScaler};
use crate::train::precision::Precision;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

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
    /// Micro-batches per step (`--grad-accum`): each step's batch is split into this many equal parts, run
    /// forward and backward one after the other (batch norm per part, as with one part per GPU), and their
    /// gradients summed for one update of the whole batch's mean loss. 1: the batch at once.
    pub grad_accum: usize,
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

/// Gradients by parameter name, in tape order.
pub type NamedGrads = Vec<(String, Tensor)>;

/// What `Trainer::forward_backward` computed.
pub struct ForwardBackward {
    /// The batch-mean loss (rank 0, on the trainer's device).
    pub loss: Tensor,
    /// The backbone's embeddings `[B, D]`.
    pub embeddings: Tensor,
    /// Every trainable tensor's gradient by name, the classifier's as `CLASSIFIER`.
    pub grads: Vec<(String, Tensor)>,
}

/// How the run's steps fall into epochs, set once the loader exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochLength {
    /// Images per step (`--batch-size`), recorded so that a resume with another one is named as such.
    pub batch_size: u64,
    /// Steps per epoch (at least 1).
    pub steps: u64,
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
    epoch_length: Option<EpochLength>,
    /// Set when an update made the state non-finite: the reason, repeated by every later step or save.
    poisoned: Option<String>,
    /// The data-parallel group this trainer is one rank of (`set_communicator`); `None`: training alone.
    comm: Option<Arc<dyn Communicator>>,
    /// How the head's running state is kept equal over the ranks.
    running_state: RunningState,
    /// This rank's own mean loss of the last step, before the ranks' were averaged (several ranks only;
    /// read back only when asked).
    rank_loss: Option<Tensor>,
    /// The GPUs' own collectives (NCCL), which average the gradients on the device instead of through
    /// the host (`set_device_group`).
    device_group: Option<Arc<DeviceGroup>>,
    /// The gradient buckets' size with a device group: each bucket's all-reduce starts during the
    /// backward once it is full; 0: one all-reduce after the backward.
    bucket_bytes: usize,
    /// The classes this rank holds when the head is sharded over the ranks (`shard_classes`).
    shard: Option<ClassShard>,
    /// Partial FC (`set_sample_rate`): the share of each rank's classes a step uses; 1: all.
    sample_rate: f64,
}

/// A contiguous range of the classes: this rank's rows of the classifier and of its optimizer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassShard {
    pub first: usize,
    pub count: usize,
}

impl ClassShard {
    /// Rank `rank`'s share of `classes` over `world` ranks (sizes differ by one at most).
    pub fn of(classes: usize, rank: usize, world: usize) -> ClassShard {
        let first = classes * rank / world;
        ClassShard { first, count: classes * (rank + 1) / world - first }
    }
}

pub use crate::heads::RunningState;

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
            epoch_length: None,
            poisoned: None,
            comm: None,
            running_state: RunningState::default(),
            rank_loss: None,
            device_group: None,
            bucket_bytes: 0,
            shard: None,
            sample_rate: 1.0,
        })
    }

    /// Makes this trainer one rank of a data-parallel group: every rank starts from the same weights
    /// (the same config and seed), steps on its own batch, and applies the gradients averaged over the
    /// ranks, so the weights stay equal; batch-norm running statistics stay each rank's own, as in
    /// insightface's data-parallel training.
    pub fn set_communicator(&mut self, comm: Arc<dyn Communicator>, running_state: RunningState) {
        self.comm = Some(comm);
        self.running_state = running_state;
    }

    /// Averages the gradients with `g` (NCCL on this rank's GPU) instead of through the host
    /// communicator, which keeps every other collective (decisions, running state, checkpoints).
    /// `bucket_bytes`: the gradients go out in buckets of this size during the backward (0: in one
    /// group after it).
    pub fn set_device_group(&mut self, g: Arc<DeviceGroup>, bucket_bytes: usize) {
        self.device_group = Some(g);
        self.bucket_bytes = bucket_bytes;
    }

    /// The group, when there is more than this rank.
    fn group(&self) -> Option<Arc<dyn Communicator>> {
        self.comm.clone().filter(|c| c.world() > 1)
    }

    /// This rank's own loss of the last step, before averaging; `None` alone.
    pub fn rank_loss(&self) -> Option<f64> {
        self.rank_loss.as_ref().and_then(|l| l.scalar_value().ok())
    }

    /// Checks, before the first step, that every rank starts from the same state: the same step (every
    /// rank resumed the same checkpoint, or none did) and the same weights (the same seed, the same
    /// `--init-weights`), compared by a fingerprint of each store.
    pub fn check_ranks_agree(&self) -> Result<()> {
        let Some(comm) = self.group() else { return Ok(()) };
        let mut f = vec![self.step as f64];
        for store in [&self.params, &self.classifier] {
            let (mut sum, mut weighted) = (0.0f64, 0.0f64);
            for e in store.entries() {
                for (i, v) in fingerprint_values(&e.value)?.into_iter().enumerate() {
                    sum += v;
                    weighted += v * (1 + i % 7) as f64;
                }
            }
            f.extend([sum, weighted]);
        }
        f.extend(self.head.state().values.iter().map(|(_, v)| *v));
        let all = comm.all_gather(&f)?;
        if let Some(r) = (1..all.len()).find(|&r| all[r] != all[0]) {
            let why = if all[r].first() != all[0].first() {
                format!("rank {r} starts at step {}, rank 0 at step {}", all[r][0], all[0][0])
            } else {
                format!("rank {r} starts from other weights or head state than rank 0")
            };
            return Err(Error::Invalid(format!(
                "{why}: every rank must start alike (the same --seed and --init-weights, and with --resume the same checkpoint, so a shared --output folder)"
            )));
        }
        Ok(())
    }

    /// The loss and every gradient averaged over the data-parallel ranks (each rank's own when alone),
    /// in one all-reduce, so every rank takes the same decisions after (skip, clip, stop). With a device
    /// group the all-reduce runs on the GPUs (NCCL); otherwise the values travel through the host.
    /// `bucketed`: the gradients were already averaged during the backward (`accumulated`); the loss
    /// alone is left.
    fn averaged(
        &mut self,
        loss: Tensor,
        grads: Vec<(String, Tensor)>,
        bucketed: bool,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let Some(comm) = self.group() else { return Ok((loss, grads)) };
        // A sharded head's loss is already the job's, its weight gradient already each rank's own rows,
        // and its embedding gradients are of the job's mean loss: the backbone's gradients are summed.
        let sharded = self.shard.is_some();
        self.rank_loss = (!sharded).then(|| loss.clone());
        if let (Some(g), true) = (self.device_group.as_ref(), sharded) {
            if bucketed {
                return Ok((loss, grads));
            }
            // On the device, the backbone's gradients summed; the classifier's rows stay this rank's.
            let (own, rest): (Vec<_>, Vec<_>) = grads.into_iter().partition(|(n, _)| n == CLASSIFIER);
            let (names, ts): (Vec<String>, Vec<Tensor>) = rest.into_iter().unzip();
            let summed = names.into_iter().zip(g.all_reduce(ts, NcclOp::Sum)?);
            return Ok((loss, summed.chain(own).collect()));
        }
        if let Some(g) = self.device_group.as_ref() {
            if bucketed {
                let loss = g.all_reduce(vec![loss], NcclOp::Avg)?.remove(0);
                return Ok((loss, grads));
            }
            // On the device: the loss and gradients in one group of NCCL all-reduces (the mean in the
            // gradients' own dtype), queued behind the backward pass.
            let (names, mut ts): (Vec<String>, Vec<Tensor>) = grads.into_iter().unzip();
            ts.insert(0, loss);
            let mut out = g.all_reduce(ts, NcclOp::Avg)?;
            let loss = out.remove(0);
            return Ok((loss, names.into_iter().zip(out).collect()));
        }
        let w = if sharded { 1.0 } else { comm.world() as f64 };
        let reduced = |n: &str| !(sharded && n == CLASSIFIER);
        let mut flat = if sharded { Vec::new() } else { loss.to_f64_vec()? };
        for (_, g) in grads.iter().filter(|(n, _)| reduced(n)) {
            flat.extend(g.to_f64_vec()?);
        }
        comm.all_reduce(&mut flat, ReduceOp::Sum)?;
        let mut at = 0;
        let mut mean = |t: &Tensor| -> Result<Tensor> {
            let v: Vec<f32> = flat[at..at + t.numel()].iter().map(|&x| (x / w) as f32).collect();
            at += t.numel();
            Tensor::from_vec(v, t.shape().clone())?.to_device(&t.device())
        };
        let loss = if sharded { loss } else { mean(&loss)? };
        let grads = grads
            .into_iter()
            .map(|(n, g)| Ok(if reduced(&n) { (n, mean(&g)?) } else { (n, g) }))
            .collect::<Result<_>>()?;
        Ok((loss, grads))
    }

    /// `found` on this rank, or on the first rank that found something: the same answer on every rank.
    /// With a device group the flags travel by NCCL: the GPUs are idle until the update is decided,
    /// and one small all-gather there is shorter than a round trip through rank 0's connection.
    fn agreed(&self, found: Option<String>) -> Result<Option<String>> {
        let Some(comm) = self.group() else { return Ok(found) };
        let mine = u8::from(found.is_some());
        let flags: Vec<f64> = match &self.device_group {
            Some(g) => {
                let t = Tensor::from_vec(vec![f32::from(mine)], [1])?.to_device(&self.device)?;
                let all = g.all_gather(&t)?.to_vec::<f32>()?;
                g.check()?;
                all.into_iter().map(f64::from).collect()
            }
            None => comm
                .all_gather(&[f64::from(mine)])?
                .iter()
                .map(|f| f.first().copied().unwrap_or(0.0))
                .collect(),
        };
        Ok(match flags.iter().position(|&f| f == 1.0) {
            None => None,
            Some(r) if r == comm.rank() => found,
            Some(r) => Some(found.unwrap_or(format!("on rank {r}, a gradient or batch-norm statistic"))),
        })
    }

    /// Shards the head over the group (after `set_communicator` and `check_ranks_agree`, from the whole
    /// classifier): this rank keeps its classes' rows of the classifier and of the optimizer's state for
    /// it, and each step runs the head as one rank of the class-sharded classifier
    /// (`heads::sharded_loss`): embeddings and labels all-gathered, the log-sum-exp combined over ranks,
    /// each rank's weight gradient for its own classes only. Checkpoints gather the rows back
    /// (`save`), so a checkpoint is the whole classifier and resumes on any number of ranks.
    pub fn shard_classes(&mut self) -> Result<()> {
        // One rank (with `dist::Single`) holds every class: the sharded path alone, for Partial FC.
        let Some(comm) = self.comm.clone() else { return Ok(()) };
        if !matches!(self.device, Device::Cpu | Device::Cuda(_)) {
            return Err(Error::Device(format!("the class-sharded head does not run on {:?}", self.device)));
        }
        if self.shard.is_some() {
            return Err(Error::Invalid("the head is already sharded".into()));
        }
        let classes = self.config.num_classes;
        if classes < comm.world() {
            return Err(Error::Invalid(format!(
                "{classes} classes cannot be shared over {} ranks",
                comm.world()
            )));
        }
        let sh = ClassShard::of(classes, comm.rank(), comm.world());
        let rows = |t: &Tensor| t.backend().slice_rows(t, sh.first, sh.first + sh.count);
        let w = rows(self.classifier.get(CLASSIFIER)?)?;
        // A store of its own shape: `set` keeps a tensor's shape.
        let mut store = ParamStore::new();
        store.insert(CLASSIFIER, w, ParamKind::Trainable)?;
        self.classifier = store;
        let state = map_class_rows(self.optimizer.state(), classes, rows)?;
        self.optimizer.load_state(&state)?;
        self.shard = Some(sh);
        Ok(())
    }

    /// The classes this rank holds; `None` when the head is not sharded.
    pub fn class_shard(&self) -> Option<ClassShard> {
        self.shard
    }

    /// insightface's Partial FC on the sharded head (`shard_classes` first): each step, each rank uses its
    /// classes that are labels of the job's batch and random others, `rate` of its classes in all
    /// (`heads::partial_fc_rows`; drawn from the seed, the step and the rank). 1: every class.
    pub fn set_sample_rate(&mut self, rate: f64) -> Result<()> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(Error::Invalid(format!(
                "--sample-rate {rate}: expected a share of the classes in (0, 1]"
            )));
        }
        if rate < 1.0 && self.shard.is_none() {
            return Err(Error::Invalid(
                "Partial FC sampling runs on the class-sharded head (shard_classes first)".into(),
            ));
        }
        self.sample_rate = rate;
        Ok(())
    }

    /// The generator of Partial FC's draw at `step` on `rank`.
    pub fn partial_fc_rng(seed: u64, step: u64, rank: usize) -> crate::rng::Rng {
        crate::rng::Rng::derive(&[seed, step, rank as u64, 0x5041_5254_4941_4c46])
    }

    /// The whole classifier and optimizer state, gathered from the ranks' shards in rank order (this
    /// rank's own when the head is not sharded). Every rank of a sharded head must call it together.
    /// On GPUs with NCCL the rows travel there (WebFace42M's 2 M classes are 4 GB per tensor, too much
    /// for the host's connection); otherwise through the host.
    fn whole_head(&self) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let w = self.classifier.get(CLASSIFIER)?.clone();
        let state = self.optimizer.state();
        let (Some(sh), Some(comm)) = (self.shard, self.group()) else { return Ok((w, state)) };
        let gather = |t: &Tensor| -> Result<Tensor> {
            if let (Some(g), false) = (&self.device_group, t.device().is_cpu()) {
                return gather_class_rows(g, t, self.config.num_classes);
            }
            let parts = comm.all_gather(&t.to_f64_vec()?)?;
            let mut dims = t.dims().to_vec();
            dims[0] = self.config.num_classes;
            let v: Vec<f64> = parts.into_iter().flatten().collect();
            let whole = Tensor::from_vec(v, dims)?;
            whole.to_dtype(t.dtype())
        };
        Ok((gather(&w)?, map_class_rows(state, sh.count, gather)?))
    }

    /// After an applied step: the head's running state made equal over the ranks (`RunningState`). A
    /// sharded head needs nothing: its step moved the state alike on every rank.
    fn share_running_state(&mut self) -> Result<()> {
        let Some(comm) = self.group().filter(|_| self.shard.is_none()) else { return Ok(()) };
        let state = self.head.state();
        if state.values.is_empty() {
            return Ok(());
        }
        let mut v: Vec<f64> = state.values.iter().map(|(_, x)| *x).collect();
        match self.running_state {
            RunningState::Broadcast => comm.broadcast(&mut v, 0)?,
            RunningState::Reduce => {
                comm.all_reduce(&mut v, ReduceOp::Sum)?;
                let w = comm.world() as f64;
                v.iter_mut().for_each(|x| *x /= w);
            }
        }
        let values = state.values.into_iter().zip(v).map(|((n, _), x)| (n, x)).collect();
        self.head.load_state(&HeadState { values })
    }

    /// Tells the trainer how steps fall into epochs: from now on `epoch` follows `step`, checkpoints
    /// record both with the batch size, and `resume` checks them.
    pub fn set_epoch_length(&mut self, e: EpochLength) -> Result<()> {
        if e.steps == 0 || e.batch_size == 0 {
            return Err(Error::Invalid(format!("an epoch of {} steps of {} images", e.steps, e.batch_size)));
        }
        self.epoch_length = Some(e);
        self.epoch = self.step / e.steps;
        Ok(())
    }

    pub fn epoch_length(&self) -> Option<EpochLength> {
        self.epoch_length
    }

    /// Counts one more step (applied or skipped) and moves the epoch with it.
    fn count_step(&mut self) {
        self.step += 1;
        if let Some(e) = self.epoch_length {
            self.epoch = self.step / e.steps;
        }
    }

    /// Switches a two-phase head (QCFace: `warmup`, then `planning`); a no-op when already there.
    pub fn set_head_phase(&mut self, phase: &str) -> Result<()> {
        let mut p = self.config.head_params.clone();
        p.phase = Some(phase.parse()?);
        if p.phase != self.config.head_params.phase {
            let mut head = heads::from_name(&self.config.head, &p)?;
            // The softmax part's running state (qcface-cur's t) carries over; the phase is the new head's.
            let mut state = self.head.state();
            if let (Some(phase), Some(slot)) =
                (head.state().get("phase"), state.values.iter_mut().find(|(n, _)| n == "phase"))
            {
                slot.1 = phase;
                head.load_state(&state)?;
            }
            self.head = head;
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
        if let Some(why) = &self.poisoned {
            return Err(Error::Invalid(why.clone()));
        }
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
                self.share_running_state()?;
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
                self.count_step();
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
        self.forward_backward_into(images, labels, loss_scale, None)
    }

    /// `forward_backward`, each parameter's gradient going into `buckets` as soon as it is final.
    fn forward_backward_into(
        &mut self,
        images: &Tensor,
        labels: &[i64],
        loss_scale: Option<f64>,
        buckets: Option<&mut crate::dist::nccl::Buckets<'_>>,
    ) -> Result<ForwardBackward> {
        self.head.set_training(true);
        let mut tape = Tape::new();
        tape.set_autocast(self.config.precision.half_dtype())?;
        let x = tape.constant(images.to_device(&self.device)?);
        let emb = self.model.forward(&mut tape, &mut self.params, x, true, &mut self.rng)?;
        // The weights the forward read in 16 bits: the optimizer writes their 16-bit copies from now on.
        self.params.note_half_reads(tape.half_reads());
        let w = self.classifier.var(&mut tape, CLASSIFIER)?;
        let loss = match (self.shard, self.comm.clone()) {
            (Some(sh), Some(comm)) => {
                let (rate, seed, step, rank) = (self.sample_rate, self.config.seed, self.step, comm.rank());
                let pick = move |all: &[i64]| {
                    heads::partial_fc_rows(
                        all,
                        sh.first,
                        sh.count,
                        rate,
                        &mut Self::partial_fc_rng(seed, step, rank),
                    )
                };
                let pick: Option<heads::Pick<'_>> = (rate < 1.0).then_some(&pick);
                let group = heads::RankGroup {
                    comm: comm.as_ref(),
                    gpus: self.device_group.as_deref(),
                    running_state: Some(self.running_state),
                };
                heads::sharded_loss(&mut tape, emb, w, labels, sh.first, group, self.head.as_mut(), pick)?
            }
            _ => heads::loss(&mut tape, emb, w, labels, self.head.as_mut())?,
        };
        // The backward is queued before the loss is read: on a GPU, reading it first would leave the
        // device idle while the host queues the backward. A non-finite loss only costs a wasted backward.
        let grads = match (buckets, loss_scale) {
            (Some(b), scale) => {
                // A sharded head's classifier rows are this rank's own: not reduced.
                let sharded = self.shard.is_some();
                let mut hand =
                    |name: &str, g: Tensor| if sharded && name == CLASSIFIER { Ok(g) } else { b.push(g) };
                tape.backward_streaming(loss, scale, &mut hand)?
            }
            (None, None) => tape.backward(loss)?,
            (None, Some(scale)) => {
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

    /// The step's mean loss and summed gradients over its `grad_accum` micro-batches (rows in order), each
    /// backward seeded with the loss scale (1 without one) over their number: the gradients of the whole
    /// batch's mean loss, summed in f32. The flag: the gradients are already the ranks' mean (one batch,
    /// a device group with buckets: averaged during the backward).
    pub fn accumulated(
        &mut self,
        images: &Tensor,
        labels: &[i64],
        scale: Option<f64>,
    ) -> Result<(Tensor, NamedGrads, bool)> {
        let k = self.config.grad_accum.max(1);
        if k == 1 {
            let group = self.device_group.clone().filter(|_| self.bucket_bytes > 0);
            if let Some(g) = group {
                // A sharded head's backbone gradients are each rank's part of the job's loss: summed.
                let op = if self.shard.is_some() { NcclOp::Sum } else { NcclOp::Avg };
                let mut buckets = g.buckets(self.bucket_bytes, op);
                let fb = self.forward_backward_into(images, labels, scale, Some(&mut buckets))?;
                buckets.finish()?;
                return Ok((fb.loss, fb.grads, true));
            }
            let fb = self.forward_backward(images, labels, scale)?;
            return Ok((fb.loss, fb.grads, false));
        }
        let b = labels.len();
        if !b.is_multiple_of(k) || images.dims().first() != Some(&b) {
            return Err(Error::Invalid(format!(
                "--grad-accum {k}: a batch of {b} images does not split into {k} equal micro-batches"
            )));
        }
        let images = images.to_device(&self.device)?;
        let part = b / k;
        let seed = scale.unwrap_or(1.0) / k as f64;
        let mut loss: Option<Tensor> = None;
        let mut sums: Vec<(String, Tensor)> = Vec::new();
        for j in 0..k {
            let rows = images.backend().slice_rows(&images, j * part, (j + 1) * part)?;
            let fb = self.forward_backward(&rows, &labels[j * part..(j + 1) * part], Some(seed))?;
            let be = fb.loss.backend();
            loss = Some(match loss {
                None => fb.loss.clone(),
                Some(l) => be.binary(BinaryOp::Add, &l, &fb.loss)?,
            });
            if sums.is_empty() {
                sums = fb
                    .grads
                    .into_iter()
                    .map(|(n, g)| Ok((n, g.backend().widen(&g)?)))
                    .collect::<Result<_>>()?;
                continue;
            }
            if fb.grads.len() != sums.len() {
                return Err(Error::Invalid("micro-batches gave different sets of gradients".into()));
            }
            for ((name, acc), (n, g)) in sums.iter_mut().zip(fb.grads) {
                if *name != n {
                    return Err(Error::Invalid(format!(
                        "micro-batch gradients out of order: {name} and {n}"
                    )));
                }
                let be = g.backend();
                *acc = be.binary(BinaryOp::Add, acc, &be.widen(&g)?)?;
            }
        }
        let loss = loss.ok_or_else(|| Error::Invalid("no micro-batch".into()))?;
        let mean = loss.backend().affine(&loss, 1.0 / k as f64, 0.0)?;
        Ok((mean, sums, false))
    }

    fn try_step(&mut self, images: &Tensor, labels: &[i64]) -> Result<Attempt> {
        crate::kill_point::reached("step-start");
        let scale = self.scaler.as_ref().map(|s| s.scale() as f64);
        let (loss, grads, bucketed) = self.accumulated(images, labels, scale)?;
        let (loss, grads) = self.averaged(loss, grads, bucketed)?;
        let loss_value = loss.scalar_value()?;
        // Read back after the device's all-reduce: when the job failed meanwhile, the collective was
        // aborted and its output is garbage; stop with the failure instead of judging it.
        if let Some(g) = &self.device_group {
            g.check()?;
        }
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
        // The forward pass moved the batch-norm running statistics: an overflow there (huge
        // activations) leaves the loss finite but would poison every later evaluation.
        let statistics: Vec<(String, &Tensor)> = self
            .params
            .entries()
            .iter()
            .filter(|e| e.kind == ParamKind::Buffer)
            .map(|e| (format!("batch-norm running statistic '{}'", e.name), &e.value))
            .collect();
        let found = if let Some(s) = &self.scaler {
            let bad_backbone = s.unscale(&mut backbone)?;
            match bad_backbone.or(s.unscale(&mut head_grads)?) {
                Some(n) => Some(format!("gradient of '{n}'")),
                None => self.first_nonfinite(&statistics)?,
            }
        } else {
            let mut all: Vec<(String, &Tensor)> =
                backbone.iter().chain(&head_grads).map(|(n, g)| (format!("gradient of '{n}'"), g)).collect();
            all.extend(statistics);
            self.first_nonfinite(&all)?
        };
        // Every rank takes the same decision, whichever rank's own tensors (its batch-norm statistics,
        // its classifier shard) were not finite.
        if let Some(what) = self.agreed(found)? {
            if self.scaler.is_some() {
                return overflow(format!("{what} is not finite"));
            }
            return Err(Error::Invalid(format!(
                "{what} is not finite at step {}: the step was not applied (lower --lr, or check the data)",
                self.step
            )));
        }
        crate::kill_point::reached("mid-step");
        let clip = match self.config.grad_clip {
            Some(max) => clip_coefficient(&backbone, max)?.1,
            None => 1.0,
        };
        let backbone_check = self.optimizer.step_scaled(&mut self.params, &backbone, lr, clip)?;
        let head_check = self.optimizer.step_scaled(&mut self.classifier, &head_grads, lr, 1.0)?;
        self.check_update(lr, &[backbone_check, head_check])?;
        self.count_step();
        Ok(Attempt::Applied(StepOutcome { loss: loss_value, lr, skipped: false, loss_scale: None }))
    }

    /// After an update from finite gradients: every weight and the optimizer's state still finite, or
    /// the trainer is poisoned (the optimizer's state cannot be rolled back without a copy per step).
    /// (The update kernels flag what they write: the check reads those flags, no pass of its own.)
    fn check_update(&mut self, lr: f64, checks: &[UpdateCheck]) -> Result<()> {
        let mut found = None;
        for c in checks {
            if let Some(name) = c.first_nonfinite()? {
                found = Some(format!("'{name}' or its optimizer state"));
                break;
            }
        }
        if let Some(what) = found {
            let why = format!(
                "the update of step {} made {what} non-finite (the gradients were finite: the learning rate {lr} is too large for them); this run's state is lost from here, nothing after the last checkpoint was saved",
                self.step
            );
            self.poisoned = Some(why.clone());
            return Err(Error::Invalid(why));
        }
        Ok(())
    }

    /// The label of the first of `named` holding a NaN or an infinity. Tensors on the trainer's device
    /// are read back once for all (one flag each); host ones (AdamW's step counts, the head's scalars)
    /// are checked on the CPU; integer tensors are finite by construction.
    fn first_nonfinite(&self, named: &[(String, &Tensor)]) -> Result<Option<String>> {
        let floats = named.iter().filter(|(_, t)| t.dtype() != DType::I64);
        let (here, host): (Vec<_>, Vec<_>) = floats.partition(|(_, t)| t.device() == self.device);
        for (group, device) in [(here, &self.device), (host, &Device::Cpu)] {
            let ts: Vec<&Tensor> = group.iter().map(|(_, t)| *t).collect();
            if let Some(i) = crate::backend::for_device(device).first_nonfinite(&ts)? {
                return Ok(Some(group[i].0.clone()));
            }
        }
        Ok(None)
    }

    /// Embeddings `[N, D]` of NHWC images in evaluation mode (running statistics, no dropout).
    pub fn embed(&mut self, images: &Tensor) -> Result<Tensor> {
        crate::embed::embed_with(&self.model, &mut self.params, images)
    }

    /// The checkpoint's head entries: the whole classifier `w` and the head's running state.
    fn head_tensors(&self, w: Tensor) -> Vec<(String, Tensor)> {
        let mut v = vec![(CLASSIFIER.to_string(), w)];
        v.extend(self.head.state().to_tensors());
        v
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
        // Structure and input convention, so the checkpoint alone rebuilds an imported network.
        m.extend(self.config.backbone.to_metadata());
        m
    }

    /// Writes a checkpoint atomically (temporary name, then rename), after checking that everything it
    /// holds is finite (weights, batch-norm statistics, optimizer and head state, the loss scale), that
    /// the weights give finite embeddings in evaluation mode, and that its step and epoch agree: a
    /// checkpoint on disk is always one that can be resumed and evaluated. On an error nothing is
    /// written and the previous checkpoint stays.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.save_if(path, true)
    }

    /// As `save`, by every rank of a job at the same step: a sharded head's rows are gathered from all
    /// of them, and the ranks with `write` (rank 0) write.
    pub fn save_if(&mut self, path: &Path, write: bool) -> Result<()> {
        let (whole_w, whole_state) = self.whole_head()?;
        if !write {
            return Ok(());
        }
        let refuse =
            |why: String| Error::Invalid(format!("{why}: the checkpoint {} was not written", path.display()));
        if let Some(why) = &self.poisoned {
            return Err(refuse(why.clone()));
        }
        let mut extra = self.run_metadata();
        if let Some(e) = self.epoch_length {
            if self.epoch != self.step / e.steps {
                let (s, ep) = (self.step, self.epoch);
                return Err(refuse(format!("step {s} does not fall in epoch {ep} of {} steps", e.steps)));
            }
            extra.insert(KEY_BATCH.into(), e.batch_size.to_string());
            extra.insert(KEY_EPOCH_STEPS.into(), e.steps.to_string());
        }
        let head = self.head_tensors(whole_w);
        let optimizer = whole_state;
        let named: Vec<(String, &Tensor)> = (self.params.entries().iter())
            .map(|e| (format!("'{}'", e.name), &e.value))
            .chain(optimizer.iter().map(|(n, t)| (format!("optimizer state '{n}'"), t)))
            .chain(head.iter().map(|(n, t)| (format!("head state '{n}'"), t)))
            .collect();
        if let Some(what) = self.first_nonfinite(&named)? {
            return Err(refuse(format!("at step {} {what} is not finite", self.step)));
        }
        if let Some(what) = self.probe()? {
            return Err(refuse(format!(
                "at step {} the weights give {what} embeddings in evaluation mode (the updates diverged: lower --lr)",
                self.step
            )));
        }
        if let Some(s) = &self.scaler {
            let scale = s.scale();
            if !scale.is_finite() || scale <= 0.0 {
                return Err(refuse(format!("at step {} the fp16 loss scale is {scale}", self.step)));
            }
            extra.extend(s.to_metadata());
        }
        // The gathered rows came from NCCL: when the job failed meanwhile they are not to be written.
        if let Some(g) = &self.device_group {
            g.check()?;
        }
        checkpoint::save(
            path,
            &CheckpointRef {
                step: self.step,
                epoch: self.epoch,
                model: &self.params,
                optimizer: self.optimizer.as_ref(),
                optimizer_state: Some(&optimizer),
                head: &head,
                rngs: &[("train", &self.rng)],
                extra: &extra,
            },
        )
    }

    /// Finite weights can still be useless: one update too large leaves them finite, but the batch-norm
    /// running statistics no longer match them and an evaluation-mode forward overflows to NaN. Two
    /// fixed noise images through the network in evaluation mode find that, for the cost of a forward
    /// of two images per checkpoint; `Some` says what the embeddings held.
    fn probe(&mut self) -> Result<Option<&'static str>> {
        let (h, w) = self.config.backbone.input_hw;
        let mut rng = Rng::new(0x9e37_79b9);
        let px: Vec<f32> = (0..2 * h * w * 3).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect();
        let e = self.embed(&Tensor::from_vec(px, [2, h, w, 3])?)?;
        let v = e.to_f64_vec()?;
        Ok(if v.iter().any(|x| x.is_nan()) {
            Some("NaN")
        } else if v.iter().any(|x| x.is_infinite()) {
            Some("infinite")
        } else {
            None
        })
    }

    /// Restores everything `save` wrote; the run's backbone, head and classes must be the same, and,
    /// once the epoch length is set, its batch size and steps per epoch too.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let c = checkpoint::load(path)?;
        let origin = path.display();
        for (k, v) in self.run_metadata() {
            // A run may change its seed or precision when it resumes (bit-identity then needs neither).
            if k == "seed" || k == "precision" {
                continue;
            }
            if let Some(saved) = c.extra.get(&k) {
                if *saved != v {
                    return Err(Error::Io(format!(
                        "{origin}: checkpoint was made with {k} = {saved}, this run has {k} = {v}"
                    )));
                }
            }
        }
        if let Some(what) = c.first_nonfinite()? {
            return Err(Error::Io(format!(
                "{origin}: '{what}' holds NaN or infinite values (a checkpoint written before the engine checked what it saves): it cannot be resumed"
            )));
        }
        let epoch = self.resumed_epoch(&c)?;
        if let Some(s) = &mut self.scaler {
            // A checkpoint of an f32 or bf16 run has no scaler state: fp16 then starts from the initial scale.
            s.load_metadata(&c.extra, &origin.to_string())?;
        }
        if self.shard.is_some() {
            return Err(Error::Invalid("resume the whole head first, then shard it over the ranks".into()));
        }
        let head = c.head_checked(&self.head_tensors(self.classifier.get(CLASSIFIER)?.clone()))?.to_vec();
        c.restore(&mut self.params, self.optimizer.as_mut())?;
        let (w, state): (Vec<_>, Vec<_>) = head.into_iter().partition(|(n, _)| n == CLASSIFIER);
        self.classifier.set(CLASSIFIER, w[0].1.clone())?;
        self.head.load_state(&HeadState::from_tensors(&state)?)?;
        self.rng = c.rng("train")?;
        self.step = c.step;
        self.epoch = epoch;
        if !self.device.is_cpu() {
            let dev = self.device.clone();
            self.to_device(&dev)?;
        }
        Ok(())
    }

    /// The epoch a resumed run is in, after checking the checkpoint's batch size, epoch length, step and
    /// epoch against this run's. A v1 file saved at an epoch's end records the epoch before the step
    /// (the counter moved after the save): that one case is repaired, not refused.
    fn resumed_epoch(&self, c: &checkpoint::Checkpoint) -> Result<u64> {
        let Some(e) = self.epoch_length else { return Ok(c.epoch) };
        let origin = c.origin();
        let saved = |k: &str| -> Result<Option<u64>> {
            c.extra
                .get(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| Error::Io(format!("{origin}: metadata '{k}' = '{v}' is not a number")))
                })
                .transpose()
        };
        if let Some(b) = saved(KEY_BATCH)?.filter(|&b| b != e.batch_size) {
            return Err(Error::Invalid(format!(
                "{origin}: the checkpoint was made with --batch-size {b}, this run has --batch-size {}: resume with --batch-size {b}",
                e.batch_size
            )));
        }
        if let Some(n) = saved(KEY_EPOCH_STEPS)?.filter(|&n| n != e.steps) {
            return Err(Error::Invalid(format!(
                "{origin}: the checkpoint was made with {n} steps per epoch, this run has {}: the training set changed",
                e.steps
            )));
        }
        let want = c.step / e.steps;
        let v1_epoch_end = c.version == 1 && c.step.is_multiple_of(e.steps) && c.epoch + 1 == want;
        if c.epoch != want && !v1_epoch_end {
            return Err(Error::Invalid(format!(
                "{origin}: step {} does not fall in epoch {} at {} steps per epoch: the checkpoint was made with another --batch-size or training set",
                c.step, c.epoch, e.steps
            )));
        }
        Ok(want)
    }
}

/// Checkpoint metadata of v2: the batch size and the steps per epoch of the run that wrote it.
const KEY_BATCH: &str = "batch_size";
const KEY_EPOCH_STEPS: &str = "steps_per_epoch";

/// The optimizer's state with `f` applied to each classifier entry holding one row per class (`rows`
/// of them): the rows a sharded head splits and gathers (step counts and other scalars stay).
/// The values of `t` that `check_ranks_agree` adds up: all of them, or for a tensor of more than 2^22
/// (a large classifier: WebFace42M's holds 10^9) its first and last 2^21 rows' worth, which differ
/// between seeds and checkpoints as much as the whole does, without a copy of it in f64 on every rank.
fn fingerprint_values(t: &Tensor) -> Result<Vec<f64>> {
    const MOST: usize = 1 << 22;
    let rows = t.dims().first().copied().unwrap_or(1);
    if t.numel() <= MOST || rows < 2 {
        return t.to_f64_vec();
    }
    let keep = (MOST / 2 / (t.numel() / rows)).clamp(1, rows / 2);
    let be = t.backend();
    let mut v = be.slice_rows(t, 0, keep)?.to_f64_vec()?;
    v.extend(be.slice_rows(t, rows - keep, rows)?.to_f64_vec()?);
    Ok(v)
}

/// Every rank's class rows `t` (`ClassShard::of`'s share of `classes`, on its GPU) stacked in rank
/// order on every rank, by one NCCL all-gather: the shards are padded to the largest one's rows (NCCL
/// gathers equal parts) and the padding cut out after.
fn gather_class_rows(g: &DeviceGroup, t: &Tensor, classes: usize) -> Result<Tensor> {
    let (rank, world) = (g.rank(), g.world());
    let counts: Vec<usize> = (0..world).map(|r| ClassShard::of(classes, r, world).count).collect();
    let most = counts.iter().copied().max().unwrap_or(0);
    let dims = t.dims().to_vec();
    if dims.first() != Some(&counts[rank]) {
        return Err(Error::Shape(format!(
            "rank {rank}: class rows {} for a share of {}",
            t.shape(),
            counts[rank]
        )));
    }
    let per_row: usize = dims[1..].iter().product();
    let be = t.backend();
    let padded = match most - counts[rank] {
        0 => t.clone(),
        n => {
            let mut pad = dims.clone();
            pad[0] = n;
            be.concat_rows(&[t.clone(), be.zeros(&pad.into(), t.dtype())?])?
        }
    };
    let all = g.all_gather(&padded.reshape([most * per_row])?)?;
    let mut stacked = dims.clone();
    stacked[0] = world * most;
    let all = all.reshape(stacked)?;
    let parts = (0..world)
        .map(|r| be.slice_rows(&all, r * most, r * most + counts[r]))
        .collect::<Result<Vec<_>>>()?;
    be.concat_rows(&parts)
}

fn map_class_rows(
    state: Vec<(String, Tensor)>,
    rows: usize,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<(String, Tensor)>> {
    state
        .into_iter()
        .map(|(n, t)| {
            let per_class = n.starts_with(CLASSIFIER) && t.dims().len() == 2 && t.dims()[0] == rows;
            Ok(if per_class { (n, f(&t)?) } else { (n, t) })
        })
        .collect()
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
            grad_accum: 1,
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
    fn data_parallel_ranks_step_as_one_trainer_over_their_micro_batches() {
        use crate::dist::InProcess;
        let (x, labels) = (batch(1.0), [0i64, 1, 2, 0]);
        let mut one = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
        one.config.grad_accum = 2;
        let want: Vec<f64> = (0..2).map(|_| one.train_step(&x, &labels).unwrap().loss).collect();
        let group = InProcess::group(2, std::time::Duration::from_secs(60)).unwrap();
        let ranks: Vec<(Vec<f64>, Vec<Vec<f64>>)> = std::thread::scope(|sc| {
            let handles: Vec<_> = group
                .into_iter()
                .enumerate()
                .map(|(r, comm)| {
                    let (x, labels) = (&x, &labels);
                    sc.spawn(move || {
                        let mut t = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
                        t.set_communicator(Arc::new(comm), RunningState::Broadcast);
                        let mine = x.backend().slice_rows(x, 2 * r, 2 * r + 2).unwrap();
                        let losses = (0..2)
                            .map(|_| t.train_step(&mine, &labels[2 * r..2 * r + 2]).unwrap().loss)
                            .collect();
                        (losses, snapshot(&t))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (l, w) in ranks[0].0.iter().zip(&want) {
            assert!((l - w).abs() < 1e-6 * w.abs(), "loss {l} vs {w}");
        }
        // Batch-norm running statistics are each rank's own (insightface's DDP); the weights (the
        // classifier last in the snapshot) are the same on every rank and the one trainer's.
        let trainable: Vec<bool> = one.params.entries().iter().map(|e| e.kind != ParamKind::Buffer).collect();
        let weights = |s: &[Vec<f64>]| -> Vec<Vec<f64>> {
            s.iter()
                .enumerate()
                .filter(|(k, _)| trainable.get(*k).copied().unwrap_or(true))
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(weights(&ranks[0].1), weights(&ranks[1].1), "the ranks' weights stay equal");
        for (k, (got, want)) in weights(&ranks[0].1).iter().zip(weights(&snapshot(&one))).enumerate() {
            let e = crate::tape::gradcheck::rel_error(got, &want);
            assert!(e < 1e-5, "weight tensor {k}: {e}");
        }
    }

    /// Each rank's trainer (CurricularFace, whose t moves with every batch) after one step on its half
    /// of the batch in a group of 2 kept by `mode`, its head whole or class-sharded; `seed1` is rank
    /// 1's seed.
    fn two_ranks_one_step(mode: RunningState, seed1: u64, sharded: bool) -> Vec<Result<Trainer>> {
        use crate::dist::InProcess;
        let (x, labels) = (batch(1.0), [0i64, 1, 2, 0]);
        let group = InProcess::group(2, std::time::Duration::from_secs(60)).unwrap();
        std::thread::scope(|sc| {
            let handles: Vec<_> = group
                .into_iter()
                .enumerate()
                .map(|(r, comm)| {
                    let (x, labels) = (&x, &labels);
                    sc.spawn(move || -> Result<Trainer> {
                        let mut t = curricular(if r == 1 { seed1 } else { 0 });
                        t.set_communicator(Arc::new(comm), mode);
                        t.check_ranks_agree()?;
                        if sharded {
                            t.shard_classes()?;
                        }
                        let mine = x.backend().slice_rows(x, 2 * r, 2 * r + 2)?;
                        t.train_step(&mine, &labels[2 * r..2 * r + 2])?;
                        Ok(t)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn curricular(seed: u64) -> Trainer {
        let mut t = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
        if seed != 0 {
            t.config.seed = seed;
            t = Trainer::new(t.config.clone()).unwrap();
        }
        t.config.head = "curricularface".into();
        t.head = heads::from_name("curricularface", &t.config.head_params).unwrap();
        t
    }

    #[test]
    fn the_qcface_phase_switch_keeps_the_softmax_parts_running_state() {
        let mut t = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
        t.config.head = "qcface-cur".into();
        t.head = heads::from_name("qcface-cur", &t.config.head_params).unwrap();
        t.set_head_phase("warmup").unwrap();
        t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        let before = t.head.state();
        let moved =
            before.values.iter().find(|(n, _)| n != "phase").expect("qcface-cur keeps CurricularFace's t");
        assert_ne!(moved.1, 0.0, "a step moves t");
        t.set_head_phase("planning").unwrap();
        let after = t.head.state();
        assert_eq!(after.get("phase"), Some(1.0));
        assert_eq!(after.get(&moved.0), Some(moved.1));
    }

    #[test]
    fn the_heads_running_state_is_rank_zeros_or_the_ranks_mean() {
        let t_of = |t: &Trainer| t.head.state().values[0].1;
        // Alone on each half: the values each rank's own batch moves t to.
        let (x, labels) = (batch(1.0), [0i64, 1, 2, 0]);
        let alone: Vec<f64> = (0..2)
            .map(|r| {
                let mut t = curricular(0);
                t.train_step(
                    &x.backend().slice_rows(&x, 2 * r, 2 * r + 2).unwrap(),
                    &labels[2 * r..2 * r + 2],
                )
                .unwrap();
                t_of(&t)
            })
            .collect();
        assert_ne!(alone[0], alone[1], "the halves must move t differently for this test to mean anything");
        // The whole head on each rank, or the class-sharded head (which sees the job's whole batch): the
        // same state on every rank, where the papers' code under DDP has it.
        for sharded in [false, true] {
            let t_after = |mode| -> Vec<f64> {
                two_ranks_one_step(mode, 0, sharded).iter().map(|t| t_of(t.as_ref().unwrap())).collect()
            };
            assert_eq!(t_after(RunningState::Broadcast), vec![alone[0], alone[0]], "sharded: {sharded}");
            assert_eq!(
                t_after(RunningState::Reduce),
                vec![(alone[0] + alone[1]) / 2.0; 2],
                "sharded: {sharded}"
            );
        }
    }

    #[test]
    fn a_large_tensors_fingerprint_is_its_first_and_last_rows() {
        let (rows, dim) = (20_000usize, 256usize);
        let t = Tensor::from_vec((0..rows * dim).map(|i| i as f32).collect::<Vec<_>>(), [rows, dim]).unwrap();
        let v = fingerprint_values(&t).unwrap();
        let keep = (1 << 21) / dim;
        assert_eq!(v.len(), 2 * keep * dim);
        assert_eq!((v[0], v[keep * dim - 1]), (0.0, (keep * dim - 1) as f64));
        assert_eq!((v[keep * dim], v[v.len() - 1]), (((rows - keep) * dim) as f64, (rows * dim - 1) as f64));
        let small = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
        assert_eq!(fingerprint_values(&small).unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn ranks_that_start_from_different_weights_are_refused() {
        for r in two_ranks_one_step(RunningState::Broadcast, 5, false) {
            let e = r.err().unwrap().to_string();
            assert!(e.contains("rank 1 starts from other weights"), "{e}");
        }
    }

    /// A tiny trainer with `classes` classes, `grad_accum` micro-batches, SGD with momentum.
    fn tiny_with(classes: usize, grad_accum: usize) -> Trainer {
        let mut c = tiny_trainer_in(Precision::F32, LossScaleConfig::default()).config.clone();
        c.num_classes = classes;
        c.grad_accum = grad_accum;
        Trainer::new(c).unwrap()
    }

    fn rows(x: &Tensor, lo: usize, hi: usize) -> Tensor {
        x.backend().slice_rows(x, lo, hi).unwrap()
    }

    /// `world` ranks with the head sharded, each first running `prepare` (e.g. a resume), then `steps`
    /// steps on its `x.rows / world` rows; returns rank 0's losses and every rank's (backbone weights,
    /// whole classifier gathered).
    fn sharded_job(
        world: usize,
        x: &Tensor,
        labels: &[i64],
        steps: usize,
        prepare: impl Fn(&mut Trainer) + Sync,
        after: impl Fn(&mut Trainer, usize) + Sync,
    ) -> Vec<(Vec<f64>, Vec<Vec<f64>>)> {
        use crate::dist::InProcess;
        let group = InProcess::group(world, std::time::Duration::from_secs(60)).unwrap();
        let per = labels.len() / world;
        std::thread::scope(|sc| {
            let hs: Vec<_> = group
                .into_iter()
                .enumerate()
                .map(|(r, comm)| {
                    let (prepare, after) = (&prepare, &after);
                    sc.spawn(move || {
                        let mut t = tiny_with(8, 1);
                        prepare(&mut t);
                        t.set_communicator(Arc::new(comm), RunningState::Broadcast);
                        t.check_ranks_agree().unwrap();
                        t.shard_classes().unwrap();
                        assert_eq!(t.class_shard(), Some(ClassShard::of(8, r, world)));
                        let mine = rows(x, r * per, (r + 1) * per);
                        let losses = (0..steps)
                            .map(|_| t.train_step(&mine, &labels[r * per..(r + 1) * per]).unwrap().loss)
                            .collect();
                        let (w, _) = t.whole_head().unwrap();
                        after(&mut t, r);
                        let mut snap = weights_of(&t);
                        snap.push(w.to_f64_vec().unwrap());
                        (losses, snap)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// The trainable backbone tensors, in order.
    fn weights_of(t: &Trainer) -> Vec<Vec<f64>> {
        t.params
            .entries()
            .iter()
            .filter(|e| e.kind != ParamKind::Buffer)
            .map(|e| e.value.to_f64_vec().unwrap())
            .collect()
    }

    fn eight() -> (Tensor, [i64; 8]) {
        let mut rng = Rng::new(11);
        let px: Vec<f32> = (0..8 * 16 * 16 * 3).map(|_| rng.normal() as f32).collect();
        (Tensor::from_vec(px, [8, 16, 16, 3]).unwrap(), [0, 7, 3, 5, 1, 6, 2, 4])
    }

    /// The backbone (every tensor but the last, as one vector: a tensor that barely moved, like a bias
    /// whose gradient is near zero, differs by f32 summation order alone) and the classifier (the last),
    /// each by norm-wise relative error.
    fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let n = got.len() - 1;
        let e = crate::tape::gradcheck::rel_error(&got[..n].concat(), &want[..n].concat());
        assert!(e < 1e-5, "{what}: backbone {e}");
        let e = crate::tape::gradcheck::rel_error(&got[n], &want[n]);
        assert!(e < 1e-5, "{what}: classifier {e}");
    }

    #[test]
    fn a_class_sharded_head_steps_as_one_trainer_over_its_micro_batches() {
        let (x, labels) = eight();
        // Four ranks for one step only: from the second step on, this tiny network (batch norm over 2
        // images per rank) magnifies f32 rounding about a thousandfold, replicated ranks included (the
        // one trainer adds its micro-batches' gradients in f32, the ranks' are added in f64).
        for (world, steps) in [(2, 3), (4, 1)] {
            let mut one = tiny_with(8, world);
            let want: Vec<f64> = (0..steps).map(|_| one.train_step(&x, &labels).unwrap().loss).collect();
            let mut want_w = weights_of(&one);
            want_w.push(one.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap());
            let ranks = sharded_job(world, &x, &labels, steps, |_| {}, |_, _| {});
            for (l, w) in ranks[0].0.iter().zip(&want) {
                assert!((l - w).abs() < 1e-6 * w.abs(), "world {world}: loss {l} vs {w}");
            }
            for (r, (_, snap)) in ranks.iter().enumerate() {
                assert_close(snap, &want_w, &format!("world {world}, rank {r}"));
            }
        }
    }

    /// The sharded trainer with every rank on CUDA (threads, each opening device 0): its steps (the
    /// sharded head on the device, the host's gradient sums) and its gathered classifier (`whole_head`
    /// reading device tensors) as the same job's on the CPU, to f32 rounding.
    #[test]
    #[ignore = "needs a CUDA GPU (or tests/cuda_emu); run with --ignored"]
    fn gpu_a_class_sharded_head_on_cuda_steps_as_on_the_cpu() {
        let (x, labels) = eight();
        let steps = 2;
        let cpu = sharded_job(2, &x, &labels, steps, |_| {}, |_, _| {});
        let on_cuda = |t: &mut Trainer| t.to_device(&Device::parse("cuda").expect("needs a GPU")).unwrap();
        let gpu = sharded_job(2, &x, &labels, steps, on_cuda, |t, _| assert!(!t.device.is_cpu()));
        for ((gl, gs), (cl, cs)) in gpu.iter().zip(&cpu) {
            for (g, c) in gl.iter().zip(cl) {
                assert!((g - c).abs() < 1e-5 * c.abs(), "loss on CUDA {g} vs the CPU's {c}");
            }
            assert_eq!(gs.last().unwrap().len(), 8 * 8, "the whole classifier, gathered");
            assert_close(gs, cs, "sharded on CUDA vs on the CPU");
        }
    }

    #[test]
    fn partial_fc_on_one_rank_moves_only_the_chosen_classes_by_their_gradient() {
        let (x, labels) = eight();
        let mut c = tiny_with(16, 1).config.clone();
        c.weight_decay = 0.0;
        let mut plain = Trainer::new(c.clone()).unwrap();
        let mut sampled = Trainer::new(c).unwrap();
        sampled.set_communicator(Arc::new(crate::dist::Single), RunningState::Broadcast);
        sampled.shard_classes().unwrap();
        assert_eq!(sampled.class_shard(), Some(ClassShard { first: 0, count: 16 }));
        assert!(plain.set_sample_rate(0.5).is_err(), "sampling needs the sharded head");
        // All the classes: the sharded path on one rank is the plain head.
        let w0 = plain.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap();
        let (a, b) =
            (plain.train_step(&x, &labels).unwrap().loss, sampled.train_step(&x, &labels).unwrap().loss);
        assert!((a - b).abs() < 1e-6 * a.abs(), "{a} vs {b}");
        // Half of them: the labels' rows and random others move; the rest keep their values.
        sampled.set_sample_rate(0.5).unwrap();
        let before = sampled.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap();
        let rows = heads::partial_fc_rows(&labels, 0, 16, 0.5, &mut Trainer::partial_fc_rng(3, 1, 0));
        assert_eq!(rows.len(), 8);
        sampled.train_step(&x, &labels).unwrap();
        let after = sampled.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap();
        let dim = after.len() / 16;
        for k in 0..16 {
            let moved = (0..dim).any(|j| after[k * dim + j] != before[k * dim + j]);
            // Rows left out still follow their momentum from the first step (SGD, momentum 0.9).
            let momentum_only = (0..dim).all(|j| {
                let v = before[k * dim + j] + 0.9 * (before[k * dim + j] - w0[k * dim + j]);
                (after[k * dim + j] - v).abs() <= 1e-6 * v.abs().max(1e-3)
            });
            if rows.contains(&k) {
                assert!(moved && !momentum_only, "class {k} was chosen: its gradient moves it");
            } else {
                assert!(momentum_only, "class {k} was left out: momentum alone moves it");
            }
        }
        assert!(sampled.set_sample_rate(0.0).is_err() && sampled.set_sample_rate(1.5).is_err());
    }

    #[test]
    fn a_checkpoint_of_a_sharded_head_at_world_4_resumes_at_world_2_and_1() {
        let (x, labels) = eight();
        let dir = std::env::temp_dir().join(format!("facetrain-shard-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        sharded_job(4, &x, &labels, 2, |_| {}, |t, r| t.save_if(&path, r == 0).unwrap());
        // One trainer: the whole classifier and its momentum, then one more step.
        let mut one = tiny_with(8, 2);
        one.resume(&path).unwrap();
        assert_eq!(one.step, 2);
        one.train_step(&x, &labels).unwrap();
        let mut want = weights_of(&one);
        want.push(one.classifier.get(CLASSIFIER).unwrap().to_f64_vec().unwrap());
        let two = sharded_job(2, &x, &labels, 1, |t| t.resume(&path).unwrap(), |_, _| {});
        for (_, snap) in &two {
            assert_close(snap, &want, "world 2 after resuming world 4's checkpoint");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn micro_batches_give_the_gradients_of_the_whole_batch_mean_loss() {
        let labels = [0i64, 1, 2, 0];
        let mut whole = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
        whole.config.grad_accum = 2;
        let mut parts = tiny_trainer_in(Precision::F32, LossScaleConfig::default());
        let x = batch(1.0);
        let (loss, grads, _) = whole.accumulated(&x, &labels, None).unwrap();
        // The same two halves one after the other (the second sees what the first moved), averaged.
        let be = x.backend();
        let a = parts.forward_backward(&be.slice_rows(&x, 0, 2).unwrap(), &labels[..2], None).unwrap();
        let b = parts.forward_backward(&be.slice_rows(&x, 2, 4).unwrap(), &labels[2..], None).unwrap();
        let mean = (a.loss.scalar_value().unwrap() + b.loss.scalar_value().unwrap()) / 2.0;
        assert!((loss.scalar_value().unwrap() - mean).abs() < 1e-6 * mean.abs(), "loss");
        assert_eq!(grads.len(), a.grads.len());
        for (((n, g), (_, ga)), (_, gb)) in grads.iter().zip(&a.grads).zip(&b.grads) {
            let want: Vec<f64> = ga
                .to_f64_vec()
                .unwrap()
                .iter()
                .zip(gb.to_f64_vec().unwrap())
                .map(|(u, v)| (u + v) / 2.0)
                .collect();
            let e = crate::tape::gradcheck::rel_error(&g.to_f64_vec().unwrap(), &want);
            assert!(e < 1e-6, "{n}: {e}");
        }
        // A whole step with two micro-batches, and a batch they do not split.
        let before = snapshot(&whole);
        let out = whole.train_step(&x, &labels).unwrap();
        assert!(out.loss.is_finite() && !out.skipped && snapshot(&whole) != before);
        let odd = whole.config.backbone.input_hw;
        let three = Tensor::from_vec(vec![0.5f32; 3 * odd.0 * odd.1 * 3], [3, odd.0, odd.1, 3]).unwrap();
        let e = whole.train_step(&three, &[0, 1, 2]).unwrap_err().to_string();
        assert!(e.contains("--grad-accum 2") && e.contains("3 images"), "{e}");
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

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("trainer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Multiplies one parameter in place (as a diverged update would leave it).
    fn scale_param(t: &mut Trainer, name: &str, by: f32) {
        let mut v = t.params.get(name).unwrap().clone();
        v.as_mut_slice::<f32>().unwrap().iter_mut().for_each(|x| *x *= by);
        t.params.set(name, v).unwrap();
    }

    #[test]
    fn overflowing_batch_norm_statistics_stop_f32_and_skip_fp16_without_touching_the_weights() {
        // Pixels of 1e20: the batch variance overflows f32 while the normalized activations stay finite.
        let huge = batch(1e20);
        let mut t = tiny_trainer();
        let before = snapshot(&t);
        let e = t.train_step(&huge, &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(e.contains("running statistic") && e.contains("not applied"), "{e}");
        assert!(snapshot(&t) == before, "the running statistics of the refused step were kept");
        let mut h = tiny_trainer_in(Precision::Fp16, scaled(1.0));
        assert!(h.train_step(&huge, &[0, 1, 2, 0]).unwrap().skipped);
        assert!(snapshot(&h) == before);
    }

    #[test]
    fn an_update_that_overflows_the_weights_poisons_the_trainer_and_nothing_is_saved() {
        let dir = scratch("poison");
        let ckpt = dir.join("c.safetensors");
        let mut t = tiny_trainer();
        t.config.lr = 1e38;
        let e = t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap_err().to_string();
        assert!(e.contains("non-finite") && e.contains("step 0") && e.contains("learning rate"), "{e}");
        let again = t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap_err().to_string();
        assert_eq!(again, e, "a poisoned trainer must keep refusing");
        let s = t.save(&ckpt).unwrap_err().to_string();
        assert!(s.contains("was not written") && s.contains("non-finite"), "{s}");
        assert!(!ckpt.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_refuses_non_finite_state_and_diverged_weights_and_keeps_the_last_file() {
        let dir = scratch("refuse");
        let ckpt = dir.join("c.safetensors");
        let mut t = tiny_trainer();
        t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        t.save(&ckpt).unwrap();
        let good = std::fs::read(&ckpt).unwrap();
        // An infinite running variance, as the issue's --lr 1e6 run wrote 14 of them.
        let mut bad = t.params.clone();
        let name = "bn1.running_var";
        let mut v = bad.get(name).unwrap().clone();
        v.as_mut_slice::<f32>().unwrap()[0] = f32::INFINITY;
        bad.set(name, v).unwrap();
        let kept = std::mem::replace(&mut t.params, bad);
        let e = t.save(&ckpt).unwrap_err().to_string();
        assert!(e.contains("'bn1.running_var' is not finite") && e.contains("not written"), "{e}");
        assert_eq!(std::fs::read(&ckpt).unwrap(), good);
        // Finite but diverged weights: evaluation-mode embeddings overflow.
        t.params = kept;
        for n in ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer2.0.conv1.weight"] {
            scale_param(&mut t, n, 1e12);
        }
        let e = t.save(&ckpt).unwrap_err().to_string();
        assert!(e.contains("embeddings in evaluation mode"), "{e}");
        assert_eq!(std::fs::read(&ckpt).unwrap(), good);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn epochs_follow_steps_and_resume_checks_the_batch_size() {
        let dir = scratch("epochs");
        let ckpt = dir.join("c.safetensors");
        let e = EpochLength { batch_size: 4, steps: 2 };
        let mut t = tiny_trainer();
        t.set_epoch_length(e).unwrap();
        for want in [0, 0, 1, 1, 2] {
            assert_eq!(t.epoch, want, "at step {}", t.step);
            if t.step < 4 {
                t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
            }
        }
        t.save(&ckpt).unwrap();
        let mut r = tiny_trainer();
        r.set_epoch_length(e).unwrap();
        r.resume(&ckpt).unwrap();
        assert_eq!((r.step, r.epoch), (4, 2));
        let mut other = tiny_trainer();
        other.set_epoch_length(EpochLength { batch_size: 8, steps: 1 }).unwrap();
        let err = other.resume(&ckpt).unwrap_err().to_string();
        assert!(err.contains("--batch-size 4") && err.contains("this run has --batch-size 8"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_v1_checkpoint_saved_at_an_epochs_end_is_repaired_on_resume_and_other_disagreements_refused() {
        use crate::io::safetensors;
        let dir = scratch("v1");
        let ckpt = dir.join("c.safetensors");
        let mut t = tiny_trainer();
        for _ in 0..4 {
            t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        }
        // What v1 wrote at the end of epoch 1 of 2-step epochs: step 4 with the epoch not yet moved on.
        let mut as_v1 = |epoch: &str| {
            t.epoch = 0;
            t.save(&ckpt).unwrap();
            let mut st = safetensors::read(&ckpt).unwrap();
            st.metadata.insert("format".into(), "facetrain-checkpoint-v1".into());
            st.metadata.insert("epoch".into(), epoch.into());
            safetensors::write(&ckpt, &st).unwrap();
        };
        as_v1("1");
        let e = EpochLength { batch_size: 4, steps: 2 };
        let mut r = tiny_trainer();
        r.set_epoch_length(e).unwrap();
        r.resume(&ckpt).unwrap();
        assert_eq!((r.step, r.epoch), (4, 2));
        as_v1("0");
        let err = r.resume(&ckpt).unwrap_err().to_string();
        assert!(err.contains("step 4 does not fall in epoch 0") && err.contains("--batch-size"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_poisoned_checkpoint_of_an_older_engine_is_refused_on_resume() {
        use crate::io::safetensors;
        let dir = scratch("poisoned-file");
        let ckpt = dir.join("c.safetensors");
        let mut t = tiny_trainer();
        t.train_step(&batch(1.0), &[0, 1, 2, 0]).unwrap();
        t.save(&ckpt).unwrap();
        let mut st = safetensors::read(&ckpt).unwrap();
        let (_, v) = st.tensors.iter_mut().find(|(n, _)| n == "layer1.0.bn2.running_var").unwrap();
        v.as_mut_slice::<f32>().unwrap()[1] = f32::INFINITY;
        safetensors::write(&ckpt, &st).unwrap();
        let e = tiny_trainer().resume(&ckpt).unwrap_err().to_string();
        assert!(e.contains("'layer1.0.bn2.running_var' holds NaN or infinite values"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
