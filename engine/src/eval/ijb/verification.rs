//! IJB 1:1 verification: the score of a template pair is the dot product of the two L2-normalized
//! template features (`eval_ijbc.py`'s `verification`), then the ROC, its AUC and the TAR table.
//!
//! IJB-C has 15.7 M pairs over 23 k templates of 512 values (94 MB in f64): scoring them in file order
//! would fetch two random 4 KB rows per pair from memory. Pairs are instead visited grouped by tiles of
//! `TILE` x `TILE` templates, so the rows of a tile stay in cache; each score is the same dot product
//! whatever the visiting order.

use super::roc_sklearn::{roc_curve, SklearnRoc, TarRead, IJB_FARS};
use super::templates::Templates;
use crate::{Error, Result};
use rayon::prelude::*;

/// Templates per tile side (512 rows of 512 f64 = 2 MB).
const TILE: usize = 512;

/// Dot product in eight running sums (vectorizable; not numpy's summation order, which differs from
/// this only in the last bits of a score).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Row indices of each pair's templates; a template without images is an error naming the pair's line.
pub fn pair_rows(
    t: &Templates,
    t1: &[i64],
    t2: &[i64],
    lines: &[u32],
    file: &str,
) -> Result<Vec<(u32, u32)>> {
    // A dense id -> row table when the ids span a moderate range (IJB-C's: ~190 k), else binary search.
    let (lo, hi) = (t.ids.first().copied().unwrap_or(0), t.ids.last().copied().unwrap_or(0));
    let dense: Option<Vec<u32>> = (hi - lo < 50_000_000).then(|| {
        let mut d = vec![u32::MAX; (hi - lo + 1) as usize];
        t.ids.iter().enumerate().for_each(|(r, &id)| d[(id - lo) as usize] = r as u32);
        d
    });
    let row_of = |id: i64| match &dense {
        Some(d) if id >= lo && id <= hi => Some(d[(id - lo) as usize]).filter(|&r| r != u32::MAX),
        Some(_) => None,
        None => t.row_of(id).map(|r| r as u32),
    };
    t1.par_iter()
        .zip(t2.par_iter())
        .enumerate()
        .map(|(k, (&a, &b))| {
            let find = |id: i64| {
                row_of(id).ok_or_else(|| {
                    Error::Io(format!(
                        "{file}:{}: template {id} has no image in the face/template/media list",
                        lines.get(k).copied().unwrap_or(k as u32 + 1)
                    ))
                })
            };
            Ok((find(a)?, find(b)?))
        })
        .collect()
}

/// The score of every pair, in pair order.
pub fn score_pairs(t: &Templates, rows: &[(u32, u32)]) -> Vec<f64> {
    let tiles = t.ids.len().div_ceil(TILE).max(1);
    let key = |&(a, b): &(u32, u32)| (a as usize / TILE) * tiles + b as usize / TILE;
    // Counting sort of pair indices by tile.
    let mut counts = vec![0usize; tiles * tiles + 1];
    rows.iter().for_each(|p| counts[key(p) + 1] += 1);
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    let mut order = vec![0u32; rows.len()];
    for (i, p) in rows.iter().enumerate() {
        let k = key(p);
        order[counts[k]] = i as u32;
        counts[k] += 1;
    }
    let sorted: Vec<f64> = order
        .par_iter()
        .with_min_len(4096)
        .map(|&i| {
            let (a, b) = rows[i as usize];
            dot(t.row(a as usize), t.row(b as usize))
        })
        .collect();
    let mut scores = vec![0f64; rows.len()];
    for (&i, &s) in order.iter().zip(&sorted) {
        scores[i as usize] = s;
    }
    scores
}

#[derive(Debug, Clone, PartialEq)]
pub struct IjbVerification {
    pub roc: SklearnRoc,
    pub auc: f64,
    pub tar_at_far: Vec<TarRead>,
    pub n_pairs: usize,
}

/// ROC, AUC and the TAR table of scored pairs.
pub fn evaluate(scores: &[f64], same: &[bool]) -> Result<IjbVerification> {
    let roc = roc_curve(scores, same)?;
    let auc = roc.auc();
    let tar_at_far = IJB_FARS.iter().map(|&f| roc.tar_at_far(f)).collect();
    Ok(IjbVerification { roc, auc, tar_at_far, n_pairs: scores.len() })
}

impl IjbVerification {
    /// `eval_ijbc.py`'s table row: TPR in percent with two decimals, one column per FAR.
    pub fn table(&self, label: &str) -> String {
        let mut head = format!("| {:<16} |", "method");
        let mut row = format!("| {label:<16} |");
        for t in &self.tar_at_far {
            head += &format!(" {:>6} |", super::roc_sklearn::far_key(t.far));
            row += &format!(" {:>6.2} |", t.tar * 100.0);
        }
        format!("{head}\n{row}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn tiled_scores_equal_plain_dot_products() {
        let mut rng = Rng::new(4);
        let (n, dim) = (1200, 19);
        let feats: Vec<f64> = (0..n * dim).map(|_| rng.normal()).collect();
        let t = Templates { ids: (0..n as i64).collect(), feats, dim, images: vec![1; n] };
        let rows: Vec<(u32, u32)> = (0..5000)
            .map(|_| ((rng.uniform() * n as f64) as u32, (rng.uniform() * n as f64) as u32))
            .collect();
        let s = score_pairs(&t, &rows);
        for (k, &(a, b)) in rows.iter().enumerate() {
            let want: f64 = t.row(a as usize).iter().zip(t.row(b as usize)).map(|(x, y)| x * y).sum();
            assert!((s[k] - want).abs() < 1e-12, "pair {k}");
            assert_eq!(s[k], dot(t.row(a as usize), t.row(b as usize)));
        }
    }

    #[test]
    fn unknown_templates_name_the_line() {
        let t = Templates { ids: vec![3, 8], feats: vec![1.0, 0.0, 0.0, 1.0], dim: 2, images: vec![1, 1] };
        let e = pair_rows(&t, &[3, 3], &[8, 9], &[1, 7], "pairs.txt").unwrap_err().to_string();
        assert!(e.contains("pairs.txt:7") && e.contains("template 9"), "{e}");
        assert_eq!(pair_rows(&t, &[8], &[3], &[1], "p").unwrap(), vec![(1, 0)]);
    }
}
