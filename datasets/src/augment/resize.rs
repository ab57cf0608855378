//! Separable resizing (nearest, bilinear with half-pixel centres, area/box) and AdaFace's
//! low-resolution augmentation: down to a random side in [0.2, 1] x H, back up, each step with a random
//! filter. (AdaFace also draws OpenCV's cubic and Lanczos; this keeps the three cheap ones.)

use crate::image::Image;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    Bilinear,
    Area,
}

const FILTERS: [Filter; 3] = [Filter::Nearest, Filter::Bilinear, Filter::Area];

/// Per output position: first source index and its weights, flattened (`weights[offsets[d]..offsets[d+1]]`).
struct Taps {
    first: Vec<usize>,
    offsets: Vec<usize>,
    weights: Vec<f32>,
}

impl Taps {
    fn new(src: usize, dst: usize, filter: Filter) -> Taps {
        let scale = src as f64 / dst as f64;
        let mut t = Taps { first: Vec::with_capacity(dst), offsets: vec![0], weights: Vec::new() };
        for d in 0..dst {
            match filter {
                Filter::Nearest => {
                    t.first.push(((d as f64 * scale) as usize).min(src - 1));
                    t.weights.push(1.0);
                }
                Filter::Bilinear => {
                    let x = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
                    let i = (x as usize).min(src - 1);
                    let f = (x - i as f64) as f32;
                    t.first.push(i);
                    if i + 1 < src {
                        t.weights.extend_from_slice(&[1.0 - f, f]);
                    } else {
                        t.weights.push(1.0);
                    }
                }
                Filter::Area => {
                    // Exact overlap of the output pixel's footprint with each source pixel.
                    let (a, b) = (d as f64 * scale, (d as f64 + 1.0) * scale);
                    let first = a.floor() as usize;
                    let last = (b.ceil() as usize).min(src);
                    t.first.push(first);
                    t.weights.extend((first..last).map(|s| ((b.min(s as f64 + 1.0) - a.max(s as f64)) / scale) as f32));
                }
            }
            t.offsets.push(t.weights.len());
        }
        t
    }

    fn get(&self, d: usize) -> (usize, &[f32]) {
        (self.first[d], &self.weights[self.offsets[d]..self.offsets[d + 1]])
    }
}

pub fn resize(img: &Image, height: usize, width: usize, filter: Filter) -> Image {
    let (sh, sw) = (img.height, img.width);
    let tx = Taps::new(sw, width, filter);
    let ty = Taps::new(sh, height, filter);
    // Horizontal pass into f32 rows, then vertical pass.
    let mut mid = vec![0f32; sh * width * 3];
    for y in 0..sh {
        let src = &img.data[y * sw * 3..(y + 1) * sw * 3];
        let dst = &mut mid[y * width * 3..(y + 1) * width * 3];
        for x in 0..width {
            let (first, w) = tx.get(x);
            let mut acc = [0f32; 3];
            for (k, &wk) in w.iter().enumerate() {
                let p = &src[(first + k) * 3..(first + k) * 3 + 3];
                acc[0] += wk * p[0] as f32;
                acc[1] += wk * p[1] as f32;
                acc[2] += wk * p[2] as f32;
            }
            dst[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    let row = width * 3;
    let mut out = Image::new(height, width);
    let mut acc = vec![0f32; row];
    for y in 0..height {
        let (first, w) = ty.get(y);
        acc.fill(0.0);
        for (k, &wk) in w.iter().enumerate() {
            let src = &mid[(first + k) * row..(first + k + 1) * row];
            for (a, &s) in acc.iter_mut().zip(src) {
                *a += wk * s;
            }
        }
        for (o, &a) in out.data[y * row..(y + 1) * row].iter_mut().zip(&acc) {
            *o = (a.clamp(0.0, 255.0) + 0.5) as u8;
        }
    }
    out
}

/// Returns the side ratio used (AdaFace's resolution information ratio).
pub fn low_resolution(img: &mut Image, rng: &mut Rng) -> f32 {
    let ratio = rng.range(0.2, 1.0);
    let side = ((ratio * img.height as f64) as usize).max(1);
    let down = FILTERS[rng.below(3) as usize];
    let up = FILTERS[rng.below(3) as usize];
    let small = resize(img, side, side, down);
    *img = resize(&small, img.height, img.width, up);
    ratio as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant_and_identity_is_exact() {
        let flat = Image::from_rgb(9, 7, vec![77; 189]);
        for f in FILTERS {
            assert!(resize(&flat, 4, 3, f).data.iter().all(|&v| v == 77), "{f:?}");
            assert!(resize(&flat, 13, 20, f).data.iter().all(|&v| v == 77), "{f:?}");
            let img = Image::from_rgb(3, 2, (0..18).map(|i| i as u8 * 10).collect());
            assert_eq!(resize(&img, 3, 2, f), img, "{f:?}");
        }
    }

    #[test]
    fn area_halving_averages_blocks() {
        let img = Image::from_rgb(2, 2, vec![0, 0, 0, 100, 100, 100, 200, 200, 200, 100, 100, 100]);
        assert_eq!(resize(&img, 1, 1, Filter::Area).data, vec![100, 100, 100]);
        assert_eq!(resize(&img, 1, 1, Filter::Nearest).data, vec![0, 0, 0]);
    }

    #[test]
    fn low_resolution_blurs_detail_and_keeps_size() {
        let mut img = Image::from_rgb(32, 32, (0..32 * 32 * 3).map(|i| if (i / 3) % 2 == 0 { 255 } else { 0 }).collect());
        let orig = img.clone();
        let r = low_resolution(&mut img, &mut Rng::new(11));
        assert!((0.2..1.0).contains(&r));
        assert_eq!((img.height, img.width), (32, 32));
        assert_ne!(img, orig);
    }
}
