//! insightface's input normalization, ((x / 255) - 0.5) / 0.5: `extend_normalized` for every image the
//! engine reads (loader batches, eval and embed), vectorized over rows; `normalize_table`, the same
//! formula per value, is the reference the tests hold it to, bit for bit.

#[inline(always)]
fn normalize(v: u8) -> f32 {
    (v as f32 / 255.0 - 0.5) / 0.5
}

pub fn normalize_table() -> [f32; 256] {
    std::array::from_fn(|v| normalize(v as u8))
}

/// Appends the normalized `src` to `out`; horizontally mirrored when `flip` (rows of `row` bytes).
pub fn extend_normalized(out: &mut Vec<f32>, src: &[u8], row: usize, flip: bool) {
    #[inline(always)]
    fn run(out: &mut Vec<f32>, src: &[u8], row: usize, flip: bool) {
        assert_eq!(src.len() % row, 0);
        // Written through the spare capacity: zero-filling first would cost as much as the work.
        out.reserve(src.len());
        let mut mirrored = if flip { vec![0u8; row] } else { Vec::new() };
        for (dst, s) in out.spare_capacity_mut()[..src.len()].chunks_exact_mut(row).zip(src.chunks_exact(row))
        {
            let s = if flip {
                for (m, p) in mirrored.chunks_exact_mut(3).zip(s.chunks_exact(3).rev()) {
                    m.copy_from_slice(p);
                }
                &mirrored[..]
            } else {
                s
            };
            dst.iter_mut().zip(s).for_each(|(d, &v)| {
                d.write(normalize(v));
            });
        }
        // SAFETY: the loop above initialized the next src.len() elements.
        unsafe { out.set_len(out.len() + src.len()) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn run_avx2(out: &mut Vec<f32>, src: &[u8], row: usize, flip: bool) {
            run(out, src, row, flip)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { run_avx2(out, src, row, flip) };
    }
    run(out, src, row, flip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_the_table_bit_for_bit_and_flip_mirrors_pixels() {
        let table = normalize_table();
        let src: Vec<u8> = (0..=255u8).cycle().take(2 * 86 * 3).collect(); // 2 rows of 86 pixels
        let mut out = vec![7.0];
        extend_normalized(&mut out, &src, 86 * 3, false);
        assert_eq!(out[0], 7.0, "appends");
        assert!(out[1..].iter().zip(&src).all(|(a, &v)| a.to_bits() == table[v as usize].to_bits()));
        let mut flipped = Vec::new();
        extend_normalized(&mut flipped, &src, 86 * 3, true);
        for y in 0..2 {
            for x in 0..86 {
                for c in 0..3 {
                    let want = table[src[(y * 86 + 85 - x) * 3 + c] as usize];
                    assert_eq!(flipped[(y * 86 + x) * 3 + c].to_bits(), want.to_bits());
                }
            }
        }
        assert_eq!((table[0], table[255]), (-1.0, 1.0));
    }
}
