//! Template features from image features, as `eval_ijbc.py` computes them (`image2template_feature` and
//! the lines before it), in the same float32 arithmetic so that the pooled sums are the same bits:
//! 1. per image (float32): optionally divide by its L2 norm (test mode N0; numpy's pairwise sum of
//!    squares, `numpy_sum`), then optionally multiply by the detector score (mode D1);
//! 2. per template, its images grouped by media id (ascending): a media with one image keeps it, one with
//!    several takes `np.mean` (float32 sum in file order, divided by the count);
//! 3. the media features summed in ascending media order (float32), the sum widened to float64 and
//!    L2-normalized as `sklearn.preprocessing.normalize` does (a zero row stays zero).
//!
//! numpy reduces `axis=0` of a (k, D) float32 array with one running sum per column in row order when
//! D > 1 (checked against numpy 1.26), which is what step 2 and 3 do here. Templates are sorted by id
//! (`np.unique`). Templates are independent, so they are pooled in parallel; the result does not depend
//! on the thread count.

use super::numpy_sum::pairwise_sum_f32;
use crate::{Error, Result};
use rayon::prelude::*;

/// Which of `eval_ijbc.py`'s test modes is on (the script's defaults: all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// N1: keep the feature norm (false = N0, divide each image feature by its norm first).
    pub keep_norm: bool,
    /// D1: multiply each image feature by its detector score.
    pub detector_score: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { keep_norm: true, detector_score: true }
    }
}

/// Checks `[N, dim]` features against N detector scores: finite, and non-zero where mode N0 divides.
fn check_inputs(features: &[f32], dim: usize, scores: &[f32], opts: PoolOptions) -> Result<()> {
    if dim == 0 || !features.len().is_multiple_of(dim) || features.len() / dim != scores.len() {
        return Err(Error::Shape(format!(
            "IJB: {} feature values do not form {} rows of {dim}",
            features.len(),
            scores.len()
        )));
    }
    let bad = features.par_chunks(dim).position_first(|row| {
        row.iter().any(|v| !v.is_finite()) || (!opts.keep_norm && row.iter().all(|&v| v == 0.0))
    });
    if let Some(i) = bad {
        let what = if features[i * dim..(i + 1) * dim].iter().any(|v| !v.is_finite()) {
            "is not finite"
        } else {
            "is zero and cannot be normalized (mode N0)"
        };
        return Err(Error::Invalid(format!("IJB: the feature of image row {} {what}", i + 1)));
    }
    Ok(())
}

/// Step 1 for one image, into `out`.
fn transform_row(row: &[f32], score: f32, opts: PoolOptions, out: &mut [f32]) {
    out.copy_from_slice(row);
    if !opts.keep_norm {
        let sq: Vec<f32> = row.iter().map(|v| v * v).collect();
        let norm = pairwise_sum_f32(&sq).sqrt();
        out.iter_mut().for_each(|v| *v /= norm);
    }
    if opts.detector_score {
        out.iter_mut().for_each(|v| *v *= score);
    }
}

/// Step 1 on `[N, dim]` flip-summed (or plain) features.
pub fn image_inputs(features: &[f32], dim: usize, scores: &[f32], opts: PoolOptions) -> Result<Vec<f32>> {
    check_inputs(features, dim, scores, opts)?;
    let mut out = vec![0f32; features.len()];
    out.par_chunks_mut(dim)
        .zip(features.par_chunks(dim))
        .zip(scores.par_iter())
        .for_each(|((o, row), &s)| transform_row(row, s, opts, o));
    Ok(out)
}

/// Pooled templates: sorted unique ids and, per template, the float32 sum of its media features.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSums {
    pub ids: Vec<i64>,
    pub sums: Vec<f32>,
    pub dim: usize,
    /// Images per template.
    pub images: Vec<usize>,
}

/// Steps 2 and 3 up to (not including) normalization, on image inputs `[N, dim]`.
pub fn pool(inputs: &[f32], dim: usize, templates: &[i64], medias: &[i64]) -> Result<TemplateSums> {
    if dim == 0 || inputs.len() != templates.len() * dim {
        return Err(Error::Shape(format!(
            "IJB pooling: {} template ids, {} feature values of dim {dim}",
            templates.len(),
            inputs.len()
        )));
    }
    pool_with(dim, templates, medias, |i, out| out.copy_from_slice(&inputs[i * dim..(i + 1) * dim]))
}

/// Steps 2 and 3 with each image's input written by `row(i, out)` when it is needed (IJB-C's inputs
/// would be a second 1 GB copy of the features).
fn pool_with(
    dim: usize,
    templates: &[i64],
    medias: &[i64],
    row: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<TemplateSums> {
    let n = templates.len();
    if medias.len() != n || dim == 0 {
        return Err(Error::Shape(format!("IJB pooling: {n} template ids, {} media ids", medias.len())));
    }
    // Images ordered by (template, media, file order): each template and each media is one run.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by_key(|&i| (templates[i as usize], medias[i as usize], i));
    let mut starts = vec![];
    for (k, &i) in order.iter().enumerate() {
        if k == 0 || templates[i as usize] != templates[order[k - 1] as usize] {
            starts.push(k);
        }
    }
    starts.push(n);
    let ids: Vec<i64> = starts[..starts.len() - 1].iter().map(|&k| templates[order[k] as usize]).collect();
    let mut sums = vec![0f32; ids.len() * dim];
    sums.par_chunks_mut(dim).enumerate().for_each(|(t, out)| {
        let run = &order[starts[t]..starts[t + 1]];
        let (mut media, mut img) = (vec![0f32; dim], vec![0f32; dim]);
        let mut first_media = true;
        let mut k = 0;
        while k < run.len() {
            let m = medias[run[k] as usize];
            let end = k + run[k..].iter().take_while(|&&i| medias[i as usize] == m).count();
            row(run[k] as usize, &mut media);
            for &i in &run[k + 1..end] {
                row(i as usize, &mut img);
                media.iter_mut().zip(&img).for_each(|(a, b)| *a += b);
            }
            let count = (end - k) as f32;
            if end - k > 1 {
                media.iter_mut().for_each(|a| *a /= count);
            }
            if first_media {
                out.copy_from_slice(&media);
                first_media = false;
            } else {
                out.iter_mut().zip(&media).for_each(|(a, b)| *a += b);
            }
            k = end;
        }
    });
    let images = starts.windows(2).map(|w| w[1] - w[0]).collect();
    Ok(TemplateSums { ids, sums, dim, images })
}

/// `sklearn.preprocessing.normalize` of the float32 sums widened to float64.
pub fn normalize(sums: &TemplateSums) -> Vec<f64> {
    let mut out: Vec<f64> = sums.sums.iter().map(|&v| v as f64).collect();
    out.par_chunks_mut(sums.dim).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm != 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    });
    out
}

/// L2-normalized template features with their sorted ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    pub ids: Vec<i64>,
    pub feats: Vec<f64>,
    pub dim: usize,
    pub images: Vec<usize>,
}

impl Templates {
    /// Row of template `id`, if it has images.
    pub fn row_of(&self, id: i64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    pub fn row(&self, r: usize) -> &[f64] {
        &self.feats[r * self.dim..(r + 1) * self.dim]
    }
}

/// Steps 1 to 3.
pub fn template_features(
    features: &[f32],
    dim: usize,
    scores: &[f32],
    templates: &[i64],
    medias: &[i64],
    opts: PoolOptions,
) -> Result<Templates> {
    check_inputs(features, dim, scores, opts)?;
    if templates.len() != scores.len() {
        return Err(Error::Shape(format!(
            "IJB: {} template ids for {} images",
            templates.len(),
            scores.len()
        )));
    }
    let sums = pool_with(dim, templates, medias, |i, out| {
        transform_row(&features[i * dim..(i + 1) * dim], scores[i], opts, out)
    })?;
    let feats = normalize(&sums);
    Ok(Templates { ids: sums.ids, feats, dim, images: sums.images })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_are_averaged_then_summed_per_template() {
        // Template 9: media 2 has two images (averaged), media 1 one image; template 4: one image.
        let f = [1.0, 0.0, 3.0, 2.0, 5.0, 4.0, 0.0, 7.0];
        let sums = pool(&f, 2, &[9, 9, 4, 9], &[2, 1, 3, 2]).unwrap();
        assert_eq!(sums.ids, vec![4, 9]);
        assert_eq!(sums.images, vec![1, 3]);
        assert_eq!(&sums.sums[..2], &[5.0, 4.0]);
        // media 1: (3, 2); media 2: mean of (1, 0) and (0, 7) = (0.5, 3.5); sum (3.5, 5.5).
        assert_eq!(&sums.sums[2..], &[3.5, 5.5]);
        let n = normalize(&sums);
        assert!((n[0] - 5.0 / 41f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn modes_scale_and_normalize_images() {
        let f = [3.0, 4.0, 1.0, 0.0];
        let both =
            image_inputs(&f, 2, &[0.5, 2.0], PoolOptions { keep_norm: false, detector_score: true }).unwrap();
        assert_eq!(both, vec![0.3, 0.4, 2.0, 0.0]);
        let plain =
            image_inputs(&f, 2, &[0.5, 2.0], PoolOptions { keep_norm: true, detector_score: false }).unwrap();
        assert_eq!(plain, f.to_vec());
        let zero =
            image_inputs(&[0.0, 0.0], 2, &[1.0], PoolOptions { keep_norm: false, detector_score: false });
        assert!(zero.unwrap_err().to_string().contains("image row 1"));
        assert!(image_inputs(&f, 2, &[1.0], PoolOptions::default()).is_err(), "row count");
        assert!(image_inputs(&[f32::NAN, 0.0], 2, &[1.0], PoolOptions::default()).is_err());
    }

    #[test]
    fn templates_come_out_sorted_by_id_with_media_means() {
        // Media 5 holds 1 and 2, media 6 holds 3 and 4: the template sum is 1.5 + 3.5.
        let f = [1.0, 2.0, 3.0, 4.0];
        let a = pool(&f, 1, &[1, 1, 1, 1], &[5, 5, 6, 6]).unwrap();
        assert_eq!(a.sums, vec![1.5 + 3.5]);
        let t = template_features(&f, 2, &[1.0, 1.0], &[7, 3], &[1, 1], PoolOptions::default()).unwrap();
        assert_eq!(t.ids, vec![3, 7]);
        assert_eq!(t.row_of(7), Some(1));
        assert_eq!(t.row_of(5), None);
    }
}
