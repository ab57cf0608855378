//! CosFace (spec §3): z_y = s·(c_y - m), z' = s everywhere. Default m = 0.35 (the CosFace paper and the
//! insightface MXNet preset). Clamp ε = 0.

use super::{Head, HeadParams, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct CosFace {
    pub s: f64,
    pub m: f64,
}

impl CosFace {
    pub fn new(p: &HeadParams) -> Result<CosFace> {
        let r = p.reader("cosface");
        let (s, m) = (r.positive("s", 64.0)?, r.cosine_margin("m", 0.35)?);
        r.finish()?;
        Ok(CosFace { s, m })
    }
}

impl Head for CosFace {
    fn name(&self) -> &'static str {
        "cosface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs::default()
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        0.0
    }
    fn row(&self, _r: &RowInput) -> RowPlan {
        RowPlan::target(TargetMap::Shift { m: self.m })
    }
}
