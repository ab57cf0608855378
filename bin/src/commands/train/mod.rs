//! `engine-train train`: trains a backbone with a margin-softmax head on a RecordIO face set, or, with no
//! `--data`, on the generated demo set (built once and cached), evaluating verification as it goes.
//!
//! Resume: a checkpoint (`checkpoint.safetensors`) is written every `--checkpoint-every` steps, at the
//! end of each epoch and when SIGTERM or SIGINT stops the run; batches come in an order fixed by (seed,
//! epoch), so `--resume` skips the batches already taken and continues bit-identically on the CPU.
//!
//! The recipe (flags over the preset over the demo's and the general defaults) is resolved by
//! `engine::train::recipe`; this command opens the data, builds the trainer and drives the epochs
//! (`session`).
//!
//! Several ranks (data parallel): `--gpus N` starts N of this command on one node (`spawn`); under
//! torchrun or srun each process is one rank (`ranks`). Each rank reads its slice of every epoch and the
//! gradients are averaged over the ranks before every update.

mod compare;
mod data;
mod figures;
mod ranks;
mod session;
mod spawn;

use super::head_flags::HeadFlags;
use super::CmdResult;
use crate::backbone_io::for_training;
use datasets::loader::{Loader, LoaderConfig};
use engine::dist::Communicator;
use engine::train::demo;
use engine::train::feed::Feed;
use engine::train::limits;
use engine::train::precision::Precision;
use engine::train::presets;
use engine::train::recipe::{requested_precision, Recipe, RecipeFlags, StepPlan};
use engine::train::trainer::{EpochLength, RunningState, Trainer};
use engine::{Error, Result};
use ranks::Rank;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone)]
pub struct Args {
    /// RecordIO face set: a folder with train.rec/train.idx/property, or a .rec file. Without it, the
    /// generated demo set is used (built once under --cache).
    #[arg(long)]
    data: Option<PathBuf>,
    /// A seed paper's recipe (see --list-presets); the flags below override it.
    #[arg(long)]
    preset: Option<String>,
    /// Print the presets and exit.
    #[arg(long)]
    list_presets: bool,
    /// r18, r34, r50, r100, r200, or small (the CPU demo's backbone). Default: small for the demo, r50
    /// otherwise.
    #[arg(long)]
    backbone: Option<String>,
    /// The embedding's dimension (default 512; the demo's small backbone 128). 2 or 3 trains the papers'
    /// toy hyperspheres (MagFace's and QCFace's figures of embeddings on a circle).
    #[arg(long, value_name = "D")]
    embedding_size: Option<usize>,
    /// Head name (see `engine-train head --help`). Default: cosface with s 30 for the demo, arcface
    /// otherwise.
    #[arg(long)]
    head: Option<String>,
    #[command(flatten)]
    head_flags: HeadFlags,
    /// Images per step on each GPU (rank); the global batch is this times the ranks. Default: 128, or a
    /// preset's global batch shared over the ranks.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Train on N GPUs of this machine: starts N ranks of this command (one per GPU, data parallel) and
    /// forwards signals to them. With --device cpu, N CPU processes. Under torchrun or srun, leave it
    /// out (or give the launcher's world size).
    #[arg(long, value_name = "N")]
    gpus: Option<usize>,
    /// Several ranks: seconds a collective waits for the slowest rank before the job stops naming it
    /// (rank 0's evaluations must fit); a rank silent for min(60 s, this) is taken for dead.
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    collective_timeout: f64,
    /// Several ranks: how the head's running state (CurricularFace, AdaFace, SMAFace), moved by each rank
    /// from its own batch, is made equal after each step: broadcast (rank 0's, as under PyTorch DDP) or
    /// reduce (the ranks' mean).
    #[arg(long, default_value = "broadcast")]
    running_state: String,
    /// Several ranks on GPUs: what carries the gradients and the sharded head's embeddings, per-row merges
    /// and embedding gradients: nccl (on the GPUs; libnccl.so.2 on the loader's path or in
    /// FACETRAIN_NCCL_DIR) or host (through the rendezvous connection, slow; for machines without
    /// NCCL). The labels and every other collective (decisions, checkpoints) go through the host.
    #[arg(long, default_value = "nccl", value_parser = ["nccl", "host"])]
    collectives: String,
    /// Several ranks with NCCL: gradients are averaged in buckets of this many MiB, each sent as soon as
    /// the backward pass has made it, so communication overlaps the rest of the backward (PyTorch DDP's
    /// bucket_cap_mb, 25). 0: one all-reduce after the backward.
    #[arg(long, default_value_t = 25.0, value_name = "MIB")]
    bucket_mb: f64,
    /// Partial FC (insightface's sample_rate): each step, each rank's classifier uses its classes that are
    /// labels of the batch plus random others, this share of its classes in all (e.g. 0.2 or 0.3 for
    /// Glint360K and WebFace42M); the classes left out get no gradient. Runs on the class-sharded head
    /// (CPU or CUDA). Default: 1 (the whole softmax).
    #[arg(long, value_name = "R")]
    sample_rate: Option<f64>,
    /// Several ranks on GPUs: each GPU holds the whole classifier, its gradient averaged with the
    /// backbone's (PyTorch DDP without Partial FC), instead of the default class-sharded head (each rank
    /// holds C / ranks classes and their optimizer state; the job's embeddings all-gathered, the softmax
    /// merged over the ranks, the embedding gradients reduce-scattered: NCCL, as insightface's Partial
    /// FC). Not with --sample-rate, nor on the CPU, whose ranks always shard the head.
    #[arg(long)]
    whole_head: bool,
    /// Split each step's batch into K equal micro-batches, run one after the other with their gradients
    /// summed: the same step (learning rate and schedule on the whole batch; batch norm per
    /// micro-batch) in 1/K of the activation memory. Default: 1.
    #[arg(long, value_name = "K")]
    grad_accum: Option<usize>,
    /// Default: 18 for the demo (about 4 minutes on 2 cores), 20 otherwise.
    #[arg(long)]
    epochs: Option<f64>,
    /// Base learning rate (a preset's rate scales linearly with the batch size). Default: 0.003 for
    /// the demo with AdamW, 0.1 otherwise.
    #[arg(long)]
    lr: Option<f64>,
    /// poly (insightface), steps, cosine or constant. Default: cosine for the demo, poly otherwise.
    #[arg(long)]
    schedule: Option<String>,
    /// Epochs at which `steps` multiplies the rate by 0.1, comma-separated.
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<f64>>,
    /// Epochs of linear learning-rate warm-up (poly and cosine).
    #[arg(long)]
    lr_warmup_epochs: Option<f64>,
    /// sgd or adamw. Default: adamw for the demo, sgd otherwise.
    #[arg(long)]
    optimizer: Option<String>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip the backbone's gradient norm.
    #[arg(long)]
    grad_clip: Option<f64>,
    /// f32, bf16 or fp16 (default: the preset's, else bf16 on a GPU and f32 on the CPU). bf16 and fp16 keep f32 master weights,
    /// optimizer state and batch-norm statistics, and hold the tensors around convolutions and the head's
    /// cosines (activations, their gradients, the weights as the GEMM reads them) in 16 bits; the final fc
    /// stays f32, as in insightface's iresnet. On the CPU
    /// this is emulated by rounding those tensors (round-to-nearest-even; fp16 overflows to inf beyond
    /// 65504): the numerics are real, the speed is f32's less the rounding (about 20% slower on the
    /// demo). fp16 scales the loss dynamically as torch's GradScaler does (start 65536, x2 after 2000
    /// good steps, x0.5 and the step skipped on an inf/NaN gradient; training stops once the scale is
    /// below 2^-24 or after 50 skips in a row). On a GPU the same layers run in the 16-bit type on the
    /// tensor cores (cuDNN, cuBLAS; the margin head's cosines too). A preset's
    /// precision (its paper's: fp16 for most, f32 for MagFace and QAMFace) applies unless this flag is given.
    #[arg(long)]
    precision: Option<String>,
    /// auto, cpu, cuda or cuda:N. auto takes GPU 0 when it opens and a tiny training step on it reproduces
    /// the CPU's (checked at start, about a second), else the CPU.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Output folder (checkpoint, metrics.jsonl, summary.json, plots). Default: runs/<date-time>.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Continue from the checkpoint in --output.
    #[arg(long)]
    resume: bool,
    /// Start from these backbone weights: a PyTorch .pth/.pt (insightface, MagFace), a Lightning .ckpt
    /// (AdaFace), an ONNX file, or what `export` writes. The file's network (depth, variant, input
    /// convention) replaces the default backbone; --backbone, if given, must match it.
    #[arg(long)]
    init_weights: Option<PathBuf>,
    /// Verification sets (.bin or pair lists) evaluated during training; the demo adds its own pairs.
    #[arg(long)]
    eval: Vec<PathBuf>,
    /// Evaluate every N steps (default: 200 for the demo, the end of each epoch otherwise). Every run
    /// also evaluates at its end.
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// none, flip or adaface (flip plus AdaFace's crop, low-resolution and photometric jitter at 0.2).
    #[arg(long)]
    augment: Option<String>,
    /// With --augment adaface: the probability of each of its three augmentations (AdaFace's ablation
    /// runs 0, 0.2 and 0.3), or some of them by name: crop=P,low-res=P,photometric=P (the rest stay 0.2).
    #[arg(long, value_name = "P")]
    augment_prob: Option<String>,
    /// QCFace: epochs of plain ArcFace before hypersphere planning (default: half the schedule).
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Loader threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Steps between checkpoints (also written at each epoch's end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Stop after this many minutes of training (evaluation time not counted); a final evaluation and
    /// checkpoint then end the run.
    #[arg(long)]
    time_limit: Option<f64>,
    /// Skip records that fail to read or decode, counting them, instead of stopping. JPEGs are then
    /// checked strictly (what libjpeg-turbo warns about as corrupt is skipped), which about doubles
    /// their decoding time; without this flag the fast decoder alone runs.
    #[arg(long)]
    skip_corrupt: bool,
    /// Where the generated demo set is cached.
    #[arg(long, default_value = ".cache/facetrain")]
    cache: PathBuf,
    /// Demo set: training identities.
    #[arg(long, default_value_t = demo::IDENTITIES)]
    synth_identities: usize,
    /// Demo set: images per training identity.
    #[arg(long, default_value_t = demo::IMAGES_PER_IDENTITY)]
    synth_images: usize,
    /// Demo set: image side in pixels.
    #[arg(long, default_value_t = demo::SIZE)]
    synth_size: usize,
    /// Demo set: identities held out of training for the verification pairs.
    #[arg(long, default_value_t = demo::HELDOUT_IDENTITIES)]
    synth_heldout: usize,
    /// Demo set: verification pairs (half same, half different).
    #[arg(long, default_value_t = demo::PAIRS)]
    synth_pairs: usize,
    #[command(flatten)]
    figures: figures::FigureFlags,
}

impl Args {
    /// The recipe flags as given.
    fn recipe_flags(&self) -> Result<RecipeFlags> {
        Ok(RecipeFlags {
            preset: self.preset.clone(),
            backbone: self.backbone.clone(),
            embedding_size: self.embedding_size,
            head: self.head.clone(),
            head_params: self.head_flags.to_params()?,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            lr: self.lr,
            schedule: self.schedule.clone(),
            milestones: self.milestones.clone(),
            lr_warmup_epochs: self.lr_warmup_epochs,
            optimizer: self.optimizer.clone(),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            grad_clip: self.grad_clip,
            precision: self.precision.clone(),
            augment: self.augment.clone(),
            augment_prob: self.augment_prob.clone(),
            warmup_epochs: self.warmup_epochs,
            eval_every: self.eval_every,
            seed: self.seed,
            world: 1,
        })
    }
}

fn utc_stamp() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// The output folder, created and cleared of the temporary files of killed runs; a checkpoint already
/// there needs --resume.
fn output_folder(a: &Args, output: PathBuf) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(&output)
        .map_err(|e| Error::Io(format!("{}: cannot create: {e}", output.display())))?;
    for f in engine::io::atomic::remove_stale_temporaries(&output)? {
        eprintln!("removed {}, left by a run that was killed while writing it", f.display());
    }
    let ckpt = output.join("checkpoint.safetensors");
    if !a.resume && ckpt.exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --output",
            output.display()
        )));
    }
    Ok((output, ckpt))
}

/// The trainer of `recipe`: initial weights, QCFace's phase, resumed state, then on `device`.
fn build_trainer(a: &Args, recipe: &Recipe, plan: &StepPlan, ckpt: &Path, lead: bool) -> Result<Trainer> {
    let mut config = recipe.trainer_config(plan.schedule.clone());
    // --init-weights: the file's network (depth, variant, input convention) replaces the recipe's.
    let init =
        a.init_weights.as_deref().map(|w| for_training(w, a.backbone.as_deref(), &mut config)).transpose()?;
    if let (Some(w), Some(d)) = (&a.init_weights, a.embedding_size) {
        let theirs = config.backbone.embedding_size;
        if theirs != d {
            return Err(Error::Invalid(format!(
                "--embedding-size {d}, but {} holds a network with {theirs}-d embeddings",
                w.display()
            )));
        }
    }
    let mut trainer = Trainer::new(config)?;
    // The global batch: a job resumed on another number of ranks keeps its batches (see `loader`).
    trainer.set_epoch_length(EpochLength {
        batch_size: (recipe.batch_size * recipe.world) as u64,
        steps: plan.steps_per_epoch,
    })?;
    if recipe.qcface_warmup.is_some_and(|w| w > 0.0) {
        trainer.set_head_phase("warmup")?;
    }
    for w in trainer.head.warnings().into_iter().filter(|_| lead) {
        eprintln!("warning: {w}");
    }
    if let (Some(w), Some(params)) = (&a.init_weights, init) {
        for e in params.entries() {
            trainer.params.set(&e.name, e.value.clone())?;
        }
        if lead {
            eprintln!("initialized the backbone from {}", w.display());
        }
    }
    if a.resume {
        trainer.resume(ckpt)?;
        if lead {
            eprintln!("resumed from {} at step {} (epoch {})", ckpt.display(), trainer.step, trainer.epoch);
        }
    }
    Ok(trainer)
}

/// The loader of the run and its steps per epoch (at least one). A rank's slice of an epoch is every
/// world-th sample of its shuffled order (`datasets::loader::Sampler`), so the ranks' batches of a step
/// together are the same global batch, as a set, whatever the number of ranks.
fn loader(
    data: &data::TrainingData,
    recipe: &Recipe,
    feed: &Feed,
    (threads, seed, skip_corrupt): (usize, u64, bool),
    rank: Option<&Rank>,
) -> Result<(Loader, u64)> {
    let loader = Loader::new(
        data.faceset.clone(),
        LoaderConfig {
            batch_size: recipe.batch_size,
            seed,
            threads,
            prefetch: 2 * threads,
            augment: recipe.augment,
            skip_corrupt,
            format: feed.pixel_format(),
            rank: rank.map_or(0, |r| r.job.rank),
            world: recipe.world,
            ..LoaderConfig::default()
        },
    )
    .map_err(|e| Error::Io(e.to_string()))?;
    let steps = loader.batches_per_epoch() as u64;
    if steps == 0 {
        return Err(Error::Invalid(format!(
            "{}: {} images make no full batch of {}",
            data.shape.name,
            data.faceset.len(),
            recipe.batch_size
        )));
    }
    Ok((loader, steps))
}

pub fn run(a: Args) -> CmdResult {
    if a.list_presets {
        for p in presets::all() {
            println!("{:<24} {}", p.name, p.summary);
        }
        return Ok(());
    }
    limits::check_gpus(a.gpus)?;
    let collective = limits::collective_timeout(a.collective_timeout)?;
    let running_state: RunningState = a.running_state.parse()?;
    let job = engine::dist::launch::from_env(|k| std::env::var(k).ok())?.filter(|j| j.world > 1);
    figures::check(&a.figures, a.gpus, a.sample_rate, job.is_some())?;
    crate::signals::install().map_err(Error::Invalid)?;
    match (&job, a.gpus) {
        (None, Some(n)) if n > 1 => {
            let output = a.output.clone().unwrap_or_else(|| PathBuf::from("runs").join(utc_stamp()));
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            let code = spawn::launch(n, args, &output)?;
            if code != 0 {
                std::process::exit(code);
            }
            return Ok(());
        }
        (Some(j), Some(n)) if j.world != n => {
            return Err(Error::Invalid(format!(
                "--gpus {n}, but {} started this process as rank {} of {}",
                j.launcher, j.rank, j.world
            ))
            .into());
        }
        _ => {}
    }
    let rank = job.map(|j| Rank::join(j, collective)).transpose()?;
    let result = compare::run(&a, |a| train(a, rank.as_ref(), running_state));
    match (result, &rank) {
        (Err(e), Some(r)) => {
            let msg = e.to_string();
            // The others stop with this rank's reason instead of waiting for it.
            r.group.abort(&msg);
            let me = format!("rank {}: ", r.job.rank);
            let said = msg.contains(&me) || msg.starts_with(&format!("rank {} failed: ", r.job.rank));
            let named = if said { msg } else { format!("{me}{msg}") };
            Err(named.into())
        }
        (result, _) => result,
    }
}

/// The run of this process: alone, or one rank of a job.
fn train(a: Args, rank: Option<&Rank>, running_state: RunningState) -> CmdResult {
    let mut flags = a.recipe_flags()?;
    flags.world = rank.map_or(1, |r| r.job.world);
    let lead = rank.is_none_or(|r| r.job.rank == 0);
    limits::check_checkpoint_every(a.checkpoint_every)?;
    limits::check_threads(a.threads)?;
    let limit = limits::time_limit(a.time_limit)?;
    // Unset, the precision is bf16 on a GPU (tensor cores; every device the engine opens, sm_80 and
    // newer, has them) and f32 where 16 bits are only emulated (the CPU).
    let device_name = rank.map_or(a.device.clone(), |r| r.device_name(&a.device));
    let device = crate::device_choice::choose(
        &device_name,
        requested_precision(&flags)?.unwrap_or(Precision::Bf16),
        "training",
    )?;
    let emulated = engine::backend::for_device(&device).emulates_half();
    // Ranks on one node share its cores.
    let threads = a.threads.or(rank.map(Rank::threads));
    if let Some(t) = threads {
        // The global pool can only be set once per process; this is the first use.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global();
    }
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let data = data::TrainingData::open(&a)?;
    let recipe = Recipe::resolve(&flags, &data.shape, emulated)?;
    if !device.is_cpu() && lead {
        eprintln!("training on {} in {}", device.describe(), recipe.precision);
    }
    let feed = Feed::new(&device)?;
    let (loader, steps_per_epoch) = loader(&data, &recipe, &feed, (threads, a.seed, a.skip_corrupt), rank)?;
    let plan = recipe.schedule(steps_per_epoch)?;
    let output = output_name(&a, rank)?;
    let (output, ckpt) = if lead { output_folder(&a, output)? } else { rank_output(output)? };
    let mut trainer = build_trainer(&a, &recipe, &plan, &ckpt, lead)?;
    trainer.to_device(&device)?;
    let sampled = a.sample_rate.is_some_and(|r| r != 1.0);
    match rank {
        Some(r) => {
            trainer.set_communicator(r.group.clone(), running_state);
            trainer.check_ranks_agree()?;
            if let (engine::tensor::Device::Cuda(ctx), "nccl") = (&device, a.collectives.as_str()) {
                let g = engine::dist::nccl::DeviceGroup::open(ctx, r.group.clone(), r.collective_timeout)?;
                if lead {
                    eprintln!("gradients averaged on the GPUs by NCCL {}", g.version());
                }
                trainer.set_device_group(std::sync::Arc::new(g), limits::bucket_bytes(a.bucket_mb)?);
            }
        }
        // One process samples on the sharded head's path, alone.
        None if sampled => trainer.set_communicator(std::sync::Arc::new(engine::dist::Single), running_state),
        None => {}
    }
    // The class-sharded head over several ranks, and for Partial FC on one; with --whole-head each GPU
    // holds the whole classifier, its gradient averaged with the backbone's during the backward. (A job
    // of one rank keeps the plain head: there is nothing to shard.)
    let several = rank.is_some_and(|r| r.group.world() > 1);
    if a.whole_head && (sampled || (several && device.is_cpu())) {
        let why = if sampled {
            "Partial FC (--sample-rate) runs on the class-sharded head"
        } else {
            "the CPU's ranks always shard the head"
        };
        return Err(Error::Invalid(format!("--whole-head: {why}")).into());
    }
    if (several && !a.whole_head) || sampled {
        trainer.shard_classes()?;
        if let (Some(sh), Some(r), true) = (trainer.class_shard(), rank, lead) {
            eprintln!(
                "head class-sharded over {} ranks on {}: {} of its {} classes on rank 0",
                r.group.world(),
                device.describe(),
                sh.count,
                recipe.classes
            );
        }
    }
    if let Some(r) = a.sample_rate {
        trainer.set_sample_rate(r)?;
    }
    if lead {
        eprintln!(
            "{} | head {} | {} classes{} | {} images, {steps_per_epoch} steps/epoch x {} epochs | batch {}{}{} lr {} | {}{} | {}",
            trainer.model.config.describe(trainer.params.parameter_count()),
            recipe.head,
            recipe.classes,
            match a.sample_rate.filter(|&r| r < 1.0) {
                Some(r) => format!(" (Partial FC: {r} of each rank's per step)"),
                None => String::new(),
            },
            data.faceset.len(),
            // Derived from iterations (QAMFace's preset), the count is rarely whole.
            (recipe.epochs * 100.0).round() / 100.0,
            recipe.batch_size,
            match recipe.world {
                1 => String::new(),
                w => format!(" x {w} ranks = {}", recipe.batch_size * w),
            },
            match recipe.grad_accum {
                1 => String::new(),
                k => format!(" in {k} micro-batches of {}", recipe.batch_size / k),
            },
            recipe.lr,
            recipe.precision,
            if recipe.precision == Precision::F32 || !emulated { "" } else { " (emulated on the CPU)" },
            output.display()
        );
    }
    let mut s = session::Session::new(
        trainer,
        &recipe,
        plan,
        &data,
        &output,
        ckpt,
        a.checkpoint_every,
        limit,
        a.resume,
        rank.map(|r| r.group.clone()),
    )?;
    s.set_figures(figures::Figures::new(&a.figures, &data, s.input_hw())?);
    match s.train(&loader, feed)? {
        session::Ending::Finished => s.finish(&recipe),
        session::Ending::Signal(sig) => s.stop_on_signal(sig),
    }
}

/// `--output`, or `runs/<date-time>` as rank 0 names it (its name sent to the other ranks).
fn output_name(a: &Args, rank: Option<&Rank>) -> Result<PathBuf> {
    if let Some(o) = &a.output {
        return Ok(o.clone());
    }
    let stamp = PathBuf::from("runs").join(utc_stamp());
    let Some(r) = rank else { return Ok(stamp) };
    let mine: Vec<f64> = match r.job.rank {
        0 => engine::dist::text_values(&stamp.to_string_lossy()),
        _ => Vec::new(),
    };
    let all = r.group.all_gather(&mine)?;
    Ok(PathBuf::from(all.first().map(|v| engine::dist::values_text(v)).unwrap_or_default()))
}

/// A rank other than 0: the job's output folder (rank 0 checks and clears it, and writes in it).
fn rank_output(output: PathBuf) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(&output)
        .map_err(|e| Error::Io(format!("{}: cannot create: {e}", output.display())))?;
    let ckpt = output.join("checkpoint.safetensors");
    Ok((output, ckpt))
}
