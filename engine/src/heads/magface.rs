//! MagFace (spec §8): ã = clamp(a, l_a, u_a), margin m(ã) = l_m + k_m·(ã - l_a), target s·cos(θ_y + m(ã))
//! (easy margin on by default; otherwise ArcFace's fallback with the per-sample m), plus λ_g·g(ã) with
//! g(a) = 1/a + a/u_a². Gradient to a flows only strictly inside (l_a, u_a), as torch.clamp.
//!
//! Decisions: in the fallback branch z_y = s·(c_y - m·sin m) still depends on m(ã); the spec's table
//! says 0 there, but nothing is detached in the reference code, so we keep -s·(sin m + m·cos m)·k_m
//! (finite differences agree). Clamp ε = 1e-6 (the reference uses [-1, 1]; z' has 1/sin θ).

use super::classifier::arc_target;
use super::sphereface::ANGULAR_EPS;
use super::{Head, HeadParams, RowInput, RowPlan};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct MagFace {
    pub s: f64,
    pub l_a: f64,
    pub u_a: f64,
    pub l_m: f64,
    pub u_m: f64,
    pub lambda_g: f64,
    pub easy_margin: bool,
}

impl MagFace {
    pub fn new(p: &HeadParams) -> Result<MagFace> {
        let r = p.reader("magface");
        let s = r.positive("s", 64.0)?;
        let (l_a, u_a) = (r.positive("l-a", 10.0)?, r.positive("u-a", 110.0)?);
        let (l_m, u_m) = (r.angular_margin("l-m", 0.45)?, r.angular_margin("u-m", 0.8)?);
        let lambda_g = r.non_negative("lambda-g", 35.0)?;
        let easy_margin = r.easy_margin(true);
        r.finish()?;
        if u_a <= l_a {
            return Err(Error::Invalid(format!("magface: --u-a {u_a} must exceed --l-a {l_a}")));
        }
        if u_m < l_m {
            return Err(Error::Invalid(format!("magface: --u-m {u_m} must be at least --l-m {l_m}")));
        }
        Ok(MagFace { s, l_a, u_a, l_m, u_m, lambda_g, easy_margin })
    }

    pub fn k_m(&self) -> f64 {
        (self.u_m - self.l_m) / (self.u_a - self.l_a)
    }

    /// Smallest λ_g for which the loss has a unique optimal norm: s·k_m·u_a²·l_a²/(u_a² - l_a²).
    pub fn lambda_bound(&self) -> f64 {
        let (la2, ua2) = (self.l_a * self.l_a, self.u_a * self.u_a);
        self.s * self.k_m() * ua2 * la2 / (ua2 - la2)
    }

    pub fn margin(&self, a: f64) -> f64 {
        self.l_m + self.k_m() * (a.clamp(self.l_a, self.u_a) - self.l_a)
    }

    fn inside(&self, a: f64) -> bool {
        a > self.l_a && a < self.u_a
    }
}

impl Head for MagFace {
    fn name(&self) -> &'static str {
        "magface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs { norm_with_grad: true, extra_term: true, ..Default::default() }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        ANGULAR_EPS
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        let m = self.margin(r.norm);
        RowPlan {
            target: arc_target(r.c_y, m, self.easy_margin, true),
            tau: f64::INFINITY,
            margin_da: if self.inside(r.norm) { self.k_m() } else { 0.0 },
        }
    }
    fn extra(&self, norm: f64, _p_d: f64) -> (f64, f64) {
        let a = norm.clamp(self.l_a, self.u_a);
        let ua2 = self.u_a * self.u_a;
        let value = self.lambda_g * (1.0 / a + a / ua2);
        let d = if self.inside(norm) { self.lambda_g * (-1.0 / (a * a) + 1.0 / ua2) } else { 0.0 };
        (value, d)
    }
    fn warnings(&self) -> Vec<String> {
        let bound = self.lambda_bound();
        if self.lambda_g < bound {
            vec![format!(
                "magface: --lambda-g {} is below s·k_m·u_a²·l_a²/(u_a² - l_a²) = {bound:.2}; the optimal norm may not be unique",
                self.lambda_g
            )]
        } else {
            Vec::new()
        }
    }
}
