//! Reductions beyond the full sum: the mean of all elements and the per-channel sum over rows.

use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Mean of all elements, rank 0.
pub fn mean_all(tape: &mut Tape, x: Var) -> Result<Var> {
    let n = tape.value(x).numel();
    if n == 0 {
        return Err(Error::Shape("mean_all of an empty tensor".into()));
    }
    let s = super::sum_all(tape, x)?;
    super::scale(tape, s, 1.0 / n as f64)
}

/// `[rows..., C]` -> `[C]`, summing every leading index.
pub fn sum_rows(tape: &mut Tape, x: Var) -> Result<Var> {
    let tx = tape.value(x).clone();
    let y = tx.backend().sum_rows(&tx)?;
    let zeros_shape = tx.shape().clone();
    let (dtype, device) = (tx.dtype(), tx.device());
    Ok(tape.push(
        y,
        &[x],
        Box::new(move |g: &Tensor| {
            let zeros = Tensor::zeros(zeros_shape.clone(), dtype, &device)?;
            Ok(vec![Some(g.backend().add_channels(&zeros, g)?)])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::gradcheck;

    #[test]
    fn values_and_gradients() {
        let x =
            Tensor::from_vec((0..12).map(|i| i as f64 * 0.5 - 1.0).collect::<Vec<_>>(), [2, 2, 3]).unwrap();
        let mut tape = Tape::no_grad();
        let v = tape.constant(x.clone());
        let s = sum_rows(&mut tape, v).unwrap();
        assert_eq!(tape.value(s).to_f64_vec().unwrap(), vec![5.0, 7.0, 9.0]);
        let m = mean_all(&mut tape, v).unwrap();
        assert_eq!(tape.value(m).scalar_value().unwrap(), 1.75);
        for f in [0, 1] {
            let errs = gradcheck::check(
                std::slice::from_ref(&x),
                |t, v| {
                    if f == 0 {
                        let s = sum_rows(t, v[0])?;
                        gradcheck::random_projection(t, s, 1)
                    } else {
                        let s = gradcheck::random_projection(t, v[0], 2)?;
                        let m = mean_all(t, v[0])?;
                        super::super::add(t, s, m)
                    }
                },
                1e-6,
            )
            .unwrap();
            assert!(errs[0] < 1e-9, "{errs:?}");
        }
    }
}
