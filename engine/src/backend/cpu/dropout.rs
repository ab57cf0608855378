//! Inverted dropout mask: element i is kept (scaled by 1/(1-p)) when the i-th uniform draw of
//! `Rng::new(seed)` is >= p. Drawn sequentially in index order, so any backend can reproduce the mask
//! from the seed (or receive it from the host).

use crate::rng::Rng;
use crate::tensor::Float;

pub fn mask<T: Float>(len: usize, p: f64, seed: u64) -> Vec<T> {
    let mut rng = Rng::new(seed);
    let keep = if p < 1.0 { T::from_f64(1.0 / (1.0 - p)) } else { T::ZERO };
    (0..len).map(|_| if rng.uniform() >= p { keep } else { T::ZERO }).collect()
}

/// (x * mask, mask).
pub fn apply<T: Float>(x: &[T], p: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let m: Vec<T> = mask(x.len(), p, seed);
    (x.iter().zip(&m).map(|(&a, &k)| a * k).collect(), m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_scales_the_kept() {
        let m: Vec<f64> = mask(20000, 0.25, 3);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / 20000.0;
        assert!((kept - 0.75).abs() < 0.02, "kept fraction {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-15));
        assert_eq!(m, mask::<f64>(20000, 0.25, 3));
        assert_ne!(m, mask::<f64>(20000, 0.25, 4));
        assert!(mask::<f32>(100, 1.0, 1).iter().all(|&v| v == 0.0));
        assert!(mask::<f32>(100, 0.0, 1).iter().all(|&v| v == 1.0));
    }
}
