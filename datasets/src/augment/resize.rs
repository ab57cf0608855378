//! Separable resizing of u8 RGB images with the filters of [`taps`](super::taps), and AdaFace's
//! low-resolution augmentation: down to a random side in [0.2, 1] x H and back up, each step with one of
//! OpenCV's five filters drawn at random (as AdaFace's `cv2.resize` calls do).

use super::round_u8;
use super::taps::{Filter, Taps};
use crate::image::Image;
use crate::rng::Rng;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// `k`-tap resampling along one row of RGB f32 pixels: `dst[d] = sum_j w[d, j] * src[index[d, j]]`.
/// Each tap loads 4 floats (the pixel and the next one's red, which `src` must have one float of slack
/// for) so that it is one vector multiply-add; the fourth lane is dropped. `K` is a constant in the hot
/// cases so the tap loop unrolls.
#[inline(always)]
fn resample_row<const K: usize>(src: &[f32], dst: &mut [f32], taps: &Taps) {
    let k = if K > 0 { K } else { taps.k };
    for ((out, idx), w) in
        dst.chunks_exact_mut(3).zip(taps.index.chunks_exact(k)).zip(taps.weight.chunks_exact(k))
    {
        let mut acc = [0f32; 4];
        for j in 0..k {
            let p = idx[j] as usize * 3;
            let s: &[f32; 4] = src[p..p + 4].try_into().unwrap();
            for c in 0..4 {
                acc[c] += w[j] * s[c];
            }
        }
        out.copy_from_slice(&acc[..3]);
    }
}

/// Row pass over `rows` rows of `src_w` pixels (`src` has one float of slack at the end).
#[inline(always)]
fn resample_rows(src: &[f32], src_w: usize, rows: usize, dst: &mut [f32], dst_w: usize, taps: &Taps) {
    for y in 0..rows {
        let s = &src[y * src_w * 3..(y + 1) * src_w * 3 + 1];
        let d = &mut dst[y * dst_w * 3..(y + 1) * dst_w * 3];
        match taps.k {
            1 => resample_row::<1>(s, d, taps),
            2 => resample_row::<2>(s, d, taps),
            4 => resample_row::<4>(s, d, taps),
            8 => resample_row::<8>(s, d, taps),
            _ => resample_row::<0>(s, d, taps),
        }
    }
}

/// Column pass: each output row blends whole source rows, which vectorizes (u8 or f32 sources).
#[inline(always)]
fn resample_cols<T: Copy + Into<f32>>(src: &[T], row: usize, dst: &mut [f32], taps: &Taps) {
    for (y, out) in dst.chunks_exact_mut(row).enumerate() {
        out.fill(0.0);
        for j in 0..taps.k {
            let wj = taps.weight[y * taps.k + j];
            if wj == 0.0 {
                continue;
            }
            let s = taps.index[y * taps.k + j] as usize;
            for (a, &p) in out.iter_mut().zip(&src[s * row..(s + 1) * row]) {
                *a += wj * p.into();
            }
        }
    }
}

/// Per-thread reusable state: taps per (source side, output side, filter), since loader images repeat the
/// same few sizes, and the f32 planes, so a resize neither recomputes sines nor allocates.
#[derive(Default)]
struct Scratch {
    taps: HashMap<(usize, usize, Filter), Rc<Taps>>,
    src: Vec<f32>,
    mid: Vec<f32>,
    out: Vec<f32>,
}

impl Scratch {
    fn taps(&mut self, src: usize, dst: usize, filter: Filter) -> Rc<Taps> {
        self.taps.entry((src, dst, filter)).or_insert_with(|| Rc::new(Taps::new(src, dst, filter))).clone()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Resizes to `height` x `width` with `filter`, rounding to u8 like OpenCV's u8 path (within one level).
pub fn resize(img: &Image, height: usize, width: usize, filter: Filter) -> Image {
    SCRATCH.with(|s| resize_with(&mut s.borrow_mut(), img, height, width, filter))
}

fn resize_with(s: &mut Scratch, img: &Image, height: usize, width: usize, filter: Filter) -> Image {
    // Wider vectors where the CPU has them; no FMA, so results are the same bits either way.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(s: &mut Scratch, img: &Image, height: usize, width: usize, filter: Filter) -> Image {
            resize_generic(s, img, height, width, filter)
        }
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { avx2(s, img, height, width, filter) };
    }
    resize_generic(s, img, height, width, filter)
}

#[inline(always)]
fn resize_generic(s: &mut Scratch, img: &Image, height: usize, width: usize, filter: Filter) -> Image {
    let (sh, sw) = (img.height, img.width);
    let tx = s.taps(sw, width, filter);
    let ty = s.taps(sh, height, filter);
    let Scratch { src, mid, out: out_f, .. } = s;
    out_f.resize(height * width * 3, 0.0);
    // The row pass gathers (more work per tap), so it runs on whichever side has fewer rows.
    if height < sh {
        mid.resize(height * sw * 3 + 1, 0.0);
        resample_cols(&img.data, sw * 3, &mut mid[..height * sw * 3], &ty);
        resample_rows(mid, sw, height, out_f, width, &tx);
    } else {
        src.resize(sh * sw * 3 + 1, 0.0);
        src.iter_mut().zip(&img.data).for_each(|(m, &v)| *m = v as f32);
        mid.resize(sh * width * 3, 0.0);
        resample_rows(src, sw, sh, mid, width, &tx);
        resample_cols(mid, width * 3, out_f, &ty);
    }
    let mut out = Image::new(height, width);
    out.data.iter_mut().zip(out_f.iter()).for_each(|(o, &v)| *o = round_u8(v));
    out
}

/// Returns the side ratio used (AdaFace's resolution information ratio).
pub fn low_resolution(img: &mut Image, rng: &mut Rng) -> f32 {
    let ratio = rng.range(0.2, 1.0);
    let side = ((ratio * img.height as f64) as usize).max(1);
    let down = Filter::ALL[rng.below(5) as usize];
    let up = Filter::ALL[rng.below(5) as usize];
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
        for f in Filter::ALL {
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
        let mut img = Image::from_rgb(
            32,
            32,
            (0..32 * 32 * 3).map(|i| if (i / 3) % 2 == 0 { 255 } else { 0 }).collect(),
        );
        let orig = img.clone();
        let r = low_resolution(&mut img, &mut Rng::new(11));
        assert!((0.2..1.0).contains(&r));
        assert_eq!((img.height, img.width), (32, 32));
        assert_ne!(img, orig);
    }
}
