//! QCFace (spec §12): a softmax loss L_sm on normalized x, plus in the planning phase λ·R(a, p_d) with
//! R = k·p·(1/a + a/u_a²) + (1-p)·(1/a + a/l_a²) - b and p_d = softmax(s·c)_y without any margin or
//! non-target modulation, detached, computed online. The warm-up phase is L_sm alone. L_sm by name (the
//! slides' QCFace-X, Tables 1 and 3):
//! - `qcface` (QCFace-Arc): ArcFace (EXACT, with fallback), s 64, m 0.5;
//! - `qcface-cur`: CurricularFace (§6) with its running t, s 64, m 0.5;
//! - `qcface-mvs`: MV-Softmax (§7) in its Arc form, s 32, m 0.5, t 0.2 adaptive, easy margin on.
//!
//! p_d: with ArcFace the non-target logits are s·c already; CurricularFace and MV-Softmax raise the hard
//! negatives, so the classifier keeps a second log-sum-exp of s·c_j over j ≠ y (`F_PLAIN_SUM` in the
//! kernels) and log p_d = s·c_y - LSE2(that, s·c_y), for every softmax part alike.
//!
//! Decisions:
//! - "MVS" is MV-Arc: the slides compare against MV-Arc-Softmax and class MV-Softmax as an additive
//!   angular margin (their Table 4).
//! - The softmax part is that head itself, with its own flags and defaults (`qcface-mvs` takes `--t` and
//!   `--easy-margin` and keeps mv-arc's s = 32), so the warm-up phase of `qcface-X` is exactly the head X;
//!   p_d uses the part's s. The slides give no s for the -Cur/-MVS runs.
//! - Running state: "phase" (0 warm-up, 1 planning) plus the part's own (CurricularFace's t).
//! - The 1/a guard is ā = max(a, 1e-3) with zero gradient at and below 1e-3 (clamp semantics); the cosine
//!   clamp is the part's (1e-6 for all three).

use super::arcface::ArcFace;
use super::curricularface::CurricularFace;
use super::mv_softmax::MvSoftmax;
use super::{
    BatchView, GradMode, Head, HeadParams, HeadState, NonTarget, Phase, RowInput, RowPlan, SampleWeight,
};
use crate::{Error, Result};

const NORM_GUARD: f64 = 1e-3;

/// Which softmax loss L_sm the regularizer is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxPart {
    Arc,
    Cur,
    Mvs,
}

impl SoftmaxPart {
    pub fn name(self) -> &'static str {
        match self {
            SoftmaxPart::Arc => "qcface",
            SoftmaxPart::Cur => "qcface-cur",
            SoftmaxPart::Mvs => "qcface-mvs",
        }
    }
}

#[derive(Debug)]
pub struct QcFace {
    pub part: SoftmaxPart,
    /// L_sm: the head whose logits, non-target map, weights and running state this one uses.
    pub sm: Box<dyn Head>,
    pub l_a: f64,
    pub u_a: f64,
    pub k: f64,
    pub b: f64,
    pub lambda: f64,
    pub phase: Phase,
}

impl QcFace {
    pub fn new(p: &HeadParams, part: SoftmaxPart) -> Result<QcFace> {
        let name = part.name();
        let r = p.reader(name);
        let sm: Box<dyn Head> = match part {
            SoftmaxPart::Arc => {
                let (s, m) = (r.positive("s", 64.0)?, r.angular_margin("m", 0.5)?);
                Box::new(ArcFace { s, m, easy_margin: false, grad_mode: GradMode::Exact })
            }
            SoftmaxPart::Cur => Box::new(CurricularFace::read(&r)?),
            SoftmaxPart::Mvs => Box::new(MvSoftmax::read(&r, true)?),
        };
        let (l_a, u_a) = (r.positive("l-a", 10.0)?, r.positive("u-a", 110.0)?);
        let (k, b, lambda) = (r.non_negative("k", 1.0)?, r.num("b", 0.0)?, r.non_negative("lambda", 35.0)?);
        let phase = r.phase();
        r.finish()?;
        if u_a <= l_a {
            return Err(Error::Invalid(format!("{name}: --u-a {u_a} must exceed --l-a {l_a}")));
        }
        Ok(QcFace { part, sm, l_a, u_a, k, b, lambda, phase })
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
        self.part.name()
    }
    fn needs(&self) -> super::Needs {
        let planning = self.phase == Phase::Planning;
        super::Needs {
            norm_with_grad: planning,
            p_d: planning,
            extra_term: planning,
            running_state: true,
            ..self.sm.needs()
        }
    }
    fn scale(&self) -> f64 {
        self.sm.scale()
    }
    fn clamp_eps(&self) -> f64 {
        self.sm.clamp_eps()
    }
    fn min_batch(&self) -> usize {
        self.sm.min_batch()
    }
    fn set_training(&mut self, on: bool) {
        self.sm.set_training(on);
    }
    fn observe(&mut self, batch: &BatchView) -> Result<()> {
        self.sm.observe(batch)
    }
    fn quality(&self, batch: &BatchView) -> Vec<f64> {
        self.sm.quality(batch)
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        self.sm.row(r)
    }
    fn non_target(&self) -> NonTarget {
        self.sm.non_target()
    }
    fn weight(&self, log_p: f64) -> SampleWeight {
        self.sm.weight(log_p)
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
        let mut st = HeadState::new(&[("phase", if self.phase == Phase::Planning { 1.0 } else { 0.0 })]);
        st.values.extend(self.sm.state().values);
        st
    }
    fn load_state(&mut self, s: &HeadState) -> Result<()> {
        let name = self.name();
        let phase = match s.require(name, "phase")? {
            0.0 => Phase::Warmup,
            1.0 => Phase::Planning,
            v => return Err(Error::Invalid(format!("{name}: state phase {v} is neither 0 nor 1"))),
        };
        let rest = HeadState { values: s.values.iter().filter(|(n, _)| n != "phase").cloned().collect() };
        self.sm.load_state(&rest).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        self.phase = phase;
        Ok(())
    }
    fn warnings(&self) -> Vec<String> {
        self.sm.warnings()
    }
}
