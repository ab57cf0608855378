//! AdaFace's crop: a RandomResizedCrop window (area 20%..100%, aspect 3/4..4/3) is kept in place and
//! everything outside it is set to zero, so the face keeps its scale and position.

use crate::image::Image;
use crate::rng::Rng;

/// Returns min(window h, w) / max(H, W), AdaFace's crop information ratio.
pub fn crop_zero_pad(img: &mut Image, rng: &mut Rng) -> f32 {
    let (hh, ww) = (img.height, img.width);
    let (top, left, h, w) = window(hh, ww, rng);
    for y in 0..hh {
        let row = &mut img.data[y * ww * 3..(y + 1) * ww * 3];
        if y < top || y >= top + h {
            row.fill(0);
        } else {
            row[..left * 3].fill(0);
            row[(left + w) * 3..].fill(0);
        }
    }
    h.min(w) as f32 / hh.max(ww) as f32
}

/// torchvision's RandomResizedCrop parameter rule: ten tries, then a centred fallback.
fn window(hh: usize, ww: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let area = (hh * ww) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.range(0.2, 1.0);
        let aspect = rng.range(lo, hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && w <= ww && h > 0 && h <= hh {
            let top = rng.below((hh - h + 1) as u64) as usize;
            let left = rng.below((ww - w + 1) as u64) as usize;
            return (top, left, h, w);
        }
    }
    let ratio = ww as f64 / hh as f64;
    let (h, w) = if ratio < 0.75 {
        ((ww as f64 / 0.75).round() as usize, ww)
    } else if ratio > 4.0 / 3.0 {
        (hh, (hh as f64 * 4.0 / 3.0).round() as usize)
    } else {
        (hh, ww)
    };
    ((hh - h) / 2, (ww - w) / 2, h, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_window_and_zeroes_the_rest() {
        for seed in 0..50 {
            let mut img = Image::from_rgb(20, 20, vec![200; 1200]);
            let ratio = crop_zero_pad(&mut img, &mut Rng::new(seed));
            let kept: Vec<(usize, usize)> =
                (0..400).filter(|&p| img.data[p * 3] == 200).map(|p| (p / 20, p % 20)).collect();
            let (ys, xs): (Vec<_>, Vec<_>) = kept.iter().copied().unzip();
            let (h, w) = (
                ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1,
                xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1,
            );
            assert_eq!(kept.len(), h * w, "kept pixels form a rectangle");
            assert!(h * w >= 400 / 5 - 20, "area {}", h * w);
            assert!((ratio - h.min(w) as f32 / 20.0).abs() < 1e-6);
        }
    }
}
