//! The closed set of logit maps a head can ask for: each gives z, z' = dz/dc and (for margins that depend
//! on the norm) dz/dm. Heads choose a map and its per-row parameters in f64; the maps run per element in
//! the tensor's float type, so a fused kernel implements exactly this list.

use crate::tensor::Float;
use std::f64::consts::PI;

/// How the target logit z_y is formed from c_y (all include the scale s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetMap {
    /// s·(c - m): NormFace (m = 0), CosFace, SM-CosFace, easy-margin branches.
    Shift { m: f64 },
    /// s·(cos(m1·θ + m2) - m3), exact gradient: SphereFace, ArcFace, combined, MagFace.
    Angular { m1: f64, m2: f64, m3: f64 },
    /// ArcFace's fallback when θ + m > π: s·(c - m·sin m).
    Fallback { m: f64 },
    /// Value s·cos(θ + m), gradient z' = s (arcface_torch's straight-through Arc branch).
    Straight { m: f64 },
    /// AdaFace: s·(cos(clip(θ + angle, lo, π - lo)) - add); z' = 0 where the clip binds.
    Clipped { angle: f64, add: f64, lo: f64 },
    /// QAMFace: s·(2π - θ - m)².
    Quadratic { m: f64 },
}

/// How the non-target logits are formed; `tau` is the row's threshold (hard iff c_j > tau).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NonTarget {
    /// s·c.
    Plain,
    /// CurricularFace: hard → s·c·(t + c).
    Curricular { t: f64 },
    /// MV-Softmax adaptive: hard → s·((1 + t)·c + t).
    MvAdaptive { t: f64 },
    /// MV-Softmax fixed: hard → s·(c + t).
    MvFixed { t: f64 },
    /// QAMFace: s·(2π - θ)² on every column.
    Quadratic,
}

/// Everything the classifier needs to know about one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowPlan {
    pub target: TargetMap,
    /// τ_i / f_y for non-target modulation (unused by `NonTarget::Plain`).
    pub tau: f64,
    /// dm/da: how the target map's margin moves with the raw norm (MagFace), 0 otherwise.
    pub margin_da: f64,
}

impl RowPlan {
    pub fn target(target: TargetMap) -> RowPlan {
        RowPlan { target, tau: f64::INFINITY, margin_da: 0.0 }
    }
}

#[inline]
fn sin_of_acos<T: Float>(c: T) -> T {
    (T::ONE - c * c).max(T::ZERO).sqrt()
}

/// (z, z', dz/dm) of the target map at c (already clamped), scale s.
pub fn target_logit<T: Float>(map: &TargetMap, s: T, c: T) -> (T, T, T) {
    let f = T::from_f64;
    match *map {
        TargetMap::Shift { m } => (s * (c - f(m)), s, T::ZERO),
        TargetMap::Angular { m1, m2, m3 } => {
            let phi = f(m1) * c.acos() + f(m2);
            let z = s * (phi.cos() - f(m3));
            let dz = s * f(m1) * phi.sin() / sin_of_acos(c);
            (z, dz, -s * phi.sin())
        }
        TargetMap::Fallback { m } => (s * (c - f(m * m.sin())), s, -s * f(m.sin() + m * m.cos())),
        TargetMap::Straight { m } => (s * (c.acos() + f(m)).cos(), s, T::ZERO),
        TargetMap::Clipped { angle, add, lo } => {
            let raw = c.acos() + f(angle);
            let (lo_t, hi_t) = (f(lo), f(PI - lo));
            let phi = raw.max(lo_t).min(hi_t);
            let inside = raw > lo_t && raw < hi_t;
            let dz = if inside { s * raw.sin() / sin_of_acos(c) } else { T::ZERO };
            (s * (phi.cos() - f(add)), dz, T::ZERO)
        }
        TargetMap::Quadratic { m } => {
            let r = f(2.0 * PI - m) - c.acos();
            (s * r * r, f(2.0) * s * r / sin_of_acos(c), T::ZERO)
        }
    }
}

/// (z, z') of a non-target column at c (already clamped) with the row's threshold tau.
#[inline]
pub fn non_target_logit<T: Float>(map: &NonTarget, s: T, c: T, tau: T) -> (T, T) {
    let f = T::from_f64;
    match *map {
        NonTarget::Plain => (s * c, s),
        NonTarget::Curricular { t } if c > tau => (s * c * (f(t) + c), s * (f(t) + f(2.0) * c)),
        NonTarget::MvAdaptive { t } if c > tau => (s * (f(1.0 + t) * c + f(t)), s * f(1.0 + t)),
        NonTarget::MvFixed { t } if c > tau => (s * (c + f(t)), s),
        NonTarget::Quadratic => {
            let r = f(2.0 * PI) - c.acos();
            (s * r * r, f(2.0) * s * r / sin_of_acos(c))
        }
        _ => (s * c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of every map's value against its z' (and dz/dm where it has one).
    #[test]
    fn derivatives_match_finite_differences() {
        let maps = [
            TargetMap::Shift { m: 0.35 },
            TargetMap::Angular { m1: 1.35, m2: 0.3, m3: 0.2 },
            TargetMap::Fallback { m: 0.5 },
            TargetMap::Clipped { angle: -0.2, add: 0.5, lo: 1e-3 },
            TargetMap::Quadratic { m: 0.5 },
        ];
        let h = 1e-6;
        for map in maps {
            for &c in &[-0.7, -0.1, 0.3, 0.9] {
                let (_, dz, _) = target_logit(&map, 2.0, c);
                let num = (target_logit(&map, 2.0, c + h).0 - target_logit(&map, 2.0, c - h).0) / (2.0 * h);
                assert!((dz - num).abs() < 1e-6 * (1.0 + num.abs()), "{map:?} at {c}: {dz} vs {num}");
            }
        }
        // dz/dm for the margin-bearing maps.
        for &c in &[-0.95, 0.4] {
            let with_m = |m: f64| target_logit(&TargetMap::Angular { m1: 1.0, m2: m, m3: 0.0 }, 3.0, c);
            let num = (with_m(0.5 + h).0 - with_m(0.5 - h).0) / (2.0 * h);
            assert!((with_m(0.5).2 - num).abs() < 1e-6);
            let fb = |m: f64| target_logit(&TargetMap::Fallback { m }, 3.0, c);
            let num = (fb(0.5 + h).0 - fb(0.5 - h).0) / (2.0 * h);
            assert!((fb(0.5).2 - num).abs() < 1e-6);
        }
        for map in [NonTarget::Curricular { t: 0.3 }, NonTarget::MvAdaptive { t: 0.2 }, NonTarget::Quadratic]
        {
            for &c in &[-0.5, 0.2, 0.8] {
                let (_, dz) = non_target_logit(&map, 2.0, c, 0.0);
                let num = (non_target_logit(&map, 2.0, c + h, 0.0).0
                    - non_target_logit(&map, 2.0, c - h, 0.0).0)
                    / (2.0 * h);
                assert!((dz - num).abs() < 1e-6 * (1.0 + num.abs()), "{map:?} at {c}");
            }
        }
    }

    #[test]
    fn modulation_applies_only_above_the_threshold() {
        let m = NonTarget::Curricular { t: 0.5 };
        assert_eq!(non_target_logit(&m, 1.0, 0.2, 0.3), (0.2, 1.0));
        let (z, dz) = non_target_logit(&m, 1.0, 0.4, 0.3);
        assert!((z - 0.4 * 0.9).abs() < 1e-15 && (dz - 1.3).abs() < 1e-15);
    }
}
