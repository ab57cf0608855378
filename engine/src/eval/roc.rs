//! The exact ROC of a similarity score (higher means "same"), with one point per distinct score value,
//! its area, and the true-accept rate at a fixed false-accept rate.
//!
//! A point with threshold `t` accepts every pair whose score is `>= t`. The first point accepts nothing
//! (threshold +inf), the last accepts everything.

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RocPoint {
    /// Pairs with a score `>= threshold` are accepted.
    pub threshold: f64,
    /// Genuine pairs accepted.
    pub tp: usize,
    /// Impostor pairs accepted.
    pub fp: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    pub points: Vec<RocPoint>,
    pub n_pos: usize,
    pub n_neg: usize,
}

/// One row of a TAR-at-FAR table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TarAtFar {
    pub far: f64,
    /// `None` where the set has fewer than `10 / far` impostor pairs: too few to measure that rate.
    pub tar: Option<f64>,
    /// Score threshold (accept `>=`) that achieves it.
    pub threshold: Option<f64>,
}

/// FARs reported by default: 1e-6 .. 1e-1, one per decade.
pub const DEFAULT_FARS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// Checks lengths and finiteness of a score vector against its labels.
pub fn check_scores(scores: &[f64], issame: &[bool], what: &str) -> Result<()> {
    if scores.len() != issame.len() {
        return Err(Error::Shape(format!(
            "{what}: {} scores but {} same/different labels",
            scores.len(),
            issame.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::Invalid(format!("{what}: score of pair {i} is {}", scores[i])));
    }
    Ok(())
}

impl Roc {
    pub fn new(scores: &[f64], issame: &[bool]) -> Result<Roc> {
        check_scores(scores, issame, "ROC")?;
        let n_pos = issame.iter().filter(|&&s| s).count();
        let n_neg = issame.len() - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return Err(Error::Invalid(format!(
                "ROC needs genuine and impostor pairs, got {n_pos} genuine and {n_neg} impostor"
            )));
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut points = vec![RocPoint { threshold: f64::INFINITY, tp: 0, fp: 0 }];
        let (mut tp, mut fp) = (0, 0);
        let mut i = 0;
        while i < order.len() {
            let t = scores[order[i]];
            // Tied scores enter together: no threshold separates them.
            while i < order.len() && scores[order[i]] == t {
                if issame[order[i]] {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            points.push(RocPoint { threshold: t, tp, fp });
        }
        Ok(Roc { points, n_pos, n_neg })
    }

    pub fn tpr(&self, p: &RocPoint) -> f64 {
        p.tp as f64 / self.n_pos as f64
    }

    pub fn fpr(&self, p: &RocPoint) -> f64 {
        p.fp as f64 / self.n_neg as f64
    }

    /// (FPR, TPR) of every point, for plotting.
    pub fn curve(&self) -> Vec<(f64, f64)> {
        self.points.iter().map(|p| (self.fpr(p), self.tpr(p))).collect()
    }

    /// Trapezoid area under the curve; equals the probability that a genuine pair outscores an impostor
    /// pair, ties counted half.
    pub fn auc(&self) -> f64 {
        let twice: u128 = self
            .points
            .windows(2)
            .map(|w| ((w[1].fp - w[0].fp) as u128) * ((w[1].tp + w[0].tp) as u128))
            .sum();
        twice as f64 / (2.0 * self.n_pos as f64 * self.n_neg as f64)
    }

    /// The point with the highest TAR among those with FAR <= `far` (the first such point, i.e. the
    /// strictest threshold reaching that TAR).
    pub fn best_point_at_far(&self, far: f64) -> &RocPoint {
        let mut best = &self.points[0];
        for p in &self.points {
            if self.fpr(p) > far {
                break;
            }
            if p.tp > best.tp {
                best = p;
            }
        }
        best
    }

    /// TAR at each FAR, reported only where `n_neg >= 10 / far`.
    pub fn tar_at_far(&self, fars: &[f64]) -> Vec<TarAtFar> {
        fars.iter()
            .map(|&far| {
                if (self.n_neg as f64) * far < 10.0 {
                    return TarAtFar { far, tar: None, threshold: None };
                }
                let p = self.best_point_at_far(far);
                TarAtFar { far, tar: Some(self.tpr(p)), threshold: Some(p.threshold) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_group_ties_and_auc_counts_ties_half() {
        let s = [0.9, 0.8, 0.8, 0.1];
        let y = [true, true, false, false];
        let roc = Roc::new(&s, &y).unwrap();
        let pts: Vec<(usize, usize)> = roc.points.iter().map(|p| (p.tp, p.fp)).collect();
        assert_eq!(pts, vec![(0, 0), (1, 0), (2, 1), (2, 2)]);
        // Pairs (g, i): (0.9,0.8) win, (0.9,0.1) win, (0.8,0.8) tie, (0.8,0.1) win -> 3.5 / 4.
        assert!((roc.auc() - 0.875).abs() < 1e-15);
    }

    #[test]
    fn auc_matches_brute_force_mann_whitney() {
        let mut rng = crate::rng::Rng::new(5);
        let n = 300;
        let y: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let s: Vec<f64> =
            (0..n).map(|i| ((rng.normal() + if y[i] { 1.0 } else { 0.0 }) * 4.0).round() / 4.0).collect();
        let roc = Roc::new(&s, &y).unwrap();
        let mut wins = 0.0;
        let (mut np, mut nn) = (0.0, 0.0);
        for i in 0..n {
            if !y[i] {
                continue;
            }
            np += 1.0;
            for j in 0..n {
                if y[j] {
                    continue;
                }
                wins += if s[i] > s[j] {
                    1.0
                } else if s[i] == s[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
        nn += (n as f64) - np;
        assert!((roc.auc() - wins / (np * nn)).abs() < 1e-12);
    }

    #[test]
    fn tar_at_far_needs_enough_impostors_and_respects_the_rate() {
        let n = 2000;
        let y: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        // Genuine scores 1000..1999, impostor 0..999 except five impostors scoring above all genuine.
        let s: Vec<f64> = (0..n)
            .map(|i| {
                let k = (i / 2) as f64;
                if y[i] {
                    1000.0 + k
                } else if i / 2 < 5 {
                    5000.0 + k
                } else {
                    k
                }
            })
            .collect();
        let roc = Roc::new(&s, &y).unwrap();
        let t = roc.tar_at_far(&[1e-3, 1e-2, 1e-1]);
        assert_eq!(t[0].tar, None, "1000 impostors < 10 / 1e-3");
        // At FAR 1e-2 up to 10 impostors may pass: the five outliers, then every genuine pair.
        assert_eq!(t[1].tar, Some(1.0));
        assert_eq!(t[1].threshold, Some(1000.0));
        let strict = roc.best_point_at_far(0.004);
        assert_eq!((strict.tp, strict.fp), (0, 0));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Roc::new(&[0.1, f64::NAN], &[true, false]).is_err());
        assert!(Roc::new(&[0.1], &[true, false]).is_err());
        assert!(Roc::new(&[0.1, 0.2], &[true, true]).is_err());
    }
}
