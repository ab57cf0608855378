//! SphereFace as insightface's combined margin m1 (spec §2): z_y = s·cos(m1·θ_y), exact gradient, and no
//! fallback, like the MXNet reference (the logit is non-monotone for θ > π/m1). Default m1 = 1.35.
//! Decision: clamp ε = 1e-6 (the reference clamps to [-1, 1], where z' = s·m1·sin(m1θ)/sin θ is 0/0).

use super::{Head, HeadParams, RowInput, RowPlan, TargetMap};
use crate::Result;

/// ε of the heads whose z' divides by sin θ (spec's proposal: at least 1e-6).
pub const ANGULAR_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct SphereFace {
    pub s: f64,
    pub m1: f64,
}

impl SphereFace {
    pub fn new(p: &HeadParams) -> Result<SphereFace> {
        let r = p.reader("sphereface");
        let (s, m1) = (r.positive("s", 64.0)?, r.angle_factor("m1", 1.35)?);
        r.finish()?;
        Ok(SphereFace { s, m1 })
    }
}

impl Head for SphereFace {
    fn name(&self) -> &'static str {
        "sphereface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs::default()
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        ANGULAR_EPS
    }
    fn row(&self, _r: &RowInput) -> RowPlan {
        RowPlan::target(TargetMap::Angular { m1: self.m1, m2: 0.0, m3: 0.0 })
    }
}
