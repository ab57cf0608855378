//! The QMagFace / QQCFace quality-aware comparison score (heads.md §12):
//! `score = c + ω(c)·min(q1, q2)`, `ω(c) = min(0, β·c − α)`, with `c` the cosine of the pair and `q` the
//! raw feature norms. α and β are fitted per model: for FMRs log-spaced in [1e-5, 1e-2], try a grid of
//! constant quality weights ω, keep at each FMR the ω with the lowest FNMR and its decision threshold
//! `t`, then fit the line `ω = β·t − α` by least squares.
//!
//! Where QMagFace's code differs, and why we do not follow it: it ranks `sigmoid(ω·q + c)` and fits the
//! line against the sigmoid of the threshold, while its score applies ω to the raw cosine; we fit
//! against the raw threshold, which is what the score evaluates ω at. FMRs below `1 / impostors` are
//! skipped: the set cannot measure them and they would all repeat one point of the fit.

use super::roc::{check_scores, Roc};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityWeight {
    pub alpha: f64,
    pub beta: f64,
}

impl QualityWeight {
    /// QMagFace's published values for its MagFace IR-100; they do not transfer to other models.
    pub const MAGFACE_IR100: QualityWeight = QualityWeight { alpha: 0.077428, beta: 0.125926 };

    pub fn omega(&self, cos: f64) -> f64 {
        (self.beta * cos - self.alpha).min(0.0)
    }

    pub fn score(&self, cos: f64, q1: f64, q2: f64) -> f64 {
        cos + self.omega(cos) * q1.min(q2)
    }

    /// Scores of pairs given their cosines and pair qualities `min(q1, q2)`.
    pub fn scores(&self, cos: &[f64], qmin: &[f64]) -> Result<Vec<f64>> {
        check_pairs(cos, qmin)?;
        Ok(cos.iter().zip(qmin).map(|(&c, &q)| c + self.omega(c) * q).collect())
    }
}

/// Pair qualities `min(q[2i], q[2i+1])` from per-image norms listed pair by pair.
pub fn pair_min(norms: &[f64]) -> Result<Vec<f64>> {
    if !norms.len().is_multiple_of(2) {
        return Err(Error::Shape(format!("QMagFace: {} norms do not form pairs", norms.len())));
    }
    Ok(norms.chunks(2).map(|p| p[0].min(p[1])).collect())
}

fn check_pairs(cos: &[f64], qmin: &[f64]) -> Result<()> {
    if cos.len() != qmin.len() {
        return Err(Error::Shape(format!("QMagFace: {} cosines but {} qualities", cos.len(), qmin.len())));
    }
    if let Some(i) = qmin.iter().position(|q| !q.is_finite() || *q < 0.0) {
        return Err(Error::Invalid(format!("QMagFace: quality of pair {i} is {}", qmin[i])));
    }
    Ok(())
}

/// The fit's settings; the defaults are QMagFace's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Number of constant weights tried, evenly spaced in `[-w_max, w_max]`.
    pub weights: usize,
    /// `w_max = max_ratio / max(q)`: the quality term moves a score by at most `max_ratio`.
    pub max_ratio: f64,
    pub fmrs: usize,
    pub fmr_min: f64,
    pub fmr_max: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { weights: 20, max_ratio: 0.5, fmrs: 50, fmr_min: 1e-5, fmr_max: 1e-2 }
    }
}

/// The best constant weight at one FMR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitPoint {
    pub fmr: f64,
    pub omega: f64,
    /// Score threshold (accept `>=`) reaching the lowest FNMR with FMR below `fmr`.
    pub threshold: f64,
    pub fnmr: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub weight: QualityWeight,
    pub points: Vec<FitPoint>,
}

/// `n` values evenly spaced from `a` to `b` inclusive, as `numpy.linspace`.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(|i| if i == n - 1 { b } else { a + i as f64 * step }).collect()
}

/// Lowest FNMR with FMR strictly below `fmr`, and the strictest threshold reaching it. `None` when only
/// the reject-everything point qualifies.
fn best_below(roc: &Roc, fmr: f64) -> Option<(f64, f64)> {
    let mut best = &roc.points[0];
    for p in &roc.points {
        if roc.fpr(p) >= fmr {
            break;
        }
        if p.tp > best.tp {
            best = p;
        }
    }
    best.threshold.is_finite().then(|| (1.0 - roc.tpr(best), best.threshold))
}

pub fn fit(cos: &[f64], qmin: &[f64], issame: &[bool], opts: &FitOptions) -> Result<Fit> {
    check_pairs(cos, qmin)?;
    check_scores(cos, issame, "QMagFace fit")?;
    if opts.weights < 2 || opts.fmrs < 2 || !(0.0 < opts.fmr_min && opts.fmr_min < opts.fmr_max) {
        return Err(Error::Invalid(format!("QMagFace fit options make no grid: {opts:?}")));
    }
    let max_q = qmin.iter().cloned().fold(0.0, f64::max);
    if max_q <= 0.0 {
        return Err(Error::Invalid("QMagFace fit: every pair quality is zero".into()));
    }
    let n_neg = issame.iter().filter(|&&s| !s).count();
    let fmrs: Vec<f64> = linspace(opts.fmr_min.log10(), opts.fmr_max.log10(), opts.fmrs)
        .into_iter()
        .map(|e| 10f64.powf(e))
        .filter(|&f| f * n_neg as f64 >= 1.0)
        .collect();
    let w_max = opts.max_ratio / max_q;
    let omegas = linspace(-w_max, w_max, opts.weights);

    // results[w][f] = (fnmr, threshold) of weight w at FMR f.
    let mut results = Vec::with_capacity(omegas.len());
    for &w in &omegas {
        let s: Vec<f64> = cos.iter().zip(qmin).map(|(&c, &q)| w * q + c).collect();
        let roc = Roc::new(&s, issame)?;
        results.push(fmrs.iter().map(|&f| best_below(&roc, f)).collect::<Vec<_>>());
    }
    let mut points = Vec::new();
    for (j, &fmr) in fmrs.iter().enumerate() {
        let mut best: Option<(usize, f64, f64)> = None;
        for (i, r) in results.iter().enumerate() {
            let (fnmr, t) = r[j].unwrap_or((1.0, f64::INFINITY));
            if best.is_none_or(|(_, b, _)| fnmr < b) {
                best = Some((i, fnmr, t));
            }
        }
        let (i, fnmr, threshold) = best.expect("at least two weights");
        if threshold.is_finite() {
            points.push(FitPoint { fmr, omega: omegas[i], threshold, fnmr });
        }
    }
    let (slope, intercept) = least_squares(&points)?;
    Ok(Fit { weight: QualityWeight { alpha: -intercept, beta: slope }, points })
}

/// Least-squares line `omega = slope * threshold + intercept`.
fn least_squares(points: &[FitPoint]) -> Result<(f64, f64)> {
    let n = points.len() as f64;
    let tm = points.iter().map(|p| p.threshold).sum::<f64>() / n;
    let wm = points.iter().map(|p| p.omega).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.threshold - tm).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.threshold - tm) * (p.omega - wm)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return Err(Error::Invalid(format!(
            "QMagFace fit: {} usable FMR thresholds, all equal or too few to fit a line (the set needs \
             more impostor pairs, or scores that separate at all)",
            points.len()
        )));
    }
    let slope = sxy / sxx;
    Ok((slope, wm - slope * tm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::verification::verify_scores;
    use crate::rng::Rng;

    /// A quarter of the pairs are of low quality (norms 10..15, the rest 30..40). Low-quality genuine
    /// pairs have lower and noisier cosines; impostor cosines do not depend on quality. So a middling
    /// cosine means more for a high-quality pair, which a quality-aware score can use. With
    /// `informative = false` the cosines ignore the quality.
    /// Returns (cosines, pair qualities, labels).
    fn quality_dependent(n: usize, seed: u64, informative: bool) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let (mut c, mut q, mut y) = (vec![], vec![], vec![]);
        for i in 0..n {
            let same = i % 2 == 0;
            let low = rng.uniform() < 0.25;
            let qmin = if low { 10.0 + 5.0 * rng.uniform() } else { 30.0 + 10.0 * rng.uniform() };
            let cos = if !same {
                0.1 * rng.normal()
            } else if low && informative {
                0.28 + 0.1 * rng.normal()
            } else {
                0.7 + 0.05 * rng.normal()
            };
            c.push(cos);
            q.push(qmin);
            y.push(same);
        }
        (c, q, y)
    }

    #[test]
    fn omega_is_clamped_at_zero() {
        let w = QualityWeight { alpha: 0.1, beta: 0.2 };
        assert_eq!(w.omega(0.9), 0.0);
        assert!((w.omega(0.0) + 0.1).abs() < 1e-15);
        assert_eq!(w.score(0.9, 20.0, 30.0), 0.9);
        // Low cosine: penalised by the weaker of the two qualities.
        assert!((w.score(0.25, 20.0, 30.0) - (0.25 - 0.05 * 20.0)).abs() < 1e-12);
    }

    #[test]
    fn pair_min_takes_the_weaker_image() {
        assert_eq!(pair_min(&[3.0, 2.0, 5.0, 7.0]).unwrap(), vec![2.0, 5.0]);
        assert!(pair_min(&[1.0]).is_err());
    }

    #[test]
    fn linspace_matches_numpy() {
        assert_eq!(linspace(-1.0, 1.0, 5), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn fitted_score_beats_cosine_where_quality_matters() {
        let (c, q, y) = quality_dependent(40_000, 11, true);
        let fit = fit(&c, &q, &y, &FitOptions::default()).unwrap();
        // 20k impostors: FMRs from 5e-5 up are measurable.
        assert!(fit.points.len() >= 30, "{} points", fit.points.len());
        // Quality helps at moderate cosines: the weight is negative there.
        assert!(fit.weight.omega(0.2) < 0.0, "{:?}", fit.weight);

        let (c2, q2, y2) = quality_dependent(40_000, 12, true);
        let qmag = fit.weight.scores(&c2, &q2).unwrap();
        let base = verify_scores(&c2, &y2).unwrap();
        let aware = verify_scores(&qmag, &y2).unwrap();
        let tar = |r: &crate::eval::verification::VerificationReport, i: usize| r.tar_at_far[i].tar.unwrap();
        // Rows 3 and 4 are FAR 1e-3 and 1e-2 (20k impostors >= 10 / 1e-3).
        // Measured: 0.867 vs 0.854 at 1e-3, 0.949 vs 0.918 at 1e-2, accuracy 0.975 vs 0.963.
        assert!(tar(&aware, 3) > tar(&base, 3) + 0.005, "{} vs {}", tar(&aware, 3), tar(&base, 3));
        assert!(tar(&aware, 4) > tar(&base, 4) + 0.02, "{} vs {}", tar(&aware, 4), tar(&base, 4));
        assert!(
            aware.accuracy_mean > base.accuracy_mean + 0.005,
            "{} vs {}",
            aware.accuracy_mean,
            base.accuracy_mean
        );
        assert!(aware.auc > base.auc);
    }

    #[test]
    fn uninformative_quality_costs_little() {
        let (c, q, y) = quality_dependent(20_000, 21, false);
        let fit = fit(&c, &q, &y, &FitOptions::default()).unwrap();
        let (c2, q2, y2) = quality_dependent(20_000, 22, false);
        let base = verify_scores(&c2, &y2).unwrap();
        let aware = verify_scores(&fit.weight.scores(&c2, &q2).unwrap(), &y2).unwrap();
        assert!(
            aware.accuracy_mean >= base.accuracy_mean - 0.003,
            "{} vs {}",
            aware.accuracy_mean,
            base.accuracy_mean
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(fit(&[0.1, 0.2], &[1.0], &[true, false], &FitOptions::default()).is_err());
        assert!(fit(&[0.1, 0.2], &[1.0, -1.0], &[true, false], &FitOptions::default()).is_err());
        // Ten pairs: no FMR in [1e-5, 1e-2] is measurable, so there is no line to fit.
        let c: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        let y: Vec<bool> = (0..10).map(|i| i >= 5).collect();
        assert!(fit(&c, &[1.0; 10], &y, &FitOptions::default()).is_err());
    }
}
