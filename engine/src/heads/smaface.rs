//! Heads on AdaFace's norm-adaptive margin (same indicator ẑ, EMA, clamp and clip as §9) whose
//! cross entropy a function of p_y weights: L_i = I(p_y)·CE_i with I not detached (st = I + I'·p·log p),
//! p_y of the margin logits (spec §11). m_angle = -m·ẑ and m_add = m + m·ẑ; non-targets s·c.
//! - `sm-cosface`: z_y = s·(c_y - m_add); `smaface`: s·(cos(θ_y + m_angle) - m_add) (AdaFace's
//!   clip); both with SMAFace's I(p) = 1 + α·(σ(p0 - p) - ½), c_α = 1, α = 1.
//! - `smaface-star` (α = 2) and `nsmaface-star` (α = -2): the SMAFace margin with I* = c_α·I.
//! - `nsm-cosface-star` (SMAFace paper, Table 1's NSM-CosFace*): the SM-CosFace margin with I* = c_α·I
//!   and α = -2.
//! - `hm-adaface` and `focal-adaface` (appendix G, Fig. 9: the mining baselines "combined with AdaFace"):
//!   the SMAFace margin (AdaFace's own logit) with HM-Softmax's I = 1[p < 0.5], st = I, or F-Softmax's
//!   I = (1-p)^γ, st = (1-p)^γ - γ·(1-p)^(γ-1)·p·log p, γ = 2 (the weights of `hm-softmax` and
//!   `focal`, which use the plain logits s·c).
//! - `--variant weak|strong` replace u = p0 - p by max(u, 0) / min(u, 0); `beta` uses
//!   c·(1 + α0·(σ(β·u) - ½)) with α0 = 1, c = 7/8 and β = 2 (spec §15; `--alpha` does not enter it).
//!
//! α <= -7 is rejected; α outside the range where I > 0 for every p warns. Decisions: `--t-alpha` (the
//! EMA weight of §9) is accepted here too. NSM-CosFace* takes nsmaface-star's α = -2 (the paper's
//! NSMAFace* preset; its Table 1 runs NSM-CosFace* at -1, -3 and -5, within 0.07 points of each other),
//! so the two starred negative heads differ only in the margin. The mining baselines keep AdaFace's
//! defaults (m 0.4, h 0.333) and take no SMAFace flag (`--alpha`, `--p0`, `--variant`, `--beta`).

use super::params::{Reader, Variant};
use super::quality::{NormStats, EPS};
use super::weighting::{Mining, SmaWeight};
use super::{BatchView, Head, HeadParams, HeadState, RowInput, RowPlan, SampleWeight, TargetMap};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmaKind {
    SmCosFace,
    NsmCosFaceStar,
    SmaFace,
    SmaFaceStar,
    NsmaFaceStar,
    HmAdaFace,
    FocalAdaFace,
}

impl SmaKind {
    pub fn name(self) -> &'static str {
        match self {
            SmaKind::SmCosFace => "sm-cosface",
            SmaKind::NsmCosFaceStar => "nsm-cosface-star",
            SmaKind::SmaFace => "smaface",
            SmaKind::SmaFaceStar => "smaface-star",
            SmaKind::NsmaFaceStar => "nsmaface-star",
            SmaKind::HmAdaFace => "hm-adaface",
            SmaKind::FocalAdaFace => "focal-adaface",
        }
    }

    /// The CosFace margin s·(c - m_add) instead of AdaFace's angular and additive one.
    fn cosine_margin(self) -> bool {
        matches!(self, SmaKind::SmCosFace | SmaKind::NsmCosFaceStar)
    }
}

#[derive(Debug, Clone)]
pub struct SmaFace {
    pub kind: SmaKind,
    pub s: f64,
    pub m: f64,
    pub weight: Mining,
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
        let weight = match kind {
            SmaKind::HmAdaFace => Mining::Hard,
            SmaKind::FocalAdaFace => Mining::Focal { gamma: r.non_negative("gamma", 2.0)? },
            _ => Mining::Sma(SmaFace::read_weight(&r, kind)?),
        };
        r.finish()?;
        Ok(SmaFace { kind, s, m, weight, stats: NormStats::new(h, t_alpha) })
    }

    /// SMAFace's weight I (or I* for the starred kinds) with the kind's default α.
    fn read_weight(r: &Reader, kind: SmaKind) -> Result<SmaWeight> {
        let (default_alpha, starred) = match kind {
            SmaKind::SmaFaceStar => (2.0, true),
            SmaKind::NsmCosFaceStar | SmaKind::NsmaFaceStar => (-2.0, true),
            _ => (1.0, false),
        };
        let alpha = r.num("alpha", default_alpha)?;
        let p0 = r.num("p0", 0.6)?;
        let variant = r.variant();
        let beta = r.num("beta", 2.0)?;
        SmaWeight::validate(kind.name(), alpha, p0)?;
        let c = match variant {
            Variant::Beta => 7.0 / 8.0,
            _ if starred => SmaWeight::star_constant(alpha, p0),
            _ => 1.0,
        };
        Ok(SmaWeight { alpha, p0, c, variant, beta })
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
        RowPlan::target(if self.kind.cosine_margin() {
            TargetMap::Shift { m: add }
        } else {
            TargetMap::Clipped { angle, add, lo: EPS }
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
        let Mining::Sma(w) = self.weight else { return Vec::new() };
        let (lo, hi) = SmaWeight::positive_range(w.p0);
        let a = w.alpha;
        if w.variant != Variant::Beta && (a <= lo || a >= hi) {
            vec![format!(
                "{}: --alpha {a} lies outside ({lo:.2}, {hi:.2}); the sample weight I(p) can be negative",
                self.kind.name()
            )]
        } else {
            Vec::new()
        }
    }
}
