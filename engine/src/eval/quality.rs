//! Feature magnitude as face-image quality: the magnitude histogram, the error-versus-reject curve, and
//! the rank correlation between magnitude and a known degradation.
//!
//! Error-versus-reject (as in Grother & Tabassi's ERC, ISO/IEC 29794-1): the decision threshold is
//! fixed once, on all pairs, where the false-match rate is at most `fmr`. Then, for each reject
//! fraction `r`, the `floor(r * genuine)` genuine pairs of lowest pair quality (`min` of the two
//! magnitudes; ties broken by pair order) are set aside and the FNMR of the remaining genuine pairs is
//! measured at that same threshold. A quality measure that predicts recognition failures makes the curve
//! fall quickly; one that carries no information leaves it flat.

use super::roc::{check_scores, Roc};
use crate::{Error, Result};

/// L2 norm of each row of `dim` values.
pub fn row_norms(emb: &[f32], dim: usize) -> Result<Vec<f64>> {
    if dim == 0 || !emb.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!("magnitudes: {} values do not form rows of {dim}", emb.len())));
    }
    Ok(emb.chunks(dim).map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()).collect())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `counts.len() + 1` ascending bin edges; the last bin includes its right edge.
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

/// Equal-width bins spanning the values' range (a unit-wide range when all values are equal).
pub fn histogram(values: &[f64], bins: usize) -> Result<Histogram> {
    if bins == 0 || values.is_empty() {
        return Err(Error::Invalid(format!("histogram of {} values in {bins} bins", values.len())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("histogram: value {i} is {}", values[i])));
    }
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if hi == lo {
        hi = lo + 1.0;
    }
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| if i == bins { hi } else { lo + i as f64 * width }).collect();
    let mut counts = vec![0; bins];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    Ok(Histogram { edges, counts })
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErcPoint {
    pub reject: f64,
    pub kept_genuine: usize,
    pub fnmr: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorVersusReject {
    pub fmr: f64,
    /// Accept `score >= threshold`.
    pub threshold: f64,
    pub points: Vec<ErcPoint>,
}

/// Reject fractions 0, step, 2*step, ... up to `max` inclusive.
pub fn reject_fractions(step: f64, max: f64) -> Vec<f64> {
    let n = (max / step + 1e-9).floor() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// The ERC of similarity `scores` with pair qualities `pair_quality` (see the module note).
pub fn error_versus_reject(
    scores: &[f64],
    pair_quality: &[f64],
    issame: &[bool],
    fmr: f64,
    fractions: &[f64],
) -> Result<ErrorVersusReject> {
    check_scores(scores, issame, "error-versus-reject")?;
    check_scores(pair_quality, issame, "error-versus-reject qualities")?;
    if let Some(r) = fractions.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(Error::Invalid(format!("error-versus-reject: reject fraction {r} is not in [0, 1)")));
    }
    let roc = Roc::new(scores, issame)?;
    let threshold = roc.best_point_at_far(fmr).threshold;
    let mut genuine: Vec<usize> = (0..scores.len()).filter(|&i| issame[i]).collect();
    genuine.sort_by(|&a, &b| pair_quality[a].total_cmp(&pair_quality[b]).then(a.cmp(&b)));
    let points = fractions
        .iter()
        .map(|&reject| {
            let drop = (reject * genuine.len() as f64).floor() as usize;
            let kept = &genuine[drop..];
            let misses = kept.iter().filter(|&&i| scores[i] < threshold).count();
            ErcPoint { reject, kept_genuine: kept.len(), fnmr: misses as f64 / kept.len() as f64 }
        })
        .collect();
    Ok(ErrorVersusReject { fmr, threshold, points })
}

/// Ranks 1..n, tied values sharing the mean of their ranks.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&k| ranks[k] = r);
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation with ties (the Pearson correlation of average ranks).
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return Err(Error::Shape(format!("Spearman correlation of {} and {} values", a.len(), b.len())));
    }
    if let Some(i) = a.iter().chain(b).position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("Spearman correlation: value {i} is not finite")));
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(Error::Invalid("Spearman correlation: one side is constant".into()));
    }
    Ok(sab / (saa * sbb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn spearman_with_ties_matches_scipy() {
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.9486832980505138).abs() < 1e-15, "{r}");
        assert_eq!(average_ranks(&[5.0, 1.0, 5.0, 5.0]), vec![3.0, 1.0, 3.0, 3.0]);
        // Monotone but nonlinear: exactly -1.
        let a: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| (-x).exp()).collect();
        assert!((spearman(&a, &b).unwrap() + 1.0).abs() < 1e-12);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let h = histogram(&[0.0, 0.5, 1.0, 2.0, 4.0], 4).unwrap();
        assert_eq!(h.edges, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(h.counts, vec![2, 1, 1, 1]);
        let flat = histogram(&[3.0, 3.0], 2).unwrap();
        assert_eq!(flat.counts.iter().sum::<usize>(), 2);
        assert!(histogram(&[f64::NAN], 2).is_err());
    }

    #[test]
    fn row_norms_of_rows() {
        assert_eq!(row_norms(&[3.0, 4.0, 0.0, 0.0], 2).unwrap(), vec![5.0, 0.0]);
        assert!(row_norms(&[1.0; 3], 2).is_err());
    }

    /// Genuine scores fall with low quality; `informative = false` draws quality independently.
    fn pairs(n: usize, informative: bool, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let (mut s, mut q, mut y) = (vec![], vec![], vec![]);
        for i in 0..n {
            let same = i % 2 == 0;
            let quality = rng.uniform();
            let score = if same { 0.2 + 0.6 * quality + 0.1 * rng.normal() } else { 0.1 * rng.normal() };
            s.push(score);
            q.push(if informative { quality } else { rng.uniform() });
            y.push(same);
        }
        (s, q, y)
    }

    #[test]
    fn rejecting_low_quality_lowers_fnmr_only_when_quality_is_informative() {
        let fr = reject_fractions(0.1, 0.5);
        assert_eq!(fr.len(), 6);
        let (s, q, y) = pairs(20_000, true, 1);
        let erc = error_versus_reject(&s, &q, &y, 1e-3, &fr).unwrap();
        let f: Vec<f64> = erc.points.iter().map(|p| p.fnmr).collect();
        assert!(f[0] > 0.1, "{f:?}");
        assert!(f.windows(2).all(|w| w[1] <= w[0]), "{f:?}");
        assert!(f[5] < 0.1 * f[0], "{f:?}");
        assert_eq!(erc.points[5].kept_genuine, 5_000);

        let (s, q, y) = pairs(20_000, false, 1);
        let erc = error_versus_reject(&s, &q, &y, 1e-3, &fr).unwrap();
        let f: Vec<f64> = erc.points.iter().map(|p| p.fnmr).collect();
        assert!((f[5] - f[0]).abs() < 0.05, "{f:?}");
    }

    #[test]
    fn erc_rejects_bad_fractions() {
        let (s, q, y) = pairs(100, true, 2);
        assert!(error_versus_reject(&s, &q, &y, 1e-2, &[1.0]).is_err());
        assert!(error_versus_reject(&s, &q[..50], &y, 1e-2, &[0.0]).is_err());
    }
}
