//! The seed papers' training recipes as named presets (`--preset NAME`); command-line flags override any
//! field. Each field names its source beside it: the paper (section or table; the seed texts are under
//! shared/seeds/), else the authors' code, else `[ours]` with the reason where both are silent.
//! spec/formats.md ("Training recipes") summarizes them.
//!
//! Learning rate: a preset states the paper's total batch; when the run's total batch differs, the learning
//! rate scales linearly (lr = lr_paper * batch / batch_paper). Note that insightface's own single-GPU
//! config uses 0.02 for a batch of 128 (formats.md), above the linear 0.0125: pass `--lr` to match it.
//!
//! Precision: the one the paper or its code trained in: fp16 with a loss scaler for insightface and AdaFace
//! (their code's 16 bits) and SMAFace (its paper's "16bit", read as the Lightning code it builds on reads
//! it), f32 for MagFace and QAMFace. `--precision bf16` is faster on a GPU where exactness matters less.

use crate::train::precision::Precision;

/// How the learning rate moves over a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Polynomial decay (power 2) to 0 after a linear warm-up, as insightface's PolyScheduler.
    Poly {
        warmup_epochs: f64,
    },
    /// Multiply by 0.1 at each epoch milestone.
    Steps {
        milestones: Vec<f64>,
    },
    /// Multiply by 0.1 at each milestone counted in iterations of the preset's batch (QAMFace).
    StepsIter {
        milestones: Vec<u64>,
    },
    Cosine {
        warmup_epochs: f64,
    },
}

/// How long a recipe trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Epochs(f64),
    /// Iterations of the preset's batch (QAMFace). A run of another batch keeps the number of images seen:
    /// iteration i is step i * batch_size / batch, and epoch i * batch_size / images of the set.
    Iterations(u64),
}

/// An iteration-counted recipe in steps of one run's batch.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationSteps {
    pub total: u64,
    /// Where `StepsIter` divides the rate (empty for other schedules).
    pub milestones: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    /// The paper's training set, for reference: `--data` names the user's copy.
    pub dataset: &'static str,
    pub num_classes: usize,
    pub backbone: &'static str,
    pub head: &'static str,
    /// Head hyper-parameters as (flag name without dashes, value), per spec/heads.md §15; the rest are the
    /// head's defaults.
    pub head_args: &'static [(&'static str, &'static str)],
    /// The paper's total batch (all GPUs together).
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Weight decay off for batch-norm parameters.
    pub no_bn_weight_decay: bool,
    pub length: Length,
    pub schedule: Schedule,
    /// Applies on the CPU too (emulated there, see `train::precision`); `--precision` overrides it.
    pub precision: Precision,
    pub grad_clip: Option<f64>,
    /// AdaFace's crop, low-resolution and photometric augmentations at 0.2 each besides the flip; without
    /// them, the flip alone.
    pub augment: bool,
    /// QCFace: epochs of plain ArcFace before hypersphere planning (None: half the schedule).
    pub warmup_epochs: Option<f64>,
}

impl Preset {
    /// The learning rate for a run whose total batch is `batch`.
    pub fn scaled_lr(&self, batch: usize) -> f64 {
        self.lr * batch as f64 / self.batch_size as f64
    }

    /// An iteration-counted preset in steps of `batch`, each count keeping the paper's images seen (exact
    /// at the paper's batch); `None` for an epoch-counted one.
    pub fn steps_at(&self, batch: usize) -> Option<IterationSteps> {
        let Length::Iterations(n) = self.length else { return None };
        let at = |i: u64| (i as f64 * self.batch_size as f64 / batch.max(1) as f64).round();
        let milestones = match &self.schedule {
            Schedule::StepsIter { milestones } => milestones.iter().map(|&i| at(i) as usize).collect(),
            _ => Vec::new(),
        };
        Some(IterationSteps { total: at(n) as u64, milestones })
    }

    /// Epochs of a set of `images` that see as many images as the preset's iterations (`n` of them).
    fn iterations_in_epochs(&self, n: u64, images: usize) -> f64 {
        n as f64 * self.batch_size as f64 / images.max(1) as f64
    }

    /// The recipe's length in epochs of a set of `images`.
    pub fn epochs_on(&self, images: usize) -> f64 {
        match self.length {
            Length::Epochs(e) => e,
            Length::Iterations(n) => self.iterations_in_epochs(n, images),
        }
    }

    /// A step schedule's milestones in epochs of a set of `images` (`None` for the other schedules).
    pub fn milestones_on(&self, images: usize) -> Option<Vec<f64>> {
        match &self.schedule {
            Schedule::Steps { milestones } => Some(milestones.clone()),
            Schedule::StepsIter { milestones } => {
                Some(milestones.iter().map(|&n| self.iterations_in_epochs(n, images)).collect())
            }
            Schedule::Poly { .. } | Schedule::Cosine { .. } => None,
        }
    }
}

/// insightface arcface_torch's recipe (`configs/ms1mv2_r50.py`, `train_v2.py`, `dataset.py`), which the
/// ArcFace presets follow and QCFace reuses.
const BASE: Preset = Preset {
    name: "",
    summary: "",
    // configs/ms1mv2_r50.py: rec faces_emore, num_classes 85742 (num_image 5822653).
    dataset: "MS1MV2",
    num_classes: 85_742,
    // configs: network "r50".
    backbone: "r50",
    // configs: margin_list (1.0, 0.5, 0.0); train_v2.py: CombinedMarginLoss with s 64.
    head: "arcface",
    head_args: &[],
    // configs: batch_size 128 per GPU; README: 8 GPUs (r50(128*8)).
    batch_size: 1024,
    // configs: lr 0.1, momentum 0.9, weight_decay 5e-4; train_v2.py: optimizer "sgd".
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 5e-4,
    // train_v2.py: SGD over backbone.parameters(), batch norm included.
    no_bn_weight_decay: false,
    // configs: num_epoch 20.
    length: Length::Epochs(20.0),
    // configs: warmup_epoch 0; train_v2.py: PolynomialLRWarmup (power 2).
    schedule: Schedule::Poly { warmup_epochs: 0.0 },
    // configs: fp16 True (torch.cuda.amp with a GradScaler).
    precision: Precision::Fp16,
    // train_v2.py: clip_grad_norm_(backbone.parameters(), 5).
    grad_clip: Some(5.0),
    // dataset.py: RandomHorizontalFlip only.
    augment: false,
    warmup_epochs: None,
};

/// Every preset, in the order `--help` lists them.
pub fn all() -> Vec<Preset> {
    // SMAFace, seed smaface-paper.txt (no code released). §4.1 Training Settings: 30 epochs, SGD, lr 0.1
    // divided by 10 at epochs 12, 20 and 24, s 64, AdaFace's three augmentations at 0.2, batch 256 for
    // ResNet18/50 and 512 for ResNet100, "16bit". Not stated, so taken from AdaFace's code, whose settings
    // the paper adopts (augmentations, h, the EMA) and whose results it reproduces at batch 256: momentum
    // 0.9, weight decay 5e-4 with none on batch norm, and "16bit" read as that code's fp16.
    let smaface = Preset {
        name: "smaface-ms1mv2-r50",
        summary: "SMAFace, its R50 ablations: batch 256, 30 epochs, steps 12/20/24, aug 0.2, fp16",
        // §4.2: the ablations (Tables 1, 3, 4) train ResNet50 on MS1MV2.
        dataset: "MS1MV2",
        num_classes: 85_742,
        backbone: "r50",
        // Table 2's caption: alpha 1; Tables 1, 4: p0 0.6: the head's defaults, as m 0.4, h 0.333, s 64.
        head: "smaface",
        batch_size: 256,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        no_bn_weight_decay: true,
        length: Length::Epochs(30.0),
        schedule: Schedule::Steps { milestones: vec![12.0, 20.0, 24.0] },
        precision: Precision::Fp16,
        grad_clip: None,
        augment: true,
        ..BASE
    };
    // Tables 2 and 5, third block: ResNet100 on WebFace4M (205,990 identities) at §4.1's batch of 512.
    let smaface_webface4m = Preset {
        name: "smaface-webface4m-r100",
        summary: "SMAFace, Tables 2/5 on WebFace4M: batch 512, 30 epochs, steps 12/20/24, aug 0.2, fp16",
        dataset: "WebFace4M",
        num_classes: 205_990,
        backbone: "r100",
        batch_size: 512,
        ..smaface.clone()
    };
    vec![
        Preset {
            name: "ms1mv3-r50-arcface",
            summary: "insightface arcface_torch ms1mv3_r50: ArcFace s 64 m 0.5, poly decay, fp16, clip 5",
            // configs/ms1mv3_r50.py: rec ms1m-retinaface-t1, num_classes 93431; every other field as
            // BASE (the two configs differ only in the data).
            dataset: "MS1MV3",
            num_classes: 93_431,
            head_args: &[("s", "64"), ("m", "0.5")],
            ..BASE
        },
        Preset {
            name: "ms1mv2-r50-arcface",
            summary: "insightface ms1mv2_r50: ArcFace s 64 m 0.5 on MS1MV2, poly decay, fp16, clip 5",
            head_args: &[("s", "64"), ("m", "0.5")],
            ..BASE
        },
        // AdaFace (CVPR 2022), seed adaface-paper.txt; code mk-minchul/AdaFace.
        Preset {
            name: "adaface-ms1mv2-r100",
            summary:
                "AdaFace m 0.4 h 0.333: batch 512, 26 epochs, steps 12/20/24, aug 0.2, no BN decay, fp16",
            // §4.1 Datasets; Table 3, first block (MS1MV2).
            dataset: "MS1MV2",
            num_classes: 85_742,
            // §4.3: ResNet100 for the comparison with the state of the art (Tables 3, 4).
            backbone: "r100",
            head: "adaface",
            // §4.2 and Table 1: m 0.4, h 0.33 (the scripts' 0.333); §4.1: s 64.
            head_args: &[("s", "64"), ("m", "0.4"), ("h", "0.333")],
            // The paper does not state it; spec/formats.md and the repository's run.sh (total batch 512,
            // main.py divides it over the GPUs).
            batch_size: 512,
            // §4.1: SGD, initial rate 0.1; config.py: momentum 0.9.
            lr: 0.1,
            momentum: 0.9,
            // Not in the paper; train_val.py configure_optimizers: 5e-4, none on batch-norm parameters.
            weight_decay: 5e-4,
            no_bn_weight_decay: true,
            // §4.1: 24 epochs with steps at 10, 18 and 22, plus 2 epochs "for convergence" with augmentation
            // (the OCR reads "240 epochs ... 18 and 22"); the scripts (run.sh, scripts/run_ir50_ms1mv2.sh)
            // run that as 26 epochs with every step 2 later: 12, 20, 24.
            length: Length::Epochs(26.0),
            schedule: Schedule::Steps { milestones: vec![12.0, 20.0, 24.0] },
            // Not in the paper; the scripts pass --use_16bit, Lightning's precision=16 (fp16 with a scaler).
            precision: Precision::Fp16,
            // Not in the paper; main.py gives Lightning no gradient_clip_val: no clipping.
            grad_clip: None,
            // §4.1 Augmentations: crop, rescale and photometric, each with probability 0.2 (Table 2 ablates
            // 0, 0.2, 0.3: --augment-prob).
            augment: true,
            ..BASE
        },
        // MagFace (CVPR 2021): the main paper is not among the seeds (the supplementary is, seed
        // magface-supplementary.txt); the recipe is its code's, IrvingMeng/MagFace run/run.sh.
        Preset {
            name: "magface-ms1mv2-r100",
            summary: "MagFace l_m 0.45 u_m 0.8 lambda_g 35: batch 512, 25 epochs, steps 10/18/22, f32",
            // Supplementary B.1: MS1MV2; run.sh: --last-fc-size 85742.
            dataset: "MS1MV2",
            num_classes: 85_742,
            // spec/formats.md; the main paper's comparison and the released model use iResNet100 (run.sh's
            // example trains iresnet50, as supplementary Table A1 does).
            backbone: "r100",
            head: "magface",
            // run.sh: l_a 10, u_a 110, l_margin 0.45, u_margin 0.8, lambda_g 35, arc-scale 64 (the head's
            // default s). Supplementary Table A1's best row is l_m 0.40 with u_m 0.80: pass --l-m 0.4.
            head_args: &[("l-a", "10"), ("u-a", "110"), ("l-m", "0.45"), ("u-m", "0.8"), ("lambda-g", "35")],
            // run.sh: --batch-size 512 (the total over DataParallel's GPUs); supplementary B.1 too.
            batch_size: 512,
            // run.sh: lr 0.1, momentum 0.9, weight decay 5e-4; trainer.py: SGD over every parameter.
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            no_bn_weight_decay: false,
            // run.sh: 25 epochs, --lr-drop-epoch 10 18 22, ratio 0.1.
            length: Length::Epochs(25.0),
            schedule: Schedule::Steps { milestones: vec![10.0, 18.0, 22.0] },
            // run_dist.sh: --fp16 0; trainer.py has no autocast.
            precision: Precision::F32,
            grad_clip: None,
            // dataloader.py: RandomHorizontalFlip only.
            augment: false,
            ..BASE
        },
        smaface,
        smaface_webface4m,
        // QAMFace (ICASSP 2021), seed qamface-paper.txt §4.1; code MccreeZhao/QAMFace.
        Preset {
            name: "qamface-ms1mv2-r50",
            summary: "QAMFace s 6 m 0.5: batch 256, lr 0.2 /10 at 80K 200K 360K of 400K iterations, f32",
            // §4.1 Data Preparation: MS-Celeb-1M, "about 3.8M images of 85k unique identities"; the code
            // trains on insightface's "emore" (config.py data_mode; README: "we highly recommend ... emore"),
            // which is MS1MV2 (85,742 identities, 5.8M images).
            dataset: "MS1MV2",
            num_classes: 85_742,
            // §4.1 Training Details: "modified ResNet50 as ArcFace" (the code's default is IR-SE-50, with
            // squeeze-excitation blocks, which the engine does not build).
            backbone: "r50",
            head: "qamface",
            // §4.1: s 6, m 0.5.
            head_args: &[("s", "6"), ("m", "0.5")],
            // §4.1: batch 256, momentum 0.9, weight decay 5e-4, SGD, lr 0.2.
            batch_size: 256,
            lr: 0.2,
            momentum: 0.9,
            weight_decay: 5e-4,
            // Not in the paper; Learner.py: batch-norm parameters in a group without weight decay.
            no_bn_weight_decay: true,
            // §4.1: divided by 10 at 80K, 200K and 360K iterations, stopped at 400K. On MS1MV2's 5,822,653
            // images that is epochs 3.52, 8.79, 15.83 of 17.59 (26.95 epochs of the 3.8M the paper counts).
            // The code's own train.py differs (22 epochs, steps at 4, 10, 15, 20); this follows the paper.
            length: Length::Iterations(400_000),
            schedule: Schedule::StepsIter { milestones: vec![80_000, 200_000, 360_000] },
            // Not in the paper; the code trains in f32 (no autocast).
            precision: Precision::F32,
            grad_clip: None,
            // §4.1: "the random horizontal flip is applied as data augmentation".
            augment: false,
            ..BASE
        },
        // QCFace, seed qcface-slides.txt: the slides give the loss and its two phases but no training
        // settings. [ours] L_sm "reuses ArcFace", so the rest is insightface's MS1MV2 ArcFace recipe (BASE);
        // the head's l_a, u_a, k, b, lambda are spec/heads.md §12's proposal.
        Preset {
            name: "qcface-ms1mv2-r50",
            summary:
                "QCFace: insightface's ArcFace recipe, its first half warm-up, then planning (lambda 35)",
            head: "qcface",
            head_args: &[("s", "64"), ("m", "0.5"), ("lambda", "35")],
            // The slides: warm-up "until convergence" of the class-center loss, then hypersphere planning.
            // [ours] half the schedule, so one run does both (--warmup-epochs sets it).
            warmup_epochs: None,
            ..BASE
        },
    ]
}

pub fn by_name(name: &str) -> Option<Preset> {
    all().into_iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::HeadParams;
    use crate::optim::LrSchedule;
    use crate::train::recipe::{DataShape, Recipe, RecipeFlags};

    /// A recipe as its paper (or, where the paper is silent, its code) states it, typed again from the
    /// sources `all()` names, in the paper's own units.
    struct Paper {
        preset: &'static str,
        /// The training set: classes and images.
        set: (usize, usize),
        backbone: &'static str,
        head: &'static str,
        head_params: HeadParams,
        batch: usize,
        lr: f64,
        weight_decay: f64,
        bn_exempt: bool,
        precision: Precision,
        clip: Option<f64>,
        /// AdaFace's crop, low-resolution and photometric probability (0: the flip alone).
        augment_p: f64,
        /// Epochs, or iterations of `batch` (QAMFace).
        length: Length,
        /// Where the rate is divided by 10, in the length's unit; empty for insightface's poly decay.
        milestones: &'static [f64],
    }

    const MS1MV2: (usize, usize) = (85_742, 5_822_653);

    fn params(s: f64, m: f64) -> HeadParams {
        HeadParams { s: Some(s), m: Some(m), ..HeadParams::default() }
    }

    fn papers() -> Vec<Paper> {
        let insightface = |preset, set| Paper {
            preset,
            set,
            backbone: "r50",
            head: "arcface",
            head_params: params(64.0, 0.5),
            batch: 1024,
            lr: 0.1,
            weight_decay: 5e-4,
            bn_exempt: false,
            precision: Precision::Fp16,
            clip: Some(5.0),
            augment_p: 0.0,
            length: Length::Epochs(20.0),
            milestones: &[],
        };
        // AdaFace's recipe, which SMAFace's adopts but for its length, batch and head.
        let adaface = || Paper {
            preset: "adaface-ms1mv2-r100",
            set: MS1MV2,
            backbone: "r100",
            head: "adaface",
            head_params: HeadParams { h: Some(0.333), ..params(64.0, 0.4) },
            batch: 512,
            lr: 0.1,
            weight_decay: 5e-4,
            bn_exempt: true,
            precision: Precision::Fp16,
            clip: None,
            augment_p: 0.2,
            length: Length::Epochs(26.0),
            milestones: &[12.0, 20.0, 24.0],
        };
        let smaface = |preset, set, backbone, batch| Paper {
            preset,
            set,
            backbone,
            head: "smaface",
            head_params: HeadParams::default(),
            batch,
            length: Length::Epochs(30.0),
            ..adaface()
        };
        vec![
            insightface("ms1mv3-r50-arcface", (93_431, 5_179_510)),
            insightface("ms1mv2-r50-arcface", MS1MV2),
            adaface(),
            Paper {
                preset: "magface-ms1mv2-r100",
                set: MS1MV2,
                backbone: "r100",
                head: "magface",
                head_params: HeadParams {
                    l_a: Some(10.0),
                    u_a: Some(110.0),
                    l_m: Some(0.45),
                    u_m: Some(0.8),
                    lambda_g: Some(35.0),
                    ..HeadParams::default()
                },
                batch: 512,
                lr: 0.1,
                weight_decay: 5e-4,
                bn_exempt: false,
                precision: Precision::F32,
                clip: None,
                augment_p: 0.0,
                length: Length::Epochs(25.0),
                milestones: &[10.0, 18.0, 22.0],
            },
            smaface("smaface-ms1mv2-r50", MS1MV2, "r50", 256),
            smaface("smaface-webface4m-r100", (205_990, 4_235_242), "r100", 512),
            Paper {
                preset: "qamface-ms1mv2-r50",
                set: MS1MV2,
                backbone: "r50",
                head: "qamface",
                head_params: params(6.0, 0.5),
                batch: 256,
                lr: 0.2,
                weight_decay: 5e-4,
                bn_exempt: true,
                precision: Precision::F32,
                clip: None,
                augment_p: 0.0,
                length: Length::Iterations(400_000),
                milestones: &[80_000.0, 200_000.0, 360_000.0],
            },
            Paper {
                preset: "qcface-ms1mv2-r50",
                head: "qcface",
                head_params: HeadParams { lambda: Some(35.0), ..params(64.0, 0.5) },
                ..insightface("qcface-ms1mv2-r50", MS1MV2)
            },
        ]
    }

    fn paper_set((classes, images): (usize, usize)) -> DataShape {
        DataShape { demo: false, name: "paper".into(), classes, images, image_hw: Some((112, 112)) }
    }

    fn resolve(flags: RecipeFlags, set: (usize, usize)) -> Recipe {
        // As on the CPU (16 bits emulated): a preset's precision applies there too.
        Recipe::resolve(&flags, &paper_set(set), true).unwrap()
    }

    fn preset_flags(name: &str) -> RecipeFlags {
        RecipeFlags { preset: Some(name.into()), ..RecipeFlags::default() }
    }

    #[test]
    fn every_preset_resolves_to_its_papers_recipe_and_schedule() {
        let papers = papers();
        let names: Vec<_> = all().iter().map(|p| p.name).collect();
        assert_eq!(names, papers.iter().map(|p| p.preset).collect::<Vec<_>>(), "one source row a preset");
        for paper in papers {
            let r = resolve(preset_flags(paper.preset), paper.set);
            println!("{}: {r:#?}", paper.preset);
            let what = paper.preset;
            assert_eq!((r.backbone_name.as_str(), r.head.as_str()), (paper.backbone, paper.head), "{what}");
            assert_eq!(r.head_params, paper.head_params, "{what}");
            assert_eq!((r.batch_size, r.lr, r.momentum), (paper.batch, paper.lr, 0.9), "{what}");
            assert_eq!(
                (r.weight_decay, r.no_bn_weight_decay),
                (paper.weight_decay, paper.bn_exempt),
                "{what}"
            );
            assert_eq!(
                (r.precision, r.grad_clip, r.classes),
                (paper.precision, paper.clip, paper.set.0),
                "{what}"
            );
            let a = r.augment;
            assert!(a.flip, "{what}: every recipe flips");
            assert_eq!([a.crop_prob, a.low_res_prob, a.photometric_prob], [paper.augment_p; 3], "{what}");
            // The schedule at the paper's batch on the paper's set lands where the paper says.
            let per_epoch = (paper.set.1 / paper.batch) as u64;
            let plan = r.schedule(per_epoch).unwrap();
            let (total, milestones): (u64, Vec<usize>) = match paper.length {
                Length::Epochs(e) => {
                    let at = |e: f64| e as usize * per_epoch as usize;
                    (at(e) as u64, paper.milestones.iter().map(|&m| at(m)).collect())
                }
                Length::Iterations(n) => (n, paper.milestones.iter().map(|&m| m as usize).collect()),
            };
            assert_eq!(plan.total_steps, total, "{what}");
            let want = match milestones.is_empty() {
                true => LrSchedule::PolyWarmup { warmup: 0, total: total as usize, power: 2.0 },
                false => LrSchedule::Steps { milestones, gamma: 0.1 },
            };
            assert_eq!(plan.schedule, want, "{what}");
        }
    }

    #[test]
    fn qamfaces_iterations_keep_the_images_seen_at_another_batch() {
        let q = "qamface-ms1mv2-r50";
        let r = resolve(RecipeFlags { batch_size: Some(128), ..preset_flags(q) }, MS1MV2);
        assert!((r.lr - 0.1).abs() < 1e-15);
        let plan = r.schedule(5_822_653 / 128).unwrap();
        assert_eq!(plan.total_steps, 800_000);
        assert_eq!(
            plan.schedule,
            LrSchedule::Steps { milestones: vec![160_000, 400_000, 720_000], gamma: 0.1 }
        );
        // In epochs: 400K x 256 images are 17.59 epochs of MS1MV2 and 26.95 of the 3.8M the paper counts.
        assert!((r.epochs - 17.587).abs() < 1e-3, "{}", r.epochs);
        let paper_count = resolve(preset_flags(q), (85_000, 3_800_000));
        assert!((paper_count.epochs - 26.947).abs() < 1e-3, "{}", paper_count.epochs);
        // --epochs replaces the iteration count; the milestones stay at the paper's images seen, converted
        // to epochs: within one step an epoch of the paper's (the partial batch each epoch drops).
        let r = resolve(RecipeFlags { epochs: Some(20.0), ..preset_flags(q) }, MS1MV2);
        let plan = r.schedule(22_744).unwrap();
        assert_eq!(plan.total_steps, 20 * 22_744);
        let LrSchedule::Steps { milestones, .. } = plan.schedule else { panic!("{:?}", plan.schedule) };
        for (step, paper) in milestones.iter().zip([80_000, 200_000, 360_000]) {
            let epochs = (paper * 256usize).div_ceil(5_822_653);
            assert!(step <= &paper && paper - step <= epochs, "{step} for the paper's {paper}");
        }
    }

    #[test]
    fn qcface_plans_after_half_its_schedule_to_the_step() {
        let q = preset_flags("qcface-ms1mv2-r50");
        assert_eq!(resolve(q.clone(), MS1MV2).warmup_steps(100), Some(1000));
        // Half of 25 epochs is 12.5: the switch comes mid-epoch, not at the next epoch's start.
        let odd = resolve(RecipeFlags { epochs: Some(25.0), ..q.clone() }, MS1MV2);
        assert_eq!(odd.warmup_steps(10), Some(125));
        let told = resolve(RecipeFlags { warmup_epochs: Some(1.3), ..q }, MS1MV2);
        assert_eq!(told.warmup_steps(10), Some(13));
        assert_eq!(resolve(preset_flags("ms1mv2-r50-arcface"), MS1MV2).warmup_steps(10), None);
    }

    #[test]
    fn names_are_unique_and_lr_scales_linearly() {
        let all = all();
        for (i, p) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|q| q.name != p.name), "duplicate preset {}", p.name);
        }
        let p = by_name("ms1mv3-r50-arcface").unwrap();
        assert!((p.scaled_lr(1024) - 0.1).abs() < 1e-12);
        assert!((p.scaled_lr(512) - 0.05).abs() < 1e-12);
        assert!(by_name("nope").is_none());
    }
}
