//! GEMM on the CPU through `matrixmultiply`, split into row blocks across rayon tasks. Each output row is
//! computed by one task with the same summation order, so the result does not depend on the thread count.

use crate::tensor::Float;
use rayon::prelude::*;

/// Rows of C per task: large enough to amortize packing, small enough to balance two to many cores.
const ROWS_PER_TASK: usize = 64;

/// C[m, n] = A' B' (+ C when `accumulate`), where A' = A or A^T and B' = B or B^T, all row-major.
/// `a` holds A as stored ([m, k], or [k, m] when `trans_a`); likewise `b`.
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
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    // Strides of A' (m x k) and B' (k x n) in elements.
    let (rsa, csa) = if trans_a { (1isize, m as isize) } else { (k as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
    let beta = if accumulate { T::ONE } else { T::ZERO };
    c.par_chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(|(blk, cblk)| {
        let row0 = blk * ROWS_PER_TASK;
        let rows = cblk.len() / n;
        // SAFETY: pointers and strides describe in-bounds sub-matrices of a, b and this block of c.
        unsafe {
            let ap = a.as_ptr().offset(row0 as isize * rsa);
            kernel(rows, k, n, ap, rsa, csa, b.as_ptr(), rsb, csb, beta, cblk.as_mut_ptr(), n as isize);
        }
    });
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
            m, k, n, 1.0, a as *const f32, rsa, csa, b as *const f32, rsb, csb,
            beta.to_f64() as f32, c as *mut f32, rsc, 1,
        );
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        matrixmultiply::dgemm(
            m, k, n, 1.0, a as *const f64, rsa, csa, b as *const f64, rsb, csb,
            beta.to_f64(), c as *mut f64, rsc, 1,
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
    fn all_transpose_combinations_match_a_naive_product() {
        let (m, k, n) = (130, 17, 9);
        let a: Vec<f64> = (0..m * k).map(|i| ((i * 7 % 13) as f64) - 6.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| ((i * 5 % 11) as f64) * 0.5).collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let mut c = vec![1.0; m * n];
                gemm(m, k, n, &a, ta, &b, tb, &mut c, false);
                assert_eq!(c, naive(m, k, n, &a, ta, &b, tb), "ta={ta} tb={tb}");
            }
        }
    }
}
