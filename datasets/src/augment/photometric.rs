//! Colour jitter as torchvision's ColorJitter(brightness 0.5, contrast 0.5, saturation 0.5) applies it:
//! the three factors drawn from [0.5, 1.5], applied in a random order, each a blend rounded to u8.
//! Brightness and contrast are per-value maps, so they are folded into one 256-entry table and the image
//! is touched once for them (plus once for saturation, which mixes channels).

use super::round_u8;
use crate::image::Image;
use crate::rng::Rng;

/// ITU-R 601 luma weights, as PIL's "L" conversion uses.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

fn identity() -> [u8; 256] {
    std::array::from_fn(|v| v as u8)
}

/// `outer` after `inner`, both as tables.
fn compose(outer: impl Fn(f32) -> u8, inner: &[u8; 256]) -> [u8; 256] {
    std::array::from_fn(|v| outer(inner[v] as f32))
}

/// Mean luma of the image as it would be after `lut`.
fn mean_luma(img: &Image, lut: &[u8; 256]) -> f32 {
    let mut sums = [0u64; 3];
    for p in img.data.chunks_exact(3) {
        for c in 0..3 {
            sums[c] += lut[p[c] as usize] as u64;
        }
    }
    let n = (img.data.len() / 3).max(1) as f64;
    (0..3).map(|c| LUMA[c] as f64 * sums[c] as f64 / n).sum::<f64>() as f32
}

/// Applies `lut`, then blends each pixel with its own grey level by `f`, in fixed point: grey in 1/256
/// levels with PIL's integer luma weights, `f` in 1/4096 (i32 throughout; at most 2^29 in magnitude).
fn saturate(img: &mut Image, lut: &[u8; 256], f: f32) {
    let f_q = (f * 4096.0).round() as i32;
    #[inline(always)]
    fn pass(data: &mut [u8], lut: &[u8; 256], f_q: i32) {
        for p in data.chunks_exact_mut(3) {
            let v = [lut[p[0] as usize] as i32, lut[p[1] as usize] as i32, lut[p[2] as usize] as i32];
            let grey = (4096 - f_q) * (77 * v[0] + 150 * v[1] + 29 * v[2]) + (1 << 19);
            for c in 0..3 {
                p[c] = ((f_q * 256 * v[c] + grey) >> 20).clamp(0, 255) as u8;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn pass_avx2(data: &mut [u8], lut: &[u8; 256], f_q: i32) {
            pass(data, lut, f_q)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { pass_avx2(&mut img.data, lut, f_q) };
    }
    pass(&mut img.data, lut, f_q)
}

pub fn jitter(img: &mut Image, rng: &mut Rng) {
    let mut order = [0u8, 1, 2];
    rng.shuffle(&mut order);
    let factors = [rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32];
    // Per-value changes not yet written into the image.
    let mut lut = identity();
    for op in order {
        let f = factors[op as usize];
        match op {
            // Brightness: blend with black.
            0 => lut = compose(|v| round_u8(v * f), &lut),
            // Contrast: blend with the image's mean grey level.
            1 => {
                let mean = mean_luma(img, &lut);
                lut = compose(|v| round_u8(mean + f * (v - mean)), &lut);
            }
            // Saturation: blend each pixel with its own grey level.
            _ => {
                saturate(img, &lut, f);
                lut = identity();
            }
        }
    }
    if lut != identity() {
        img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_images_stay_grey_and_values_stay_in_range() {
        for seed in 0..20 {
            let mut img = Image::from_rgb(4, 4, (0..48).map(|i| (i / 3 * 16) as u8).collect());
            jitter(&mut img, &mut Rng::new(seed));
            for p in img.data.chunks(3) {
                assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
            }
        }
        // Mid-range colours: every factor away from 1 moves them (saturated ones can stay put).
        for seed in 0..10 {
            let mut img = Image::from_rgb(1, 2, vec![200, 100, 50, 60, 120, 180]);
            let before = img.clone();
            jitter(&mut img, &mut Rng::new(seed));
            assert_ne!(img, before, "seed {seed}");
        }
    }

    #[test]
    fn fixed_point_saturation_matches_the_float_blend() {
        let base = Image::from_rgb(8, 8, (0..192).map(|i| ((i * 97 + 13) % 256) as u8).collect());
        for f in [0.5f32, 0.73, 1.0, 1.31, 1.5] {
            let mut img = base.clone();
            saturate(&mut img, &identity(), f);
            for (p, q) in base.data.chunks(3).zip(img.data.chunks(3)) {
                let g = LUMA[0] * p[0] as f32 + LUMA[1] * p[1] as f32 + LUMA[2] * p[2] as f32;
                for c in 0..3 {
                    let want = (g + f * (p[c] as f32 - g)).clamp(0.0, 255.0);
                    assert!((q[c] as f32 - want).abs() <= 1.0, "f {f}: {p:?} -> {q:?}, want {want}");
                }
            }
        }
    }

    /// The folded tables must give what applying the three blends one after another, rounding to u8 after
    /// each, gives.
    #[test]
    fn folded_tables_match_step_by_step_blends() {
        let base = Image::from_rgb(6, 5, (0..90).map(|i| ((i * 53 + 7) % 256) as u8).collect());
        for seed in 0..50 {
            let mut fast = base.clone();
            jitter(&mut fast, &mut Rng::new(seed));

            let mut rng = Rng::new(seed);
            let mut order = [0u8, 1, 2];
            rng.shuffle(&mut order);
            let factors =
                [rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32];
            let mut slow: Vec<f32> = base.data.iter().map(|&v| v as f32).collect();
            let r = |v: f32| (v.clamp(0.0, 255.0) + 0.5).floor();
            for op in order {
                let f = factors[op as usize];
                match op {
                    0 => slow.iter_mut().for_each(|v| *v = r(*v * f)),
                    1 => {
                        let n = (slow.len() / 3) as f64;
                        let mean = slow
                            .chunks(3)
                            .map(|p| (0..3).map(|c| LUMA[c] as f64 * p[c] as f64).sum::<f64>())
                            .sum::<f64>()
                            / n;
                        let mean = mean as f32;
                        slow.iter_mut().for_each(|v| *v = r(mean + f * (*v - mean)));
                    }
                    _ => {
                        let mut img =
                            Image::from_rgb(base.height, base.width, slow.iter().map(|&v| v as u8).collect());
                        saturate(&mut img, &identity(), f);
                        slow = img.data.iter().map(|&v| v as f32).collect();
                    }
                }
            }
            let slow: Vec<u8> = slow.iter().map(|&v| v as u8).collect();
            // The mean is summed in another order (integers vs floats): at most a rare one-level difference.
            let off = fast.data.iter().zip(&slow).filter(|(a, b)| a != b).count();
            assert!(fast.data.iter().zip(&slow).all(|(&a, &b)| a.abs_diff(b) <= 1), "seed {seed}");
            assert!(off <= 2, "seed {seed}: {off} values differ");
        }
    }
}
