//! Which samples rank r of w sees in an epoch, in which order, cut into batches.
//!
//! Like PyTorch's DistributedSampler (what insightface uses): one permutation of all samples from
//! (seed, epoch), padded by wrapping around to a multiple of w, then every w-th entry from r. Every rank
//! thus gets the same count and together they cover every sample each epoch.

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    pub len: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub rank: usize,
    pub world: usize,
    pub batch_size: usize,
    pub drop_last: bool,
}

impl Sampler {
    /// Sample positions (0..len) this rank visits in `epoch`, in order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            // The tag keeps this stream apart from the per-sample augmentation streams.
            Rng::derive(&[self.seed, epoch, u64::MAX]).shuffle(&mut all);
        }
        let per_rank = self.len.div_ceil(self.world);
        (0..per_rank).map(|i| all[(i * self.world + self.rank) % self.len]).collect()
    }

    pub fn batches_per_epoch(&self) -> usize {
        let per_rank = self.len.div_ceil(self.world);
        if self.drop_last {
            per_rank / self.batch_size
        } else {
            per_rank.div_ceil(self.batch_size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(len: usize, rank: usize, world: usize) -> Sampler {
        Sampler { len, seed: 5, shuffle: true, rank, world, batch_size: 4, drop_last: true }
    }

    #[test]
    fn ranks_partition_the_epoch() {
        let mut seen: Vec<usize> = (0..3).flat_map(|r| s(30, r, 3).order(2)).collect();
        seen.sort();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        assert_eq!(s(30, 0, 3).batches_per_epoch(), 2);
        // Uneven: 31 over 3 ranks -> 11 each, one sample repeated.
        let all: Vec<usize> = (0..3).flat_map(|r| s(31, r, 3).order(0)).collect();
        assert_eq!(all.len(), 33);
        assert!((0..31).all(|i| all.contains(&i)));
    }

    #[test]
    fn epochs_differ_seeds_repeat() {
        assert_ne!(s(50, 0, 1).order(0), s(50, 0, 1).order(1));
        assert_eq!(s(50, 0, 1).order(3), s(50, 0, 1).order(3));
        let plain = Sampler { shuffle: false, drop_last: false, ..s(10, 0, 1) };
        assert_eq!(plain.order(7), (0..10).collect::<Vec<_>>());
        assert_eq!(plain.batches_per_epoch(), 3);
    }
}
