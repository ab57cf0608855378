//! The recipe of a training run from what the user gave: each setting comes from its flag, else the
//! preset (`--preset`, a seed paper's recipe), else the embedded demo's default (no `--data`), else the
//! general default (insightface's). `engine-train train` resolves its flags here, in two stages: what is
//! known before the loader exists (`Recipe::resolve`), then the schedule in steps once the epoch length is
//! known (`Recipe::schedule`).

use crate::heads::{self, HeadParams};
use crate::model::IResNetConfig;
use crate::optim::LrSchedule;
use crate::train::demo;
use crate::train::precision::Precision;
use crate::train::presets::{self, IterationSteps, Preset, Schedule};
use crate::train::trainer::{OptimizerChoice, TrainerConfig};
use crate::{Error, Result};
use datasets::augment::AugmentConfig;

/// The training flags as given; `None` where the user gave none.
#[derive(Debug, Clone, Default)]
pub struct RecipeFlags {
    pub preset: Option<String>,
    pub backbone: Option<String>,
    /// The embedding's dimension (`None`: the backbone's, 512; 2 or 3 for the papers' toy hyperspheres).
    pub embedding_size: Option<usize>,
    pub head: Option<String>,
    /// The head's hyper-parameter flags (unset ones fall to the preset, then to the head's defaults).
    pub head_params: HeadParams,
    pub batch_size: Option<usize>,
    /// Micro-batches per step (`None`: 1).
    pub grad_accum: Option<usize>,
    pub epochs: Option<f64>,
    pub lr: Option<f64>,
    pub schedule: Option<String>,
    pub milestones: Option<Vec<f64>>,
    pub lr_warmup_epochs: Option<f64>,
    pub optimizer: Option<String>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub grad_clip: Option<f64>,
    pub precision: Option<String>,
    pub augment: Option<String>,
    /// `--augment-prob`: P for AdaFace's three augmentations, or `crop=P,low-res=P,photometric=P` (any of
    /// them; the others keep 0.2).
    pub augment_prob: Option<String>,
    pub warmup_epochs: Option<f64>,
    pub eval_every: Option<u64>,
    pub seed: u64,
    /// Data-parallel ranks the run spans (0 or 1: one). `batch_size` is each rank's; the learning rate
    /// and a preset's batch are the global batch's.
    pub world: usize,
}

/// What the training set tells the recipe.
#[derive(Debug, Clone)]
pub struct DataShape {
    /// The generated demo set (no `--data`).
    pub demo: bool,
    /// The set, for messages (its path).
    pub name: String,
    pub classes: usize,
    /// Images in the set (an iteration-counted preset's length in epochs depends on it).
    pub images: usize,
    /// Image height and width, when the set records them.
    pub image_hw: Option<(usize, usize)>,
}

/// A run's resolved settings before the loader exists.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub preset: Option<Preset>,
    pub demo: bool,
    pub backbone_name: String,
    pub backbone: IResNetConfig,
    pub head: String,
    pub head_params: HeadParams,
    /// Images per step on each rank; `batch_size * world` is the global batch the learning rate is
    /// defined on (insightface's configs: per GPU).
    pub batch_size: usize,
    /// Data-parallel ranks (1 alone).
    pub world: usize,
    /// Micro-batches each step's batch is split into (`--grad-accum`), dividing `batch_size`.
    pub grad_accum: usize,
    pub epochs: f64,
    /// An iteration-counted preset (QAMFace) without `--epochs`: its length and milestones in steps of
    /// this batch (`epochs` is then their equivalent on this set, for messages and QCFace's default).
    pub iteration_steps: Option<IterationSteps>,
    pub lr: f64,
    pub schedule_name: String,
    /// The step schedule's milestones in epochs: `--milestones`, else the preset's.
    pub milestones: Option<Vec<f64>>,
    pub lr_warmup_epochs: Option<f64>,
    pub optimizer: OptimizerChoice,
    pub momentum: f64,
    pub weight_decay: f64,
    pub no_bn_weight_decay: bool,
    pub grad_clip: Option<f64>,
    pub precision: Precision,
    pub augment: AugmentConfig,
    /// QCFace (any softmax part): epochs of warm-up on the softmax loss alone before hypersphere
    /// planning; `None` for every other head.
    pub qcface_warmup: Option<f64>,
    pub eval_every: Option<u64>,
    pub seed: u64,
    pub classes: usize,
}

/// The schedule of a run in steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlan {
    pub schedule: LrSchedule,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub total_epochs: u64,
    pub eval_every: u64,
}

/// The preset `flags` name, if any.
pub fn preset(flags: &RecipeFlags) -> Result<Option<Preset>> {
    let Some(n) = &flags.preset else { return Ok(None) };
    presets::by_name(n).map(Some).ok_or_else(|| {
        let names: Vec<_> = presets::all().iter().map(|p| p.name).collect();
        Error::Invalid(format!("unknown preset '{n}' (known: {})", names.join(", ")))
    })
}

/// The precision the flags or the preset ask for; `None` leaves it to the device (bf16 on a GPU, f32
/// where 16 bits are only emulated).
pub fn requested_precision(flags: &RecipeFlags) -> Result<Option<Precision>> {
    match (&flags.precision, preset(flags)?) {
        (Some(p), _) => Ok(Some(p.parse().map_err(|e: Error| Error::Invalid(format!("--precision: {e}")))?)),
        (None, Some(p)) => Ok(Some(p.precision)),
        (None, None) => Ok(None),
    }
}

fn augment_config(name: &str) -> Result<AugmentConfig> {
    match name {
        "none" => Ok(AugmentConfig::none()),
        "flip" => Ok(AugmentConfig::flip_only()),
        "adaface" => Ok(AugmentConfig::default()),
        other => Err(Error::Invalid(format!("--augment {other}: expected none, flip or adaface"))),
    }
}

/// `--augment-prob` applied to AdaFace's three augmentations (`adaface` only: the others have none).
fn with_probabilities(mut a: AugmentConfig, name: &str, spec: Option<&str>) -> Result<AugmentConfig> {
    let Some(spec) = spec else { return Ok(a) };
    if name != "adaface" {
        return Err(Error::Invalid(format!(
            "--augment-prob {spec}: --augment {name} has none of AdaFace's augmentations (use --augment adaface)"
        )));
    }
    let prob = |v: &str| -> Result<f64> {
        v.trim().parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)).ok_or_else(|| {
            Error::Invalid(format!("--augment-prob {spec}: {v:?} is not a probability in [0, 1]"))
        })
    };
    if !spec.contains('=') {
        let p = prob(spec)?;
        (a.crop_prob, a.low_res_prob, a.photometric_prob) = (p, p, p);
        return Ok(a);
    }
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let slot = match k.trim() {
            "crop" => &mut a.crop_prob,
            "low-res" => &mut a.low_res_prob,
            "photometric" => &mut a.photometric_prob,
            other => {
                return Err(Error::Invalid(format!(
                    "--augment-prob {spec}: unknown augmentation {other:?} (crop, low-res, photometric)"
                )))
            }
        };
        *slot = prob(v)?;
    }
    Ok(a)
}

fn preset_schedule_name(p: &Preset) -> &'static str {
    match p.schedule {
        Schedule::Poly { .. } => "poly",
        Schedule::Steps { .. } | Schedule::StepsIter { .. } => "steps",
        Schedule::Cosine { .. } => "cosine",
    }
}

/// The backbone, its input size fitted to the data: the demo's `small` backbone takes the images' size;
/// every other backbone must match it.
fn backbone(name: &str, data: &DataShape) -> Result<IResNetConfig> {
    let mut backbone = IResNetConfig::by_name(name)?;
    if let Some((h, w)) = data.image_hw {
        if name == "small" {
            backbone.input_hw = (h, w);
        } else if (h, w) != backbone.input_hw {
            return Err(Error::Invalid(format!(
                "{}: images are {h}x{w} but {name} takes {}x{}",
                data.name, backbone.input_hw.0, backbone.input_hw.1
            )));
        }
    }
    backbone.validate()?;
    Ok(backbone)
}

impl Recipe {
    /// Every setting of the run for a training set shaped `data`; `emulated_half` when the device only
    /// emulates 16 bits (the CPU: the precision then defaults to f32).
    pub fn resolve(flags: &RecipeFlags, data: &DataShape, emulated_half: bool) -> Result<Recipe> {
        crate::train::limits::check_recipe_flags(flags)?;
        let preset = preset(flags)?;
        let p = preset.as_ref();
        let demo = data.demo;
        // The demo's own defaults apply only without a preset (a preset is a paper's recipe).
        let demo_only = demo && p.is_none();
        let backbone_name = flags.backbone.clone().unwrap_or_else(|| {
            p.map(|p| p.backbone.to_string()).unwrap_or(if demo { demo::BACKBONE } else { "r50" }.into())
        });
        let head = flags.head.clone().unwrap_or_else(|| {
            p.map(|p| p.head.to_string()).unwrap_or(if demo { demo::HEAD } else { "arcface" }.into())
        });
        let mut head_params = flags.head_params.clone();
        // The preset's hyper-parameters are its head's: another `--head` starts from its own defaults.
        if let Some(p) = p.filter(|p| p.head == head) {
            head_params.fill_unset(p.head_args)?;
        }
        if demo_only && flags.head.is_none() && head_params.s.is_none() {
            head_params.s = Some(demo::HEAD_S);
        }
        let world = flags.world.max(1);
        // A preset's batch is the paper's global batch: each rank takes its share.
        let preset_batch = match p {
            Some(p) if flags.batch_size.is_none() && !p.batch_size.is_multiple_of(world) => {
                return Err(Error::Invalid(format!(
                    "preset {}: its global batch of {} does not split over {world} ranks; give --batch-size (per rank)",
                    p.name, p.batch_size
                )))
            }
            p => p.map(|p| p.batch_size / world),
        };
        let batch_size =
            flags.batch_size.or(preset_batch).unwrap_or(if demo { demo::BATCH_SIZE } else { 128 });
        let grad_accum = flags.grad_accum.unwrap_or(1);
        if grad_accum == 0 || !batch_size.is_multiple_of(grad_accum) {
            return Err(Error::Invalid(format!(
                "--grad-accum {grad_accum}: it must divide the batch of {batch_size} images into equal micro-batches"
            )));
        }
        let epochs = flags.epochs.or(p.map(|p| p.epochs_on(data.images))).unwrap_or(if demo {
            demo::EPOCHS
        } else {
            20.0
        });
        let iteration_steps = p.filter(|_| flags.epochs.is_none()).and_then(|p| p.steps_at(batch_size));
        // The preset's milestones in epochs, unless they are counted in steps above.
        let milestones = flags.milestones.clone().or_else(|| match (p?, &iteration_steps) {
            (p, Some(_)) if matches!(p.schedule, Schedule::StepsIter { .. }) => None,
            (p, _) => p.milestones_on(data.images),
        });
        let optimizer_name =
            flags.optimizer.as_deref().unwrap_or(if demo_only { demo::OPTIMIZER } else { "sgd" });
        let optimizer = match optimizer_name {
            "sgd" => OptimizerChoice::Sgd,
            "adamw" => OptimizerChoice::AdamW,
            o => return Err(Error::Invalid(format!("--optimizer {o}: expected sgd or adamw"))),
        };
        // The demo's rate suits AdamW; with --optimizer sgd the demo falls back to SGD's 0.1.
        let lr = flags
            .lr
            .or(p.map(|p| p.scaled_lr(batch_size * world)))
            .unwrap_or(if demo_only && optimizer == OptimizerChoice::AdamW { demo::LR } else { 0.1 });
        let augment_name =
            flags.augment.as_deref().unwrap_or(if p.is_some_and(|p| p.augment) { "adaface" } else { "flip" });
        let schedule_name = flags.schedule.clone().unwrap_or_else(|| {
            p.map(|p| preset_schedule_name(p).to_string())
                .unwrap_or(if demo { demo::SCHEDULE } else { "poly" }.into())
        });
        let precision = requested_precision(flags)?.unwrap_or(if emulated_half {
            Precision::F32
        } else {
            Precision::Bf16
        });
        Ok(Recipe {
            demo,
            backbone: {
                let mut b = backbone(&backbone_name, data)?;
                b.embedding_size = flags.embedding_size.unwrap_or(b.embedding_size);
                b
            },
            backbone_name,
            qcface_warmup: heads::has_phases(&head)
                .then(|| flags.warmup_epochs.or(p.and_then(|p| p.warmup_epochs)).unwrap_or(epochs / 2.0)),
            head,
            head_params,
            batch_size,
            world,
            grad_accum,
            epochs,
            iteration_steps,
            lr,
            schedule_name,
            milestones,
            lr_warmup_epochs: flags.lr_warmup_epochs,
            optimizer,
            momentum: flags.momentum.or(p.map(|p| p.momentum)).unwrap_or(0.9),
            weight_decay: flags.weight_decay.or(p.map(|p| p.weight_decay)).unwrap_or(5e-4),
            no_bn_weight_decay: p.is_some_and(|p| p.no_bn_weight_decay),
            grad_clip: flags.grad_clip.or(p.and_then(|p| p.grad_clip)),
            precision,
            augment: with_probabilities(
                augment_config(augment_name)?,
                augment_name,
                flags.augment_prob.as_deref(),
            )?,
            eval_every: flags.eval_every,
            seed: flags.seed,
            classes: data.classes,
            preset,
        })
    }

    /// The learning-rate schedule, total steps and evaluation cadence for epochs of `steps_per_epoch`.
    pub fn schedule(&self, steps_per_epoch: u64) -> Result<StepPlan> {
        let total_steps = match &self.iteration_steps {
            Some(it) => it.total,
            None => (self.epochs * steps_per_epoch as f64).round() as u64,
        };
        let ep = |e: f64| (e * steps_per_epoch as f64).round() as usize;
        let warm = self.lr_warmup_epochs.or(match self.preset.as_ref().map(|p| &p.schedule) {
            Some(Schedule::Poly { warmup_epochs }) | Some(Schedule::Cosine { warmup_epochs }) => {
                Some(*warmup_epochs)
            }
            _ => None,
        });
        if total_steps == 0 {
            return Err(Error::Invalid(format!(
                "--epochs {}: no whole step at {steps_per_epoch} steps per epoch",
                self.epochs
            )));
        }
        if let Some(w) = warm.filter(|&w| w >= self.epochs) {
            return Err(Error::Invalid(format!(
                "--lr-warmup-epochs {w}: the warm-up must be shorter than the run's {} epochs",
                self.epochs
            )));
        }
        let schedule = match self.schedule_name.as_str() {
            "constant" => LrSchedule::Constant,
            "poly" => LrSchedule::PolyWarmup {
                warmup: ep(warm.unwrap_or(0.0)),
                total: total_steps as usize,
                power: 2.0,
            },
            "cosine" => LrSchedule::Cosine {
                warmup: ep(warm.unwrap_or(0.0)),
                total: total_steps as usize,
                min_lr: 0.0,
            },
            "steps" => {
                let milestones = match (&self.milestones, &self.iteration_steps) {
                    (Some(m), _) => m.iter().map(|&e| ep(e)).collect(),
                    (None, Some(it)) if !it.milestones.is_empty() => it.milestones.clone(),
                    _ => return Err(Error::Invalid("--schedule steps needs --milestones".into())),
                };
                LrSchedule::Steps { milestones, gamma: 0.1 }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "--schedule {other}: expected poly, steps, cosine or constant"
                )))
            }
        };
        let eval_every =
            self.eval_every.unwrap_or(if self.demo { demo::EVAL_EVERY } else { steps_per_epoch });
        Ok(StepPlan {
            schedule,
            steps_per_epoch,
            total_steps,
            total_epochs: self.epochs.ceil() as u64,
            eval_every,
        })
    }

    /// QCFace: the steps of ArcFace warm-up at `steps_per_epoch` (the warm-up epochs rounded to the nearest
    /// step, as the milestones are); hypersphere planning from the next step on. `None` for other heads.
    pub fn warmup_steps(&self, steps_per_epoch: u64) -> Option<u64> {
        self.qcface_warmup.map(|w| (w * steps_per_epoch as f64).round() as u64)
    }

    /// The trainer's configuration under `schedule`.
    pub fn trainer_config(&self, schedule: LrSchedule) -> TrainerConfig {
        TrainerConfig {
            backbone: self.backbone.clone(),
            backbone_name: self.backbone_name.clone(),
            head: self.head.clone(),
            head_params: self.head_params.clone(),
            num_classes: self.classes,
            optimizer: self.optimizer,
            lr: self.lr,
            schedule,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            no_bn_weight_decay: self.no_bn_weight_decay,
            grad_clip: self.grad_clip,
            seed: self.seed,
            precision: self.precision,
            loss_scale: Default::default(),
            grad_accum: self.grad_accum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_data() -> DataShape {
        DataShape { demo: true, name: "demo".into(), classes: 600, images: 12_000, image_hw: Some((32, 32)) }
    }

    fn ms1m() -> DataShape {
        let hw = Some((112, 112));
        DataShape { demo: false, name: "/data/ms1m".into(), classes: 93_431, images: 5_179_510, image_hw: hw }
    }

    #[test]
    fn the_demo_defaults_apply_without_flags() {
        let r = Recipe::resolve(&RecipeFlags::default(), &demo_data(), true).unwrap();
        assert_eq!((r.backbone_name.as_str(), r.backbone.input_hw), (demo::BACKBONE, (32, 32)));
        assert_eq!((r.head.as_str(), r.head_params.s), (demo::HEAD, Some(demo::HEAD_S)));
        assert_eq!((r.batch_size, r.epochs, r.lr), (demo::BATCH_SIZE, demo::EPOCHS, demo::LR));
        assert_eq!((r.optimizer, r.schedule_name.as_str()), (OptimizerChoice::AdamW, demo::SCHEDULE));
        assert_eq!((r.precision, r.augment), (Precision::F32, AugmentConfig::flip_only()));
        let plan = r.schedule(100).unwrap();
        assert_eq!((plan.total_steps, plan.total_epochs, plan.eval_every), (1800, 18, demo::EVAL_EVERY));
        assert_eq!(plan.schedule, LrSchedule::Cosine { warmup: 0, total: 1800, min_lr: 0.0 });
        // A GPU defaults to bf16; the demo with SGD falls back to SGD's rate.
        let sgd = RecipeFlags { optimizer: Some("sgd".into()), ..RecipeFlags::default() };
        let g = Recipe::resolve(&sgd, &demo_data(), false).unwrap();
        assert_eq!((g.precision, g.lr), (Precision::Bf16, 0.1));
    }

    #[test]
    fn augment_prob_sets_adafaces_three_probabilities() {
        let flags = |aug: &str, p: &str| RecipeFlags {
            augment: Some(aug.into()),
            augment_prob: Some(p.into()),
            ..RecipeFlags::default()
        };
        let probs = |r: Recipe| {
            (r.augment.flip, r.augment.crop_prob, r.augment.low_res_prob, r.augment.photometric_prob)
        };
        let r = Recipe::resolve(&flags("adaface", "0.3"), &ms1m(), true).unwrap();
        assert_eq!(probs(r), (true, 0.3, 0.3, 0.3));
        let r = Recipe::resolve(&flags("adaface", "0"), &ms1m(), true).unwrap();
        assert_eq!(probs(r), (true, 0.0, 0.0, 0.0));
        let r = Recipe::resolve(&flags("adaface", "low-res=0.5,photometric=0"), &ms1m(), true).unwrap();
        assert_eq!(probs(r), (true, 0.2, 0.5, 0.0));
        for (aug, p, want) in [
            ("flip", "0.3", "--augment flip has none"),
            ("adaface", "1.5", "\"1.5\" is not a probability"),
            ("adaface", "blur=0.1", "unknown augmentation \"blur\""),
            ("adaface", "crop=", "\"\" is not a probability"),
        ] {
            let e = Recipe::resolve(&flags(aug, p), &ms1m(), true).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn grad_accum_splits_the_step_batch_and_leaves_its_learning_rate() {
        let flags = |k| RecipeFlags {
            preset: Some("ms1mv3-r50-arcface".into()),
            batch_size: Some(512),
            grad_accum: Some(k),
            ..RecipeFlags::default()
        };
        let one = Recipe::resolve(&flags(1), &ms1m(), true).unwrap();
        let four = Recipe::resolve(&flags(4), &ms1m(), true).unwrap();
        assert_eq!((four.batch_size, four.grad_accum, four.lr), (512, 4, one.lr));
        assert_eq!(four.trainer_config(LrSchedule::Constant).grad_accum, 4);
        for bad in [0, 3] {
            let e = Recipe::resolve(&flags(bad), &ms1m(), true).unwrap_err().to_string();
            assert!(e.contains(&format!("--grad-accum {bad}")) && e.contains("512"), "{e}");
        }
    }

    #[test]
    fn over_several_ranks_the_batch_is_per_rank_and_the_rate_follows_the_global_batch() {
        let flags = |batch, world| RecipeFlags {
            preset: Some("ms1mv3-r50-arcface".into()),
            batch_size: batch,
            world,
            ..RecipeFlags::default()
        };
        let alone = Recipe::resolve(&flags(None, 1), &ms1m(), true).unwrap();
        // Unset, the preset's global batch is shared out: the same global batch and rate on 8 ranks.
        let eight = Recipe::resolve(&flags(None, 8), &ms1m(), true).unwrap();
        assert_eq!((eight.batch_size * 8, eight.world, eight.lr), (alone.batch_size, 8, alone.lr));
        // Given, --batch-size is per rank: 128 on 4 ranks is a global 512, half the preset's rate.
        let four = Recipe::resolve(&flags(Some(128), 4), &ms1m(), true).unwrap();
        let one = Recipe::resolve(&flags(Some(512), 1), &ms1m(), true).unwrap();
        assert_eq!((four.batch_size, four.lr), (128, one.lr));
        let e = Recipe::resolve(&flags(None, 3), &ms1m(), true).unwrap_err().to_string();
        assert!(e.contains("does not split over 3 ranks"), "{e}");
        // world 0 (unset) is one rank.
        assert_eq!(Recipe::resolve(&flags(None, 0), &ms1m(), true).unwrap().world, 1);
    }

    #[test]
    fn a_preset_sets_its_recipe_and_flags_override_it() {
        let flags = RecipeFlags {
            preset: Some("ms1mv3-r50-arcface".into()),
            batch_size: Some(512),
            head_params: HeadParams { m: Some(0.4), ..HeadParams::default() },
            ..RecipeFlags::default()
        };
        let r = Recipe::resolve(&flags, &ms1m(), true).unwrap();
        assert_eq!((r.backbone_name.as_str(), r.head.as_str()), ("r50", "arcface"));
        assert_eq!((r.head_params.s, r.head_params.m), (Some(64.0), Some(0.4)));
        // lr 0.1 for batch 1024, scaled linearly to 512; the preset's fp16 even on the CPU.
        assert!((r.lr - 0.05).abs() < 1e-15);
        assert_eq!(
            (r.precision, r.grad_clip, r.optimizer),
            (Precision::Fp16, Some(5.0), OptimizerChoice::Sgd)
        );
        let plan = r.schedule(1000).unwrap();
        assert_eq!(plan.schedule, LrSchedule::PolyWarmup { warmup: 0, total: 20_000, power: 2.0 });
        assert_eq!(plan.eval_every, 1000, "outside the demo, evaluation comes at each epoch's end");
        // A preset on the demo set keeps the preset's choices, not the demo's.
        let on_demo = Recipe::resolve(
            &RecipeFlags { preset: flags.preset.clone(), ..RecipeFlags::default() },
            &demo_data(),
            true,
        );
        assert!(on_demo.unwrap_err().to_string().contains("images are 32x32 but r50 takes 112x112"));
    }

    #[test]
    fn another_head_than_the_presets_keeps_the_recipe_but_not_its_hyper_parameters() {
        // AdaFace's Table 2 compares CurricularFace trained by AdaFace's recipe.
        let flags = RecipeFlags {
            preset: Some("adaface-ms1mv2-r100".into()),
            head: Some("curricularface".into()),
            ..RecipeFlags::default()
        };
        let r = Recipe::resolve(&flags, &ms1m(), true).unwrap();
        assert_eq!((r.head.as_str(), &r.head_params), ("curricularface", &HeadParams::default()));
        assert_eq!((r.batch_size, r.no_bn_weight_decay, r.augment), (512, true, AugmentConfig::default()));
        crate::heads::from_name(&r.head, &r.head_params).unwrap();
    }

    #[test]
    fn steps_schedules_take_milestones_from_flags_or_the_preset() {
        let ada = RecipeFlags { preset: Some("adaface-ms1mv2-r100".into()), ..RecipeFlags::default() };
        let r = Recipe::resolve(&ada, &ms1m(), true).unwrap();
        assert_eq!(r.augment, AugmentConfig::default());
        assert!(r.no_bn_weight_decay);
        assert_eq!(
            r.schedule(10).unwrap().schedule,
            LrSchedule::Steps { milestones: vec![120, 200, 240], gamma: 0.1 }
        );
        let own = RecipeFlags { milestones: Some(vec![1.5]), ..ada };
        let r = Recipe::resolve(&own, &ms1m(), true).unwrap();
        assert_eq!(r.schedule(10).unwrap().schedule, LrSchedule::Steps { milestones: vec![15], gamma: 0.1 });
        let bare = RecipeFlags { schedule: Some("steps".into()), ..RecipeFlags::default() };
        let err = Recipe::resolve(&bare, &ms1m(), true).unwrap().schedule(10).unwrap_err().to_string();
        assert!(err.contains("--milestones"), "{err}");
    }

    #[test]
    fn qcface_warms_up_for_half_the_schedule_unless_told() {
        let q = RecipeFlags { head: Some("qcface".into()), epochs: Some(8.0), ..RecipeFlags::default() };
        assert_eq!(Recipe::resolve(&q, &ms1m(), true).unwrap().qcface_warmup, Some(4.0));
        let q = RecipeFlags { warmup_epochs: Some(1.0), ..q };
        assert_eq!(Recipe::resolve(&q, &ms1m(), true).unwrap().qcface_warmup, Some(1.0));
        assert_eq!(Recipe::resolve(&RecipeFlags::default(), &ms1m(), true).unwrap().qcface_warmup, None);
        for head in ["qcface-cur", "qcface-mvs"] {
            let q = RecipeFlags { head: Some(head.into()), epochs: Some(6.0), ..RecipeFlags::default() };
            assert_eq!(Recipe::resolve(&q, &ms1m(), true).unwrap().qcface_warmup, Some(3.0), "{head}");
        }
        let cur = RecipeFlags { head: Some("curricularface".into()), ..RecipeFlags::default() };
        assert_eq!(Recipe::resolve(&cur, &ms1m(), true).unwrap().qcface_warmup, None);
    }

    #[test]
    fn bad_names_are_errors_naming_the_flag() {
        let cases = [
            (RecipeFlags { preset: Some("nope".into()), ..RecipeFlags::default() }, "unknown preset 'nope'"),
            (RecipeFlags { optimizer: Some("lamb".into()), ..RecipeFlags::default() }, "--optimizer lamb"),
            (RecipeFlags { augment: Some("heavy".into()), ..RecipeFlags::default() }, "--augment heavy"),
            (RecipeFlags { precision: Some("f8".into()), ..RecipeFlags::default() }, "--precision"),
            (RecipeFlags { backbone: Some("r7".into()), ..RecipeFlags::default() }, "r7"),
        ];
        for (flags, want) in cases {
            let err = Recipe::resolve(&flags, &ms1m(), true).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (expected {want})");
        }
        let sched = RecipeFlags { schedule: Some("linear".into()), ..RecipeFlags::default() };
        let err = Recipe::resolve(&sched, &ms1m(), true).unwrap().schedule(5).unwrap_err().to_string();
        assert!(err.contains("--schedule linear"), "{err}");
    }
}
