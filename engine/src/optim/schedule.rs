//! Learning-rate schedules as closed forms of the optimizer step index (0 for the first update), so a
//! resumed run gets the same rate from the saved step alone.

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// torch MultiStepLR: base * gamma^(number of milestones <= step).
    Steps {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// insightface arcface_torch PolyScheduler: base * step / warmup during warm-up, then
    /// base * (1 - (step - warmup) / (total - warmup))^power (insightface uses power 2).
    PolyWarmup {
        warmup: usize,
        total: usize,
        power: f64,
    },
    /// Linear warm-up, then torch CosineAnnealingLR's closed form from base down to `min_lr` at `total`.
    Cosine {
        warmup: usize,
        total: usize,
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Errors on settings that would divide by zero or never decay.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("learning-rate schedule: {m}")));
        match self {
            LrSchedule::Steps { milestones, gamma } => {
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!("milestones {milestones:?} must increase"));
                }
                // Written so that NaN is rejected too.
                if gamma.is_nan() || *gamma <= 0.0 {
                    return bad(format!("gamma {gamma} must be positive"));
                }
            }
            LrSchedule::PolyWarmup { warmup, total, .. } | LrSchedule::Cosine { warmup, total, .. } => {
                if warmup >= total {
                    return bad(format!("warm-up {warmup} must be shorter than the total {total} steps"));
                }
            }
            LrSchedule::Constant => {}
        }
        Ok(())
    }

    pub fn lr(&self, base: f64, step: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Steps { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= step).count() as i32)
            }
            LrSchedule::PolyWarmup { warmup, total, power } => {
                if step < *warmup {
                    base * step as f64 / *warmup as f64
                } else {
                    let done = (step.min(*total) - warmup) as f64 / (total - warmup) as f64;
                    base * (1.0 - done).powf(*power)
                }
            }
            LrSchedule::Cosine { warmup, total, min_lr } => {
                if step < *warmup {
                    base * step as f64 / *warmup as f64
                } else {
                    let t = (step.min(*total) - warmup) as f64 / (total - warmup) as f64;
                    min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn steps_divide_at_each_milestone() {
        let s = LrSchedule::Steps { milestones: vec![12, 20, 24], gamma: 0.1 };
        s.validate().unwrap();
        close(s.lr(0.1, 0), 0.1);
        close(s.lr(0.1, 11), 0.1);
        close(s.lr(0.1, 12), 0.01);
        close(s.lr(0.1, 20), 0.001);
        close(s.lr(0.1, 30), 0.0001);
        assert!(LrSchedule::Steps { milestones: vec![5, 5], gamma: 0.1 }.validate().is_err());
    }

    #[test]
    fn poly_warmup_matches_hand_computed_values() {
        // warm-up 10 of 110 steps, power 2, base 0.1.
        let s = LrSchedule::PolyWarmup { warmup: 10, total: 110, power: 2.0 };
        s.validate().unwrap();
        close(s.lr(0.1, 0), 0.0);
        close(s.lr(0.1, 5), 0.05);
        close(s.lr(0.1, 10), 0.1);
        close(s.lr(0.1, 60), 0.1 * 0.25); // half way: (1 - 0.5)^2
        close(s.lr(0.1, 85), 0.1 * 0.0625); // (1 - 0.75)^2
        close(s.lr(0.1, 110), 0.0);
        close(s.lr(0.1, 500), 0.0);
        assert!(LrSchedule::PolyWarmup { warmup: 10, total: 10, power: 2.0 }.validate().is_err());
    }

    #[test]
    fn cosine_goes_from_base_to_min() {
        let s = LrSchedule::Cosine { warmup: 0, total: 100, min_lr: 0.001 };
        close(s.lr(0.1, 0), 0.1);
        close(s.lr(0.1, 50), 0.001 + 0.099 * 0.5);
        close(s.lr(0.1, 25), 0.001 + 0.099 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0);
        close(s.lr(0.1, 100), 0.001);
        let w = LrSchedule::Cosine { warmup: 4, total: 104, min_lr: 0.0 };
        close(w.lr(0.2, 2), 0.1);
        close(w.lr(0.2, 54), 0.1);
    }
}
