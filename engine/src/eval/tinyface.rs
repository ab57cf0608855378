//! TinyFace identification as AdaFace computes it (`validation_lq/tinyface_helper.py`:
//! `TinyFaceTest.test_identification` and `DIR_FAR` with its default `FARs=[1.0]`, i.e. closed-set CMC):
//! every probe is compared by inner product with every gallery image (the gallery-match images and all
//! distractors, each an entry of its own; features L2-normalized, float32 as AdaFace's numpy features);
//! a probe is a hit at rank k when one of its identity's gallery images is among the k best-scoring
//! entries. Only probes with a match in the gallery count (AdaFace's `match_indices`). AdaFace ranks
//! with `np.argsort`, whose order among equal scores is unspecified; here every non-matching entry
//! scoring at least as high as the best match is ranked above it (ties against the probe).

use crate::{Error, Result};
use rayon::prelude::*;

/// AdaFace's reported ranks.
pub const RANKS: [usize; 3] = [1, 5, 20];

/// Probes per block of the probe x gallery score matrix.
const BLOCK: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct TinyFaceResult {
    pub n_probes: usize,
    /// Probes with a match in the gallery (the denominator).
    pub n_mated: usize,
    pub n_gallery: usize,
    /// (k, fraction of mated probes found within rank k).
    pub ranks: Vec<(usize, f64)>,
    /// Rank of each probe's best match (1 = first); 0 for a probe without a match.
    pub probe_ranks: Vec<usize>,
}

fn normalized(v: &[f32], dim: usize, what: &str) -> Result<Vec<f32>> {
    let mut out = v.to_vec();
    for (i, row) in out.chunks_mut(dim).enumerate() {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !n.is_finite() || n == 0.0 {
            return Err(Error::Invalid(format!("TinyFace: {what} feature {} has norm {n}", i + 1)));
        }
        row.iter_mut().for_each(|x| *x /= n);
    }
    Ok(out)
}

/// `probes` [P, dim] with labels; `gallery` [G, dim] with labels (None: a distractor).
pub fn identify(
    probes: &[f32],
    probe_labels: &[i64],
    gallery: &[f32],
    gallery_labels: &[Option<i64>],
    dim: usize,
    ranks: &[usize],
) -> Result<TinyFaceResult> {
    let (p, g) = (probe_labels.len(), gallery_labels.len());
    if dim == 0 || probes.len() != p * dim || gallery.len() != g * dim || p == 0 || g == 0 {
        return Err(Error::Shape(format!("TinyFace: {p} probes and {g} gallery images of dim {dim}")));
    }
    let q = normalized(probes, dim, "probe")?;
    let gal = normalized(gallery, dim, "gallery")?;
    let probe_ranks: Vec<usize> = q
        .par_chunks(BLOCK * dim)
        .zip(probe_labels.par_chunks(BLOCK))
        .flat_map_iter(|(qb, lb)| {
            let m = lb.len();
            let mut c = vec![0f32; m * g];
            // C [m, g] = Q [m, dim] x G^T; G is row-major [g, dim], so G^T has row stride 1.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    dim,
                    g,
                    1.0,
                    qb.as_ptr(),
                    dim as isize,
                    1,
                    gal.as_ptr(),
                    1,
                    dim as isize,
                    0.0,
                    c.as_mut_ptr(),
                    g as isize,
                    1,
                );
            }
            (0..m)
                .map(|i| {
                    let row = &c[i * g..(i + 1) * g];
                    let label = Some(lb[i]);
                    let best = row
                        .iter()
                        .zip(gallery_labels)
                        .filter(|(_, l)| **l == label)
                        .map(|(s, _)| *s)
                        .fold(f32::NEG_INFINITY, f32::max);
                    if best == f32::NEG_INFINITY {
                        return 0;
                    }
                    1 + row.iter().zip(gallery_labels).filter(|(s, l)| **l != label && **s >= best).count()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mated = probe_ranks.iter().filter(|&&r| r > 0).count();
    if mated == 0 {
        return Err(Error::Invalid("TinyFace: no probe has a match in the gallery".into()));
    }
    let ranks = ranks
        .iter()
        .map(|&k| (k, probe_ranks.iter().filter(|&&r| r > 0 && r <= k).count() as f64 / mated as f64))
        .collect();
    Ok(TinyFaceResult { n_probes: p, n_mated: mated, n_gallery: g, ranks, probe_ranks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_count_gallery_entries_and_skip_unmatched_probes() {
        // Gallery: identity 1 twice, identity 2 once, two distractors (2-D).
        let gallery = [1.0, 0.0, 0.8, 0.6, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0];
        let labels = [Some(1), Some(1), Some(2), None, None];
        // The probe of identity 2 at (0.7, 0.714) scores 0.7, 0.988, 0.714, 0.991, -0.7 (before
        // normalization): its match scores 0.714, an identity-1 image and a distractor score higher: rank 3.
        let probes = [0.7, 0.714, 1.0, 0.0, 0.0, -1.0];
        let r = identify(&probes, &[2, 1, 5], &gallery, &labels, 2, &RANKS).unwrap();
        assert_eq!(r.probe_ranks, vec![3, 1, 0]);
        assert_eq!(r.n_mated, 2);
        assert_eq!(r.ranks[0], (1, 0.5));
        assert_eq!(r.ranks[1], (5, 1.0));
        // Ties count against the probe.
        let t = identify(&[1.0, 0.0], &[1], &[1.0, 0.0, 1.0, 0.0], &[Some(1), None], 2, &[1]).unwrap();
        assert_eq!(t.probe_ranks, vec![2]);
        assert!(identify(&[0.0, 0.0], &[1], &gallery, &labels, 2, &[1]).is_err(), "zero feature");
        assert!(identify(&probes[..2], &[9], &gallery, &labels, 2, &[1]).is_err(), "no mated probe");
    }
}
