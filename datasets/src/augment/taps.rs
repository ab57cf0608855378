//! Where each output pixel of a 1-D resize reads from, and with what weights, for OpenCV's five
//! `cv2.resize` filters as AdaFace draws them. Coordinates follow OpenCV: pixel centres at +0.5 for
//! linear, cubic and Lanczos; `floor(d * src / dst)` for nearest; exact box overlap for area.
//! Taps falling outside the source repeat the edge pixel (OpenCV's replicated border).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    Nearest,
    Bilinear,
    Area,
    /// Keys' cubic with a = -0.75, OpenCV's choice.
    Cubic,
    /// 8 taps of sinc(t) sinc(t / 4).
    Lanczos4,
}

impl Filter {
    pub const ALL: [Filter; 5] =
        [Filter::Nearest, Filter::Bilinear, Filter::Area, Filter::Cubic, Filter::Lanczos4];
}

/// `k` taps per output position: `index[d * k + j]` (already clamped into the source) and `weight[d * k + j]`.
pub struct Taps {
    pub k: usize,
    pub index: Vec<u32>,
    pub weight: Vec<f32>,
}

impl Taps {
    pub fn new(src: usize, dst: usize, filter: Filter) -> Taps {
        assert!(src > 0 && dst > 0);
        let scale = src as f64 / dst as f64;
        let k = match filter {
            Filter::Nearest => 1,
            Filter::Bilinear => 2,
            Filter::Cubic => 4,
            Filter::Lanczos4 => 8,
            // A box of width `scale` touches at most ceil(scale) + 1 source pixels.
            Filter::Area => scale.ceil() as usize + 1,
        };
        let mut t = Taps { k, index: Vec::with_capacity(dst * k), weight: Vec::with_capacity(dst * k) };
        let last = src as i64 - 1;
        let mut w = vec![0f64; k];
        for d in 0..dst {
            w.fill(0.0);
            let first: i64 = match filter {
                Filter::Nearest => {
                    w[0] = 1.0;
                    // OpenCV multiplies by the inverse of dst / src; that rounding decides ties.
                    ((d as f64 * (1.0 / (dst as f64 / src as f64))).floor() as i64).min(last)
                }
                Filter::Area if scale > 1.0 => {
                    let (a, b) = (d as f64 * scale, (d as f64 + 1.0) * scale);
                    let first = a.floor() as i64;
                    for (j, wj) in w.iter_mut().enumerate() {
                        let s = (first + j as i64) as f64;
                        *wj = ((b.min(s + 1.0) - a.max(s)) / scale).max(0.0);
                    }
                    first
                }
                // Upscaling by area is OpenCV's bilinear with the box overlap as the fraction.
                Filter::Area => {
                    let a = d as f64 * scale;
                    let first = a.floor();
                    let f = (((d + 1) as f64 - (first + 1.0) / scale).max(0.0)).fract();
                    w[0] = 1.0 - f;
                    w[1] = f;
                    first as i64
                }
                Filter::Bilinear | Filter::Cubic | Filter::Lanczos4 => {
                    let x = (d as f64 + 0.5) * scale - 0.5;
                    let base = x.floor();
                    let f = x - base;
                    let base = base as i64;
                    if filter == Filter::Bilinear {
                        // OpenCV pins the bilinear sample at the edge instead of blending with a replica.
                        if base < 0 {
                            w[0] = 1.0;
                            t.push(&w, 0, last);
                            continue;
                        }
                        w[0] = 1.0 - f;
                        w[1] = f;
                        base
                    } else {
                        let centre = k as i64 / 2 - 1; // tap j sits at base - centre + j
                        for (j, wj) in w.iter_mut().enumerate() {
                            let dist = f + (centre - j as i64) as f64;
                            *wj = if filter == Filter::Cubic { cubic(dist) } else { lanczos4(dist) };
                        }
                        let sum: f64 = w.iter().sum();
                        w.iter_mut().for_each(|v| *v /= sum);
                        base - centre
                    }
                }
            };
            t.push(&w, first, last);
        }
        t
    }

    fn push(&mut self, w: &[f64], first: i64, last: i64) {
        for (j, &wj) in w.iter().enumerate() {
            // Zero-weight taps past the end still need a valid index.
            self.index.push((first + j as i64).clamp(0, last) as u32);
            self.weight.push(wj as f32);
        }
    }
}

/// Keys' cubic convolution kernel with a = -0.75 at distance `t`.
fn cubic(t: f64) -> f64 {
    const A: f64 = -0.75;
    let t = t.abs();
    if t <= 1.0 {
        ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A
    } else {
        0.0
    }
}

fn lanczos4(t: f64) -> f64 {
    let sinc = |x: f64| {
        if x.abs() < 1e-9 {
            1.0
        } else {
            (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
        }
    };
    if t.abs() < 4.0 {
        sinc(t) * sinc(t / 4.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_indices_stay_inside() {
        for filter in Filter::ALL {
            for (src, dst) in [(112, 23), (23, 112), (7, 7), (5, 12), (112, 111), (3, 1)] {
                let t = Taps::new(src, dst, filter);
                assert_eq!(t.index.len(), dst * t.k);
                assert!(t.index.iter().all(|&i| (i as usize) < src), "{filter:?} {src}->{dst}");
                for ws in t.weight.chunks(t.k) {
                    let s: f32 = ws.iter().sum();
                    assert!((s - 1.0).abs() < 1e-5, "{filter:?} {src}->{dst}: {ws:?}");
                }
            }
        }
    }

    #[test]
    fn kernels_interpolate_at_integers() {
        // At a whole-pixel offset both kernels reproduce the sample: 1 at 0, 0 at the other integers.
        for t in [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0] {
            assert!(cubic(t).abs() < 1e-12 && lanczos4(t).abs() < 1e-12, "{t}");
        }
        assert_eq!((cubic(0.0), lanczos4(0.0)), (1.0, 1.0));
        // Keys' a = -0.75 kernel at 0.5: (a + 2)/8 - (a + 3)/4 + 1 = 0.59375.
        assert!((cubic(0.5) - 0.59375).abs() < 1e-12);
    }
}
