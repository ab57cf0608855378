//! QQCFace / QMagFace quality-aware comparison score (spec §12, evaluation only):
//! score = c12 + ω(c12)·min(q1, q2), ω(c) = min(0, β·c - α), q = raw feature norm. α, β are fitted per
//! model: for FMRs log-spaced in [1e-5, 1e-2], the ω that minimizes the FNMR at that FMR is found on a grid,
//! and the line ω = β·t - α is fitted by least squares to the (threshold t, ω) pairs.
//!
//! Decisions: 16 FMRs; ω grid of 201 values in [-0.1, 0.1]; the threshold t recorded for a pair is the
//! plain-cosine threshold at that FMR; ties keep the ω nearest 0.

use crate::{Error, Result};

/// The QMagFace score of one comparison.
pub fn score(cos12: f64, q1: f64, q2: f64, alpha: f64, beta: f64) -> f64 {
    cos12 + (beta * cos12 - alpha).min(0.0) * q1.min(q2)
}

/// Threshold accepting the fraction `fmr` of impostor scores (the (1 - fmr) quantile, higher = accept).
fn threshold_at(impostor_sorted_desc: &[f64], fmr: f64) -> f64 {
    let n = impostor_sorted_desc.len();
    let k = ((fmr * n as f64).floor() as usize).min(n - 1);
    impostor_sorted_desc[k]
}

fn fnmr(genuine: &[f64], t: f64) -> f64 {
    genuine.iter().filter(|&&s| s <= t).count() as f64 / genuine.len() as f64
}

/// Fits (α, β) from comparisons: cosine, min quality of the pair, and whether it is genuine.
pub fn fit(cos: &[f64], q_min: &[f64], genuine: &[bool]) -> Result<(f64, f64)> {
    if cos.len() != q_min.len() || cos.len() != genuine.len() {
        return Err(Error::Shape(format!(
            "qqcface fit: {} cosines, {} qualities, {} labels",
            cos.len(),
            q_min.len(),
            genuine.len()
        )));
    }
    let n_gen = genuine.iter().filter(|&&g| g).count();
    if n_gen == 0 || n_gen == genuine.len() {
        return Err(Error::Invalid("qqcface fit needs both genuine and impostor pairs".into()));
    }
    let split = |w: f64| -> (Vec<f64>, Vec<f64>) {
        let (mut g, mut i) = (Vec::new(), Vec::new());
        for k in 0..cos.len() {
            let s = cos[k] + w * q_min[k];
            if genuine[k] {
                g.push(s)
            } else {
                i.push(s)
            }
        }
        i.sort_by(|a, b| b.total_cmp(a));
        (g, i)
    };
    let (_, imp0) = split(0.0);
    let mut pts = Vec::new();
    for f in 0..16 {
        let fmr = 10f64.powf(-5.0 + 3.0 * f as f64 / 15.0);
        let mut best = (f64::INFINITY, 0.0f64);
        for g in 0..=200 {
            let w = -0.1 + 0.2 * g as f64 / 200.0;
            let (gen, imp) = split(w);
            let e = fnmr(&gen, threshold_at(&imp, fmr));
            if e < best.0 || (e == best.0 && w.abs() < best.1.abs()) {
                best = (e, w);
            }
        }
        pts.push((threshold_at(&imp0, fmr), best.1));
    }
    // Least squares ω = β·t - α.
    let n = pts.len() as f64;
    let (mt, mw) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let stt: f64 = pts.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let beta = if stt > 0.0 { pts.iter().map(|p| (p.0 - mt) * (p.1 - mw)).sum::<f64>() / stt } else { 0.0 };
    Ok((beta * mt - mw, beta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn score_penalizes_low_quality_only_below_the_line() {
        // QMagFace's MagFace-100 values.
        let (a, b) = (0.077428, 0.125926);
        assert_eq!(score(0.9, 20.0, 30.0, a, b), 0.9);
        let low = score(0.2, 20.0, 30.0, a, b);
        assert!((low - (0.2 + (b * 0.2 - a) * 20.0)).abs() < 1e-12);
        assert!(low < 0.2);
    }

    #[test]
    fn fit_finds_a_penalty_when_low_quality_genuine_pairs_score_low() {
        // Impostors: cosine ~ N(0, 0.1) at any quality. Genuine: low quality -> low cosine, high -> high.
        // A negative ω at low thresholds lifts low-quality genuine pairs above high-quality impostors.
        let mut rng = Rng::new(3);
        let (mut cos, mut q, mut gen) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..6000 {
            let lowq = k % 2 == 0;
            cos.push(0.1 * rng.normal());
            q.push(if lowq { 5.0 } else { 30.0 } + rng.uniform());
            gen.push(false);
        }
        for k in 0..2000 {
            let lowq = k % 2 == 0;
            cos.push(if lowq { 0.3 + 0.05 * rng.normal() } else { 0.7 + 0.1 * rng.normal() });
            q.push(if lowq { 5.0 } else { 30.0 } + rng.uniform());
            gen.push(true);
        }
        let (alpha, beta) = fit(&cos, &q, &gen).unwrap();
        let w_at = |t: f64| (beta * t - alpha).min(0.0);
        assert!(w_at(0.3) < 0.0, "alpha {alpha}, beta {beta}");
        assert!(fit(&cos[..3], &q[..3], &gen[..3]).is_err());
    }
}
