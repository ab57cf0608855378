//! `engine-train train`: trains a backbone with a margin-softmax head on a RecordIO face set, or, with no
//! `--data`, on the generated demo set (built once and cached), evaluating verification as it goes.
//!
//! Resume: a checkpoint (`checkpoint.safetensors`) is written every `--checkpoint-every` steps and at the
//! end of each epoch; batches come in an order fixed by (seed, epoch), so `--resume` skips the batches
//! already taken and continues bit-identically on the CPU.

use super::head_flags::HeadFlags;
use super::CmdResult;
use crate::demo_defaults;
use crate::pair_eval::PairEval;
use datasets::augment::AugmentConfig;
use datasets::demo::ensure_demo_set;
use datasets::faceset::FaceSet;
use datasets::loader::{Batch, Loader, LoaderConfig, PixelFormat, Pixels};
use datasets::synth::SynthConfig;
use datasets::DataError;
use engine::backend::cuda::prefetch::{BatchUploader, HostPixels, StagedBatch};
use engine::eval::quality::spearman;
use engine::model::IResNetConfig;
use engine::optim::LrSchedule;
use engine::train::loss_scale::LossScaleConfig;
use engine::train::metrics::{write_summary, MetricsLog, Progress};
use engine::train::precision::Precision;
use engine::train::presets::{self, Preset, Schedule};
use engine::train::trainer::{OptimizerChoice, Trainer, TrainerConfig};
use engine::{Device, Error, Tensor};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// precision (bf16 for most) applies unless this flag is given.
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
    /// Start from these backbone weights (PyTorch layout with insightface names, as `export` writes them).
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
    /// Skip records that fail to read or decode, counting them, instead of stopping.
    #[arg(long)]
    skip_corrupt: bool,
    /// Where the generated demo set is cached.
    #[arg(long, default_value = ".cache/facetrain")]
    cache: PathBuf,
    /// Demo set: training identities.
    #[arg(long, default_value_t = demo_defaults::IDENTITIES)]
    synth_identities: usize,
    /// Demo set: images per training identity.
    #[arg(long, default_value_t = demo_defaults::IMAGES_PER_IDENTITY)]
    synth_images: usize,
    /// Demo set: image side in pixels.
    #[arg(long, default_value_t = demo_defaults::SIZE)]
    synth_size: usize,
    /// Demo set: identities held out of training for the verification pairs.
    #[arg(long, default_value_t = demo_defaults::HELDOUT_IDENTITIES)]
    synth_heldout: usize,
    /// Demo set: verification pairs (half same, half different).
    #[arg(long, default_value_t = demo_defaults::PAIRS)]
    synth_pairs: usize,
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

fn augment_config(name: &str) -> Result<AugmentConfig, Error> {
    match name {
        "none" => Ok(AugmentConfig::none()),
        "flip" => Ok(AugmentConfig::flip_only()),
        "adaface" => Ok(AugmentConfig::default()),
        other => Err(Error::Invalid(format!("--augment {other}: expected none, flip or adaface"))),
    }
}

/// Converts an epoch-based schedule into steps.
fn lr_schedule(
    name: &str,
    a: &Args,
    preset: Option<&Preset>,
    steps_per_epoch: u64,
    total: u64,
) -> Result<LrSchedule, Error> {
    let ep = |e: f64| (e * steps_per_epoch as f64).round() as usize;
    let warm = a.lr_warmup_epochs.or(match preset.map(|p| &p.schedule) {
        Some(Schedule::Poly { warmup_epochs }) | Some(Schedule::Cosine { warmup_epochs }) => {
            Some(*warmup_epochs)
        }
        _ => None,
    });
    Ok(match name {
        "constant" => LrSchedule::Constant,
        "poly" => {
            LrSchedule::PolyWarmup { warmup: ep(warm.unwrap_or(0.0)), total: total as usize, power: 2.0 }
        }
        "cosine" => {
            LrSchedule::Cosine { warmup: ep(warm.unwrap_or(0.0)), total: total as usize, min_lr: 0.0 }
        }
        "steps" => {
            let milestones: Vec<usize> = match (&a.milestones, preset.map(|p| &p.schedule)) {
                (Some(m), _) => m.iter().map(|&e| ep(e)).collect(),
                (None, Some(Schedule::Steps { milestones })) => milestones.iter().map(|&e| ep(e)).collect(),
                (None, Some(Schedule::StepsIter { milestones })) => {
                    milestones.iter().map(|&i| i as usize).collect()
                }
                _ => return Err(Error::Invalid("--schedule steps needs --milestones".into())),
            };
            LrSchedule::Steps { milestones, gamma: 0.1 }
        }
        other => {
            return Err(Error::Invalid(format!(
                "--schedule {other}: expected poly, steps, cosine or constant"
            )))
        }
    })
}

fn preset_schedule_name(p: &Preset) -> &'static str {
    match p.schedule {
        Schedule::Poly { .. } => "poly",
        Schedule::Steps { .. } | Schedule::StepsIter { .. } => "steps",
        Schedule::Cosine { .. } => "cosine",
    }
}

pub fn run(a: Args) -> CmdResult {
    if a.list_presets {
        for p in presets::all() {
            println!("{:<24} {}", p.name, p.summary);
        }
        return Ok(());
    }
    let preset = match &a.preset {
        Some(n) => Some(presets::by_name(n).ok_or_else(|| {
            let names: Vec<_> = presets::all().iter().map(|p| p.name).collect();
            Error::Invalid(format!("unknown preset '{n}' (known: {})", names.join(", ")))
        })?),
        None => None,
    };
    let chosen: Option<Precision> = match (&a.precision, &preset) {
        (Some(p), _) => Some(p.parse().map_err(|e: Error| Error::Invalid(format!("--precision: {e}")))?),
        (None, Some(p)) => Some(p.precision),
        (None, None) => None,
    };
    // Unset: bf16 on a GPU (tensor cores; every device the engine opens, sm_80 and newer, has them), f32
    // on the CPU, where 16-bit types are emulated and only slower.
    let device = crate::device_choice::choose(&a.device, chosen.unwrap_or(Precision::Bf16), "training")?;
    let precision = chosen.unwrap_or(if device.is_cpu() { Precision::F32 } else { Precision::Bf16 });
    if let Device::Cuda(ctx) = &device {
        eprintln!(
            "training on cuda:{} ({}, sm_{}) in {precision}",
            ctx.ordinal(),
            ctx.device_name(),
            ctx.arch()
        );
    }
    if let Some(t) = a.threads {
        // The global pool can only be set once per process; this is the first use.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(t.max(1)).build_global();
    }
    let demo = a.data.is_none();
    let mut eval_paths = a.eval.clone();
    let mut demo_degradation = None;
    let data_path = match &a.data {
        Some(p) => p.clone(),
        None => {
            let cfg = SynthConfig {
                identities: a.synth_identities,
                images_per_identity: a.synth_images,
                heldout_identities: a.synth_heldout,
                pairs: a.synth_pairs,
                size: a.synth_size,
                ..demo_defaults::synth_config()
            };
            let t0 = Instant::now();
            let set = ensure_demo_set(&a.cache, &cfg)?;
            if set.generated {
                eprintln!(
                    "generated the demo set in {:.1}s: {}",
                    t0.elapsed().as_secs_f64(),
                    set.train.display()
                );
            }
            eval_paths.insert(0, set.pairs.clone());
            demo_degradation = Some(set.pair_degradation);
            set.train
        }
    };
    let faceset = Arc::new(FaceSet::open(&data_path)?);
    let classes = faceset
        .classes()
        .ok_or_else(|| Error::Io(format!("{}: no 'property' file and no class count", data_path.display())))?
        as usize;
    let size = faceset.property().map(|p| (p.height as usize, p.width as usize));

    let backbone_name = a.backbone.clone().unwrap_or_else(|| {
        preset.as_ref().map(|p| p.backbone.to_string()).unwrap_or_else(|| {
            if demo {
                demo_defaults::BACKBONE.into()
            } else {
                "r50".into()
            }
        })
    });
    let mut backbone = IResNetConfig::by_name(&backbone_name)?;
    if let Some((h, w)) = size {
        if backbone_name == "small" {
            backbone.input_hw = (h, w);
        } else if (h, w) != backbone.input_hw {
            return Err(Error::Invalid(format!(
                "{}: images are {h}x{w} but {backbone_name} takes {}x{}",
                data_path.display(),
                backbone.input_hw.0,
                backbone.input_hw.1
            ))
            .into());
        }
    }
    backbone.validate()?;
    let head = a.head.clone().unwrap_or_else(|| {
        preset.as_ref().map(|p| p.head.to_string()).unwrap_or_else(|| {
            if demo {
                demo_defaults::HEAD.into()
            } else {
                "arcface".into()
            }
        })
    });
    let mut head_flags = a.head_flags.clone();
    if let Some(p) = &preset {
        head_flags.fill_from(p.head_args)?;
    }
    if demo && preset.is_none() && a.head.is_none() && head_flags.s.is_none() {
        head_flags.s = Some(demo_defaults::HEAD_S);
    }
    let batch_size = a.batch_size.or(preset.as_ref().map(|p| p.batch_size)).unwrap_or(if demo {
        demo_defaults::BATCH_SIZE
    } else {
        128
    });
    let epochs = a.epochs.or(preset.as_ref().map(|p| p.epochs)).unwrap_or(if demo {
        demo_defaults::EPOCHS
    } else {
        20.0
    });
    let default_optimizer = if demo && preset.is_none() { demo_defaults::OPTIMIZER } else { "sgd" };
    let optimizer_name = a.optimizer.as_deref().unwrap_or(default_optimizer);
    // The demo's rate suits AdamW; with --optimizer sgd the demo falls back to SGD's 0.1.
    let lr = a.lr.or(preset.as_ref().map(|p| p.scaled_lr(batch_size))).unwrap_or(
        if demo && preset.is_none() && optimizer_name == "adamw" { demo_defaults::LR } else { 0.1 },
    );
    let augment =
        augment_config(a.augment.as_deref().unwrap_or(if preset.as_ref().is_some_and(|p| p.augment) {
            "adaface"
        } else {
            "flip"
        }))?;
    let threads =
        a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let loader = Loader::new(
        faceset.clone(),
        LoaderConfig {
            batch_size,
            seed: a.seed,
            threads,
            prefetch: 2 * threads,
            augment,
            skip_corrupt: a.skip_corrupt,
            // On a GPU the batch travels as u8 (4x less to copy) and input.cu normalizes it there.
            format: if device.is_cpu() { PixelFormat::F32Normalized } else { PixelFormat::U8 },
            ..LoaderConfig::default()
        },
    )?;
    let steps_per_epoch = loader.batches_per_epoch() as u64;
    if steps_per_epoch == 0 {
        return Err(Error::Invalid(format!(
            "{}: {} images make no full batch of {batch_size}",
            data_path.display(),
            faceset.len()
        ))
        .into());
    }
    let total_epochs = epochs.ceil() as u64;
    let total_steps = (epochs * steps_per_epoch as f64).round() as u64;
    let schedule_name = a.schedule.clone().unwrap_or_else(|| {
        preset.as_ref().map(|p| preset_schedule_name(p).to_string()).unwrap_or(if demo {
            demo_defaults::SCHEDULE.into()
        } else {
            "poly".into()
        })
    });
    let schedule = lr_schedule(&schedule_name, &a, preset.as_ref(), steps_per_epoch, total_steps)?;
    let optimizer = match optimizer_name {
        "sgd" => OptimizerChoice::Sgd,
        "adamw" => OptimizerChoice::AdamW,
        o => return Err(Error::Invalid(format!("--optimizer {o}: expected sgd or adamw")).into()),
    };
    let config = TrainerConfig {
        backbone,
        backbone_name: backbone_name.clone(),
        head: head.clone(),
        head_params: head_flags.to_params()?,
        num_classes: classes,
        optimizer,
        lr,
        schedule,
        momentum: a.momentum.or(preset.as_ref().map(|p| p.momentum)).unwrap_or(0.9),
        weight_decay: a.weight_decay.or(preset.as_ref().map(|p| p.weight_decay)).unwrap_or(5e-4),
        no_bn_weight_decay: preset.as_ref().is_some_and(|p| p.no_bn_weight_decay),
        grad_clip: a.grad_clip.or(preset.as_ref().and_then(|p| p.grad_clip)),
        seed: a.seed,
        precision,
        loss_scale: LossScaleConfig::default(),
    };
    let qcface_warmup = if head == "qcface" { Some(a.warmup_epochs.unwrap_or(epochs / 2.0)) } else { None };
    let mut trainer = Trainer::new(config)?;
    if let Some(w) = qcface_warmup {
        if w > 0.0 {
            trainer.set_head_phase("warmup")?;
        }
    }
    for w in trainer.head.warnings() {
        eprintln!("warning: {w}");
    }

    let output = a.output.clone().unwrap_or_else(|| PathBuf::from("runs").join(utc_stamp()));
    std::fs::create_dir_all(&output)
        .map_err(|e| Error::Io(format!("{}: cannot create: {e}", output.display())))?;
    let ckpt = output.join("checkpoint.safetensors");
    if let Some(w) = &a.init_weights {
        engine::model::export::import_pytorch(w, &trainer.model.config, &mut trainer.params)?;
        eprintln!("initialized the backbone from {}", w.display());
    }
    if a.resume {
        trainer.resume(&ckpt)?;
        eprintln!("resumed from {} at step {} (epoch {})", ckpt.display(), trainer.step, trainer.epoch);
    } else if ckpt.exists() {
        return Err(Error::Invalid(format!(
            "{} already holds a checkpoint: pass --resume to continue it, or choose another --output",
            output.display()
        ))
        .into());
    }
    trainer.to_device(&device)?;
    let params = trainer.params.parameter_count();
    eprintln!(
        "{} | head {head} | {classes} classes | {} images, {steps_per_epoch} steps/epoch x {epochs} epochs | batch {batch_size} lr {lr} | {precision}{} | {}",
        trainer.model.config.describe(params),
        faceset.len(),
        if precision == Precision::F32 || !device.is_cpu() { "" } else { " (emulated on the CPU)" },
        output.display()
    );
    let hw = trainer.model.config.input_hw;
    let evals: Vec<PairEval> = eval_paths.iter().map(|p| PairEval::load(p, hw)).collect::<Result<_, _>>()?;
    let mut log = MetricsLog::open(&output.join("metrics.jsonl"))?;
    let eval_every = a.eval_every.unwrap_or(if demo { demo_defaults::EVAL_EVERY } else { steps_per_epoch });
    let limit = a.time_limit.map(|m| Duration::from_secs_f64(m * 60.0));
    let mut progress = Progress::new(total_steps, trainer.step, Duration::from_secs(10));
    let started = Instant::now();
    let mut images_seen = 0u64;
    let mut last_acc = None;
    // Time spent evaluating, so that "train_seconds" counts training alone.
    let eval_seconds = std::cell::Cell::new(0.0f64);
    let evaluate = |trainer: &mut Trainer, log: &mut MetricsLog| -> Result<Option<f64>, Error> {
        let mut first = None;
        let eval_start = Instant::now();
        let train_seconds = started.elapsed().as_secs_f64() - eval_seconds.get();
        for (k, ev) in evals.iter().enumerate() {
            let t0 = Instant::now();
            let r = ev.run(&trainer.model, &mut trainer.params)?;
            eprintln!(
                "step {} {} ({:.1}s)",
                trainer.step,
                r.report.summary(&ev.name),
                t0.elapsed().as_secs_f64()
            );
            log.log(
                "eval",
                &[
                    ("step", trainer.step as f64),
                    ("epoch", trainer.epoch as f64),
                    ("seconds", started.elapsed().as_secs_f64()),
                    ("train_seconds", train_seconds),
                    ("accuracy", r.report.accuracy_mean),
                    ("accuracy_std", r.report.accuracy_std),
                    ("auc", r.report.auc),
                ],
            )?;
            // On the demo pairs the degradation of each image is known: a quality-aware embedding's
            // magnitude should fall as degradation rises (negative rank correlation).
            if let (0, Some(deg)) = (k, &demo_degradation) {
                let d: Vec<f64> = deg.iter().map(|&v| v as f64).collect();
                let rho = spearman(&r.norms, &d)?;
                eprintln!("step {} magnitude vs degradation: Spearman {rho:.3}", trainer.step);
                log.log("quality", &[("step", trainer.step as f64), ("spearman_norm_degradation", rho)])?;
            }
            first.get_or_insert(r.report.accuracy_mean);
        }
        eval_seconds.set(eval_seconds.get() + eval_start.elapsed().as_secs_f64());
        Ok(first)
    };
    let mut feed = Feed::new(&device)?;
    // Invariant at an epoch's start: step == epoch * steps_per_epoch + batches already taken (resume).
    'epochs: while trainer.step < total_steps && trainer.epoch < total_epochs {
        let epoch = trainer.epoch;
        if let Some(w) = qcface_warmup {
            if epoch as f64 >= w {
                trainer.set_head_phase("planning")?;
            }
        }
        let epoch_start = epoch * steps_per_epoch;
        let skip =
            trainer.step.checked_sub(epoch_start).filter(|&s| s < steps_per_epoch).ok_or_else(|| {
                Error::Io(format!("{}: step {} does not fall in epoch {epoch}", ckpt.display(), trainer.step))
            })?;
        let mut batches = loader.epoch(epoch).skip(skip as usize);
        // On a GPU, the batch after the current one, already staged (its copy queued on the copy stream).
        let mut ahead: Option<Result<FedBatch, Box<dyn std::error::Error>>> = None;
        while let Some(batch) = ahead.take().or_else(|| batches.next().map(|b| feed.prepare(b))) {
            let batch = batch?;
            for (key, why) in &batch.skipped {
                eprintln!("skipped record {key}: {why}");
            }
            let n = batch.labels.len();
            let x = feed.tensor(batch.input)?;
            if feed.stages_ahead() {
                // Queued before step k's kernels, batch k+1's copy runs beside them; a loader error is
                // kept for its turn, after step k (as without staging).
                ahead = batches.next().map(|b| feed.prepare(b));
            }
            let labels = batch.labels;
            let out = trainer.train_step(&x, &labels).map_err(|e| {
                Error::Invalid(format!("{e}; the last good checkpoint is {}", ckpt.display()))
            })?;
            images_seen += n as u64;
            let mut fields = vec![("step", trainer.step as f64), ("loss", out.loss), ("lr", out.lr)];
            if let (Some(scale), Some(s)) = (out.loss_scale, trainer.loss_scaler()) {
                progress.set_loss_scale(scale, s.skipped_steps());
                fields.extend([("loss_scale", scale), ("skipped", f64::from(u8::from(out.skipped)))]);
            }
            progress.print(epoch as usize, trainer.step, out.loss, out.lr, images_seen);
            log.log("step", &fields)?;
            if trainer.step % a.checkpoint_every == 0 {
                trainer.save(&ckpt)?;
            }
            if trainer.step % eval_every == 0 {
                last_acc = evaluate(&mut trainer, &mut log)?.or(last_acc);
            }
            let trained =
                progress.elapsed().saturating_sub(std::time::Duration::from_secs_f64(eval_seconds.get()));
            if limit.is_some_and(|l| trained >= l) {
                eprintln!("time limit reached at step {}", trainer.step);
                break 'epochs;
            }
            if trainer.step >= total_steps {
                break;
            }
        }
        if trainer.step == epoch_start + steps_per_epoch {
            trainer.epoch += 1;
            trainer.save(&ckpt)?;
        } else if trainer.step < total_steps {
            return Err(Error::Invalid(format!(
                "epoch {epoch} ended after step {}, expected step {}: the loader produced too few batches",
                trainer.step,
                epoch_start + steps_per_epoch
            ))
            .into());
        }
    }
    trainer.save(&ckpt)?;
    if trainer.step % eval_every != 0 || last_acc.is_none() {
        last_acc = evaluate(&mut trainer, &mut log)?.or(last_acc);
    }
    let secs = started.elapsed().as_secs_f64();
    let train_secs = secs - eval_seconds.get();
    let model_path = output.join("model.safetensors");
    engine::model::export::export_pytorch(&model_path, &trainer.model.config, &trainer.params)?;
    crate::run_plots::write_training_plots(&output)?;
    write_summary(
        &output.join("summary.json"),
        &[
            ("backbone", json!(backbone_name)),
            ("head", json!(head)),
            ("steps", json!(trainer.step)),
            ("precision", json!(precision.name())),
            ("skipped_steps", json!(trainer.loss_scaler().map_or(0, |s| s.skipped_steps()))),
            ("epochs", json!(trainer.epoch)),
            ("seconds", json!(secs)),
            ("train_seconds", json!(train_secs)),
            ("images_per_second", json!(images_seen as f64 / train_secs.max(1e-9))),
            ("verification_accuracy", json!(last_acc)),
        ],
    )?;
    eprintln!(
        "done: {} steps in {:.1}s ({:.1}s training, the rest evaluation); verification accuracy {}; weights {} (PyTorch layout), checkpoint {}",
        trainer.step,
        secs,
        train_secs,
        last_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or("n/a".into()),
        model_path.display(),
        ckpt.display()
    );
    Ok(())
}

/// How batches reach `train_step`. On the CPU, the loader's f32 batch as a host tensor, made when its step
/// comes. On a GPU, the u8 pixels go through a `BatchUploader` (pinned double buffers): the loop stages
/// batch k+1 before queuing step k, so its host-to-device copy on the copy stream overlaps step k on the
/// compute stream; input.cu then normalizes it on the device (flip already applied by the loader).
enum Feed {
    Cpu,
    Gpu(Box<BatchUploader>),
}

enum FedInput {
    Host(Tensor),
    Staged(StagedBatch),
}

/// A batch on its way to the trainer: its pixels (a host tensor or a staged upload) and bookkeeping.
struct FedBatch {
    input: FedInput,
    labels: Vec<i64>,
    skipped: Vec<(u64, String)>,
}

impl Feed {
    fn new(device: &Device) -> Result<Feed, Error> {
        Ok(match device {
            Device::Cpu => Feed::Cpu,
            Device::Cuda(ctx) => Feed::Gpu(Box::new(BatchUploader::new(ctx)?)),
        })
    }

    /// Whether the loop should stage the next batch before running the current step.
    fn stages_ahead(&self) -> bool {
        matches!(self, Feed::Gpu(_))
    }

    fn prepare(&mut self, batch: Result<Batch, DataError>) -> Result<FedBatch, Box<dyn std::error::Error>> {
        let batch = batch?;
        let shape = [batch.labels.len(), batch.height, batch.width, 3];
        let input = match (batch.pixels, self) {
            (Pixels::F32(px), Feed::Cpu) => FedInput::Host(Tensor::from_vec(px, shape)?),
            (Pixels::U8(px), Feed::Gpu(up)) => FedInput::Staged(up.stage(HostPixels::U8(&px), shape)?),
            (Pixels::F32(px), Feed::Gpu(up)) => FedInput::Staged(up.stage(HostPixels::F32(&px), shape)?),
            (Pixels::U8(_), Feed::Cpu) => {
                return Err(
                    Error::Invalid("loader returned u8 pixels; the CPU path expects f32".into()).into()
                )
            }
        };
        let labels = batch.labels.iter().map(|&l| l as i64).collect();
        Ok(FedBatch { input, labels, skipped: batch.skipped })
    }

    /// The batch as the trainer takes it (on a GPU, queued on the compute stream after its copy).
    fn tensor(&mut self, input: FedInput) -> Result<Tensor, Error> {
        match (input, self) {
            (FedInput::Host(x), _) => Ok(x),
            (FedInput::Staged(s), Feed::Gpu(up)) => up.take(s, engine::DType::F32),
            (FedInput::Staged(_), Feed::Cpu) => unreachable!("only the GPU feed stages batches"),
        }
    }
}
