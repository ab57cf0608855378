//! NormFace (spec §1): z = s·c on every column, no margin, no state. Clamp ε = 0 (insightface clamps c to
//! [-1, 1]; nothing divides by sin θ).

use super::{Head, HeadParams, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct Softmax {
    pub s: f64,
}

impl Softmax {
    pub fn new(p: &HeadParams) -> Result<Softmax> {
        let r = p.reader("softmax");
        let s = r.positive("s", 64.0)?;
        r.finish()?;
        Ok(Softmax { s })
    }
}

impl Head for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
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
        RowPlan::target(TargetMap::Shift { m: 0.0 })
    }
}
