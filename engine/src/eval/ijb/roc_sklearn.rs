//! The ROC exactly as scikit-learn's `roc_curve(y_true, y_score)` builds it with its defaults, its `auc`,
//! and TAR at FAR read off it the way `eval_ijbc.py` reads it.
//!
//! scikit-learn (`sklearn/metrics/_ranking.py`): scores sorted in decreasing order; one point per distinct
//! score value, holding the cumulative genuine (tps) and impostor (fps) counts down to that value; with
//! `drop_intermediate=True` a point is dropped when the second difference of both fps and tps is zero
//! there (it lies on a straight segment between its neighbours; the first and last points stay); then the
//! point (0, 0) with threshold +inf is put first, and fpr = fps / fps[-1], tpr = tps / tps[-1].
//!
//! `eval_ijbc.py` reverses fpr and tpr (`np.flipud`) and, for each target FAR, takes the point with the
//! smallest `abs(fpr - far)`, ties going to the first in that reversed order
//! (`min(zip(abs(fpr - far), range(len(fpr))))`): among equal FPRs the one with the largest TPR. So the
//! chosen point may lie above the target FAR, and a FAR below 1 / impostors reads the TPR at FPR 0.

use crate::{Error, Result};
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq)]
pub struct SklearnRoc {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// Accept `score >= threshold`; the first is +inf.
    pub thresholds: Vec<f64>,
    pub n_pos: usize,
    pub n_neg: usize,
}

/// One row of the TAR table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TarRead {
    pub far: f64,
    pub tar: f64,
    /// The FPR of the point read (which may differ from `far`).
    pub fpr: f64,
    pub threshold: f64,
}

/// `roc_curve` with `drop_intermediate=True`. Scores must be finite; both classes must be present.
pub fn roc_curve(scores: &[f64], same: &[bool]) -> Result<SklearnRoc> {
    if scores.len() != same.len() {
        return Err(Error::Shape(format!("ROC: {} scores but {} labels", scores.len(), same.len())));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Invalid(format!("ROC: score of pair {} is {}", i + 1, scores[i])));
    }
    let n_pos = same.iter().filter(|&&s| s).count();
    let n_neg = same.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::Invalid(format!(
            "ROC needs genuine and impostor pairs, got {n_pos} genuine and {n_neg} impostor"
        )));
    }
    let mut sorted: Vec<(f64, bool)> = scores.iter().copied().zip(same.iter().copied()).collect();
    sorted.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    // One point per distinct value (== groups -0.0 with 0.0, as np.diff does).
    let (mut fps, mut tps, mut th) = (vec![], vec![], vec![]);
    let (mut tp, mut fp) = (0u64, 0u64);
    for (k, &(s, y)) in sorted.iter().enumerate() {
        if y {
            tp += 1;
        } else {
            fp += 1;
        }
        if k + 1 == sorted.len() || sorted[k + 1].0 != s {
            fps.push(fp);
            tps.push(tp);
            th.push(s);
        }
    }
    let keep: Vec<usize> = if fps.len() > 2 {
        let second = |v: &[u64], i: usize| v[i - 1] as i128 - 2 * v[i] as i128 + v[i + 1] as i128;
        (0..fps.len())
            .filter(|&i| i == 0 || i + 1 == fps.len() || second(&fps, i) != 0 || second(&tps, i) != 0)
            .collect()
    } else {
        (0..fps.len()).collect()
    };
    let (nn, np_) = (n_neg as f64, n_pos as f64);
    let mut roc =
        SklearnRoc { fpr: vec![0.0], tpr: vec![0.0], thresholds: vec![f64::INFINITY], n_pos, n_neg };
    for i in keep {
        roc.fpr.push(fps[i] as f64 / nn);
        roc.tpr.push(tps[i] as f64 / np_);
        roc.thresholds.push(th[i]);
    }
    Ok(roc)
}

impl SklearnRoc {
    /// `sklearn.metrics.auc(fpr, tpr)`: the trapezoid rule over the kept points.
    pub fn auc(&self) -> f64 {
        self.fpr.windows(2).zip(self.tpr.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0).sum()
    }

    /// The point `eval_ijbc.py` reports for `far` (see the module note).
    pub fn tar_at_far(&self, far: f64) -> TarRead {
        // Reversed index k = n-1-j; the smallest (|fpr - far|, k) is the largest j among the closest.
        let mut best = self.fpr.len() - 1;
        let mut best_d = (self.fpr[best] - far).abs();
        for j in (0..self.fpr.len()).rev() {
            let d = (self.fpr[j] - far).abs();
            if d < best_d {
                best = j;
                best_d = d;
            }
        }
        TarRead { far, tar: self.tpr[best], fpr: self.fpr[best], threshold: self.thresholds[best] }
    }
}

/// The FARs of `eval_ijbc.py`'s table, 1e-6 .. 1e-1 (its `10 ** -6` ... equal these literals).
pub const IJB_FARS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// A FAR as Python's `'%.0e' % far` writes it ("1e-04"), the report's key.
pub fn far_key(far: f64) -> String {
    let s = format!("{far:.0e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = if let Some(d) = e.strip_prefix('-') { ("-", d) } else { ("+", e) };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sklearn_on_a_small_case() {
        // Distinct values 0.9 (1 genuine, 0 impostor), 0.8 (2, 1), 0.3 (2, 2), 0.2 (3, 2), 0.1 (3, 3): no
        // three consecutive points are collinear, so all stay (scikit-learn 1.9 returns the same arrays).
        let s = [0.9, 0.8, 0.8, 0.3, 0.2, 0.1];
        let y = [true, true, false, false, true, false];
        let r = roc_curve(&s, &y).unwrap();
        assert_eq!(r.thresholds, vec![f64::INFINITY, 0.9, 0.8, 0.3, 0.2, 0.1]);
        assert_eq!(r.tpr, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0, 1.0]);
        assert_eq!(r.fpr, vec![0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 1.0]);
        // Mann-Whitney: genuine (0.9, 0.8, 0.2) vs impostor (0.8, 0.3, 0.1): 3 + 2.5 + 1 = 6.5 of 9.
        assert!((r.auc() - 6.5 / 9.0).abs() < 1e-15);
    }

    #[test]
    fn collinear_points_are_dropped_and_zero_is_prepended() {
        // Three impostors in a row with distinct scores: the middle point lies on a straight segment.
        let s = [0.9, 0.5, 0.4, 0.3, 0.1];
        let y = [true, false, false, false, true];
        let r = roc_curve(&s, &y).unwrap();
        assert_eq!(r.thresholds, vec![f64::INFINITY, 0.9, 0.3, 0.1]);
        assert_eq!(r.fpr, vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn tar_reading_follows_eval_ijbc() {
        // fpr after prepending: [0, 0, 0.02 (at tpr 0.5), ...]: at FAR 1e-3 the closest FPR is 0, and of
        // the two points at FPR 0 the later one (larger TPR) wins.
        let mut s = vec![];
        let mut y = vec![];
        for i in 0..50 {
            s.push(10.0 + i as f64); // 50 genuine above everything
            y.push(true);
        }
        for i in 0..50 {
            s.push(-(i as f64)); // 50 impostors
            y.push(false);
            s.push(-(i as f64) - 0.5); // 50 genuine interleaved below
            y.push(true);
        }
        let r = roc_curve(&s, &y).unwrap();
        let t = r.tar_at_far(1e-3);
        assert_eq!((t.fpr, t.tar), (0.0, 0.5));
        // FAR 1e-2 with 50 impostors: |0 - 0.01| == |0.02 - 0.01| exactly in f64; the tie goes to the
        // first in reversed order, i.e. the point at FPR 0.02.
        assert_eq!((0.02f64 - 0.01).abs(), (0.0f64 - 0.01).abs());
        let t = r.tar_at_far(1e-2);
        assert_eq!(t.fpr, 0.02);
        assert_eq!(far_key(1e-4), "1e-04");
        assert_eq!(far_key(1e-1), "1e-01");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(roc_curve(&[0.1, f64::NAN], &[true, false]).is_err());
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_err());
        assert!(roc_curve(&[0.1], &[true, false]).is_err());
    }
}
