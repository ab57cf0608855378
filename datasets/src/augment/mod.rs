//! Training augmentation as AdaFace describes it: random crop with zero padding, low-resolution rescale
//! and photometric jitter, each with its own probability (default 0.2), then a horizontal flip (p 0.5).
//! All randomness comes from the per-sample [`Rng`], so results depend only on (seed, epoch, sample).

mod crop;
mod photometric;
mod resize;
mod taps;

pub use crop::crop_zero_pad;
pub use photometric::jitter;
pub use resize::{low_resolution, resize};
pub use taps::Filter;

use crate::image::Image;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    /// Horizontal flip with probability 0.5.
    pub flip: bool,
    pub crop_prob: f64,
    pub low_res_prob: f64,
    pub photometric_prob: f64,
}

impl Default for AugmentConfig {
    /// insightface's default (flip only) plus AdaFace's three at 0.2.
    fn default() -> Self {
        AugmentConfig { flip: true, crop_prob: 0.2, low_res_prob: 0.2, photometric_prob: 0.2 }
    }
}

impl AugmentConfig {
    pub fn none() -> Self {
        AugmentConfig { flip: false, crop_prob: 0.0, low_res_prob: 0.0, photometric_prob: 0.0 }
    }

    pub fn flip_only() -> Self {
        AugmentConfig { flip: true, ..AugmentConfig::none() }
    }
}

/// What was done to one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// Flip still to be applied (done while writing the batch, where it costs nothing).
    pub flip: bool,
    /// AdaFace's information proxy: kept crop side ratio x low-resolution side ratio (1 = untouched).
    pub information: f32,
}

/// Applies crop, low resolution and photometric jitter in place, in AdaFace's order, and draws the flip.
pub fn augment(img: &mut Image, cfg: &AugmentConfig, rng: &mut Rng) -> Applied {
    let mut information = 1.0f32;
    if rng.chance(cfg.crop_prob) {
        information *= crop_zero_pad(img, rng);
    }
    if rng.chance(cfg.low_res_prob) {
        information *= low_resolution(img, rng);
    }
    if rng.chance(cfg.photometric_prob) {
        jitter(img, rng);
    }
    let flip = cfg.flip && rng.chance(0.5);
    Applied { flip, information }
}

/// Clamps to [0, 255] and rounds half up, as OpenCV's fixed-point u8 paths do. `max` maps NaN to 0, so the
/// unchecked conversion (which vectorizes, unlike the saturating `as`) always sees a value in range.
#[inline(always)]
pub(crate) fn round_u8(v: f32) -> u8 {
    // max/min rather than clamp: they map NaN to 0 (clamp keeps NaN), so the operand is always finite.
    // SAFETY: the operand is finite and within [0.5, 255.5].
    #[allow(clippy::manual_clamp)]
    let v = v.max(0.0).min(255.0);
    unsafe { (v + 0.5).to_int_unchecked::<i32>() as u8 }
}

/// Mirrors left and right in place (the batch writer usually fuses this instead).
pub fn flip_horizontal(img: &mut Image) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn test_image(h: usize, w: usize) -> Image {
        let mut img = Image::new(h, w);
        for (i, p) in img.data.iter_mut().enumerate() {
            *p = ((i * 37) % 251) as u8;
        }
        img
    }

    #[test]
    fn same_seed_same_result_and_probabilities_hold() {
        let cfg = AugmentConfig::default();
        let base = test_image(24, 24);
        let (mut changed, mut flips) = (0, 0);
        for i in 0..400u64 {
            let mut a = base.clone();
            let mut b = base.clone();
            let ra = augment(&mut a, &cfg, &mut Rng::derive(&[9, 0, i]));
            let rb = augment(&mut b, &cfg, &mut Rng::derive(&[9, 0, i]));
            assert_eq!(a, b);
            assert_eq!(ra, rb);
            changed += (a != base) as u32;
            flips += ra.flip as u32;
            assert!(ra.information > 0.0 && ra.information <= 1.0);
        }
        // P(at least one of three at 0.2) = 0.488.
        assert!((150..240).contains(&changed), "{changed}");
        assert!((160..240).contains(&flips), "{flips}");
    }

    #[test]
    fn none_changes_nothing() {
        let mut img = test_image(8, 8);
        let r = augment(&mut img, &AugmentConfig::none(), &mut Rng::new(1));
        assert_eq!(img, test_image(8, 8));
        assert_eq!(r, Applied { flip: false, information: 1.0 });
    }

    #[test]
    fn flip_mirrors_rows() {
        let mut img = test_image(2, 3);
        let orig = img.clone();
        flip_horizontal(&mut img);
        assert_eq!(&img.data[0..3], &orig.data[6..9]);
        assert_eq!(&img.data[3..6], &orig.data[3..6]);
        flip_horizontal(&mut img);
        assert_eq!(img, orig);
    }
}
