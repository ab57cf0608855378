//! ArcFace (spec §4): z_y = s·cos(θ_y + m) while c_y > cos(π - m), else the fallback s·(c_y - m·sin m);
//! easy margin keeps s·c_y when c_y <= 0. Grad mode EXACT (default) or STE (arcface_torch: value
//! s·cos(θ+m) without fallback, z' = s). Clamp ε: 1e-6 in EXACT mode (decision; z' has 1/sin θ), 0 in STE.

use super::classifier::arc_target;
use super::sphereface::ANGULAR_EPS;
use super::{GradMode, Head, HeadParams, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct ArcFace {
    pub s: f64,
    pub m: f64,
    pub easy_margin: bool,
    pub grad_mode: GradMode,
}

impl ArcFace {
    pub fn new(p: &HeadParams) -> Result<ArcFace> {
        let r = p.reader("arcface");
        let (s, m) = (r.positive("s", 64.0)?, r.angular_margin("m", 0.5)?);
        let (easy_margin, grad_mode) = (r.easy_margin(false), r.grad_mode());
        r.finish()?;
        Ok(ArcFace { s, m, easy_margin, grad_mode })
    }
}

impl Head for ArcFace {
    fn name(&self) -> &'static str {
        "arcface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs::default()
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        match self.grad_mode {
            GradMode::Exact => ANGULAR_EPS,
            GradMode::Ste => 0.0,
        }
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        RowPlan::target(match self.grad_mode {
            GradMode::Exact => arc_target(r.c_y, self.m, self.easy_margin, true),
            GradMode::Ste if self.easy_margin && r.c_y <= 0.0 => TargetMap::Shift { m: 0.0 },
            GradMode::Ste => TargetMap::Straight { m: self.m },
        })
    }
}
