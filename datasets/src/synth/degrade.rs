//! The camera and capture chain applied after rendering, driven by one degradation level `d` in [0, 1]:
//! Gaussian blur of sigma 1.2·d pixels (at 112 px, scaled with the size), down-scaling by a factor
//! 1 + 2·d (box average) and bilinear up-scaling back, then Gaussian sensor noise of (1 + 8·d)/255
//! per channel, clipping to [0, 1] and rounding to u8.

use super::rng::SynthRng;

pub fn blur_sigma(d: f32, size: usize) -> f32 {
    1.2 * d * size as f32 / 112.0
}

pub fn downscale_factor(d: f32) -> f32 {
    1.0 + 2.0 * d
}

pub fn noise_std(d: f32) -> f32 {
    (1.0 + 8.0 * d) / 255.0
}

/// Separable Gaussian blur of an HWC image with clamped borders.
fn gaussian_blur(img: &mut [f32], size: usize, sigma: f32) {
    if sigma < 0.25 {
        return;
    }
    let radius = (sigma * 3.0).ceil() as isize;
    let mut kernel: Vec<f32> =
        (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let n = size as isize;
    let mut tmp = vec![0.0f32; img.len()];
    // Pass 0 runs along rows into tmp, pass 1 along columns back into img.
    for pass in 0..2 {
        let (src, dst): (&[f32], &mut [f32]) = if pass == 0 { (&*img, &mut tmp) } else { (&tmp, &mut *img) };
        for y in 0..n {
            for x in 0..n {
                let mut acc = [0.0f32; 3];
                for (j, &k) in kernel.iter().enumerate() {
                    let off = j as isize - radius;
                    let (sx, sy) = if pass == 0 {
                        ((x + off).clamp(0, n - 1), y)
                    } else {
                        (x, (y + off).clamp(0, n - 1))
                    };
                    let o = ((sy * n + sx) * 3) as usize;
                    for c in 0..3 {
                        acc[c] += k * src[o + c];
                    }
                }
                let o = ((y * n + x) * 3) as usize;
                dst[o..o + 3].copy_from_slice(&acc);
            }
        }
    }
}

/// Box-averages to `small` x `small`, then bilinear back to `size` x `size`.
fn down_up(img: &mut [f32], size: usize, small: usize) {
    if small >= size {
        return;
    }
    let ratio = size as f32 / small as f32;
    let mut low = vec![0.0f32; small * small * 3];
    for sy in 0..small {
        let (y0, y1) = ((sy as f32 * ratio) as usize, (((sy + 1) as f32 * ratio).ceil() as usize).min(size));
        for sx in 0..small {
            let (x0, x1) =
                ((sx as f32 * ratio) as usize, (((sx + 1) as f32 * ratio).ceil() as usize).min(size));
            let mut acc = [0.0f32; 3];
            for y in y0..y1 {
                for x in x0..x1 {
                    for c in 0..3 {
                        acc[c] += img[(y * size + x) * 3 + c];
                    }
                }
            }
            let inv = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
            for c in 0..3 {
                low[(sy * small + sx) * 3 + c] = acc[c] * inv;
            }
        }
    }
    let sample = |p: usize| ((p as f32 + 0.5) / ratio - 0.5).clamp(0.0, (small - 1) as f32);
    for y in 0..size {
        let fy = sample(y);
        let (iy, ty) = (fy as usize, fy.fract());
        let iy1 = (iy + 1).min(small - 1);
        for x in 0..size {
            let fx = sample(x);
            let (ix, tx) = (fx as usize, fx.fract());
            let ix1 = (ix + 1).min(small - 1);
            for c in 0..3 {
                let at = |yy: usize, xx: usize| low[(yy * small + xx) * 3 + c];
                let top = at(iy, ix) * (1.0 - tx) + at(iy, ix1) * tx;
                let bottom = at(iy1, ix) * (1.0 - tx) + at(iy1, ix1) * tx;
                img[(y * size + x) * 3 + c] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
}

/// Applies the whole chain and quantizes to RGB u8.
pub fn degrade(mut img: Vec<f32>, size: usize, d: f32, rng: &mut SynthRng) -> Vec<u8> {
    gaussian_blur(&mut img, size, blur_sigma(d, size));
    let small = ((size as f32 / downscale_factor(d)).round() as usize).max(8);
    down_up(&mut img, size, small);
    let std = noise_std(d);
    img.iter().map(|&v| ((v + std * rng.normal()).clamp(0.0, 1.0) * 255.0 + 0.5) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(size: usize) -> Vec<f32> {
        (0..size * size * 3)
            .map(|i| if ((i / 3) % size + (i / 3) / size).is_multiple_of(2) { 0.2 } else { 0.8 })
            .collect()
    }

    fn error(img: &[u8], reference: &[f32]) -> f64 {
        img.iter().zip(reference).map(|(&a, &b)| (a as f64 / 255.0 - b as f64).powi(2)).sum::<f64>()
            / img.len() as f64
    }

    #[test]
    fn stronger_degradation_departs_further_from_the_clean_image() {
        let size = 48;
        let mut rng = SynthRng::new(3);
        let errs: Vec<f64> = [0.0, 0.3, 0.6, 1.0]
            .iter()
            .map(|&d| error(&degrade(checker(size), size, d, &mut rng), &checker(size)))
            .collect();
        assert!(errs[0] < 1e-3, "a level-0 image is nearly the clean one: {errs:?}");
        assert!(errs.windows(2).all(|w| w[0] < w[1]), "error must grow with the level: {errs:?}");
    }

    #[test]
    fn blur_and_resample_keep_a_flat_image_flat() {
        let size = 40;
        let mut img = vec![0.5f32; size * size * 3];
        gaussian_blur(&mut img, size, 1.7);
        down_up(&mut img, size, 17);
        assert!(img.iter().all(|&v| (v - 0.5).abs() < 1e-5));
    }
}
