//! The SMAFace family (spec §11): AdaFace's norm-adaptive margin (same indicator, EMA, clamp and clip),
//! and the loss I(p_y)·CE with I not detached (st = I + I'·p·log p).
//! - `sm-cosface`: z_y = s·(c_y - m_add); `smaface`: s·(cos(θ_y + m_angle) - m_add); both with c_α = 1.
//! - `smaface-star` (α = 2) and `nsmaface-star` (α = -2): the SMAFace margin with I* = c_α·I.
//! - `--variant weak|strong` replace u = p0 - p by max(u, 0) / min(u, 0); `beta` uses
//!   c·(1 + α0·(σ(β·u) - ½)) with α0 = 1, c = 7/8 and β = 2 (spec §15; `--alpha` does not enter it).
//!
//! α <= -7 is rejected; α outside the range where I > 0 for every p warns. Decision: `--t-alpha` (the
//! EMA weight of §9) is accepted here too.

use super::params::Variant;
use super::quality::{NormStats, EPS};
use super::weighting::SmaWeight;
use super::{BatchView, Head, HeadParams, HeadState, RowInput, RowPlan, SampleWeight, TargetMap};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmaKind {
    SmCosFace,
    SmaFace,
    SmaFaceStar,
    NsmaFaceStar,
}

impl SmaKind {
    pub fn name(self) -> &'static str {
        match self {
            SmaKind::SmCosFace => "sm-cosface",
            SmaKind::SmaFace => "smaface",
            SmaKind::SmaFaceStar => "smaface-star",
            SmaKind::NsmaFaceStar => "nsmaface-star",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmaFace {
    pub kind: SmaKind,
    pub s: f64,
    pub m: f64,
    pub weight: SmaWeight,
    pub stats: NormStats,
}

impl SmaFace {
    pub fn new(p: &HeadParams, kind: SmaKind) -> Result<SmaFace> {
        let name = kind.name();
        let r = p.reader(name);
        let s = r.positive("s", 64.0)?;
        let m = r.adaptive_margin("m", 0.4)?;
        let h = r.non_negative("h", 0.333)?;
        let t_alpha = r.num_where("t-alpha", 0.01, |v| (0.0..=1.0).contains(&v), "it must lie in [0, 1]")?;
        let default_alpha = match kind {
            SmaKind::SmCosFace | SmaKind::SmaFace => 1.0,
            SmaKind::SmaFaceStar => 2.0,
            SmaKind::NsmaFaceStar => -2.0,
        };
        let alpha = r.num("alpha", default_alpha)?;
        let p0 = r.num("p0", 0.6)?;
        let variant = r.variant();
        let beta = r.num("beta", 2.0)?;
        r.finish()?;
        SmaWeight::validate(name, alpha, p0)?;
        let starred = matches!(kind, SmaKind::SmaFaceStar | SmaKind::NsmaFaceStar);
        let c = match variant {
            Variant::Beta => 7.0 / 8.0,
            _ if starred => SmaWeight::star_constant(alpha, p0),
            _ => 1.0,
        };
        let weight = SmaWeight { alpha, p0, c, variant, beta };
        Ok(SmaFace { kind, s, m, weight, stats: NormStats::new(h, t_alpha) })
    }
}

impl Head for SmaFace {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn needs(&self) -> super::Needs {
        super::Needs {
            norm_detached: true,
            p_y_before_weighting: true,
            running_state: true,
            ..Default::default()
        }
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
        self.stats.observe(self.kind.name(), b.norms)
    }
    fn quality(&self, b: &BatchView) -> Vec<f64> {
        self.stats.indicator(b.norms)
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        let (angle, add) = NormStats::margins(self.m, r.quality);
        RowPlan::target(match self.kind {
            SmaKind::SmCosFace => TargetMap::Shift { m: add },
            _ => TargetMap::Clipped { angle, add, lo: EPS },
        })
    }
    fn weight(&self, log_p: f64) -> SampleWeight {
        self.weight.eval(log_p)
    }
    fn state(&self) -> HeadState {
        self.stats.state()
    }
    fn load_state(&mut self, s: &HeadState) -> Result<()> {
        self.stats.load(self.kind.name(), s)
    }
    fn warnings(&self) -> Vec<String> {
        let (lo, hi) = SmaWeight::positive_range(self.weight.p0);
        let a = self.weight.alpha;
        if self.weight.variant != Variant::Beta && (a <= lo || a >= hi) {
            vec![format!(
                "{}: --alpha {a} lies outside ({lo:.2}, {hi:.2}); the sample weight I(p) can be negative",
                self.kind.name()
            )]
        } else {
            Vec::new()
        }
    }
}
