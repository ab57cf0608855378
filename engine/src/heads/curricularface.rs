//! CurricularFace (spec §6): ArcFace target with fallback; non-target j is hard when c_j > τ_i with
//! τ_i = cos(θ_y + m) without fallback (it wraps past π), and then z_j = s·c_j·(t + c_j). The running t
//! (initial 0) moves before the logits: t ← 0.01·mean(c_y) + 0.99·t, from the clamped raw target cosines.
//! t and the mask are detached. Decision: clamp ε = 1e-6 (the reference clamps to [-1, 1]).

use super::classifier::arc_target;
use super::params::Reader;
use super::sphereface::ANGULAR_EPS;
use super::{BatchView, Head, HeadParams, HeadState, NonTarget, RowInput, RowPlan};
use crate::Result;

#[derive(Debug, Clone)]
pub struct CurricularFace {
    pub s: f64,
    pub m: f64,
    pub t: f64,
    pub training: bool,
}

impl CurricularFace {
    pub fn new(p: &HeadParams) -> Result<CurricularFace> {
        let r = p.reader("curricularface");
        let h = CurricularFace::read(&r)?;
        r.finish()?;
        Ok(h)
    }

    /// Its values from `r` (with their defaults), also as the softmax part of QCFace-Cur.
    pub(crate) fn read(r: &Reader) -> Result<CurricularFace> {
        let (s, m) = (r.positive("s", 64.0)?, r.angular_margin("m", 0.5)?);
        Ok(CurricularFace { s, m, t: 0.0, training: true })
    }
}

/// cos(θ + m) from c = cos θ without any fallback.
pub(crate) fn cos_plus(c: f64, m: f64) -> f64 {
    c * m.cos() - (1.0 - c * c).max(0.0).sqrt() * m.sin()
}

impl Head for CurricularFace {
    fn name(&self) -> &'static str {
        "curricularface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs { modulates_non_target: true, running_state: true, ..Default::default() }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        ANGULAR_EPS
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn observe(&mut self, b: &BatchView) -> Result<()> {
        if self.training {
            let mean = b.c_y.iter().sum::<f64>() / b.c_y.len() as f64;
            self.t = 0.01 * mean + 0.99 * self.t;
        }
        Ok(())
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        RowPlan {
            target: arc_target(r.c_y, self.m, false, true),
            tau: cos_plus(r.c_y, self.m),
            margin_da: 0.0,
        }
    }
    fn non_target(&self) -> NonTarget {
        NonTarget::Curricular { t: self.t }
    }
    fn state(&self) -> HeadState {
        HeadState::new(&[("t", self.t)])
    }
    fn load_state(&mut self, s: &HeadState) -> Result<()> {
        self.t = s.require(self.name(), "t")?;
        Ok(())
    }
}
