//! PReLU with one learned slope per channel (the last dim).

use super::same_device_and_dtype;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::Result;

/// y = x if x > 0 else alpha[c] * x; alpha `[C]` with C the last dim of x.
pub fn prelu(tape: &mut Tape, x: Var, alpha: Var) -> Result<Var> {
    same_device_and_dtype(tape, "prelu", &[x, alpha])?;
    let (tx, ta) = (tape.value(x).clone(), tape.value(alpha).clone());
    let y = tx.backend().prelu_forward(&tx, &ta)?;
    Ok(tape.push(
        y,
        &[x, alpha],
        Box::new(move |g: &Tensor| {
            let (dx, da) = g.backend().prelu_backward(g, &tx, &ta)?;
            Ok(vec![Some(dx), Some(da)])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tape::gradcheck;
    use crate::Error;

    #[test]
    fn values_and_gradients() {
        let mut r = Rng::new(1);
        // Keep |x| away from 0, where PReLU has a kink that finite differences would straddle.
        let xs: Vec<f64> = (0..2 * 3 * 2 * 4)
            .map(|_| {
                let v = r.normal();
                v + 0.1 * v.signum()
            })
            .collect();
        let x = Tensor::from_vec(xs.clone(), [2, 3, 2, 4]).unwrap();
        let a = Tensor::from_vec(vec![0.25, -0.1, 0.5, 1.5], [4]).unwrap();
        let mut tape = Tape::no_grad();
        let (vx, va) = (tape.constant(x.clone()), tape.constant(a.clone()));
        let vy = prelu(&mut tape, vx, va).unwrap();
        let y = tape.value(vy).to_f64_vec().unwrap();
        for (i, (&xv, &yv)) in xs.iter().zip(&y).enumerate() {
            let want = if xv > 0.0 { xv } else { [0.25, -0.1, 0.5, 1.5][i % 4] * xv };
            assert_eq!(yv, want);
        }
        let errs = gradcheck::check(
            &[x, a],
            |t, v| {
                let y = prelu(t, v[0], v[1])?;
                gradcheck::random_projection(t, y, 2)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
    }

    #[test]
    fn alpha_of_the_wrong_length_is_an_error() {
        let mut tape = Tape::new();
        let x = tape.leaf(Tensor::from_vec(vec![1.0f64; 6], [2, 3]).unwrap());
        let a = tape.leaf(Tensor::from_vec(vec![0.25f64; 2], [2]).unwrap());
        assert!(matches!(prelu(&mut tape, x, a), Err(Error::Shape(_))));
    }
}
