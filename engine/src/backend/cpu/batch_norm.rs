//! Batch normalization over the rows of a `[rows, C]` view (BatchNorm2d on NHWC, BatchNorm1d on [N, C]).
//! Statistics are accumulated in f64 whatever the element type, with a two-pass variance.

use super::reduce::{reduce_rows, rows_of, rows_per_task};
use crate::tensor::Float;
use rayon::prelude::*;

/// Per-channel statistics of a training batch, in f64.
pub struct Stats {
    pub mean: Vec<f64>,
    /// Biased variance (divided by the row count).
    pub var: Vec<f64>,
}

pub fn batch_stats<T: Float>(x: &[T], c: usize) -> Stats {
    let rows = rows_of(x.len(), c);
    let inv = 1.0 / rows as f64;
    let sum = reduce_rows(rows, c, |r, acc| {
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v.to_f64();
            }
        }
    });
    let mean: Vec<f64> = sum.iter().map(|s| s * inv).collect();
    let sq = reduce_rows(rows, c, |r, acc| {
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            for ((a, v), m) in acc.iter_mut().zip(row).zip(&mean) {
                let d = v.to_f64() - m;
                *a += d * d;
            }
        }
    });
    Stats { mean, var: sq.iter().map(|s| s * inv).collect() }
}

/// y = (x - center[c]) * scale[c] + shift[c], one task per block of rows. Centering first avoids the
/// cancellation of folding the mean into the shift when |mean| >> std.
pub fn normalize<T: Float>(x: &[T], center: &[T], scale: &[T], shift: &[T]) -> Vec<T> {
    let c = scale.len();
    let mut y = vec![T::ZERO; x.len()];
    if c == 0 {
        return y;
    }
    let chunk = rows_per_task(c) * c;
    y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(yb, xb)| {
        for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
            for j in 0..c {
                yr[j] = (xr[j] - center[j]) * scale[j] + shift[j];
            }
        }
    });
    y
}

/// Per-channel (center, scale, shift) for `normalize` from f64 statistics and optional gamma/beta.
pub fn coefficients<T: Float>(
    mean: &[f64],
    invstd: &[f64],
    gamma: Option<&[T]>,
    beta: Option<&[T]>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = mean.len();
    let center = mean.iter().map(|&m| T::from_f64(m)).collect();
    let scale = (0..c).map(|i| T::from_f64(gamma.map_or(1.0, |g| g[i].to_f64()) * invstd[i])).collect();
    let shift = (0..c).map(|i| beta.map_or(T::ZERO, |b| b[i])).collect();
    (center, scale, shift)
}

/// Gradients of training-mode batch norm: (dx, dgamma, dbeta). `mean`/`invstd` are the saved statistics.
pub fn backward_train<T: Float>(
    dy: &[T],
    x: &[T],
    gamma: Option<&[T]>,
    mean: &[T],
    invstd: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = mean.len();
    let rows = rows_of(x.len(), c);
    // sums[0..c] = sum dy, sums[c..2c] = sum dy * (x - mean)
    let sums = reduce_rows(rows, 2 * c, |r, acc| {
        let (sdy, sdyx) = acc.split_at_mut(c);
        for (dr, xr) in
            dy[r.start * c..r.end * c].chunks_exact(c).zip(x[r.start * c..r.end * c].chunks_exact(c))
        {
            for j in 0..c {
                let d = dr[j].to_f64();
                sdy[j] += d;
                sdyx[j] += d * (xr[j].to_f64() - mean[j].to_f64());
            }
        }
    });
    let m = rows as f64;
    let (sdy, sdyx) = sums.split_at(c);
    let mut dgamma = Vec::with_capacity(c);
    // dx = a * (dy - b - (x - mean) * d), per channel a, b, d
    let (mut a, mut b, mut d) = (Vec::with_capacity(c), Vec::with_capacity(c), Vec::with_capacity(c));
    for j in 0..c {
        let is = invstd[j].to_f64();
        dgamma.push(T::from_f64(sdyx[j] * is));
        a.push(T::from_f64(gamma.map_or(1.0, |g| g[j].to_f64()) * is));
        b.push(T::from_f64(sdy[j] / m));
        d.push(T::from_f64(sdyx[j] * is * is / m));
    }
    let dbeta = sdy.iter().map(|&v| T::from_f64(v)).collect();
    let mut dx = vec![T::ZERO; x.len()];
    if c > 0 {
        let chunk = rows_per_task(c) * c;
        dx.par_chunks_mut(chunk).enumerate().for_each(|(i, db)| {
            let off = i * chunk;
            for ((dxr, dr), xr) in
                db.chunks_exact_mut(c).zip(dy[off..].chunks_exact(c)).zip(x[off..].chunks_exact(c))
            {
                for j in 0..c {
                    dxr[j] = a[j] * (dr[j] - b[j] - (xr[j] - mean[j]) * d[j]);
                }
            }
        });
    }
    (dx, dgamma, dbeta)
}
