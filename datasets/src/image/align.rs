//! Face alignment as insightface does it (`python-package/insightface/utils/face_align.py`, `norm_crop`,
//! and `recognition/arcface_torch/eval_ijbc.py`): the least-squares similarity (rotation, uniform scale,
//! translation; no reflection) that maps five detected landmarks onto the ArcFace 112x112 template, then a
//! bilinear warp of the image with black where the source falls outside it.
//!
//! The similarity is the one scikit-image's `SimilarityTransform.estimate` (Umeyama's method) returns.
//! In two dimensions Umeyama's rotation-and-scale is the complex number `z = sum(conj(p) q) / sum(|p|^2)`
//! over the centred source points `p` and target points `q`, which is what is computed here; it agrees
//! with the SVD route to rounding (checked against scikit-image by tests/parity/align_ref.py).
//!
//! The warp samples the exact bilinear interpolation at `M^-1 (x, y)` for each output pixel `(x, y)`
//! (pixel centres at integer coordinates, as OpenCV's `warpAffine` and scikit-image's `warp`), treating
//! every tap outside the image as 0 (OpenCV's `BORDER_CONSTANT` with `borderValue=0`), and rounds half up.
//! OpenCV quantizes the source position to 1/32 pixel and the weights to 1/32768, so its output differs
//! from this one by at most about `1 + (range of the four taps) / 32` levels; see datasets/tests/align_parity.rs.

use super::Image;

/// insightface's `arcface_dst` (float32 in its source; these are the same f32 values).
pub const ARCFACE_112: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// The template `eval_ijbc.py` builds: the 96x112 template in float32 with 8 added to x, in float32. The
/// last point's x rounds to a different f32 than `ARCFACE_112`'s (70.72990417 against 70.72989655), so
/// IJB alignment uses this copy to follow that script exactly.
pub const ARCFACE_112_EVAL_IJBC: [[f32; 2]; 5] = [
    [30.2946 + 8.0, 51.6963],
    [65.5318 + 8.0, 51.5014],
    [48.0252 + 8.0, 71.7366],
    [33.5493 + 8.0, 92.3655],
    [62.7299 + 8.0, 92.2041],
];

/// Output side of the template.
pub const ALIGNED_SIZE: usize = 112;

/// `[[a, -b, tx], [b, a, ty]]`: maps source (image) coordinates to template coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub m: [[f64; 3]; 2],
}

impl Similarity {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.m;
        [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]]
    }

    /// The inverse map (template to image coordinates).
    pub fn inverse(&self) -> Similarity {
        let (a, b) = (self.m[0][0], self.m[1][0]);
        let d = a * a + b * b;
        let (ia, ib) = (a / d, -b / d);
        let (tx, ty) = (self.m[0][2], self.m[1][2]);
        Similarity { m: [[ia, -ib, -(ia * tx - ib * ty)], [ib, ia, -(ib * tx + ia * ty)]] }
    }
}

/// The least-squares similarity from `src` to `dst` (scikit-image's `SimilarityTransform.estimate`).
/// Errors when the points are too few or degenerate (all equal), where scikit-image returns NaNs.
pub fn estimate_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<Similarity, String> {
    if src.len() != dst.len() || src.len() < 2 {
        return Err(format!("similarity from {} points onto {} points", src.len(), dst.len()));
    }
    if let Some(p) = src.iter().chain(dst).find(|p| !p[0].is_finite() || !p[1].is_finite()) {
        return Err(format!("landmark ({}, {}) is not finite", p[0], p[1]));
    }
    let n = src.len() as f64;
    let mean = |v: &[[f64; 2]]| {
        let s = v.iter().fold([0.0, 0.0], |acc, p| [acc[0] + p[0], acc[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut re, mut im, mut var) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (px, py) = (s[0] - ms[0], s[1] - ms[1]);
        let (qx, qy) = (d[0] - md[0], d[1] - md[1]);
        re += px * qx + py * qy;
        im += px * qy - py * qx;
        var += px * px + py * py;
    }
    if var <= 0.0 || (re == 0.0 && im == 0.0) {
        return Err("the landmarks are degenerate (all at one point, or no rotation and scale fits)".into());
    }
    let (a, b) = (re / var, im / var);
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Ok(Similarity { m: [[a, -b, tx], [b, a, ty]] })
}

/// Five points from 68 (iBUG layout), as `eval_ijbc.py` reduces them, in float32: the centres of the
/// eyes' corners (36/39 and 42/45), the nose tip (30) and the mouth corners (48, 54).
pub fn five_from_68(p: &[[f32; 2]]) -> Result<[[f32; 2]; 5], String> {
    if p.len() != 68 {
        return Err(format!("expected 68 landmarks, got {}", p.len()));
    }
    let mid = |i: usize, j: usize| [(p[i][0] + p[j][0]) / 2.0, (p[i][1] + p[j][1]) / 2.0];
    Ok([mid(36, 39), mid(42, 45), p[30], p[48], p[54]])
}

/// Landmarks (5 or 68 points) to five, as the IJB script accepts either.
pub fn five_points(p: &[[f32; 2]]) -> Result<[[f32; 2]; 5], String> {
    match p.len() {
        5 => Ok([p[0], p[1], p[2], p[3], p[4]]),
        68 => five_from_68(p),
        n => Err(format!("expected 5 or 68 landmarks, got {n}")),
    }
}

/// The similarity taking five landmarks onto `template`.
pub fn similarity_to_template(lmk: &[[f32; 2]; 5], template: &[[f32; 2]; 5]) -> Result<Similarity, String> {
    let to64 = |v: &[[f32; 2]; 5]| v.map(|p| [p[0] as f64, p[1] as f64]);
    estimate_similarity(&to64(lmk), &to64(template))
}

/// `out_h x out_w` image whose pixel (x, y) is the bilinear sample of `img` at `forward^-1 (x, y)`;
/// taps outside `img` count as 0.
pub fn warp_similarity(img: &Image, forward: &Similarity, out_h: usize, out_w: usize) -> Image {
    let inv = forward.inverse();
    let (h, w) = (img.height as isize, img.width as isize);
    let mut out = Image::new(out_h, out_w);
    let tap = |x: isize, y: isize, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            img.data[(y as usize * img.width + x as usize) * 3 + c] as f64
        }
    };
    for oy in 0..out_h {
        for ox in 0..out_w {
            let [sx, sy] = inv.apply([ox as f64, oy as f64]);
            let (fx, fy) = (sx.floor(), sy.floor());
            let (x0, y0) = (fx as isize, fy as isize);
            let (ax, ay) = (sx - fx, sy - fy);
            let o = (oy * out_w + ox) * 3;
            if x0 < -1 || y0 < -1 || x0 >= w || y0 >= h {
                continue; // every tap outside: black
            }
            for c in 0..3 {
                let top = tap(x0, y0, c) * (1.0 - ax) + tap(x0 + 1, y0, c) * ax;
                let bottom = tap(x0, y0 + 1, c) * (1.0 - ax) + tap(x0 + 1, y0 + 1, c) * ax;
                let v = top * (1.0 - ay) + bottom * ay;
                out.data[o + c] = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// insightface's `norm_crop`: the 112x112 ArcFace crop of `img` given its five (or 68) landmarks.
pub fn norm_crop(img: &Image, landmarks: &[[f32; 2]], template: &[[f32; 2]; 5]) -> Result<Image, String> {
    let five = five_points(landmarks)?;
    let m = similarity_to_template(&five, template)?;
    Ok(warp_similarity(img, &m, ALIGNED_SIZE, ALIGNED_SIZE))
}

/// Parses `2 * k` landmark numbers (x1 y1 x2 y2 ...), k = 5 or 68, as float32 the way the IJB script
/// reads them (`float(text)` to double, then to float32).
pub fn parse_landmarks(fields: &[&str]) -> Result<Vec<[f32; 2]>, String> {
    if fields.len() != 10 && fields.len() != 136 {
        return Err(format!("expected 10 or 136 landmark numbers (5 or 68 points), found {}", fields.len()));
    }
    let mut v = Vec::with_capacity(fields.len());
    for f in fields {
        let x: f64 = f.parse().map_err(|_| format!("landmark value '{f}' is not a number"))?;
        if !x.is_finite() {
            return Err(format!("landmark value '{f}' is not finite"));
        }
        v.push(x as f32);
    }
    Ok(v.chunks(2).map(|p| [p[0], p[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity_exactly() {
        // Rotate by 0.3 rad, scale 1.7, shift: the template's preimage maps back onto it.
        let (s, t) = (1.7f64, 0.3f64);
        let truth = Similarity { m: [[s * t.cos(), -s * t.sin(), 12.0], [s * t.sin(), s * t.cos(), -7.5]] };
        let inv = truth.inverse();
        let dst: Vec<[f64; 2]> = ARCFACE_112.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
        let src: Vec<[f64; 2]> = dst.iter().map(|&q| inv.apply(q)).collect();
        let est = estimate_similarity(&src, &dst).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                assert!((est.m[r][c] - truth.m[r][c]).abs() < 1e-9, "{est:?} vs {truth:?}");
            }
        }
        let back = est.inverse().apply(est.apply([3.0, 4.0]));
        assert!((back[0] - 3.0).abs() < 1e-12 && (back[1] - 4.0).abs() < 1e-12);
    }

    #[test]
    fn least_squares_never_reflects() {
        // Mirror-image points: the best proper similarity is not a reflection (determinant > 0).
        let src = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        let dst = [[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]];
        let m = estimate_similarity(&src, &dst).unwrap().m;
        assert!(m[0][0] * m[1][1] - m[0][1] * m[1][0] >= 0.0);
        assert_eq!(m[0][0], m[1][1]);
    }

    #[test]
    fn degenerate_landmarks_are_errors() {
        assert!(estimate_similarity(
            &[[1.0, 1.0]; 5],
            &[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 1.0]]
        )
        .is_err());
        assert!(estimate_similarity(&[[f64::NAN, 0.0], [1.0, 1.0]], &[[0.0, 0.0], [1.0, 1.0]]).is_err());
        assert!(parse_landmarks(&["1"; 9]).is_err());
        assert!(parse_landmarks(&["x"; 10]).unwrap_err().contains("'x'"));
    }

    #[test]
    fn identity_warp_copies_and_outside_is_black() {
        let mut img = Image::new(4, 5);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = (i * 7 % 256) as u8;
        }
        let id = Similarity { m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] };
        assert_eq!(warp_similarity(&img, &id, 4, 5), img);
        // Shifted by half a pixel right: the first column mixes the border's 0 with pixel 0.
        let half = Similarity { m: [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]] };
        let out = warp_similarity(&img, &half, 4, 5);
        let expect = (img.data[0] as f64 * 0.5 + 0.5).floor() as u8;
        assert_eq!(out.data[0], expect);
        let far = Similarity { m: [[1.0, 0.0, 100.0], [0.0, 1.0, 0.0]] };
        assert!(warp_similarity(&img, &far, 4, 5).data.iter().all(|&v| v == 0));
    }

    #[test]
    fn sixty_eight_points_reduce_as_eval_ijbc() {
        let mut p = vec![[0.0f32; 2]; 68];
        p[36] = [10.0, 20.0];
        p[39] = [14.0, 22.0];
        p[30] = [5.0, 6.0];
        let five = five_points(&p).unwrap();
        assert_eq!(five[0], [12.0, 21.0]);
        assert_eq!(five[2], [5.0, 6.0]);
        assert!(five_points(&p[..7]).is_err());
    }

    #[test]
    fn eval_ijbc_template_differs_from_arcface_dst_by_one_ulp_at_most() {
        for (a, b) in ARCFACE_112.iter().zip(&ARCFACE_112_EVAL_IJBC) {
            for k in 0..2 {
                let ulps = (a[k].to_bits() as i64 - b[k].to_bits() as i64).abs();
                assert!(ulps <= 1, "{a:?} vs {b:?}");
            }
        }
        assert_ne!(ARCFACE_112[4][0], ARCFACE_112_EVAL_IJBC[4][0]);
    }
}
