//! Gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (insightface clips the backbone at 5).

use crate::backend::BinaryOp;
use crate::tensor::Tensor;
use crate::Result;

/// Scales every gradient by max_norm / (total + 1e-6) when that is below 1; returns the total L2 norm
/// over all of them (before clipping).
pub fn clip_grad_norm(grads: &mut [(String, Tensor)], max_norm: f64) -> Result<f64> {
    let total = if grads.iter().all(|(_, g)| g.device().is_cpu()) {
        let mut sq = 0.0;
        for (_, g) in grads.iter() {
            sq += g.to_f64_vec()?.iter().map(|x| x * x).sum::<f64>();
        }
        sq.sqrt()
    } else {
        device_square_sum(grads)?.sqrt()
    };
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for (_, g) in grads.iter_mut() {
            *g = g.backend().affine(g, coef, 0.0)?;
        }
    }
    Ok(total)
}

/// Sum of squares of device gradients, accumulated on the device and read once (f32 sums).
fn device_square_sum(grads: &[(String, Tensor)]) -> Result<f64> {
    let mut acc: Option<Tensor> = None;
    for (_, g) in grads {
        let be = g.backend();
        let sq = be.sum_all(&be.binary(BinaryOp::Mul, g, g)?)?;
        acc = Some(match acc {
            None => sq,
            Some(a) => be.binary(BinaryOp::Add, &a, &sq)?,
        });
    }
    acc.map_or(Ok(0.0), |a| a.scalar_value())
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
