//! AdaFace's norm indicator (spec §9), shared by AdaFace and the SMAFace family: a detached, clipped
//! z-score of the feature norm against running batch statistics.

use super::HeadState;
use crate::{Error, Result};

/// ε of the indicator's denominator (and AdaFace's cosine clamp and angle clip).
pub const EPS: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq)]
pub struct NormStats {
    pub mu: f64,
    pub sigma: f64,
    pub h: f64,
    /// Weight of the new batch in the EMA (the code's 0.01; paper eq. 17 prints 0.99 on the old value).
    pub t_alpha: f64,
    pub training: bool,
}

impl NormStats {
    /// Initial μ = 20, σ = 100, as the reference buffers.
    pub fn new(h: f64, t_alpha: f64) -> NormStats {
        NormStats { mu: 20.0, sigma: 100.0, h, t_alpha, training: true }
    }

    /// n = clip(a, 0.001, 100), detached.
    fn safe(a: f64) -> f64 {
        a.clamp(0.001, 100.0)
    }

    /// EMA update with the batch mean and unbiased std, before use. Needs B >= 2.
    pub fn observe(&mut self, head: &str, norms: &[f64]) -> Result<()> {
        if !self.training {
            return Ok(());
        }
        if norms.len() < 2 {
            return Err(Error::Invalid(format!(
                "{head} needs a batch of at least 2 in training (the unbiased std of 1 norm is undefined)"
            )));
        }
        let n = norms.len() as f64;
        let mean = norms.iter().map(|&a| Self::safe(a)).sum::<f64>() / n;
        let var = norms.iter().map(|&a| (Self::safe(a) - mean).powi(2)).sum::<f64>() / (n - 1.0);
        self.mu = self.t_alpha * mean + (1.0 - self.t_alpha) * self.mu;
        self.sigma = self.t_alpha * var.sqrt() + (1.0 - self.t_alpha) * self.sigma;
        Ok(())
    }

    /// ẑ_i = clip(h·(n_i - μ)/(σ + ε), -1, 1).
    pub fn indicator(&self, norms: &[f64]) -> Vec<f64> {
        norms
            .iter()
            .map(|&a| (self.h * (Self::safe(a) - self.mu) / (self.sigma + EPS)).clamp(-1.0, 1.0))
            .collect()
    }

    /// (g_angle, g_add) = (-m·ẑ, m + m·ẑ).
    pub fn margins(m: f64, z: f64) -> (f64, f64) {
        (-m * z, m + m * z)
    }

    pub fn state(&self) -> HeadState {
        HeadState::new(&[("mu", self.mu), ("sigma", self.sigma)])
    }

    pub fn load(&mut self, head: &str, s: &HeadState) -> Result<()> {
        let (mu, sigma) = (s.require(head, "mu")?, s.require(head, "sigma")?);
        if sigma < 0.0 {
            return Err(Error::Invalid(format!("{head}: state sigma {sigma} is negative")));
        }
        self.mu = mu;
        self.sigma = sigma;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_trajectory_and_saturation() {
        let mut st = NormStats::new(0.333, 0.01);
        let norms = [10.0, 30.0, 200.0];
        st.observe("adaface", &norms).unwrap();
        // Clipped at 100: mean 140/3, unbiased std of (10, 30, 100).
        let mean = 140.0 / 3.0;
        let std = (((10.0f64 - mean).powi(2) + (30.0 - mean).powi(2) + (100.0 - mean).powi(2)) / 2.0).sqrt();
        assert!((st.mu - (0.01 * mean + 0.99 * 20.0)).abs() < 1e-12);
        assert!((st.sigma - (0.01 * std + 0.99 * 100.0)).abs() < 1e-12);
        assert!(st.observe("adaface", &[5.0]).unwrap_err().to_string().contains("at least 2"));
        let z = NormStats { h: 100.0, ..st.clone() }.indicator(&[1e-9, 1e6]);
        assert_eq!(z, vec![-1.0, 1.0]);
        // Equal norms: σ decays but the indicator stays finite.
        let mut eq = NormStats::new(0.333, 0.01);
        for _ in 0..5 {
            eq.observe("adaface", &[20.0, 20.0]).unwrap();
        }
        assert!(eq.indicator(&[20.0]).iter().all(|v| v.is_finite()));
    }
}
