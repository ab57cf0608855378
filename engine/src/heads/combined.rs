//! Combined margin (spec §5): z_y = s·(cos(m1·θ_y + m2) - m3) in EXACT mode with no fallback, as the
//! insightface MXNet configs apply it. Defaults (1, 0.3, 0.2). Decision: clamp ε = 1e-6 (z' has 1/sin θ).

use super::sphereface::ANGULAR_EPS;
use super::{Head, HeadParams, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct Combined {
    pub s: f64,
    pub m1: f64,
    pub m2: f64,
    pub m3: f64,
}

impl Combined {
    pub fn new(p: &HeadParams) -> Result<Combined> {
        let r = p.reader("combined");
        let s = r.positive("s", 64.0)?;
        let (m1, m2, m3) =
            (r.angle_factor("m1", 1.0)?, r.angular_margin("m2", 0.3)?, r.cosine_margin("m3", 0.2)?);
        r.finish()?;
        Ok(Combined { s, m1, m2, m3 })
    }
}

impl Head for Combined {
    fn name(&self) -> &'static str {
        "combined"
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
        RowPlan::target(TargetMap::Angular { m1: self.m1, m2: self.m2, m3: self.m3 })
    }
}
