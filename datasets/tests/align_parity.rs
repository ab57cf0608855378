//! Face alignment against scikit-image's SimilarityTransform, OpenCV's warpAffine and insightface's
//! norm_crop (fixtures from tests/parity/align_ref.py, which tests/run.sh runs first).
//!
//! The matrix must agree to 1e-9 with scikit-image's estimate from float64 points (the same least-squares
//! solution). insightface passes float32 arrays, and scikit-image then computes in float32; that matrix
//! must place every point of the crop within 1e-3 pixel of ours (float32 rounding of a ~100-pixel
//! translation is ~1e-5 pixel), far below OpenCV's own 1/32-pixel quantization. The pixels cannot
//! agree exactly: OpenCV rounds the source position of every output pixel to 1/32 pixel and the bilinear
//! weights to 1/32768, where we sample the exact position. Moving a bilinear sample by up to 1/64 pixel
//! in x and in y moves it by at most (1/64 + 1/64) x (the range R of the four taps), plus one level for
//! the two roundings; so each pixel is held to |ours - OpenCV| <= 1 + R/32 (R over the 3x3 taps around
//! the sample, since the rounded position can fall in a neighbouring cell), and most pixels must agree
//! exactly.

use datasets::image::align::{
    five_points, similarity_to_template, warp_similarity, Similarity, ARCFACE_112, ARCFACE_112_EVAL_IJBC,
};
use datasets::image::Image;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::var_os("FACETRAIN_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root.join("tests/fixtures"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("{}: {e} (run tests/parity/align_ref.py OUTDIR, as tests/run.sh does)", path.display())
    })
}

/// Range of the source values the bilinear sample at `forward^-1 (x, y)` can draw on (3x3 taps).
fn local_range(img: &Image, forward: &Similarity, x: usize, y: usize, c: usize) -> f64 {
    let [sx, sy] = forward.inverse().apply([x as f64, y as f64]);
    let (x0, y0) = (sx.floor() as isize, sy.floor() as isize);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for dy in -1..=2 {
        for dx in -1..=2 {
            let (xx, yy) = (x0 + dx, y0 + dy);
            let v = if xx < 0 || yy < 0 || xx >= img.width as isize || yy >= img.height as isize {
                0.0
            } else {
                img.data[(yy as usize * img.width + xx as usize) * 3 + c] as f64
            };
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    hi - lo
}

/// Checks `got` against a reference warp; returns (max difference, fraction of differing values).
fn compare(name: &str, what: &str, src: &Image, m: &Similarity, got: &Image, want: &[u8]) -> (u8, f64) {
    assert_eq!(got.data.len(), want.len(), "{name}: {what}: size");
    let mut differ = 0;
    let mut max = 0u8;
    for y in 0..112 {
        for x in 0..112 {
            for c in 0..3 {
                let i = (y * 112 + x) * 3 + c;
                let d = got.data[i].abs_diff(want[i]);
                if d == 0 {
                    continue;
                }
                differ += 1;
                max = max.max(d);
                let bound = 1.0 + local_range(src, m, x, y, c) / 32.0;
                assert!(
                    d as f64 <= bound,
                    "{name}: {what}: pixel ({x}, {y}) channel {c}: ours {} vs {}, bound {bound:.2}",
                    got.data[i],
                    want[i]
                );
            }
        }
    }
    let frac = differ as f64 / want.len() as f64;
    assert!(frac < 0.15, "{name}: {what}: {:.1}% of values differ", 100.0 * frac);
    (max, frac)
}

#[test]
fn alignment_matches_skimage_opencv_and_insightface() {
    let dir = fixtures().join("align");
    let cases = String::from_utf8(read(&dir.join("cases.txt"))).unwrap();
    let (mut checked, mut with_insightface) = (0, 0);
    for line in cases.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        let name = f[0];
        let (h, w, npts): (usize, usize, usize) =
            (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap());
        let template = match f[4] {
            "arcface" => &ARCFACE_112,
            "eval_ijbc" => &ARCFACE_112_EVAL_IJBC,
            t => panic!("cases.txt: unknown template {t}"),
        };
        let nums: Vec<f64> = f[5..].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(nums.len(), 2 * npts + 12, "{name}: field count");
        let pts: Vec<[f32; 2]> = nums[..2 * npts].chunks(2).map(|p| [p[0] as f32, p[1] as f32]).collect();
        let (m32, m64) = (&nums[2 * npts..2 * npts + 6], &nums[2 * npts + 6..]);
        let five = five_points(&pts).unwrap();
        let m = similarity_to_template(&five, template).unwrap();
        let ours = [m.m[0], m.m[1]].concat();
        for (k, (a, b)) in ours.iter().zip(m64).enumerate() {
            assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "{name}: matrix entry {k}: {a} vs skimage {b}");
        }
        let theirs = Similarity { m: [[m32[0], m32[1], m32[2]], [m32[3], m32[4], m32[5]]] };
        let (ti, oi) = (theirs.inverse(), m.inverse());
        for (x, y) in [(0.0, 0.0), (111.0, 0.0), (0.0, 111.0), (111.0, 111.0), (56.0, 56.0)] {
            let (p, q) = (ti.apply([x, y]), oi.apply([x, y]));
            let d = ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt();
            assert!(d < 1e-3, "{name}: crop point ({x}, {y}) comes from {p:?} (float32 skimage) vs {q:?}");
        }
        let src = Image::from_rgb(h, w, read(&dir.join(format!("{name}.src.u8"))));
        let got = warp_similarity(&src, &m, 112, 112);
        let (max, frac) =
            compare(name, "cv2.warpAffine", &src, &m, &got, &read(&dir.join(format!("{name}.cv2.u8"))));
        println!("{name}: vs OpenCV max difference {max}, {:.2}% of values differ", 100.0 * frac);
        let insight = dir.join(format!("{name}.insightface.u8"));
        if f[4] == "arcface" {
            let (max, frac) = compare(name, "insightface norm_crop", &src, &m, &got, &read(&insight));
            println!("{name}: vs insightface norm_crop max difference {max}, {:.2}% differ", 100.0 * frac);
            with_insightface += 1;
        }
        checked += 1;
    }
    assert_eq!(checked, 7, "cases.txt should list 7 cases");
    assert_eq!(with_insightface, 5, "five cases use insightface's template");
}
