//! The "no learning" reference: verification by cosine similarity of raw pixels. The best threshold
//! chosen on all pairs at once is an upper bound of the 10-fold protocol's accuracy, so a generated set
//! whose bound stays near chance cannot be solved by pixel matching.

use super::SynthImage;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBaseline {
    /// Cosine of the raw pixel vectors.
    pub raw: f64,
    /// Cosine after subtracting each image's own mean.
    pub image_mean: f64,
    /// Cosine after subtracting the mean image of all pair images.
    pub set_mean: f64,
}

impl PixelBaseline {
    pub fn best(&self) -> f64 {
        self.raw.max(self.image_mean).max(self.set_mean)
    }
}

/// Highest accuracy of `score >= t means same` over all thresholds `t`.
pub fn best_threshold_accuracy(scores: &[(f64, bool)]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = sorted.len();
    // Start with the threshold below every score (all called same), then raise it past each run of
    // equal scores, which turns that run into "different".
    let mut same_above = sorted.iter().filter(|s| s.1).count();
    let mut diff_below = 0usize;
    let mut best = same_above;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && sorted[j].0 == sorted[i].0 {
            if sorted[j].1 {
                same_above -= 1;
            } else {
                diff_below += 1;
            }
            j += 1;
        }
        best = best.max(same_above + diff_below);
        i = j;
    }
    best as f64 / n as f64
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-12)
}

/// Best-threshold accuracy of raw-pixel cosine verification under three normalizations.
pub fn raw_pixel_accuracy(pairs: &[(SynthImage, SynthImage, bool)]) -> PixelBaseline {
    let as_f64 = |img: &SynthImage| img.rgb.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let centred = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
        v.iter().map(|x| x - m).collect::<Vec<f64>>()
    };
    let vecs: Vec<(Vec<f64>, Vec<f64>, bool)> =
        pairs.iter().map(|(a, b, s)| (as_f64(a), as_f64(b), *s)).collect();
    let dim = vecs.first().map_or(0, |v| v.0.len());
    let mut mean = vec![0.0; dim];
    for (a, b, _) in &vecs {
        for i in 0..dim {
            mean[i] += a[i] + b[i];
        }
    }
    mean.iter_mut().for_each(|m| *m /= (2 * vecs.len()).max(1) as f64);
    let minus_mean = |v: &[f64]| v.iter().zip(&mean).map(|(x, m)| x - m).collect::<Vec<f64>>();
    let score = |f: &dyn Fn(&[f64], &[f64]) -> f64| {
        best_threshold_accuracy(&vecs.iter().map(|(a, b, s)| (f(a, b), *s)).collect::<Vec<_>>())
    };
    PixelBaseline {
        raw: score(&|a, b| cosine(a, b)),
        image_mean: score(&|a, b| cosine(&centred(a), &centred(b))),
        set_mean: score(&|a, b| cosine(&minus_mean(a), &minus_mean(b))),
    }
}
