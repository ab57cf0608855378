//! AdaFace (spec §9): the detached norm indicator ẑ_i (running μ, σ; see `quality`) sets g_angle = -m·ẑ
//! and g_add = m + m·ẑ; target s·(cos(clip(θ_y + g_angle, ε, π - ε)) - g_add), non-targets s·c, c clamped
//! to [-1+ε, 1-ε] with ε = 1e-3. No gradient to the norm. Needs B >= 2 in training (unbiased std).
//! Defaults m = 0.4, h = 0.333, t_alpha = 0.01 (paper and training scripts).

use super::quality::{NormStats, EPS};
use super::{BatchView, Head, HeadParams, HeadState, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct AdaFace {
    pub s: f64,
    pub m: f64,
    pub stats: NormStats,
}

impl AdaFace {
    pub fn new(p: &HeadParams) -> Result<AdaFace> {
        let r = p.reader("adaface");
        let (s, m) = (r.positive("s", 64.0)?, r.adaptive_margin("m", 0.4)?);
        let h = r.non_negative("h", 0.333)?;
        let t_alpha = r.num_where("t-alpha", 0.01, |v| (0.0..=1.0).contains(&v), "it must lie in [0, 1]")?;
        r.finish()?;
        Ok(AdaFace { s, m, stats: NormStats::new(h, t_alpha) })
    }
}

impl Head for AdaFace {
    fn name(&self) -> &'static str {
        "adaface"
    }
    fn needs(&self) -> super::Needs {
        super::Needs { norm_detached: true, running_state: true, ..Default::default() }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        EPS
    }
    fn min_batch(&self) -> usize {
        2
    }
    fn set_training(&mut self, on: bool) {
        self.stats.training = on;
    }
    fn observe(&mut self, b: &BatchView) -> Result<()> {
        self.stats.observe("adaface", b.norms)
    }
    fn quality(&self, b: &BatchView) -> Vec<f64> {
        self.stats.indicator(b.norms)
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        let (angle, add) = NormStats::margins(self.m, r.quality);
        RowPlan::target(TargetMap::Clipped { angle, add, lo: EPS })
    }
    fn state(&self) -> HeadState {
        self.stats.state()
    }
    fn load_state(&mut self, s: &HeadState) -> Result<()> {
        self.stats.load("adaface", s)
    }
}
