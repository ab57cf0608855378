//! The counter-based draw of the device dropout kernels (kernels/cuda/dropout.cu): element `i` of a
//! mask under `seed` depends on (seed, i) alone, so any thread can draw any element, and the host can
//! reproduce a device mask exactly (the GPU check compares the two bit for bit).

/// Whether element `i` survives dropout with rate `p` under `seed`.
pub fn dropout_keep(seed: u64, i: u64, p: f32) -> bool {
    fn mix64(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    let u = (mix64(seed ^ mix64(i)) >> 40) as f32 * (1.0 / 16777216.0);
    u >= p
}

#[cfg(test)]
mod tests {
    use super::dropout_keep;

    #[test]
    fn dropout_draw_keeps_about_one_minus_p() {
        let n = 100_000u64;
        for p in [0.1f32, 0.5, 0.9] {
            let kept = (0..n).filter(|&i| dropout_keep(42, i, p)).count() as f64 / n as f64;
            assert!((kept - (1.0 - p as f64)).abs() < 0.01, "p {p}: kept {kept}");
        }
        assert!((0..1000).all(|i| dropout_keep(7, i, 0.0)));
        let a: Vec<bool> = (0..64).map(|i| dropout_keep(1, i, 0.5)).collect();
        let b: Vec<bool> = (0..64).map(|i| dropout_keep(2, i, 0.5)).collect();
        assert_ne!(a, b, "seeds must change the mask");
    }
}
