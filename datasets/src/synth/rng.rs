//! The generator's random numbers: the shared xoshiro256** ([`crate::rng::Rng`]) with f32 helpers tuned for
//! image synthesis. Every image gets an independent stream derived from (seed, purpose, indices), which
//! makes parallel generation deterministic in any order.

use crate::rng::{splitmix, Rng};

#[derive(Debug, Clone)]
pub struct SynthRng(Rng);

/// Purposes of derived streams; distinct tags keep identities, images and pairs independent.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Identity = 1,
    TrainImage = 2,
    PairChoice = 3,
    PairImage = 4,
}

impl SynthRng {
    pub fn new(seed: u64) -> SynthRng {
        SynthRng(Rng::new(seed))
    }

    /// An independent generator for one (purpose, a, b) under `seed`.
    pub fn stream(seed: u64, purpose: Stream, a: u64, b: u64) -> SynthRng {
        let mut x = seed;
        let mut h = splitmix(&mut x);
        for word in [purpose as u64, a, b] {
            let mut y = h ^ word.wrapping_mul(0xd1b5_4a32_d192_ed03);
            h = splitmix(&mut y);
        }
        SynthRng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in [-m, m).
    pub fn sym(&mut self, m: f32) -> f32 {
        self.range(-m, m)
    }

    /// Approximately standard normal: the standardized sum of four 16-bit uniforms. Close enough to a
    /// Gaussian for shape jitter and sensor noise, and several times cheaper than Box-Muller.
    pub fn normal(&mut self) -> f32 {
        let r = self.next_u64();
        let sum: u64 = (0..4).map(|k| (r >> (16 * k)) & 0xffff).sum();
        // Mean 2 * 65535, variance 4 * 65536^2 / 12.
        (sum as f32 - 131_070.0) * (3.0f32.sqrt() / 65_536.0)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SynthRng::stream(9, Stream::TrainImage, 3, 4), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SynthRng::stream(9, Stream::TrainImage, 3, 4), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SynthRng::stream(9, Stream::TrainImage, 4, 3), |r, _| Some(r.next_u64()))
            .collect();
        let d: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(SynthRng::stream(9, Stream::PairImage, 3, 4), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn uniform_and_normal_have_expected_moments() {
        let mut r = SynthRng::new(1);
        let n = 20000;
        let u: Vec<f32> = (0..n).map(|_| r.unit()).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");
        let g: Vec<f32> = (0..n).map(|_| r.normal()).collect();
        let gm = g.iter().sum::<f32>() / n as f32;
        let gv = g.iter().map(|x| (x - gm) * (x - gm)).sum::<f32>() / n as f32;
        assert!(gm.abs() < 0.03 && (gv - 1.0).abs() < 0.05, "normal mean {gm} var {gv}");
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
