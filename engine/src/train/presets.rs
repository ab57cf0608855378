//! The seed papers' training recipes as named presets (`--preset NAME`); command-line flags override any
//! field. Numbers come from spec/formats.md ("Training recipes") and the papers it cites.
//!
//! Learning rate: a preset states the paper's total batch; when the run's total batch differs, the learning
//! rate scales linearly (lr = lr_paper * batch / batch_paper). Note that insightface's own single-GPU
//! config uses 0.02 for a batch of 128 (formats.md), above the linear 0.0125: pass `--lr` to match it.

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
    /// Multiply by 0.1 at each iteration milestone (QAMFace counts iterations).
    StepsIter {
        milestones: Vec<u64>,
    },
    Cosine {
        warmup_epochs: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub summary: &'static str,
    pub dataset: &'static str,
    pub num_classes: usize,
    pub backbone: &'static str,
    pub head: &'static str,
    /// Head hyper-parameters as (flag name without dashes, value), per spec/heads.md §15.
    pub head_args: &'static [(&'static str, &'static str)],
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Weight decay off for batch-norm parameters (AdaFace's recipe).
    pub no_bn_weight_decay: bool,
    pub epochs: f64,
    /// Set for iteration-based recipes (QAMFace); `epochs` is then derived from the data set size.
    pub iterations: Option<u64>,
    pub schedule: Schedule,
    /// Applies on the CPU too (emulated there, see `train::precision`); `--precision` overrides it.
    pub precision: Precision,
    pub grad_clip: Option<f64>,
    pub augment: bool,
    /// QCFace: epochs of plain ArcFace before hypersphere planning (None: half the schedule).
    pub warmup_epochs: Option<f64>,
}

impl Preset {
    /// The learning rate for a run whose total batch is `batch`.
    pub fn scaled_lr(&self, batch: usize) -> f64 {
        self.lr * batch as f64 / self.batch_size as f64
    }
}

const BASE: Preset = Preset {
    name: "",
    summary: "",
    dataset: "MS1MV2",
    num_classes: 85_742,
    backbone: "r50",
    head: "arcface",
    head_args: &[],
    batch_size: 512,
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 5e-4,
    no_bn_weight_decay: false,
    epochs: 20.0,
    iterations: None,
    schedule: Schedule::Poly { warmup_epochs: 0.0 },
    precision: Precision::Bf16,
    grad_clip: None,
    augment: false,
    warmup_epochs: None,
};

/// Every preset, in the order `--help` lists them.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "ms1mv3-r50-arcface",
            summary: "insightface arcface_torch ms1mv3_r50: ArcFace s 64 m 0.5, poly decay, fp16, clip 5",
            dataset: "MS1MV3",
            num_classes: 93_431,
            head_args: &[("s", "64"), ("m", "0.5")],
            batch_size: 1024,
            precision: Precision::Fp16,
            grad_clip: Some(5.0),
            ..BASE
        },
        Preset {
            name: "ms1mv2-r50-arcface",
            summary: "insightface ms1mv2_r50: ArcFace s 64 m 0.5 on MS1MV2, poly decay, fp16, clip 5",
            head_args: &[("s", "64"), ("m", "0.5")],
            batch_size: 1024,
            precision: Precision::Fp16,
            grad_clip: Some(5.0),
            ..BASE
        },
        Preset {
            name: "adaface-ms1mv2-r100",
            summary:
                "AdaFace: m 0.4 h 0.333 s 64, batch 512, 26 epochs, steps 12/20/24, aug 0.2, no BN decay",
            backbone: "r100",
            head: "adaface",
            head_args: &[("s", "64"), ("m", "0.4"), ("h", "0.333")],
            epochs: 26.0,
            schedule: Schedule::Steps { milestones: vec![12.0, 20.0, 24.0] },
            no_bn_weight_decay: true,
            augment: true,
            ..BASE
        },
        Preset {
            name: "magface-ms1mv2-r100",
            summary:
                "MagFace: l_a 10 u_a 110 l_m 0.45 u_m 0.8 lambda_g 35, batch 512, 25 epochs, steps 10/18/22",
            backbone: "r100",
            head: "magface",
            head_args: &[("l-a", "10"), ("u-a", "110"), ("l-m", "0.45"), ("u-m", "0.8"), ("lambda-g", "35")],
            epochs: 25.0,
            schedule: Schedule::Steps { milestones: vec![10.0, 18.0, 22.0] },
            ..BASE
        },
        Preset {
            name: "smaface-webface4m-r50",
            summary: "SMAFace on WebFace4M: 30 epochs, lr 0.1 steps 12/20/24, batch 256, 16-bit, aug 0.2",
            dataset: "WebFace4M",
            num_classes: 205_990,
            head: "smaface",
            batch_size: 256,
            epochs: 30.0,
            schedule: Schedule::Steps { milestones: vec![12.0, 20.0, 24.0] },
            augment: true,
            ..BASE
        },
        Preset {
            name: "qamface-casia-r50",
            summary: "QAMFace: s 6 m 0.5, batch 256, lr 0.2 /10 at 80K 200K 360K iterations, 400K in all",
            dataset: "CASIA-WebFace",
            num_classes: 10_572,
            head: "qamface",
            head_args: &[("s", "6"), ("m", "0.5")],
            batch_size: 256,
            lr: 0.2,
            iterations: Some(400_000),
            schedule: Schedule::StepsIter { milestones: vec![80_000, 200_000, 360_000] },
            ..BASE
        },
        Preset {
            name: "qcface-ms1mv2-r50",
            summary: "QCFace: ArcFace warm-up for half the schedule, then hypersphere planning (lambda 35)",
            head: "qcface",
            head_args: &[("s", "64"), ("m", "0.5"), ("lambda", "35")],
            batch_size: 1024,
            precision: Precision::Fp16,
            grad_clip: Some(5.0),
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

    #[test]
    fn insightface_recipes_train_in_fp16_and_the_rest_in_bf16() {
        assert_eq!(by_name("ms1mv2-r50-arcface").unwrap().precision, Precision::Fp16);
        assert_eq!(by_name("adaface-ms1mv2-r100").unwrap().precision, Precision::Bf16);
    }
}
