//! Per-sample weights I(p) of the cross entropy and their gradient factor st = I + I'·p·log p (spec §11):
//! the SMAFace family and the appendix-G mining baselines.

use super::params::Variant;
use super::SampleWeight;
use crate::{Error, Result};

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// p·log p with the limit 0 at p = 0 (no NaN when p underflows).
fn p_log_p(log_p: f64) -> f64 {
    let p = log_p.exp();
    if p == 0.0 {
        0.0
    } else {
        p * log_p
    }
}

/// SMAFace's I(p) = c·(1 + α·(σ(u) - ½)), u = p0 - p, with the variant's change of u.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmaWeight {
    pub alpha: f64,
    pub p0: f64,
    /// c_α (1 for the unstarred heads).
    pub c: f64,
    pub variant: Variant,
    /// Slope of the β variant.
    pub beta: f64,
}

impl SmaWeight {
    /// c_α of the starred heads: |7/(7+α)| at p0 = 0.6 (the paper), 1/(1 + α·(σ(p0) - ½)) otherwise.
    pub fn star_constant(alpha: f64, p0: f64) -> f64 {
        if p0 == 0.6 {
            (7.0 / (7.0 + alpha)).abs()
        } else {
            1.0 / (1.0 + alpha * (logistic(p0) - 0.5))
        }
    }

    /// The α range where I(p) > 0 for every p in [0, 1] (base form): (-1/(σ(p0)-½), 1/(½-σ(p0-1))).
    pub fn positive_range(p0: f64) -> (f64, f64) {
        (-1.0 / (logistic(p0) - 0.5), 1.0 / (0.5 - logistic(p0 - 1.0)))
    }

    /// Rejects α <= -7 (c_α blows up there) and p0 outside (0, 1].
    pub fn validate(head: &str, alpha: f64, p0: f64) -> Result<()> {
        if alpha <= -7.0 {
            return Err(Error::Invalid(format!(
                "{head}: --alpha {alpha} is invalid: the SMAFace weight needs alpha > -7"
            )));
        }
        if !(p0 > 0.0 && p0 <= 1.0) {
            return Err(Error::Invalid(format!("{head}: --p0 {p0} is invalid: it must lie in (0, 1]")));
        }
        Ok(())
    }

    pub fn eval(&self, log_p: f64) -> SampleWeight {
        let p = log_p.exp();
        let u = self.p0 - p;
        let (value, deriv) = match self.variant {
            Variant::Beta => {
                // α0 = 1 (spec §15).
                let sg = logistic(self.beta * u);
                (self.c * (1.0 + (sg - 0.5)), -self.c * self.beta * sg * (1.0 - sg))
            }
            v => {
                let (uu, live) = match v {
                    Variant::Weak => (u.max(0.0), u > 0.0),
                    Variant::Strong => (u.min(0.0), u < 0.0),
                    _ => (u, true),
                };
                let sg = logistic(uu);
                let d = if live { -self.c * self.alpha * sg * (1.0 - sg) } else { 0.0 };
                (self.c * (1.0 + self.alpha * (sg - 0.5)), d)
            }
        };
        SampleWeight { value, st: value + deriv * p_log_p(log_p) }
    }
}

/// The weight function of a head that mines samples by p_y (spec §11): SMAFace's, HM-Softmax's or
/// F-Softmax's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mining {
    Sma(SmaWeight),
    Hard,
    Focal { gamma: f64 },
}

impl Mining {
    pub fn eval(&self, log_p: f64) -> SampleWeight {
        match self {
            Mining::Sma(w) => w.eval(log_p),
            Mining::Hard => hard_mining(log_p),
            Mining::Focal { gamma } => focal(log_p, *gamma),
        }
    }
}

/// HM-Softmax: I = 1[p < 0.5] (hard samples weighted 1, as the text says), st = I.
pub fn hard_mining(log_p: f64) -> SampleWeight {
    let i = if log_p.exp() < 0.5 { 1.0 } else { 0.0 };
    SampleWeight { value: i, st: i }
}

/// F-Softmax: I = (1-p)^γ, st = (1-p)^γ - γ·(1-p)^(γ-1)·p·log p, 1-p as -expm1(log p).
pub fn focal(log_p: f64, gamma: f64) -> SampleWeight {
    let q = -log_p.exp_m1();
    let value = q.powf(gamma);
    let second = if q == 0.0 || gamma == 0.0 { 0.0 } else { gamma * q.powf(gamma - 1.0) * p_log_p(log_p) };
    SampleWeight { value, st: value - second }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// st must equal d(I(p)·CE)/d(-log p)... checked through z: L(z) = I(p(z))·(-log p(z)) with a 2-logit
    /// softmax, dL/dz_y = st·(p - 1).
    fn check_st(w: impl Fn(f64) -> SampleWeight) {
        for &zy in &[-3.0, -0.4, 0.0, 0.3, 0.45, 2.0] {
            let loss = |z: f64| {
                let log_p = z - (z.exp() + 1.0).ln();
                w(log_p).value * -log_p
            };
            let h = 1e-6;
            let num = (loss(zy + h) - loss(zy - h)) / (2.0 * h);
            let log_p = zy - (zy.exp() + 1.0f64).ln();
            let ana = w(log_p).st * (log_p.exp() - 1.0);
            assert!((num - ana).abs() < 1e-7 * (1.0 + num.abs()), "z {zy}: {num} vs {ana}");
        }
    }

    #[test]
    fn st_matches_finite_differences_for_every_variant() {
        for variant in [Variant::Base, Variant::Weak, Variant::Strong, Variant::Beta] {
            for alpha in [1.0, 2.0, -2.0] {
                let c = SmaWeight::star_constant(alpha, 0.6);
                let w = SmaWeight { alpha, p0: 0.6, c, variant, beta: 2.0 };
                check_st(|lp| w.eval(lp));
            }
        }
        for gamma in [0.0, 0.5, 2.0] {
            check_st(|lp| focal(lp, gamma));
        }
    }

    #[test]
    fn smaface_weights_hard_up_and_easy_down() {
        let w = SmaWeight { alpha: 1.0, p0: 0.6, c: 1.0, variant: Variant::Base, beta: 2.0 };
        assert!(w.eval(0.1f64.ln()).value > 1.0);
        assert!(w.eval(0.95f64.ln()).value < 1.0);
        let neg = SmaWeight { alpha: -2.0, ..w };
        assert!(neg.eval(0.1f64.ln()).value < 1.0);
        // Starred: I*(0) ≈ 1 at p0 = 0.6.
        let star = SmaWeight { alpha: 2.0, c: SmaWeight::star_constant(2.0, 0.6), ..w };
        assert!((star.eval(f64::NEG_INFINITY).value - 1.0).abs() < 0.01);
        let (lo, hi) = SmaWeight::positive_range(0.6);
        assert!((lo + 6.86).abs() < 0.01 && (hi - 10.13).abs() < 0.01, "{lo} {hi}");
        // p = 1e-60: finite.
        assert!(star.eval(-138.0).st.is_finite() && focal(-138.0, 2.0).st.is_finite());
        assert!(SmaWeight::validate("smaface", -7.0, 0.6).is_err());
        assert!(SmaWeight::validate("smaface", -6.9, 0.6).is_ok());
    }

    #[test]
    fn focal_sign_and_hard_mining() {
        // With γ > 0 and p in (0,1), p·log p < 0, so st > I: the second term adds (eq. 37's sign is flipped).
        let w = focal(0.3f64.ln(), 2.0);
        assert!(w.st > w.value);
        assert_eq!(hard_mining(0.4f64.ln()).value, 1.0);
        assert_eq!(hard_mining(0.6f64.ln()).st, 0.0);
    }
}
