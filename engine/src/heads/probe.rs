//! A head's per-row functions evaluated at chosen (norm, target cosine) points, without a batch: the
//! data of the head figures (`engine-train head --plot`). The other classes are modelled as
//! `classes - 1` non-target columns, all at cosine `other_cos` to the sample, so a point's softmax is
//! the classifier's on that geometry (tested against [`super::run`] on embeddings built that way).
//!
//! Everything comes from the head's own functions in the classifier's order: the cosine clamp,
//! [`Head::quality`] (from the head's current state, no update), [`Head::row`], the target and non-target
//! maps, [`Head::weight`] and [`Head::extra`].

use super::maps::{non_target_logit, target_logit};
use super::{BatchView, Head, RowInput};

/// The other classes of a probed sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Others {
    /// Classes in all, the target included (at least 1).
    pub classes: usize,
    /// Cosine of every non-target class to the sample.
    pub cos: f64,
}

/// One sample's per-row quantities, as the classifier forms them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub norm: f64,
    /// Target cosine after the head's clamp.
    pub c_y: f64,
    /// The head's detached quality (0 where it has none).
    pub quality: f64,
    /// Target logit z_y and its slopes dz/dc (0 where the clamp binds) and dz/dθ = -dz/dc·sin θ.
    pub z_y: f64,
    pub dz_dc: f64,
    pub dz_dtheta: f64,
    pub log_p: f64,
    /// I(p_y) and st(p_y).
    pub weight: f64,
    pub st: f64,
    /// Margin-free target probability (NaN when the head does not use it).
    pub p_d: f64,
    pub extra: f64,
    /// The sample's loss I·CE + extra and its derivatives: by c_y (the gradient scaling term
    /// st·(p_y - 1)·dz/dc) and by the raw norm.
    pub loss: f64,
    pub d_c: f64,
    pub d_norm: f64,
}

impl Probe {
    pub fn p_y(&self) -> f64 {
        self.log_p.exp()
    }
}

/// ln(e^a + e^b) without overflow.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let top = a.max(b);
    if top == f64::NEG_INFINITY {
        return top;
    }
    top + ((a - top).exp() + (b - top).exp()).ln()
}

/// Probes `head` at raw norm `norm` and target cosine `c` (before the clamp).
pub fn probe(head: &dyn Head, norm: f64, c: f64, others: Others) -> Probe {
    let s = head.scale();
    let eps = head.clamp_eps();
    let (lo, hi) = (-1.0 + eps, 1.0 - eps);
    let c_y = c.clamp(lo, hi);
    let quality = head.quality(&BatchView { c_y: &[c_y], norms: &[norm] }).first().copied().unwrap_or(0.0);
    let plan = head.row(&RowInput { c_y, norm, quality });
    let (z_y, dz, dz_dm) = target_logit(&plan.target, s, c_y);
    let dz_dc = if c > lo && c < hi { dz } else { 0.0 };
    let other = others.cos.clamp(lo, hi);
    let (z_other, _) = non_target_logit(&head.non_target(), s, other, plan.tau);
    // ln of the non-target sum: (C - 1)·e^z_other.
    let rest = if others.classes > 1 { ((others.classes - 1) as f64).ln() } else { f64::NEG_INFINITY };
    let log_p = z_y - log_add_exp(z_y, rest + z_other);
    let p_y = log_p.exp();
    let w = head.weight(log_p);
    let p_d =
        if head.needs().p_d { (s * c_y - log_add_exp(s * c_y, rest + s * other)).exp() } else { f64::NAN };
    let (extra, d_extra) = head.extra(norm, p_d);
    let sin = (1.0 - c_y * c_y).max(0.0).sqrt();
    Probe {
        norm,
        c_y,
        quality,
        z_y,
        dz_dc,
        dz_dtheta: -dz_dc * sin,
        log_p,
        weight: w.value,
        st: w.st,
        p_d,
        extra,
        loss: w.value * -log_p + extra,
        d_c: w.st * (p_y - 1.0) * dz_dc,
        d_norm: w.st * (p_y - 1.0) * dz_dm * plan.margin_da + d_extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::{from_name, names, run, Frozen, HeadParams, HeadState, RunOptions};

    /// One sample at norm `a` and target cosine `c` to class 0, every other class at cosine `o`: class j
    /// is o·x̂ + sqrt(1 - o²)·e_{j+1}, with e_{j+1} orthogonal to x̂ (x̂ spans e_0, e_1).
    fn geometry(a: f64, c: f64, o: f64, classes: usize) -> (Vec<f64>, Vec<f64>, usize) {
        let dim = classes + 1;
        let mut xh = vec![0.0; dim];
        xh[0] = c;
        xh[1] = (1.0 - c * c).sqrt();
        let mut w = vec![0.0; classes * dim];
        w[0] = 1.0;
        for j in 1..classes {
            for k in 0..dim {
                w[j * dim + k] = o * xh[k];
            }
            w[j * dim + j + 1] += (1.0 - o * o).sqrt();
        }
        (xh.iter().map(|v| a * v).collect(), w, dim)
    }

    fn head(name: &str) -> Box<dyn Head> {
        let mut h = from_name(name, &HeadParams::default()).unwrap();
        h.set_training(false);
        if h.state().get("mu").is_some() {
            h.load_state(&HeadState::new(&[("mu", 40.0), ("sigma", 30.0)])).unwrap();
        }
        h
    }

    /// Every head's probe equals the classifier's row report on the probe's geometry, and its d_c and
    /// d_norm equal central differences of the classifier's loss (detached quality and p_d frozen).
    #[test]
    fn probe_matches_the_classifier_for_every_head() {
        let others = Others { classes: 5, cos: 0.2 };
        for name in names() {
            for &(a, c) in &[(15.0, 0.7), (40.0, 0.3), (90.0, -0.2)] {
                let mut h = head(name);
                let p = probe(h.as_ref(), a, c, others);
                let (x, w, dim) = geometry(a, c, others.cos, others.classes);
                let opts = RunOptions { compute_grad: false, frozen: None };
                let out = run::<f64>(&x, &w, &[0], dim, h.as_mut(), &opts).unwrap();
                let r = out.rows[0];
                let close = |u: f64, v: f64, what: &str| {
                    assert!((u - v).abs() <= 1e-9 * (1.0 + v.abs()), "{name} ({a}, {c}) {what}: {u} vs {v}");
                };
                close(p.c_y, r.c_y, "c_y");
                close(p.quality, r.quality, "quality");
                close(p.z_y, r.z_y, "z_y");
                close(p.log_p, r.log_p, "log p_y");
                close(p.weight, r.weight, "I");
                close(p.st, r.st, "st");
                close(p.extra, r.extra, "extra");
                close(p.d_norm, r.d_norm, "dL/da");
                close(p.loss, out.loss, "loss");
                assert_eq!(p.p_d.is_nan(), r.p_d.is_nan(), "{name}");
                if !r.p_d.is_nan() {
                    close(p.p_d, r.p_d, "p_d");
                }
                // dL/dc by moving x̂ in its plane, with the detached values held at the point's own.
                let frozen = Some(Frozen { quality: vec![p.quality], p_d: vec![p.p_d] });
                let fd_opts = RunOptions { compute_grad: false, frozen };
                let loss_at = |cc: f64| {
                    let (x, w, dim) = geometry(a, cc, others.cos, others.classes);
                    run::<f64>(&x, &w, &[0], dim, head(name).as_mut(), &fd_opts).unwrap().loss
                };
                let h_step = 1e-6;
                let num = (loss_at(c + h_step) - loss_at(c - h_step)) / (2.0 * h_step);
                assert!(
                    (p.d_c - num).abs() < 1e-5 * (1.0 + num.abs()),
                    "{name} ({a}, {c}) dL/dc: {} vs {num}",
                    p.d_c
                );
            }
        }
    }

    #[test]
    fn theta_slope_and_clamp() {
        let h = head("arcface");
        let others = Others { classes: 10, cos: 0.0 };
        let p = probe(h.as_ref(), 30.0, 0.5, others);
        // ArcFace, s 64, m 0.5: z = 64·cos(θ + 0.5), dz/dθ = -64·sin(θ + 0.5).
        let theta = 0.5f64.acos();
        assert!((p.z_y - 64.0 * (theta + 0.5).cos()).abs() < 1e-9);
        assert!((p.dz_dtheta + 64.0 * (theta + 0.5).sin()).abs() < 1e-9, "{}", p.dz_dtheta);
        let edge = probe(h.as_ref(), 30.0, 1.0, others);
        assert_eq!(edge.dz_dc, 0.0);
        assert!(edge.c_y < 1.0);
        // One class: p_y = 1, nothing to learn.
        let alone = probe(h.as_ref(), 30.0, 0.1, Others { classes: 1, cos: 0.0 });
        assert_eq!((alone.log_p, alone.d_c), (0.0, 0.0));
    }
}
