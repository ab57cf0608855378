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

mod data;
mod session;

use super::head_flags::HeadFlags;
use super::CmdResult;
use crate::backbone_io::for_training;
use datasets::loader::{Loader, LoaderConfig};
use engine::train::demo;
use engine::train::feed::Feed;
use engine::train::limits;
use engine::train::precision::Precision;
use engine::train::presets;
use engine::train::recipe::{requested_precision, Recipe, RecipeFlags, StepPlan};
use engine::train::trainer::{EpochLength, Trainer};
use engine::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
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
    /// Head name (see `engine-train head --help`). Default: cosface with s 30 for the demo, arcface
    /// otherwise.
    #[arg(long)]
    head: Option<String>,
    #[command(flatten)]
    head_flags: HeadFlags,
    /// Images per step. Default: 128 (demo and otherwise).
    #[arg(long)]
    batch_size: Option<usize>,
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
}

impl Args {
    /// The recipe flags as given.
    fn recipe_flags(&self) -> Result<RecipeFlags> {
        Ok(RecipeFlags {
            preset: self.preset.clone(),
            backbone: self.backbone.clone(),
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
fn output_folder(a: &Args) -> Result<(PathBuf, PathBuf)> {
    let output = a.output.clone().unwrap_or_else(|| PathBuf::from("runs").join(utc_stamp()));
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
fn build_trainer(a: &Args, recipe: &Recipe, plan: &StepPlan, ckpt: &Path) -> Result<Trainer> {
    let mut config = recipe.trainer_config(plan.schedule.clone());
    // --init-weights: the file's network (depth, variant, input convention) replaces the recipe's.
    let init =
        a.init_weights.as_deref().map(|w| for_training(w, a.backbone.as_deref(), &mut config)).transpose()?;
    let mut trainer = Trainer::new(config)?;
    trainer.set_epoch_length(EpochLength {
        batch_size: recipe.batch_size as u64,
        steps: plan.steps_per_epoch,
    })?;
    if recipe.qcface_warmup.is_some_and(|w| w > 0.0) {
        trainer.set_head_phase("warmup")?;
    }
    for w in trainer.head.warnings() {
        eprintln!("warning: {w}");
    }
    if let (Some(w), Some(params)) = (&a.init_weights, init) {
        for e in params.entries() {
            trainer.params.set(&e.name, e.value.clone())?;
        }
        eprintln!("initialized the backbone from {}", w.display());
    }
    if a.resume {
        trainer.resume(ckpt)?;
        eprintln!("resumed from {} at step {} (epoch {})", ckpt.display(), trainer.step, trainer.epoch);
    }
    Ok(trainer)
}

/// The loader of the run and its steps per epoch (at least one).
fn loader(a: &Args, data: &data::TrainingData, recipe: &Recipe, feed: &Feed) -> Result<(Loader, u64)> {
    let threads =
        a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let loader = Loader::new(
        data.faceset.clone(),
        LoaderConfig {
            batch_size: recipe.batch_size,
            seed: a.seed,
            threads,
            prefetch: 2 * threads,
            augment: recipe.augment,
            skip_corrupt: a.skip_corrupt,
            format: feed.pixel_format(),
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
    // One of several processes (torchrun, srun): each would train alone and write the same output folder.
    // Until training spans processes, that is refused.
    if let Some(job) = engine::dist::launch::from_env(|k| std::env::var(k).ok())? {
        if job.world > 1 {
            return Err(Error::Invalid(format!(
                "launched by {} as rank {} of {}: training across processes is not built yet; run one \
                 process (--grad-accum K splits a large batch on one device)",
                job.launcher, job.rank, job.world
            ))
            .into());
        }
    }
    crate::signals::install().map_err(Error::Invalid)?;
    let flags = a.recipe_flags()?;
    limits::check_checkpoint_every(a.checkpoint_every)?;
    limits::check_threads(a.threads)?;
    let limit = limits::time_limit(a.time_limit)?;
    // Unset, the precision is bf16 on a GPU (tensor cores; every device the engine opens, sm_80 and
    // newer, has them) and f32 where 16 bits are only emulated (the CPU).
    let device = crate::device_choice::choose(
        &a.device,
        requested_precision(&flags)?.unwrap_or(Precision::Bf16),
        "training",
    )?;
    let emulated = engine::backend::for_device(&device).emulates_half();
    if let Some(t) = a.threads {
        // The global pool can only be set once per process; this is the first use.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global();
    }
    let data = data::TrainingData::open(&a)?;
    let recipe = Recipe::resolve(&flags, &data.shape, emulated)?;
    if !device.is_cpu() {
        eprintln!("training on {} in {}", device.describe(), recipe.precision);
    }
    let feed = Feed::new(&device)?;
    let (loader, steps_per_epoch) = loader(&a, &data, &recipe, &feed)?;
    let plan = recipe.schedule(steps_per_epoch)?;
    let (output, ckpt) = output_folder(&a)?;
    let mut trainer = build_trainer(&a, &recipe, &plan, &ckpt)?;
    trainer.to_device(&device)?;
    eprintln!(
        "{} | head {} | {} classes | {} images, {steps_per_epoch} steps/epoch x {} epochs | batch {}{} lr {} | {}{} | {}",
        trainer.model.config.describe(trainer.params.parameter_count()),
        recipe.head,
        recipe.classes,
        data.faceset.len(),
        recipe.epochs,
        recipe.batch_size,
        match recipe.grad_accum {
            1 => String::new(),
            k => format!(" in {k} micro-batches of {}", recipe.batch_size / k),
        },
        recipe.lr,
        recipe.precision,
        if recipe.precision == Precision::F32 || !emulated { "" } else { " (emulated on the CPU)" },
        output.display()
    );
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
    )?;
    match s.train(&loader, feed)? {
        session::Ending::Finished => s.finish(&recipe),
        session::Ending::Signal(sig) => s.stop_on_signal(sig),
    }
}
