//! 2-D convolution on NHWC activations and OHWI weights by im2col + GEMM.
//!
//! In NHWC the patch of one output pixel, ordered (ky, kx, c) like an OHWI filter row, is k runs of k*C
//! contiguous input elements, so im2col is k slice copies per pixel and the product with the filter
//! `[O, K]` lands directly in NHWC. A 1x1 stride-1 convolution skips im2col altogether.
//!
//! Output pixels of the whole batch form the rows of one `[N*Ho*Wo, O]` product, cut into fixed blocks, so
//! small late layers (7x7) still feed the GEMM long blocks. Parallelism and determinism: forward runs one
//! task per block, backward-data one task per group of whole images (its col2im adds overlapping patches
//! in a fixed order), backward-filter a tiled GEMM over a fixed chunking of the batch, or fixed image
//! groups summed in order. No split depends on the thread count.

use super::gemm::{gemm, gemm_serial};
use crate::backend::Conv2dParams;
use crate::tensor::Float;
use crate::{Error, Result};
use rayon::prelude::*;

/// Output pixels per im2col block: long enough that the packed filter is reused across many rows, short
/// enough that a block of patches stays near the cache for its GEMM.
const PIXELS_PER_BLOCK: usize = 256;

/// Elements of im2col buffer the filter gradient materializes at once (bounds memory for big batches).
const FILTER_COL_BUDGET: usize = 1 << 23;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Geometry {
    /// Checks x `[N, H, W, C]` against w `[O, k, k, C]` and `p`.
    pub fn new(x: &[usize], w: &[usize], p: Conv2dParams) -> Result<Geometry> {
        let ([n, h, wd, c], [o, kh, kw, ci]) = (x, w) else {
            return Err(Error::Shape(format!(
                "conv2d: expected x NHWC and w OHWI of rank 4, got {x:?} and {w:?}"
            )));
        };
        if *kh != p.kernel || *kw != p.kernel || ci != c {
            return Err(Error::Shape(format!(
                "conv2d: weight {w:?} does not fit input {x:?} with a {k}x{k} kernel (OHWI expected)",
                k = p.kernel
            )));
        }
        if p.stride == 0 || p.kernel == 0 || h + 2 * p.padding < p.kernel || wd + 2 * p.padding < p.kernel {
            return Err(Error::Shape(format!("conv2d: {p:?} does not fit a {h}x{wd} input")));
        }
        Ok(Geometry {
            n: *n,
            h: *h,
            w: *wd,
            c: *c,
            o: *o,
            k: p.kernel,
            stride: p.stride,
            pad: p.padding,
            ho: p.out_size(*h),
            wo: p.out_size(*wd),
        })
    }

    /// Length of one patch (a row of the OHWI filter).
    pub fn patch(&self) -> usize {
        self.k * self.k * self.c
    }
    pub fn pixels_out(&self) -> usize {
        self.ho * self.wo
    }
    fn image_in(&self) -> usize {
        self.h * self.w * self.c
    }
    /// A 1x1 stride-1 unpadded conv is a plain product: its im2col is the input itself.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// For output pixel `r` and kernel row `ky`: the input row, the first and one-past-last kernel column
    /// inside the image, and where the first of those columns starts in the image. `None`: row outside.
    #[inline]
    fn kernel_row(&self, r: usize, ky: usize) -> Option<(usize, usize, usize)> {
        let (oy, ox) = (r / self.wo, r % self.wo);
        let iy = (oy * self.stride + ky) as isize - self.pad as isize;
        if iy < 0 || iy >= self.h as isize {
            return None;
        }
        let ix0 = (ox * self.stride) as isize - self.pad as isize;
        let lo = (-ix0).clamp(0, self.k as isize) as usize;
        let hi = (self.w as isize - ix0).clamp(0, self.k as isize) as usize;
        if lo >= hi {
            return None;
        }
        let start = (iy as usize * self.w + (ix0 + lo as isize) as usize) * self.c;
        Some((lo, hi, start))
    }
}

/// Fills `col` (`[rows, K]`) with the patches of output rows `r0..` (numbered over the batch: image
/// r / (Ho*Wo)) of the images in `x` (`[n, H, W, C]`, starting at image 0).
fn im2col<T: Float>(g: &Geometry, x: &[T], r0: usize, col: &mut [T]) {
    let (run, px) = (g.k * g.c, g.pixels_out());
    for (i, patch) in col.chunks_exact_mut(g.patch()).enumerate() {
        let (n, pix) = ((r0 + i) / px, (r0 + i) % px);
        let x = &x[n * g.image_in()..(n + 1) * g.image_in()];
        for (ky, dst) in patch.chunks_exact_mut(run).enumerate() {
            match g.kernel_row(pix, ky) {
                None => dst.fill(T::ZERO),
                Some((lo, hi, start)) => {
                    dst[..lo * g.c].fill(T::ZERO);
                    dst[lo * g.c..hi * g.c].copy_from_slice(&x[start..start + (hi - lo) * g.c]);
                    dst[hi * g.c..].fill(T::ZERO);
                }
            }
        }
    }
}

/// Adds the patches in `col` (`[rows, K]`, output rows `r0..` numbered as in `im2col`) back into the
/// images `dx` (`[n, H, W, C]`).
fn col2im_add<T: Float>(g: &Geometry, col: &[T], r0: usize, dx: &mut [T]) {
    let (run, px) = (g.k * g.c, g.pixels_out());
    for (i, patch) in col.chunks_exact(g.patch()).enumerate() {
        let (n, pix) = ((r0 + i) / px, (r0 + i) % px);
        let dx = &mut dx[n * g.image_in()..(n + 1) * g.image_in()];
        for (ky, src) in patch.chunks_exact(run).enumerate() {
            if let Some((lo, hi, start)) = g.kernel_row(pix, ky) {
                let dst = &mut dx[start..start + (hi - lo) * g.c];
                for (d, &s) in dst.iter_mut().zip(&src[lo * g.c..hi * g.c]) {
                    *d += s;
                }
            }
        }
    }
}

/// y `[N, Ho, Wo, O]` = conv(x `[N, H, W, C]`, w `[O, k, k, C]`).
pub fn forward<T: Float>(g: &Geometry, x: &[T], w: &[T], y: &mut [T]) {
    let kk = g.patch();
    if g.o == 0 {
        return;
    }
    y.par_chunks_mut(PIXELS_PER_BLOCK * g.o).enumerate().for_each_init(Vec::new, |col, (b, yb)| {
        let (r0, rows) = (b * PIXELS_PER_BLOCK, yb.len() / g.o);
        if g.pointwise() {
            gemm_serial(rows, kk, g.o, &x[r0 * g.c..(r0 + rows) * g.c], false, w, true, yb, false);
        } else {
            col.resize(rows * kk, T::ZERO);
            im2col(g, x, r0, col);
            gemm_serial(rows, kk, g.o, col, false, w, true, yb, false);
        }
    });
}

/// dx `[N, H, W, C]` from dy `[N, Ho, Wo, O]` and w.
pub fn backward_data<T: Float>(g: &Geometry, dy: &[T], w: &[T], dx: &mut [T]) {
    let (kk, px) = (g.patch(), g.pixels_out());
    if g.image_in() == 0 {
        return;
    }
    // Whole images per task (col2im of neighbouring pixels overlaps), at least one block of rows each.
    let images = PIXELS_PER_BLOCK.div_ceil(px).max(1);
    dx.par_chunks_mut(images * g.image_in()).enumerate().for_each(|(grp, dxg)| {
        let rows_total = dxg.len() / g.image_in() * px;
        let dyg = &dy[grp * images * px * g.o..][..rows_total * g.o];
        if g.pointwise() {
            gemm_serial(rows_total, g.o, kk, dyg, false, w, false, dxg, false);
            return;
        }
        dxg.fill(T::ZERO);
        let mut dcol = vec![T::ZERO; PIXELS_PER_BLOCK.min(rows_total) * kk];
        for r0 in (0..rows_total).step_by(PIXELS_PER_BLOCK) {
            let rows = PIXELS_PER_BLOCK.min(rows_total - r0);
            let dcol = &mut dcol[..rows * kk];
            gemm_serial(rows, g.o, kk, &dyg[r0 * g.o..(r0 + rows) * g.o], false, w, false, dcol, false);
            col2im_add(g, dcol, r0, dxg);
        }
    });
}

/// Groups of images whose filter-gradient partials are summed in order, when dw is too small to split.
const FILTER_GROUPS: usize = 8;

/// Below this many GEMM tiles in dw, split the batch instead (narrow layers would run on one core).
const MIN_FILTER_TILES: usize = 8;

/// dw `[O, k, k, C]` from dy and x: dw = sum over images of dy_n^T col_n.
pub fn backward_filter<T: Float>(g: &Geometry, dy: &[T], x: &[T], dw: &mut [T]) {
    let (kk, px) = (g.patch(), g.pixels_out());
    if px == 0 || g.n == 0 {
        dw.fill(T::ZERO);
        return;
    }
    if g.o.div_ceil(64) * kk.div_ceil(256) < MIN_FILTER_TILES && g.n > 1 {
        backward_filter_by_images(g, dy, x, dw);
    } else if g.pointwise() {
        gemm(g.o, g.n * px, kk, dy, true, x, false, dw, false);
    } else {
        backward_filter_by_chunks(g, dy, x, dw);
    }
}

/// Wide dw: im2col a chunk of images at once, then one tiled GEMM per chunk, chunks summed in order.
fn backward_filter_by_chunks<T: Float>(g: &Geometry, dy: &[T], x: &[T], dw: &mut [T]) {
    let (kk, px) = (g.patch(), g.pixels_out());
    let chunk = (FILTER_COL_BUDGET / (px * kk).max(1)).clamp(1, g.n);
    let mut col = vec![T::ZERO; chunk * px * kk];
    for (ci, n0) in (0..g.n).step_by(chunk).enumerate() {
        let imgs = chunk.min(g.n - n0);
        let colc = &mut col[..imgs * px * kk];
        let xc = &x[n0 * g.image_in()..(n0 + imgs) * g.image_in()];
        colc.par_chunks_mut(PIXELS_PER_BLOCK * kk)
            .enumerate()
            .for_each(|(b, blk)| im2col(g, xc, b * PIXELS_PER_BLOCK, blk));
        let dyc = &dy[n0 * px * g.o..(n0 + imgs) * px * g.o];
        gemm(g.o, imgs * px, kk, dyc, true, colc, false, dw, ci > 0);
    }
}

/// Narrow dw: fixed groups of images each sum their own partial (image by image), then the partials are
/// added in group order.
fn backward_filter_by_images<T: Float>(g: &Geometry, dy: &[T], x: &[T], dw: &mut [T]) {
    let (kk, px) = (g.patch(), g.pixels_out());
    let per_group = g.n.div_ceil(FILTER_GROUPS);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per_group))
        .into_par_iter()
        .map(|grp| {
            let mut acc = vec![T::ZERO; g.o * kk];
            let mut col = if g.pointwise() { Vec::new() } else { vec![T::ZERO; px * kk] };
            for n in grp * per_group..((grp + 1) * per_group).min(g.n) {
                let xn = &x[n * g.image_in()..(n + 1) * g.image_in()];
                let dyn_ = &dy[n * px * g.o..(n + 1) * px * g.o];
                let first = n == grp * per_group;
                if g.pointwise() {
                    gemm_serial(g.o, px, kk, dyn_, true, xn, false, &mut acc, !first);
                } else {
                    im2col(g, xn, 0, &mut col);
                    gemm_serial(g.o, px, kk, dyn_, true, &col, false, &mut acc, !first);
                }
            }
            acc
        })
        .collect();
    dw.copy_from_slice(&partials[0]);
    for p in &partials[1..] {
        for (d, &v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of the convolution, in f64.
    fn naive(g: &Geometry, x: &[f64], w: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; g.n * g.ho * g.wo * g.o];
        for n in 0..g.n {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    for o in 0..g.o {
                        let mut s = 0.0;
                        for ky in 0..g.k {
                            for kx in 0..g.k {
                                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                for c in 0..g.c {
                                    let xv = x[((n * g.h + iy as usize) * g.w + ix as usize) * g.c + c];
                                    s += xv * w[((o * g.k + ky) * g.k + kx) * g.c + c];
                                }
                            }
                        }
                        y[((n * g.ho + oy) * g.wo + ox) * g.o + o] = s;
                    }
                }
            }
        }
        y
    }

    fn data(len: usize, mul: usize) -> Vec<f64> {
        (0..len).map(|i| ((i * mul % 17) as f64 - 8.0) * 0.25).collect()
    }

    #[test]
    fn forward_matches_the_definition_for_each_geometry() {
        for (k, s, p, h, w) in
            [(3, 1, 1, 7, 6), (3, 2, 1, 7, 8), (1, 2, 0, 6, 5), (1, 1, 0, 4, 3), (3, 1, 0, 5, 5)]
        {
            let prm = Conv2dParams { kernel: k, stride: s, padding: p };
            let g = Geometry::new(&[2, h, w, 3], &[4, k, k, 3], prm).unwrap();
            let x = data(2 * h * w * 3, 7);
            let wt = data(4 * k * k * 3, 5);
            let mut y = vec![0.0; g.n * g.pixels_out() * g.o];
            forward(&g, &x, &wt, &mut y);
            // Small integers times quarters: every product and sum is exact in f64.
            assert_eq!(y, naive(&g, &x, &wt), "k={k} s={s} p={p}");
        }
    }

    /// dw by its definition: sum over pixels of dy[o] * patch.
    fn naive_filter(g: &Geometry, dy: &[f64], x: &[f64]) -> Vec<f64> {
        let mut dw = vec![0.0; g.o * g.patch()];
        for n in 0..g.n {
            let mut col = vec![0.0; g.pixels_out() * g.patch()];
            im2col(g, &x[n * g.image_in()..(n + 1) * g.image_in()], 0, &mut col);
            for r in 0..g.pixels_out() {
                for o in 0..g.o {
                    for j in 0..g.patch() {
                        dw[o * g.patch() + j] +=
                            dy[(n * g.pixels_out() + r) * g.o + o] * col[r * g.patch() + j];
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn both_filter_gradient_paths_match_the_definition() {
        // o = 8 takes the per-image path, o = 520 the chunked tiled GEMM.
        for (o, k, s, p) in [(8, 3, 2, 1), (520, 3, 1, 1), (8, 1, 1, 0), (520, 1, 1, 0), (8, 1, 2, 0)] {
            let prm = Conv2dParams { kernel: k, stride: s, padding: p };
            let g = Geometry::new(&[9, 5, 6, 3], &[o, k, k, 3], prm).unwrap();
            let x = data(g.n * g.image_in(), 7);
            let dy = data(g.n * g.pixels_out() * o, 3);
            let mut dw = vec![1.0; o * g.patch()];
            backward_filter(&g, &dy, &x, &mut dw);
            assert_eq!(dw, naive_filter(&g, &dy, &x), "o={o} k={k} s={s}");
        }
    }

    #[test]
    fn data_gradient_matches_the_definition_across_image_groups() {
        for (k, s, p, hw) in [(3, 1, 1, 12), (3, 2, 1, 9), (1, 2, 0, 12), (1, 1, 0, 10)] {
            let prm = Conv2dParams { kernel: k, stride: s, padding: p };
            let g = Geometry::new(&[9, hw, hw, 3], &[5, k, k, 3], prm).unwrap();
            let w = data(5 * g.patch(), 5);
            let dy = data(g.n * g.pixels_out() * g.o, 3);
            let mut want = vec![0.0; g.n * g.image_in()];
            for n in 0..g.n {
                for r in 0..g.pixels_out() {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = ((r / g.wo) * s + ky) as isize - p as isize;
                            let ix = ((r % g.wo) * s + kx) as isize - p as isize;
                            if iy < 0 || ix < 0 || iy >= hw as isize || ix >= hw as isize {
                                continue;
                            }
                            for o in 0..g.o {
                                for c in 0..3 {
                                    want[((n * hw + iy as usize) * hw + ix as usize) * 3 + c] += dy
                                        [(n * g.pixels_out() + r) * g.o + o]
                                        * w[((o * k + ky) * k + kx) * 3 + c];
                                }
                            }
                        }
                    }
                }
            }
            let mut dx = vec![1.0; want.len()];
            backward_data(&g, &dy, &w, &mut dx);
            assert_eq!(dx, want, "k={k} s={s}");
        }
    }

    #[test]
    fn bad_geometry_is_a_shape_error() {
        let p = Conv2dParams { kernel: 3, stride: 1, padding: 1 };
        assert!(matches!(Geometry::new(&[1, 4, 4, 3], &[2, 3, 3, 2], p), Err(Error::Shape(_))));
        assert!(matches!(Geometry::new(&[4, 4, 3], &[2, 3, 3, 3], p), Err(Error::Shape(_))));
        let p0 = Conv2dParams { kernel: 3, stride: 0, padding: 1 };
        assert!(matches!(Geometry::new(&[1, 4, 4, 3], &[2, 3, 3, 3], p0), Err(Error::Shape(_))));
        let big = Conv2dParams { kernel: 5, stride: 1, padding: 0 };
        assert!(matches!(Geometry::new(&[1, 4, 4, 3], &[2, 5, 5, 3], big), Err(Error::Shape(_))));
    }
}
