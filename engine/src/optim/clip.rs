//! Gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (insightface clips the backbone at 5).

use crate::tensor::Tensor;
use crate::Result;

/// Scales every gradient by max_norm / (total + 1e-6) when that is below 1; returns the total L2 norm
/// over all of them (before clipping).
pub fn clip_grad_norm(grads: &mut [(String, Tensor)], max_norm: f64) -> Result<f64> {
    let Some(dev) = grads.first().map(|(_, g)| g.device()) else { return Ok(0.0) };
    let all: Vec<&Tensor> = grads.iter().map(|(_, g)| g).collect();
    let total = crate::backend::for_device(&dev).sum_of_squares(&all)?.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for (_, g) in grads.iter_mut() {
            *g = g.backend().affine(g, coef, 0.0)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_only_above_the_limit() {
        let mut g = vec![
            ("a".to_string(), Tensor::from_vec(vec![3.0f64], [1]).unwrap()),
            ("b".to_string(), Tensor::from_vec(vec![4.0f64], [1]).unwrap()),
        ];
        assert_eq!(clip_grad_norm(&mut g, 10.0).unwrap(), 5.0);
        assert_eq!(g[0].1.to_f64_vec().unwrap(), vec![3.0]);
        clip_grad_norm(&mut g, 1.0).unwrap();
        let a = g[0].1.to_f64_vec().unwrap()[0];
        assert!((a - 3.0 / (5.0 + 1e-6)).abs() < 1e-15);
    }
}
