//! MV-Softmax (spec §7), MV-AM and MV-Arc. f_y = c_y - m (AM) or cos(θ_y + m) (Arc), without easy
//! margin; non-target j is hard iff c_j > f_y and then gets s·((1+t)·c_j + t) (adaptive, the default) or
//! s·(c_j + t) (fixed). Target s·f_y, with easy margin (default on) keeping s·c_y when c_y <= 0 (SV-X,
//! also for AM: spec §15). Decisions: without easy margin MV-Arc uses ArcFace's fallback past π; clamp
//! ε = 0 for AM and 1e-6 for Arc (z' has 1/sin θ).

use super::classifier::arc_target;
use super::curricularface::cos_plus;
use super::params::Reader;
use super::sphereface::ANGULAR_EPS;
use super::{Head, HeadParams, NonTarget, RowInput, RowPlan, TargetMap};
use crate::Result;

#[derive(Debug, Clone)]
pub struct MvSoftmax {
    pub arc: bool,
    pub s: f64,
    pub m: f64,
    pub t: f64,
    pub adaptive: bool,
    pub easy_margin: bool,
}

impl MvSoftmax {
    pub fn new(p: &HeadParams, arc: bool) -> Result<MvSoftmax> {
        let r = p.reader(if arc { "mv-arc" } else { "mv-am" });
        let h = MvSoftmax::read(&r, arc)?;
        r.finish()?;
        Ok(h)
    }

    /// Its values from `r` (with their defaults), also as the softmax part of QCFace-MVS.
    pub(crate) fn read(r: &Reader, arc: bool) -> Result<MvSoftmax> {
        let s = r.positive("s", 32.0)?;
        let m = if arc { r.angular_margin("m", 0.5)? } else { r.cosine_margin("m", 0.35)? };
        let t = r.non_negative("t", 0.2)?;
        let easy_margin = r.easy_margin(true);
        Ok(MvSoftmax { arc, s, m, t, adaptive: true, easy_margin })
    }
}

impl Head for MvSoftmax {
    fn name(&self) -> &'static str {
        if self.arc {
            "mv-arc"
        } else {
            "mv-am"
        }
    }
    fn needs(&self) -> super::Needs {
        super::Needs { modulates_non_target: true, ..Default::default() }
    }
    fn scale(&self) -> f64 {
        self.s
    }
    fn clamp_eps(&self) -> f64 {
        if self.arc {
            ANGULAR_EPS
        } else {
            0.0
        }
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        let (target, tau) = if self.arc {
            (arc_target(r.c_y, self.m, self.easy_margin, true), cos_plus(r.c_y, self.m))
        } else if self.easy_margin && r.c_y <= 0.0 {
            (TargetMap::Shift { m: 0.0 }, r.c_y - self.m)
        } else {
            (TargetMap::Shift { m: self.m }, r.c_y - self.m)
        };
        RowPlan { target, tau, margin_da: 0.0 }
    }
    fn non_target(&self) -> NonTarget {
        if self.adaptive {
            NonTarget::MvAdaptive { t: self.t }
        } else {
            NonTarget::MvFixed { t: self.t }
        }
    }
}
