//! F-Softmax (focal, spec §11 appendix G): plain logits s·c, loss (1-p)^γ·CE with the weight
//! differentiated (st = (1-p)^γ - γ·(1-p)^(γ-1)·p·log p; eq. 37's sign is flipped). γ = 2, clamp ε = 0.

use super::weighting::focal;
use super::{Head, HeadParams, RowInput, RowPlan, SampleWeight, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct Focal {
    pub s: f64,
    pub gamma: f64,
}

impl Focal {
    pub fn new(p: &HeadParams) -> Result<Focal> {
        let r = p.reader("focal");
        let (s, gamma) = (r.positive("s", 64.0)?, r.non_negative("gamma", 2.0)?);
        r.finish()?;
        Ok(Focal { s, gamma })
    }
}

impl Head for Focal {
    fn name(&self) -> &'static str {
        "focal"
    }
    fn needs(&self) -> super::Needs {
        super::Needs { p_y_before_weighting: true, ..Default::default() }
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
    fn weight(&self, log_p: f64) -> SampleWeight {
        focal(log_p, self.gamma)
    }
}
