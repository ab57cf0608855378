//! Broadcasts along the rows or the channels of a `[rows, C]` view, and row-wise L2 normalization.

use super::reduce::rows_per_task;
use crate::tensor::Float;
use rayon::prelude::*;

/// y[r, c] = f(x[r, c], v[c]).
pub fn per_channel<T: Float>(x: &[T], v: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let c = v.len();
    let mut y = vec![T::ZERO; x.len()];
    if c == 0 {
        return y;
    }
    let chunk = rows_per_task(c) * c;
    y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(yb, xb)| {
        for (yr, xr) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)) {
            for ((yv, &xv), &s) in yr.iter_mut().zip(xr).zip(v) {
                *yv = f(xv, s);
            }
        }
    });
    y
}

/// y[r, c] = x[r, c] * s[r].
pub fn scale_rows<T: Float>(x: &[T], s: &[T]) -> Vec<T> {
    let c = if s.is_empty() { 0 } else { x.len() / s.len() };
    let mut y = vec![T::ZERO; x.len()];
    if c == 0 {
        return y;
    }
    let rpt = rows_per_task(c);
    y.par_chunks_mut(rpt * c).zip(x.par_chunks(rpt * c)).enumerate().for_each(|(i, (yb, xb))| {
        for (r, (yr, xr)) in yb.chunks_exact_mut(c).zip(xb.chunks_exact(c)).enumerate() {
            let sv = s[i * rpt + r];
            for (yv, &xv) in yr.iter_mut().zip(xr) {
                *yv = xv * sv;
            }
        }
    });
    y
}

/// ||row|| accumulated in f64, without overflow: a row of finite values whose squares overflow (f64
/// inputs beyond ~1e154) is measured again scaled by its largest magnitude. Every other row takes the
/// plain sum, so ordinary results are unchanged bit for bit. (The classifier's f32 version:
/// `heads::classifier::robust_norm`; the kernel: `l2norm.cu`.)
pub fn robust_row_norm<T: Float>(xr: &[T]) -> f64 {
    let n = xr.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>().sqrt();
    if !n.is_infinite() {
        return n;
    }
    let m = xr.iter().fold(0.0f64, |m, v| m.max(v.to_f64().abs()));
    if !m.is_finite() {
        return m;
    }
    m * xr.iter().map(|v| (v.to_f64() / m).powi(2)).sum::<f64>().sqrt()
}

/// (x / max(||x||, eps), ||x||) per row of `d` elements.
pub fn l2_normalize_rows<T: Float>(x: &[T], d: usize, eps: f64) -> (Vec<T>, Vec<T>) {
    let rows = x.len().checked_div(d).unwrap_or(0);
    let mut norms = vec![T::ZERO; rows];
    let mut y = vec![T::ZERO; x.len()];
    if d == 0 {
        return (y, norms);
    }
    y.par_chunks_mut(d).zip(x.par_chunks(d)).zip(norms.par_iter_mut()).for_each(|((yr, xr), n)| {
        let norm = robust_row_norm(xr);
        let inv = 1.0 / norm.max(eps);
        for (yv, &xv) in yr.iter_mut().zip(xr) {
            *yv = T::from_f64(xv.to_f64() * inv);
        }
        *n = T::from_f64(norm);
    });
    (y, norms)
}

/// Gradient of `l2_normalize_rows` w.r.t. x. Unclamped rows: (dy - y (dy . y)) / ||x||; rows whose norm
/// was clamped to eps: dy / eps (the divisor was a constant there).
pub fn l2_normalize_rows_backward<T: Float>(dy: &[T], y: &[T], norms: &[T], eps: f64) -> Vec<T> {
    let d = if norms.is_empty() { 0 } else { y.len() / norms.len() };
    let mut dx = vec![T::ZERO; y.len()];
    if d == 0 {
        return dx;
    }
    dx.par_chunks_mut(d).zip(dy.par_chunks(d)).zip(y.par_chunks(d)).zip(norms.par_iter()).for_each(
        |(((dxr, dr), yr), &n)| {
            let n = n.to_f64();
            if n > eps {
                let dot: f64 = dr.iter().zip(yr).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
                for ((g, &a), &b) in dxr.iter_mut().zip(dr).zip(yr) {
                    *g = T::from_f64((a.to_f64() - b.to_f64() * dot) / n);
                }
            } else {
                for (g, &a) in dxr.iter_mut().zip(dr) {
                    *g = T::from_f64(a.to_f64() / eps);
                }
            }
        },
    );
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_of_rows_whose_squares_overflow_are_finite_and_ordinary_rows_unchanged() {
        let big = [3e200f64, -4e200, 0.0];
        assert!((robust_row_norm(&big) / 5e200 - 1.0).abs() < 1e-15);
        let plain = [0.3f32, -1.7, 2.5];
        let direct = plain.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        assert_eq!(robust_row_norm(&plain).to_bits(), direct.to_bits());
        assert!(robust_row_norm(&[f64::INFINITY, 1.0]).is_infinite());
        assert!(robust_row_norm(&[f64::NAN, 1e300]).is_nan());
        let (y, n) = l2_normalize_rows(&[6e200f64, 8e200], 2, 1e-12);
        assert!((n[0] / 1e201 - 1.0).abs() < 1e-15 && (y[0] - 0.6).abs() < 1e-15, "{y:?} {n:?}");
    }
}
