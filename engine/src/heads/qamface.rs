//! QAMFace (spec §10): z_y = s·(2π - θ_y - m)², z_j = s·(2π - θ_j)², exact gradient on every column,
//! clamp ε = 1e-7 (the reference). Defaults s = 6, m = 0.5. Logits reach 4π²·s, so the max-subtracted LSE
//! matters (exp(237) overflows f32).

use super::{Head, HeadParams, NonTarget, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct QamFace {
    pub s: f64,
    pub m: f64,
}

impl QamFace {
    pub fn new(p: &HeadParams) -> Result<QamFace> {
        let r = p.reader("qamface");
        let (s, m) = (r.positive("s", 6.0)?, r.angular_margin("m", 0.5)?);
        r.finish()?;
        Ok(QamFace { s, m })
    }
}

impl Head for QamFace {
    fn name(&self) -> &'static str {
        "qamface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs { modulates_non_target: true, ..Default::default() }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        1e-7
    }
    fn row(&self, _r: &RowInput) -> RowPlan {
        RowPlan::target(TargetMap::Quadratic { m: self.m })
    }
    fn non_target(&self) -> NonTarget {
        NonTarget::Quadratic
    }
}
