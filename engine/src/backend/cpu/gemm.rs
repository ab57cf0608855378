//! GEMM on the CPU through `matrixmultiply`, split into fixed tiles of C across rayon tasks. The tiling
//! depends only on the shapes and each element's sum runs over k in one fixed order, so the result does
//! not depend on the thread count.

use crate::tensor::Float;
use rayon::prelude::*;

/// Tiles of C per task: as large as possible (each packed panel of A or B is reused across a whole
/// tile) while leaving enough tiles to share between cores; never below 64 x 256.
const MAX_TILE: (usize, usize) = (256, 1024);
const MIN_TILE: (usize, usize) = (64, 256);
const WANTED_TILES: usize = 16;

/// The tile shape for C [m, n]: a function of the shape alone, so the split is the same on any machine.
fn tiling(m: usize, n: usize) -> (usize, usize) {
    let (mut tm, mut tn) = MAX_TILE;
    while m.div_ceil(tm) * n.div_ceil(tn) < WANTED_TILES {
        if tn > MIN_TILE.1 && tn >= 4 * tm {
            tn /= 2;
        } else if tm > MIN_TILE.0 {
            tm /= 2;
        } else if tn > MIN_TILE.1 {
            tn /= 2;
        } else {
            break;
        }
    }
    (tm, tn)
}

/// A raw pointer that tasks may share because each writes a disjoint tile.
struct SharedMut<T>(*mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// Strides of A' (m x k) and B' (k x n) in elements.
fn strides(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) -> (isize, isize, isize, isize) {
    let (rsa, csa) = if trans_a { (1isize, m as isize) } else { (k as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
    (rsa, csa, rsb, csb)
}

fn check_lengths<T>(m: usize, k: usize, n: usize, a: &[T], b: &[T], c: &[T]) {
    assert_eq!(a.len(), m * k, "gemm: A holds {} elements, expected {m}x{k}", a.len());
    assert_eq!(b.len(), k * n, "gemm: B holds {} elements, expected {k}x{n}", b.len());
    assert_eq!(c.len(), m * n, "gemm: C holds {} elements, expected {m}x{n}", c.len());
}

/// C[m, n] = A' B' (+ C when `accumulate`), where A' = A or A^T and B' = B or B^T, all row-major.
/// `a` holds A as stored ([m, k], or [k, m] when `trans_a`); likewise `b`. Parallel over tiles of C.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    trans_a: bool,
    b: &[T],
    trans_b: bool,
    c: &mut [T],
    accumulate: bool,
) {
    check_lengths(m, k, n, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa, rsb, csb) = strides(m, k, n, trans_a, trans_b);
    let beta = if accumulate { T::ONE } else { T::ZERO };
    let (tile_rows, tile_cols) = tiling(m, n);
    let (tiles_m, tiles_n) = (m.div_ceil(tile_rows), n.div_ceil(tile_cols));
    let cp = SharedMut(c.as_mut_ptr());
    (0..tiles_m * tiles_n).into_par_iter().for_each(|t| {
        let (r0, c0) = ((t / tiles_n) * tile_rows, (t % tiles_n) * tile_cols);
        let (rows, cols) = (tile_rows.min(m - r0), tile_cols.min(n - c0));
        // SAFETY: the sub-matrices are in bounds (lengths checked above) and tiles of C are disjoint.
        unsafe {
            let ap = a.as_ptr().offset(r0 as isize * rsa);
            let bp = b.as_ptr().offset(c0 as isize * csb);
            let cptr = cp.get().add(r0 * n + c0);
            kernel(rows, k, cols, ap, rsa, csa, bp, rsb, csb, beta, cptr, n as isize);
        }
    });
}

/// Same contract as `gemm`, on the calling thread (for callers that already run one task per block).
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    trans_a: bool,
    b: &[T],
    trans_b: bool,
    c: &mut [T],
    accumulate: bool,
) {
    check_lengths(m, k, n, a, b, c);
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa, rsb, csb) = strides(m, k, n, trans_a, trans_b);
    let beta = if accumulate { T::ONE } else { T::ZERO };
    // SAFETY: pointers and strides describe the whole of a, b and c, whose lengths were checked.
    unsafe { kernel(m, k, n, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, csb, beta, c.as_mut_ptr(), n as isize) }
}

#[allow(clippy::too_many_arguments)]
unsafe fn kernel<T: Float>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
) {
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a as *const f32,
            rsa,
            csa,
            b as *const f32,
            rsb,
            csb,
            beta.to_f64() as f32,
            c as *mut f32,
            rsc,
            1,
        );
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a as *const f64,
            rsa,
            csa,
            b as *const f64,
            rsb,
            csb,
            beta.to_f64(),
            c as *mut f64,
            rsc,
            1,
        );
    } else {
        unreachable!("Float is implemented for f32 and f64 only");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f64], ta: bool, b: &[f64], tb: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += av * bv;
                }
            }
        }
        c
    }

    #[test]
    fn tiling_shrinks_to_share_work_and_stays_within_bounds() {
        assert_eq!(tiling(4096, 8192), MAX_TILE);
        assert_eq!(tiling(32, 512), MIN_TILE);
        let (tm, tn) = tiling(512, 4608);
        assert!(512usize.div_ceil(tm) * 4608usize.div_ceil(tn) >= WANTED_TILES);
        assert!(tm >= MIN_TILE.0 && tn >= MIN_TILE.1);
    }

    #[test]
    fn all_transpose_combinations_match_a_naive_product() {
        let (m, k, n) = (130, 17, 300);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64) - 6.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 11) as f64) * 0.5).collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let want = naive(m, k, n, &a, ta, &b, tb);
                let mut c = vec![1.0; m * n];
                gemm(m, k, n, &a, ta, &b, tb, &mut c, false);
                assert_eq!(c, want, "ta={ta} tb={tb}");
                let mut c2 = vec![1.0; m * n];
                gemm_serial(m, k, n, &a, ta, &b, tb, &mut c2, true);
                let plus_one: Vec<f64> = want.iter().map(|v| v + 1.0).collect();
                assert_eq!(c2, plus_one, "accumulating, ta={ta} tb={tb}");
            }
        }
    }
}
