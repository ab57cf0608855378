//! Products and sums that broadcast a vector along the rows or the channels of a `[rows, C]` view.

use super::same_device_and_dtype;
use crate::backend::BinaryOp;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Sum of each row of `[R, D]` -> `[R]`, as a product with a ones vector (works on every backend).
fn row_sums(t: &Tensor) -> Result<Tensor> {
    let (r, d) = t.shape().matrix("row sums")?;
    let ones = Tensor::full([d, 1], 1.0, t.dtype(), &t.device())?;
    t.backend().matmul(t, &ones, false, false)?.reshape([r])
}

/// x `[R, D]` * s `[R]` per row (e.g. a per-sample scale).
pub fn scale_rows(tape: &mut Tape, x: Var, s: Var) -> Result<Var> {
    same_device_and_dtype(tape, "scale_rows", &[x, s])?;
    let (tx, ts) = (tape.value(x).clone(), tape.value(s).clone());
    let (r, _) = tx.shape().matrix("scale_rows")?;
    if ts.dims() != [r] {
        return Err(Error::Shape(format!("scale_rows: scale must have shape [{r}], got {}", ts.shape())));
    }
    let y = tx.backend().scale_rows(&tx, &ts)?;
    Ok(tape.push(
        y,
        &[x, s],
        Box::new(move |g: &Tensor| {
            let be = g.backend();
            let ds = row_sums(&be.binary(BinaryOp::Mul, g, &tx)?)?;
            Ok(vec![Some(be.scale_rows(g, &ts)?), Some(ds)])
        }),
    ))
}

/// x `[..., C]` * s `[C]`.
pub fn mul_channels(tape: &mut Tape, x: Var, s: Var) -> Result<Var> {
    same_device_and_dtype(tape, "mul_channels", &[x, s])?;
    let (tx, ts) = (tape.value(x).clone(), tape.value(s).clone());
    let y = tx.backend().mul_channels(&tx, &ts)?;
    Ok(tape.push(
        y,
        &[x, s],
        Box::new(move |g: &Tensor| {
            let be = g.backend();
            let ds = be.sum_rows(&be.binary(BinaryOp::Mul, g, &tx)?)?;
            Ok(vec![Some(be.mul_channels(g, &ts)?), Some(ds)])
        }),
    ))
}

/// x `[..., C]` + b `[C]`.
pub fn add_channels(tape: &mut Tape, x: Var, b: Var) -> Result<Var> {
    same_device_and_dtype(tape, "add_channels", &[x, b])?;
    let (tx, tb) = (tape.value(x), tape.value(b));
    let y = tx.backend().add_channels(tx, tb)?;
    Ok(tape.push(
        y,
        &[x, b],
        Box::new(|g: &Tensor| Ok(vec![Some(g.clone()), Some(g.backend().sum_rows(g)?)])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tape::gradcheck;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut r = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| r.normal()).collect::<Vec<f64>>(), shape).unwrap()
    }

    #[test]
    fn gradients() {
        let errs = gradcheck::check(
            &[randn(&[3, 4], 1), randn(&[3], 2), randn(&[4], 3), randn(&[4], 4)],
            |t, v| {
                let a = scale_rows(t, v[0], v[1])?;
                let b = mul_channels(t, a, v[2])?;
                let c = add_channels(t, b, v[3])?;
                gradcheck::random_projection(t, c, 5)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(randn(&[3, 4], 1));
        let v = tape.leaf(randn(&[5], 2));
        assert!(matches!(scale_rows(&mut tape, x, v), Err(Error::Shape(_))));
        assert!(matches!(mul_channels(&mut tape, x, v), Err(Error::Shape(_))));
        assert!(matches!(add_channels(&mut tape, x, v), Err(Error::Shape(_))));
    }
}
