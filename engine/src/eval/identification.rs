//! Closed-set identification: each probe is compared (cosine) with every gallery embedding; identities
//! are ranked by their best-matching gallery image. A probe's rank is 1 + the number of *other*
//! identities scoring at least as high as its own (ties count against it, so a constant embedding
//! cannot score well). Rank-k accuracy is the fraction of probes with rank <= k.

use super::verification::l2_normalize;
use crate::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct IdentificationReport {
    pub n_probes: usize,
    pub n_identities: usize,
    pub rank1: f64,
    pub rank5: f64,
    /// The rank of each probe's true identity (1 = best).
    pub ranks: Vec<usize>,
}

impl IdentificationReport {
    pub fn rank_k(&self, k: usize) -> f64 {
        self.ranks.iter().filter(|&&r| r <= k).count() as f64 / self.ranks.len() as f64
    }
}

/// `gallery` and `probes` hold rows of `dim` values; `*_ids` give each row's identity.
pub fn identify(
    gallery: &[f64],
    gallery_ids: &[u64],
    probes: &[f64],
    probe_ids: &[u64],
    dim: usize,
) -> Result<IdentificationReport> {
    let g = l2_normalize(gallery, dim)?;
    let p = l2_normalize(probes, dim)?;
    if g.len() / dim != gallery_ids.len() || p.len() / dim != probe_ids.len() {
        return Err(Error::Shape(format!(
            "identification: {} gallery rows with {} ids, {} probe rows with {} ids",
            g.len() / dim,
            gallery_ids.len(),
            p.len() / dim,
            probe_ids.len()
        )));
    }
    if probe_ids.is_empty() {
        return Err(Error::Invalid("identification: no probes".into()));
    }
    // Dense identity indices for the gallery.
    let mut index: HashMap<u64, usize> = HashMap::new();
    let gid: Vec<usize> = gallery_ids
        .iter()
        .map(|id| {
            let next = index.len();
            *index.entry(*id).or_insert(next)
        })
        .collect();
    let n_ids = index.len();
    let mut ranks = Vec::with_capacity(probe_ids.len());
    let mut best = vec![f64::NEG_INFINITY; n_ids];
    for (i, (row, id)) in p.chunks(dim).zip(probe_ids).enumerate() {
        let truth = *index.get(id).ok_or_else(|| {
            Error::Invalid(format!("identification: probe {i} has identity {id}, absent from the gallery"))
        })?;
        best.iter_mut().for_each(|b| *b = f64::NEG_INFINITY);
        for (grow, &k) in g.chunks(dim).zip(&gid) {
            let s: f64 = row.iter().zip(grow).map(|(a, b)| a * b).sum();
            if s > best[k] {
                best[k] = s;
            }
        }
        let own = best[truth];
        let above = best.iter().enumerate().filter(|&(k, &s)| k != truth && s >= own).count();
        ranks.push(1 + above);
    }
    let mut r =
        IdentificationReport { n_probes: ranks.len(), n_identities: n_ids, rank1: 0.0, rank5: 0.0, ranks };
    r.rank1 = r.rank_k(1);
    r.rank5 = r.rank_k(5);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn ranks_count_identities_not_images() {
        // Identity 7 has two gallery images; the probe is closest to identity 9, then to 7.
        let gallery = [1.0, 0.0, 0.6, 0.8, 0.0, 1.0];
        let gids = [9, 7, 7];
        let probe = [0.9, 0.3];
        let r = identify(&gallery, &gids, &probe, &[7], 2).unwrap();
        assert_eq!(r.ranks, vec![2]);
        assert_eq!((r.rank1, r.rank5), (0.0, 1.0));
        let r = identify(&gallery, &gids, &probe, &[9], 2).unwrap();
        assert_eq!(r.ranks, vec![1]);
    }

    #[test]
    fn ties_count_against_the_probe() {
        let r = identify(&[1.0, 0.0, 1.0, 0.0], &[1, 2], &[1.0, 0.0], &[1], 2).unwrap();
        assert_eq!(r.ranks, vec![2]);
    }

    #[test]
    fn noisy_probes_rank_between_one_and_five() {
        let mut rng = Rng::new(3);
        let (n_ids, dim) = (50, 16);
        let centers: Vec<f64> = (0..n_ids * dim).map(|_| rng.normal()).collect();
        let gallery = centers.clone();
        let gids: Vec<u64> = (0..n_ids as u64).collect();
        let mut probes = vec![];
        let mut pids = vec![];
        for k in 0..n_ids {
            for _ in 0..4 {
                probes.extend((0..dim).map(|j| centers[k * dim + j] + 0.9 * rng.normal()));
                pids.push(k as u64);
            }
        }
        let r = identify(&gallery, &gids, &probes, &pids, dim).unwrap();
        assert!(r.rank1 > 0.5 && r.rank1 < 1.0, "rank1 {}", r.rank1);
        assert!(r.rank5 > r.rank1, "rank5 {} rank1 {}", r.rank5, r.rank1);
        assert_eq!(r.rank_k(n_ids), 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(identify(&[1.0, 0.0], &[1], &[1.0, 0.0], &[2], 2).is_err(), "unknown identity");
        assert!(identify(&[1.0, 0.0], &[1, 2], &[1.0, 0.0], &[1], 2).is_err(), "id count");
        assert!(identify(&[1.0, 0.0], &[1], &[], &[], 2).is_err(), "no probes");
    }
}
