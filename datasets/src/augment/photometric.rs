//! Colour jitter as torchvision's ColorJitter(brightness 0.5, contrast 0.5, saturation 0.5) applies it:
//! the three factors drawn from [0.5, 1.5], applied in a random order, each a blend clamped to [0, 255].

use crate::image::Image;
use crate::rng::Rng;

fn luma(p: &[u8]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

fn to_u8(v: f32) -> u8 {
    // Values are clamped non-negative, so +0.5 and truncation round (f32::round is a libm call here).
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

/// Each step works on u8 pixels, rounding in between, as torchvision's PIL path does.
pub fn jitter(img: &mut Image, rng: &mut Rng) {
    let mut order = [0u8, 1, 2];
    rng.shuffle(&mut order);
    let factors = [rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32, rng.range(0.5, 1.5) as f32];
    for op in order {
        let f = factors[op as usize];
        match op {
            // Brightness: blend with black.
            0 => {
                let lut: [u8; 256] = std::array::from_fn(|v| to_u8(v as f32 * f));
                img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
            }
            // Contrast: blend with the image's mean grey level.
            1 => {
                let n = (img.data.len() / 3).max(1) as f32;
                let mean = img.data.chunks_exact(3).map(luma).sum::<f32>() / n;
                let lut: [u8; 256] = std::array::from_fn(|v| to_u8(mean + f * (v as f32 - mean)));
                img.data.iter_mut().for_each(|v| *v = lut[*v as usize]);
            }
            // Saturation: blend each pixel with its own grey level.
            _ => img.data.chunks_exact_mut(3).for_each(|p| {
                let g = luma(p);
                for v in p.iter_mut() {
                    *v = to_u8(g + f * (*v as f32 - g));
                }
            }),
        }
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
        let mut img = Image::from_rgb(1, 2, vec![255, 0, 0, 0, 0, 255]);
        let before = img.clone();
        jitter(&mut img, &mut Rng::new(5));
        assert_ne!(img, before);
    }
}
