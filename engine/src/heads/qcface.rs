//! QCFace (spec §12): ArcFace (EXACT, with fallback) on normalized x, plus in the planning phase
//! λ·R(a, p_d) with R = k·p·(1/a + a/u_a²) + (1-p)·(1/a + a/l_a²) - b and p_d = softmax(s·c)_y without
//! margin, detached, computed online from the same reduction (S_other). The warm-up phase is ArcFace alone.
//!
//! Decisions: the 1/a guard is ā = max(a, 1e-3) with zero gradient at and below 1e-3 (clamp semantics);
//! the phase is running state ("phase": 0 warm-up, 1 planning); clamp ε = 1e-6; only the ArcFace L_sm is
//! provided (the -Cur/-MVS variants would need a second sum for p_d).

use super::classifier::arc_target;
use super::sphereface::ANGULAR_EPS;
use super::{Head, HeadParams, HeadState, Phase, RowInput, RowPlan};
use crate::{Error, Result};

const NORM_GUARD: f64 = 1e-3;

#[derive(Debug, Clone)]
pub struct QcFace {
    pub s: f64,
    pub m: f64,
    pub l_a: f64,
    pub u_a: f64,
    pub k: f64,
    pub b: f64,
    pub lambda: f64,
    pub phase: Phase,
}

impl QcFace {
    pub fn new(p: &HeadParams) -> Result<QcFace> {
        let r = p.reader("qcface");
        let (s, m) = (r.positive("s", 64.0)?, r.angular_margin("m", 0.5)?);
        let (l_a, u_a) = (r.positive("l-a", 10.0)?, r.positive("u-a", 110.0)?);
        let (k, b, lambda) = (r.non_negative("k", 1.0)?, r.num("b", 0.0)?, r.non_negative("lambda", 35.0)?);
        let phase = r.phase();
        r.finish()?;
        if u_a <= l_a {
            return Err(Error::Invalid(format!("qcface: --u-a {u_a} must exceed --l-a {l_a}")));
        }
        Ok(QcFace { s, m, l_a, u_a, k, b, lambda, phase })
    }

    /// R(a, p) and ∂R/∂a.
    pub fn regularizer(&self, a: f64, p: f64) -> (f64, f64) {
        let (ua2, la2) = (self.u_a * self.u_a, self.l_a * self.l_a);
        let ab = a.max(NORM_GUARD);
        let r = self.k * p * (1.0 / ab + ab / ua2) + (1.0 - p) * (1.0 / ab + ab / la2) - self.b;
        let d = if a > NORM_GUARD {
            -(self.k * p + 1.0 - p) / (ab * ab) + self.k * p / ua2 + (1.0 - p) / la2
        } else {
            0.0
        };
        (r, d)
    }

    /// The norm minimizing R for guidance p: a*(p) = √(A/D).
    pub fn optimal_norm(&self, p: f64) -> f64 {
        let a = self.k * p + 1.0 - p;
        let d = self.k * p / (self.u_a * self.u_a) + (1.0 - p) / (self.l_a * self.l_a);
        (a / d).sqrt()
    }
}

impl Head for QcFace {
    fn name(&self) -> &'static str {
        "qcface"
    }
    fn needs(&self) -> super::Needs {
        let planning = self.phase == Phase::Planning;
        super::Needs {
            norm_with_grad: planning,
            p_d: planning,
            extra_term: planning,
            running_state: true,
            ..Default::default()
        }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        ANGULAR_EPS
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        RowPlan::target(arc_target(r.c_y, self.m, false, true))
    }
    fn extra(&self, norm: f64, p_d: f64) -> (f64, f64) {
        match self.phase {
            Phase::Warmup => (0.0, 0.0),
            Phase::Planning => {
                let (r, d) = self.regularizer(norm, p_d);
                (self.lambda * r, self.lambda * d)
            }
        }
    }
    fn state(&self) -> HeadState {
        HeadState::new(&[("phase", if self.phase == Phase::Planning { 1.0 } else { 0.0 })])
    }
    fn load_state(&mut self, s: &HeadState) -> Result<()> {
        self.phase = match s.require("qcface", "phase")? {
            0.0 => Phase::Warmup,
            1.0 => Phase::Planning,
            v => return Err(Error::Invalid(format!("qcface: state phase {v} is neither 0 nor 1"))),
        };
        Ok(())
    }
}
