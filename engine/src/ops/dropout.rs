//! Inverted dropout: in training each element is zeroed with probability p and the rest scaled by
//! 1/(1-p), with the mask drawn from `seed` (the caller derives one per step from its `Rng`).

use crate::backend::BinaryOp;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Identity when `training` is false or p is 0.
pub fn dropout(tape: &mut Tape, x: Var, p: f64, training: bool, seed: u64) -> Result<Var> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::Invalid(format!("dropout: probability {p} is outside [0, 1]")));
    }
    if !training || p == 0.0 {
        return Ok(x);
    }
    let tx = tape.value(x).clone();
    let (y, mask) = tx.backend().dropout(&tx, p, seed)?;
    Ok(tape.push(
        y,
        &[x],
        Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().binary(BinaryOp::Mul, g, &mask)?)])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::gradcheck;

    fn x() -> Tensor {
        Tensor::from_vec((0..40).map(|i| i as f64 * 0.1 - 2.0).collect::<Vec<_>>(), [4, 10]).unwrap()
    }

    #[test]
    fn gradient_with_a_fixed_mask() {
        // The same seed gives the same mask in every evaluation, so finite differences see a linear map.
        let errs = gradcheck::check(
            &[x()],
            |t, v| {
                let y = dropout(t, v[0], 0.3, true, 42)?;
                gradcheck::random_projection(t, y, 1)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs[0] < 1e-9, "{errs:?}");
        let mut tape = Tape::new();
        let v = tape.leaf(x());
        let y = dropout(&mut tape, v, 0.3, true, 42).unwrap();
        let ys = tape.value(y).to_f64_vec().unwrap();
        let xs = x().to_f64_vec().unwrap();
        let zeros = ys.iter().zip(&xs).filter(|(y, x)| **y == 0.0 && **x != 0.0).count();
        assert!(zeros > 0 && zeros < 40, "{zeros} of 40 dropped");
        for (y, x) in ys.iter().zip(&xs) {
            assert!(*y == 0.0 || (y - x / 0.7).abs() < 1e-12);
        }
    }

    #[test]
    fn eval_and_p_zero_are_identity_and_bad_p_is_an_error() {
        let mut tape = Tape::new();
        let v = tape.leaf(x());
        assert_eq!(dropout(&mut tape, v, 0.5, false, 1).unwrap(), v);
        assert_eq!(dropout(&mut tape, v, 0.0, true, 1).unwrap(), v);
        assert!(matches!(dropout(&mut tape, v, 1.5, true, 1), Err(Error::Invalid(_))));
    }
}
