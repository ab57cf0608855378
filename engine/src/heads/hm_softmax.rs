//! HM-Softmax (spec §11, appendix G): plain logits s·c; the CE of a sample counts only while p_y < 0.5
//! (hard samples get weight 1, as the paper's text says), st = I. Clamp ε = 0.

use super::weighting::hard_mining;
use super::{Head, HeadParams, RowInput, RowPlan, SampleWeight, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct HmSoftmax {
    pub s: f64,
}

impl HmSoftmax {
    pub fn new(p: &HeadParams) -> Result<HmSoftmax> {
        let r = p.reader("hm-softmax");
        let s = r.positive("s", 64.0)?;
        r.finish()?;
        Ok(HmSoftmax { s })
    }
}

impl Head for HmSoftmax {
    fn name(&self) -> &'static str {
        "hm-softmax"
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
        hard_mining(log_p)
    }
}
