//! insightface's verification protocol (`recognition/arcface_torch/eval/verification.py`), re-derived:
//! L2-normalized embeddings (image + flipped image summed first), squared L2 distance, "same" when the
//! distance is below a threshold; thresholds 0..4 in steps of 0.01; 10 contiguous folds (scikit-learn's
//! unshuffled KFold); the threshold with the best accuracy on nine folds (first one on ties) is scored
//! on the tenth; mean and population std of the ten accuracies. VAL at FAR 1e-3 on thresholds in steps
//! of 0.001, each fold's threshold read off its nine training folds by linear interpolation (as scipy
//! up to 1.8 interpolates; newer scipy raises on the repeated FAR values insightface feeds it).
//!
//! Beyond insightface: the best threshold on all pairs, the exact ROC with its AUC, TAR at FAR, and any
//! similarity score (cosine, the QMagFace score) instead of the distance.

use super::folds::{fold_of_each, kfold_ranges};
use super::roc::{check_scores, Roc, TarAtFar, DEFAULT_FARS};
use crate::{Error, Result};
use std::ops::Range;

pub const FOLDS: usize = 10;
pub const VAL_FAR: f64 = 1e-3;

/// What the reported thresholds mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Squared L2 distance of normalized embeddings; "same" when `distance < threshold`.
    DistanceBelow,
    /// A similarity score; "same" when `score > threshold`.
    ScoreAbove,
}

/// insightface's accuracy thresholds: `np.arange(0, 4, 0.01)`, whose values are exactly `i * 0.01`.
pub fn insightface_grid() -> Vec<f64> {
    (0..400).map(|i| i as f64 * 0.01).collect()
}

/// insightface's VAL thresholds: `np.arange(0, 4, 0.001)`.
pub fn insightface_val_grid() -> Vec<f64> {
    (0..4000).map(|i| i as f64 * 0.001).collect()
}

/// Image embeddings plus flipped-image embeddings, in f64 as insightface sums them.
pub fn sum_with_flipped(plain: &[f32], flipped: &[f32]) -> Result<Vec<f64>> {
    if plain.len() != flipped.len() {
        return Err(Error::Shape(format!(
            "flip test: {} values for the images but {} for their flips",
            plain.len(),
            flipped.len()
        )));
    }
    Ok(plain.iter().zip(flipped).map(|(&a, &b)| a as f64 + b as f64).collect())
}

/// Rows divided by their L2 norm (a zero row stays zero).
pub fn l2_normalize(emb: &[f64], dim: usize) -> Result<Vec<f64>> {
    check_rows(emb, dim, "embeddings")?;
    let mut out = emb.to_vec();
    for row in out.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(out)
}

fn check_rows(emb: &[f64], dim: usize, what: &str) -> Result<()> {
    if dim == 0 || !emb.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!("{what}: {} values do not form rows of {dim}", emb.len())));
    }
    if let Some(i) = emb.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("{what}: value {} (row {}) is {}", i, i / dim, emb[i])));
    }
    Ok(())
}

/// Squared L2 distance of each pair `(2i, 2i+1)` of normalized rows, as insightface pairs them.
pub fn pair_distances(emb: &[f64], dim: usize) -> Result<Vec<f64>> {
    let e = l2_normalize(emb, dim)?;
    let rows = e.len() / dim;
    if !rows.is_multiple_of(2) {
        return Err(Error::Shape(format!("pairs: {rows} embeddings is an odd number")));
    }
    Ok(e.chunks(2 * dim)
        .map(|p| p[..dim].iter().zip(&p[dim..]).map(|(a, b)| (a - b) * (a - b)).sum())
        .collect())
}

/// Cosine similarity of each pair `(2i, 2i+1)`.
pub fn pair_cosines(emb: &[f64], dim: usize) -> Result<Vec<f64>> {
    let e = l2_normalize(emb, dim)?;
    if !(e.len() / dim).is_multiple_of(2) {
        return Err(Error::Shape(format!("pairs: {} embeddings is an odd number", e.len() / dim)));
    }
    Ok(e.chunks(2 * dim).map(|p| p[..dim].iter().zip(&p[dim..]).map(|(a, b)| a * b).sum()).collect())
}

/// VAL (true-accept rate) at a target FAR, insightface style.
#[derive(Debug, Clone, PartialEq)]
pub struct ValAtFar {
    pub far_target: f64,
    pub val_mean: f64,
    pub val_std: f64,
    pub far_mean: f64,
    /// The threshold each fold used (0 where the training folds never reach the target FAR).
    pub fold_thresholds: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerificationReport {
    pub decision: Decision,
    pub n_pairs: usize,
    pub fold_accuracies: Vec<f64>,
    /// Threshold chosen on the other nine folds, per fold.
    pub fold_thresholds: Vec<f64>,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    /// The threshold with the best accuracy on all pairs, and that accuracy (optimistic: no held-out fold).
    pub best_threshold: f64,
    pub best_accuracy: f64,
    /// `None` when a fold has no genuine or no impostor pair (insightface divides by zero there).
    pub val: Option<ValAtFar>,
    /// The threshold grid and the fold-averaged TPR/FPR on it (insightface's `tpr, fpr`).
    pub grid: Vec<f64>,
    pub grid_tpr: Vec<f64>,
    pub grid_fpr: Vec<f64>,
    /// Trapezoid area under the fold-averaged grid curve (the older insightface `metrics.auc(fpr, tpr)`).
    pub grid_auc: f64,
    /// The exact ROC over all pairs (scores; for distances the score is `-distance`), its AUC, TAR at FAR.
    pub roc: Roc,
    pub auc: f64,
    pub tar_at_far: Vec<TarAtFar>,
}

impl VerificationReport {
    /// One line in insightface's log style plus what it does not print.
    pub fn summary(&self, set: &str) -> String {
        let mut line = format!(
            "[{set}] Accuracy-Flip: {:.5}+-{:.5}  best threshold {:.4} ({:.5})  AUC {:.5}",
            self.accuracy_mean, self.accuracy_std, self.best_threshold, self.best_accuracy, self.auc
        );
        if let Some(v) = &self.val {
            line += &format!(
                "  VAL@FAR={:.0e}: {:.5}+-{:.5} (FAR {:.5})",
                v.far_target, v.val_mean, v.val_std, v.far_mean
            );
        }
        for t in &self.tar_at_far {
            if let Some(tar) = t.tar {
                line += &format!("  TAR@{:.0e}: {:.5}", t.far, tar);
            }
        }
        line
    }
}

/// The full insightface protocol on embeddings: rows `2i` and `2i+1` form pair `i`.
pub fn verify_embeddings(emb: &[f64], dim: usize, issame: &[bool]) -> Result<VerificationReport> {
    let dist = pair_distances(emb, dim)?;
    verify_distances(&dist, issame)
}

/// The protocol on precomputed squared L2 distances of normalized embeddings.
pub fn verify_distances(dist: &[f64], issame: &[bool]) -> Result<VerificationReport> {
    check_scores(dist, issame, "verification distances")?;
    evaluate(dist, issame, &insightface_grid(), &insightface_val_grid(), Decision::DistanceBelow)
}

/// The protocol on a similarity score (cosine, QMagFace, ...). The thresholds are the midpoints between
/// consecutive distinct scores plus one below and one above them all, so any split of the scores can be
/// chosen; they are reported in score units ("same" when `score > threshold`).
pub fn verify_scores(scores: &[f64], issame: &[bool]) -> Result<VerificationReport> {
    check_scores(scores, issame, "verification scores")?;
    kfold_ranges(scores.len(), FOLDS)?;
    let dist: Vec<f64> = scores.iter().map(|s| -s).collect();
    let grid = observed_grid(&dist);
    let mut r = evaluate(&dist, issame, &grid, &grid, Decision::ScoreAbove)?;
    let flip = |v: &mut Vec<f64>| v.iter_mut().for_each(|t| *t = -*t);
    flip(&mut r.fold_thresholds);
    flip(&mut r.grid);
    r.best_threshold = -r.best_threshold;
    if let Some(v) = r.val.as_mut() {
        flip(&mut v.fold_thresholds);
    }
    Ok(r)
}

/// Most thresholds an observed grid keeps; beyond this it keeps every k-th, to bound the per-fold
/// counts (folds x thresholds) on very large pair lists.
const MAX_OBSERVED_GRID: usize = 20_001;

/// Ascending thresholds separating every pair of distinct values (thinned past `MAX_OBSERVED_GRID`).
fn observed_grid(dist: &[f64]) -> Vec<f64> {
    let mut u = dist.to_vec();
    u.sort_by(f64::total_cmp);
    u.dedup();
    if u.is_empty() {
        return vec![];
    }
    let mut grid = Vec::with_capacity(u.len() + 1);
    grid.push(u[0] - 1.0);
    for w in u.windows(2) {
        let mid = w[0] + (w[1] - w[0]) / 2.0;
        grid.push(if mid > w[0] { mid } else { w[1] });
    }
    grid.push(u[u.len() - 1] + 1.0);
    if grid.len() > MAX_OBSERVED_GRID {
        let step = grid.len().div_ceil(MAX_OBSERVED_GRID - 1);
        let last = grid[grid.len() - 1];
        grid = grid.into_iter().step_by(step).collect();
        grid.push(last);
    }
    grid
}

/// Per-fold counts of accepted genuine (`tp`) and impostor (`fp`) pairs at each threshold of an
/// ascending grid, where a pair is accepted when `dist < threshold`.
struct FoldCounts {
    tp: Vec<Vec<usize>>,
    fp: Vec<Vec<usize>>,
    pos: Vec<usize>,
    neg: Vec<usize>,
    size: Vec<usize>,
}

fn fold_counts(dist: &[f64], issame: &[bool], folds: &[Range<usize>], grid: &[f64]) -> FoldCounts {
    let k = folds.len();
    let fold = fold_of_each(dist.len(), folds);
    let mut order: Vec<usize> = (0..dist.len()).collect();
    order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
    let mut tp = vec![vec![0; grid.len()]; k];
    let mut fp = vec![vec![0; grid.len()]; k];
    let (mut run_tp, mut run_fp) = (vec![0; k], vec![0; k]);
    let mut next = 0;
    for (j, &t) in grid.iter().enumerate() {
        while next < order.len() && dist[order[next]] < t {
            let i = order[next];
            if issame[i] {
                run_tp[fold[i]] += 1;
            } else {
                run_fp[fold[i]] += 1;
            }
            next += 1;
        }
        for f in 0..k {
            tp[f][j] = run_tp[f];
            fp[f][j] = run_fp[f];
        }
    }
    let mut pos = vec![0; k];
    let mut size = vec![0; k];
    for i in 0..dist.len() {
        size[fold[i]] += 1;
        pos[fold[i]] += usize::from(issame[i]);
    }
    let neg = (0..k).map(|f| size[f] - pos[f]).collect();
    FoldCounts { tp, fp, pos, neg, size }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Index of the first maximum of `score(j)` over the grid.
fn first_argmax(len: usize, score: impl Fn(usize) -> usize) -> usize {
    let mut best = 0;
    for j in 1..len {
        if score(j) > score(best) {
            best = j;
        }
    }
    best
}

fn evaluate(
    dist: &[f64],
    issame: &[bool],
    grid: &[f64],
    val_grid: &[f64],
    decision: Decision,
) -> Result<VerificationReport> {
    let n = dist.len();
    let folds = kfold_ranges(n, FOLDS)?;
    let c = fold_counts(dist, issame, &folds, grid);
    let k = folds.len();
    let total = |v: &[Vec<usize>], j: usize| v.iter().map(|f| f[j]).sum::<usize>();
    let all_neg = c.neg.iter().sum::<usize>();

    let mut fold_accuracies = Vec::with_capacity(k);
    let mut fold_thresholds = Vec::with_capacity(k);
    let mut grid_tpr = vec![0.0; grid.len()];
    let mut grid_fpr = vec![0.0; grid.len()];
    for f in 0..k {
        // Correct decisions on the nine training folds: accepted genuine + rejected impostor pairs.
        let train_neg = all_neg - c.neg[f];
        let best = first_argmax(grid.len(), |j| {
            let tp = total(&c.tp, j) - c.tp[f][j];
            let fp = total(&c.fp, j) - c.fp[f][j];
            tp + (train_neg - fp)
        });
        fold_thresholds.push(grid[best]);
        fold_accuracies.push(ratio(c.tp[f][best] + c.neg[f] - c.fp[f][best], c.size[f]));
        for j in 0..grid.len() {
            grid_tpr[j] += ratio(c.tp[f][j], c.pos[f]);
            grid_fpr[j] += ratio(c.fp[f][j], c.neg[f]);
        }
    }
    grid_tpr.iter_mut().chain(grid_fpr.iter_mut()).for_each(|v| *v /= k as f64);
    let grid_auc =
        grid_fpr.windows(2).zip(grid_tpr.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0).sum();
    let (accuracy_mean, accuracy_std) = mean_std(&fold_accuracies);

    let best = first_argmax(grid.len(), |j| total(&c.tp, j) + all_neg - total(&c.fp, j));
    let best_accuracy = ratio(total(&c.tp, best) + all_neg - total(&c.fp, best), n);

    let val = if c.pos.iter().chain(&c.neg).all(|&x| x > 0) {
        Some(val_at_far(dist, issame, &folds, val_grid, VAL_FAR))
    } else {
        None
    };

    let scores: Vec<f64> = dist.iter().map(|d| -d).collect();
    let roc = Roc::new(&scores, issame)?;
    let auc = roc.auc();
    let mut tar_at_far = roc.tar_at_far(&DEFAULT_FARS);
    if decision == Decision::DistanceBelow {
        // Report distance thresholds as distances (accept when distance <= threshold).
        tar_at_far.iter_mut().for_each(|t| t.threshold = t.threshold.map(|s| -s));
    }
    Ok(VerificationReport {
        decision,
        n_pairs: n,
        fold_accuracies,
        fold_thresholds,
        accuracy_mean,
        accuracy_std,
        best_threshold: grid[best],
        best_accuracy,
        val,
        grid: grid.to_vec(),
        grid_tpr,
        grid_fpr,
        grid_auc,
        roc,
        auc,
        tar_at_far,
    })
}

/// insightface's `calculate_val`: on each fold, the threshold whose training FAR equals the target,
/// interpolated on the grid; VAL and FAR of that threshold on the held-out fold.
fn val_at_far(
    dist: &[f64],
    issame: &[bool],
    folds: &[Range<usize>],
    grid: &[f64],
    far_target: f64,
) -> ValAtFar {
    let c = fold_counts(dist, issame, folds, grid);
    let all_neg: usize = c.neg.iter().sum();
    let (mut vals, mut fars, mut thresholds) = (vec![], vec![], vec![]);
    for (f, range) in folds.iter().enumerate() {
        let train_neg = all_neg - c.neg[f];
        let far_train: Vec<f64> = (0..grid.len())
            .map(|j| {
                let fp: usize = (0..folds.len()).filter(|&g| g != f).map(|g| c.fp[g][j]).sum();
                fp as f64 / train_neg as f64
            })
            .collect();
        let max_far = far_train.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let t = if max_far >= far_target { slinear_at(&far_train, grid, far_target) } else { 0.0 };
        let (mut ta, mut fa) = (0, 0);
        for i in range.clone() {
            if dist[i] < t {
                if issame[i] {
                    ta += 1;
                } else {
                    fa += 1;
                }
            }
        }
        vals.push(ta as f64 / c.pos[f] as f64);
        fars.push(fa as f64 / c.neg[f] as f64);
        thresholds.push(t);
    }
    let (val_mean, val_std) = mean_std(&vals);
    let (far_mean, _) = mean_std(&fars);
    ValAtFar { far_target, val_mean, val_std, far_mean, fold_thresholds: thresholds }
}

/// What scipy (<= 1.8, the versions insightface's `calculate_val` runs on; later ones reject repeated x)
/// computes for `interp1d(x, y, kind='slinear')(x0)`: a degree-1 B-spline with knots
/// `[x0, x.., x_last]`, evaluated on the last knot interval starting at or below `x0`. `x` must be
/// non-decreasing (FAR grows with the threshold) with `x[0] <= x0 <= x[last]`, as the caller ensures.
/// The arithmetic follows scipy's de Boor step so the thresholds agree to the bit.
fn slinear_at(x: &[f64], y: &[f64], x0: f64) -> f64 {
    let n = x.len();
    debug_assert!(n >= 2 && x[0] <= x0 && x0 <= x[n - 1]);
    // Knot t[l] is x[l-1]; find the interval l in [1, n-1] with t[l] <= x0 < t[l+1], capped at n-1.
    let mut l = 2;
    while l != n && x0 >= x[l - 1] {
        l += 1;
    }
    let ell = l - 1;
    let (xa, xb) = (x[ell - 1], x[ell]);
    let (h0, h1) = if xb == xa {
        (0.0, 0.0)
    } else {
        let w = 1.0 / (xb - xa);
        (w * (xb - x0), w * (x0 - xa))
    };
    0.0 + y[ell - 1] * h0 + y[ell] * h1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Pairs of unit vectors: genuine pairs share a direction up to noise.
    fn synthetic(n: usize, dim: usize, noise: f64, seed: u64) -> (Vec<f64>, Vec<bool>) {
        let mut rng = Rng::new(seed);
        let mut emb = Vec::with_capacity(2 * n * dim);
        let mut issame = Vec::with_capacity(n);
        for i in 0..n {
            let same = (i / 7) % 2 == 0;
            let a: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
            let b: Vec<f64> = if same {
                a.iter().map(|v| v + noise * rng.normal()).collect()
            } else {
                (0..dim).map(|_| rng.normal()).collect()
            };
            emb.extend(a);
            emb.extend(b);
            issame.push(same);
        }
        (emb, issame)
    }

    /// insightface's loops written out literally (O(folds x thresholds x pairs)), to check the sweep.
    fn literal_kfold(dist: &[f64], issame: &[bool], grid: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let folds = kfold_ranges(dist.len(), FOLDS).unwrap();
        let acc = |t: f64, idx: &[usize]| {
            let ok = idx.iter().filter(|&&i| (dist[i] < t) == issame[i]).count();
            ok as f64 / idx.len() as f64
        };
        let (mut accs, mut ths) = (vec![], vec![]);
        for r in &folds {
            let train: Vec<usize> = (0..dist.len()).filter(|i| !r.contains(i)).collect();
            let test: Vec<usize> = r.clone().collect();
            let mut best = 0;
            for j in 0..grid.len() {
                if acc(grid[j], &train) > acc(grid[best], &train) {
                    best = j;
                }
            }
            ths.push(grid[best]);
            accs.push(acc(grid[best], &test));
        }
        (accs, ths)
    }

    #[test]
    fn sweep_matches_the_literal_protocol() {
        let (emb, issame) = synthetic(503, 6, 0.9, 1);
        let dist = pair_distances(&emb, 6).unwrap();
        let r = verify_distances(&dist, &issame).unwrap();
        let (accs, ths) = literal_kfold(&dist, &issame, &insightface_grid());
        assert_eq!(r.fold_accuracies, accs);
        assert_eq!(r.fold_thresholds, ths);
        assert!(r.accuracy_mean > 0.7 && r.accuracy_mean < 1.0, "{}", r.accuracy_mean);
        let (m, s) = mean_std(&accs);
        assert_eq!((r.accuracy_mean, r.accuracy_std), (m, s));
    }

    #[test]
    fn separable_pairs_score_perfectly() {
        let (emb, issame) = synthetic(200, 8, 0.05, 2);
        let r = verify_embeddings(&emb, 8, &issame).unwrap();
        assert_eq!(r.accuracy_mean, 1.0);
        assert_eq!(r.accuracy_std, 0.0);
        assert_eq!(r.auc, 1.0);
        assert_eq!(r.best_accuracy, 1.0);
        let line = r.summary("toy");
        assert!(line.starts_with("[toy] Accuracy-Flip: 1.00000+-0.00000"), "{line}");
        let v = r.val.unwrap();
        assert_eq!(v.val_mean, 1.0);
        // The threshold is interpolated into the gap before the first training impostor, so a held-out
        // impostor may slip in: FAR stays small, not zero.
        assert!(v.far_mean < 0.02, "{}", v.far_mean);
    }

    #[test]
    fn distance_and_cosine_agree_on_auc_and_best_accuracy() {
        let (emb, issame) = synthetic(400, 5, 1.2, 3);
        let d = verify_embeddings(&emb, 5, &issame).unwrap();
        let cos = pair_cosines(&emb, 5).unwrap();
        let s = verify_scores(&cos, &issame).unwrap();
        assert!((d.auc - s.auc).abs() < 1e-9, "{} vs {}", d.auc, s.auc);
        // The observed grid can split anywhere, so it fits at least as well as the 0.01 grid.
        assert!(s.best_accuracy >= d.best_accuracy);
        assert_eq!(s.decision, Decision::ScoreAbove);
        // Thresholds in score units: applying them reproduces the best accuracy.
        let ok = cos.iter().zip(&issame).filter(|(c, &y)| (**c > s.best_threshold) == y).count();
        assert_eq!(ok as f64 / cos.len() as f64, s.best_accuracy);
    }

    #[test]
    fn observed_grid_is_thinned_but_keeps_its_ends() {
        let d: Vec<f64> = (0..50_000).map(|i| i as f64).collect();
        let g = observed_grid(&d);
        assert!(g.len() <= MAX_OBSERVED_GRID + 1, "{}", g.len());
        assert_eq!((g[0], g[g.len() - 1]), (-1.0, 50_000.0));
        assert!(g.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(observed_grid(&[2.0, 1.0, 2.0]), vec![0.0, 1.5, 3.0]);
    }

    #[test]
    fn slinear_interpolates_within_the_last_interval_below() {
        let x = [0.0, 0.0, 0.0, 0.5, 1.0, 1.0];
        let y = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        // 0.25 lies in [x2, x3] = [0, 0.5]: halfway from y2 to y3.
        assert_eq!(slinear_at(&x, &y, 0.25), 2.5);
        // Exactly on a knot: its value at the right end of the repeated run.
        assert_eq!(slinear_at(&x, &y, 0.5), 3.0);
        assert_eq!(slinear_at(&x, &y, 0.0), 2.0);
        // At the top the interval [x4, x5] has zero width: scipy's de Boor step gives 0.
        assert_eq!(slinear_at(&x, &y, 1.0), 0.0);
    }

    #[test]
    fn flip_sum_and_bad_input() {
        let s = sum_with_flipped(&[1.0, 2.0], &[0.5, 0.25]).unwrap();
        assert_eq!(s, vec![1.5, 2.25]);
        assert!(sum_with_flipped(&[1.0], &[1.0, 2.0]).is_err());
        assert!(pair_distances(&[1.0, 0.0, 0.0], 2).is_err());
        assert!(pair_distances(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], 2).is_err(), "odd number of rows");
        assert!(verify_distances(&[0.1; 20], &[true; 19]).is_err());
        assert!(verify_distances(&[0.1; 5], &[true; 5]).is_err(), "fewer pairs than folds");
        assert!(l2_normalize(&[f64::NAN, 1.0], 2).is_err());
        assert!(verify_scores(&[], &[]).is_err());
    }
}
