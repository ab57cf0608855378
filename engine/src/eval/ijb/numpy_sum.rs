//! numpy's float32 summation along a contiguous axis (`np.sum(x, -1)`), reproduced so that the IJB
//! "no feature norm" mode (`x / np.sqrt(np.sum(x ** 2, -1, keepdims=True))` in float32) gives the same
//! bits as the reference script. numpy sums with `pairwise_sum` (numpy/_core/src/umath/loops_utils.h.src):
//! below 8 values one running sum; up to 128 values eight running sums combined as
//! ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) plus the tail; above that, the two halves (the first a multiple of
//! 8 long) recursively. The reduction adds the result to the identity 0 (checked against numpy 1.26).

/// `np.sum` of a contiguous float32 vector, bit for bit.
pub fn pairwise_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0f32;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f32; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum_f32(&a[..n2]) + pairwise_sum_f32(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_are_sequential_and_large_ones_split() {
        assert_eq!(pairwise_sum_f32(&[]), 0.0);
        assert_eq!(pairwise_sum_f32(&[1.0, 2.0, 3.0]), 6.0);
        // Order matters in f32 at 1e8 (spacing 8): a running sum loses every 1, numpy's eight lanes do
        // not. Values from numpy 1.26: np.sum of [1e8] + [1] * 15 and + [1] * 23.
        let mut v = vec![1.0f32; 16];
        v[0] = 1e8;
        assert_eq!(v.iter().fold(0.0f32, |s, &x| s + x), 1e8);
        assert_eq!(pairwise_sum_f32(&v), 100_000_010.0);
        v.extend([1.0; 8]);
        assert_eq!(pairwise_sum_f32(&v), 100_000_020.0);
        let big: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(pairwise_sum_f32(&big), 499_500.0);
    }
}
