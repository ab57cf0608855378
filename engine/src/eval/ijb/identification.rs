//! IJB 1:N identification as insightface's `recognition/_evaluation_/ijb/ijb_evals.py` runs it
//! (`run_model_test_1N`, `evaluation_1N`): the mixed probe templates are searched in each gallery
//! separately (IJB-C G1 and G2, IJB-B S1 and S2); template features are pooled as for 1:1.
//!
//! Per gallery: similarity = probe features x gallery features (dot products of L2-normalized templates).
//! A probe whose subject has a template in the gallery is mated; the others are non-mated.
//! - CMC: a mated probe is a hit at rank k when its mate is among the k best-scoring gallery templates.
//!   The script ranks with `np.argsort`, whose order among equal scores is unspecified; we count every
//!   other gallery template scoring at least as high as the mate as ranked above it (ties against the
//!   probe). Rates are hits over mated probes.
//! - TPIR at FPIR f: the maximum score of each non-mated probe, sorted in decreasing order; the threshold
//!   is the entry at index `max(int(n_nonmated * f) - 1, 0)`; TPIR is the fraction of mated probes whose
//!   mate scores strictly above every other gallery template and strictly above that threshold.
//! - Mean over the two galleries, as the script reports it: CMC hits of both galleries summed and divided
//!   by the number of probe templates; TPIR as the arithmetic mean of the two galleries' TPIRs.
//!
//! Gallery and probe templates are the sorted unique template ids of their lists; a template's subject is
//! the one on its first row (`np.unique(..., return_index=True)`). The script needs exactly one gallery
//! template per subject; more than one is an error here.

use super::templates::Templates;
use crate::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;

/// The ranks reported (`top1`, `top5`, `top10`).
pub const CMC_RANKS: [usize; 3] = [1, 5, 10];
/// `evaluation_1N`'s default FPIRs.
pub const FPIRS: [f64; 2] = [0.01, 0.1];

/// Sorted unique template ids of a list with the subject of each template's first row.
pub fn unique_templates(templates: &[i64], subjects: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut first: HashMap<i64, i64> = HashMap::new();
    for (&t, &s) in templates.iter().zip(subjects) {
        first.entry(t).or_insert(s);
    }
    let mut ids: Vec<i64> = first.keys().copied().collect();
    ids.sort_unstable();
    let subj = ids.iter().map(|t| first[t]).collect();
    (ids, subj)
}

/// Rows of `ids` in `t` (normalized features), `[ids.len(), dim]`; a template without images is an error.
pub fn gather(t: &Templates, ids: &[i64], what: &str) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(ids.len() * t.dim);
    for &id in ids {
        let r = t.row_of(id).ok_or_else(|| {
            Error::Io(format!("{what}: template {id} has no image in the face/template/media list"))
        })?;
        out.extend_from_slice(t.row(r));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
pub struct GallerySearch {
    pub n_probes: usize,
    pub n_mated: usize,
    pub n_gallery: usize,
    /// Mated probes found within rank 1, 5, 10 (`CMC_RANKS`).
    pub hits: [usize; 3],
    /// (FPIR, threshold, TPIR) per `FPIRS` entry; empty when no probe is non-mated.
    pub tpir: Vec<(f64, f64, f64)>,
}

impl GallerySearch {
    pub fn cmc(&self, k: usize) -> f64 {
        self.hits[k] as f64 / self.n_mated as f64
    }
}

/// Probes per GEMM block.
const BLOCK: usize = 64;

/// A probe's outcome in one gallery: Some((rank, mate score, best other score)) when mated; its best score.
type Probe = (Option<(usize, f64, f64)>, f64);

/// One probe's similarities to the gallery: Some((rank, mate score, best other score)) for a mated
/// probe (`mate` = its gallery row), else None; and its best score.
fn classify(sims: &[f64], mate: Option<usize>) -> Probe {
    match mate {
        Some(m) => {
            let pos = sims[m];
            let (mut above, mut other) = (0, f64::NEG_INFINITY);
            for (j, &v) in sims.iter().enumerate() {
                if j != m {
                    above += usize::from(v >= pos);
                    other = other.max(v);
                }
            }
            (Some((above + 1, pos, other)), pos)
        }
        None => (None, sims.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
    }
}

/// Probes (`[P, dim]`, normalized) searched in one gallery (`[G, dim]`).
pub fn search(
    probes: &[f64],
    probe_subjects: &[i64],
    gallery: &[f64],
    gallery_subjects: &[i64],
    dim: usize,
    gallery_name: &str,
) -> Result<GallerySearch> {
    let (p, g) = (probe_subjects.len(), gallery_subjects.len());
    if probes.len() != p * dim || gallery.len() != g * dim || g == 0 || p == 0 {
        return Err(Error::Shape(format!(
            "1:N {gallery_name}: {p} probes and {g} gallery templates of {dim}"
        )));
    }
    let mut slot: HashMap<i64, usize> = HashMap::new();
    for (j, &s) in gallery_subjects.iter().enumerate() {
        if slot.insert(s, j).is_some() {
            return Err(Error::Invalid(format!(
                "1:N gallery {gallery_name}: subject {s} has more than one template (the protocol has one each)"
            )));
        }
    }
    // Per probe: Some((rank, mate score, best other score)) when mated, else None; and its best score.
    // Similarities of a block of probes against the gallery by one f64 GEMM (np.dot in the script).
    let per: Vec<Probe> = probes
        .par_chunks(BLOCK * dim)
        .zip(probe_subjects.par_chunks(BLOCK))
        .flat_map_iter(|(qb, sb)| {
            let m = sb.len();
            let mut c = vec![0f64; m * g];
            // C [m, g] = Q [m, dim] x G^T, G row-major [g, dim] (so G^T has row stride 1).
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    dim,
                    g,
                    1.0,
                    qb.as_ptr(),
                    dim as isize,
                    1,
                    gallery.as_ptr(),
                    1,
                    dim as isize,
                    0.0,
                    c.as_mut_ptr(),
                    g as isize,
                    1,
                );
            }
            (0..m).map(|i| classify(&c[i * g..(i + 1) * g], slot.get(&sb[i]).copied())).collect::<Vec<_>>()
        })
        .collect();
    let mated: Vec<(usize, f64, f64)> = per.iter().filter_map(|x| x.0).collect();
    if mated.is_empty() {
        return Err(Error::Invalid(format!(
            "1:N gallery {gallery_name}: no probe's subject is in the gallery"
        )));
    }
    let mut hits = [0usize; 3];
    for (h, &k) in hits.iter_mut().zip(&CMC_RANKS) {
        *h = mated.iter().filter(|m| m.0 <= k).count();
    }
    let mut nonmated: Vec<f64> = per.iter().filter(|x| x.0.is_none()).map(|x| x.1).collect();
    nonmated.sort_unstable_by(|a, b| b.total_cmp(a));
    let tpir = if nonmated.is_empty() {
        vec![]
    } else {
        FPIRS
            .iter()
            .map(|&f| {
                let idx = ((nonmated.len() as f64 * f) as usize).max(1) - 1;
                let th = nonmated[idx];
                let ok = mated.iter().filter(|&&(_, pos, other)| pos > other && pos > th).count();
                (f, th, ok as f64 / mated.len() as f64)
            })
            .collect()
    };
    Ok(GallerySearch { n_probes: p, n_mated: mated.len(), n_gallery: g, hits, tpir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_ties_and_tpir() {
        // Gallery: subjects 1, 2, 3 on the axes of R^3. Probe A (subject 1) ties with subject 2.
        let gallery = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let h = 0.5f64.sqrt();
        let probes = [h, h, 0.0, 0.0, 0.0, 1.0, 0.6, 0.8, 0.0, 0.8, 0.6, 0.0];
        // A: subject 1 (tie with 2: rank 2); B: subject 3 (rank 1); C, D: subject 9 (non-mated).
        let r = search(&probes, &[1, 3, 9, 9], &gallery, &[1, 2, 3], 3, "G1").unwrap();
        assert_eq!((r.n_mated, r.hits), (2, [1, 2, 2]));
        // Non-mated maxima 0.8 and 0.8: int(2 * 0.01) - 1 -> index 0; threshold 0.8. B scores 1.0 > 0.8.
        assert_eq!(r.tpir[0].1, 0.8);
        assert_eq!(r.tpir[0].2, 0.5);
        assert!(search(&probes, &[1, 3, 9, 9], &gallery, &[1, 1, 3], 3, "G1").is_err(), "duplicate subject");
        assert!(search(&probes[..3], &[9], &gallery, &[1, 2, 3], 3, "G1").is_err(), "no mated probe");
    }

    #[test]
    fn unique_templates_keep_the_first_subject() {
        let (ids, subj) = unique_templates(&[5, 2, 5, 2], &[50, 20, 51, 21]);
        assert_eq!((ids, subj), (vec![2, 5], vec![20, 50]));
    }
}
