//! PReLU with one slope per channel of the last dim: y = x if x > 0 else alpha[c] * x (as torch).

use super::reduce::{reduce_rows, rows_of, rows_per_task};
use crate::tensor::Float;
use rayon::prelude::*;

pub fn forward<T: Float>(x: &[T], alpha: &[T]) -> Vec<T> {
    let c = alpha.len();
    let mut y = vec![T::ZERO; x.len()];
    if c == 0 {
        return y;
    }
    let chunk = rows_per_task(c) * c;
    y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(yb, xb)| {
        for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
            for ((yv, &xv), &a) in yr.iter_mut().zip(xr).zip(alpha) {
                *yv = if xv > T::ZERO { xv } else { a * xv };
            }
        }
    });
    y
}

/// (dx, dalpha).
pub fn backward<T: Float>(dy: &[T], x: &[T], alpha: &[T]) -> (Vec<T>, Vec<T>) {
    let c = alpha.len();
    let rows = rows_of(x.len(), c);
    let mut dx = vec![T::ZERO; x.len()];
    if c == 0 {
        return (dx, Vec::new());
    }
    let chunk = rows_per_task(c) * c;
    dx.par_chunks_mut(chunk).enumerate().for_each(|(i, db)| {
        let off = i * chunk;
        for ((dxr, dr), xr) in
            db.chunks_exact_mut(c).zip(dy[off..].chunks_exact(c)).zip(x[off..].chunks_exact(c))
        {
            for j in 0..c {
                dxr[j] = if xr[j] > T::ZERO { dr[j] } else { alpha[j] * dr[j] };
            }
        }
    });
    let da = reduce_rows(rows, c, |r, acc| {
        for (dr, xr) in
            dy[r.start * c..r.end * c].chunks_exact(c).zip(x[r.start * c..r.end * c].chunks_exact(c))
        {
            for j in 0..c {
                if xr[j] <= T::ZERO {
                    acc[j] += (dr[j] * xr[j]).to_f64();
                }
            }
        }
    });
    (dx, da.into_iter().map(T::from_f64).collect())
}
