//! Fully connected layer with torch's weight layout.

use super::{
    autocast_grad, autocast_operand, autocast_store, autocast_widen, same_device_and_dtype, var_operand,
    weight_grad,
};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// x `[N, in]` @ w^T (w `[out, in]`) + b `[out]`. Under the tape's autocast type the product runs in it
/// (the bias is added in f32): the output and x's gradient are held in it, the weight's and the bias's
/// gradients come back in f32 (see `Tape::set_autocast`).
pub fn linear(tape: &mut Tape, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
    let mut inputs = vec![x, w];
    inputs.extend(b);
    same_device_and_dtype(tape, "linear", &inputs)?;
    let half = tape.autocast();
    let (x_half, w_half) = (tape.storage_type(x), tape.storage_type(w));
    let b_half = b.and_then(|b| tape.storage_type(b));
    let w_param = tape.is_param(w);
    let tx = var_operand(tape, x, half)?;
    let tw = var_operand(tape, w, half)?;
    let (_, fin) = tx.shape().matrix("linear input")?;
    let (fout, win) = tw.shape().matrix("linear weight")?;
    if fin != win {
        return Err(Error::Shape(format!(
            "linear: input {} does not fit weight {} ([out, in])",
            tx.shape(),
            tw.shape()
        )));
    }
    let be = tx.backend();
    let mut y = be.matmul(&tx, &tw, false, true)?;
    if let Some(b) = b {
        let tb = tape.value(b);
        if tb.dims() != [fout] {
            return Err(Error::Shape(format!("linear: bias must have shape [{fout}], got {}", tb.shape())));
        }
        let tb = autocast_operand(tb, half)?;
        // The bias is added in f32 (on a GPU the product and the bias arrive in half).
        y = be.add_channels(autocast_widen(&y)?.as_ref(), autocast_widen(&tb)?.as_ref())?;
    }
    let y = autocast_store(y, half)?;
    let (need_dx, has_b) = (tape.requires_grad(x), b.is_some());
    Ok(tape.push(
        y,
        &inputs,
        Box::new(move |g: &Tensor| {
            let g = autocast_operand(g, half)?;
            let be = g.backend();
            let dx = if need_dx {
                Some(autocast_grad(be.matmul(&g, &tw, false, false)?, half, x_half)?)
            } else {
                None
            };
            let mut grads =
                vec![dx, Some(weight_grad(be.matmul(&g, &tx, true, false)?, half, w_half, w_param)?)];
            if has_b {
                grads.push(Some(autocast_grad(be.sum_rows(autocast_widen(&g)?.as_ref())?, half, b_half)?));
            }
            Ok(grads)
        }),
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
    fn gradients_with_and_without_bias() {
        let (x, w, b) = (randn(&[3, 5], 1), randn(&[4, 5], 2), randn(&[4], 3));
        let errs = gradcheck::check(
            &[x.clone(), w.clone(), b],
            |t, v| {
                let y = linear(t, v[0], v[1], Some(v[2]))?;
                gradcheck::random_projection(t, y, 4)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
        let errs = gradcheck::check(
            &[x, w],
            |t, v| {
                let y = linear(t, v[0], v[1], None)?;
                gradcheck::random_projection(t, y, 5)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(randn(&[3, 5], 1));
        let w = tape.leaf(randn(&[4, 6], 2));
        assert!(matches!(linear(&mut tape, x, w, None), Err(Error::Shape(_))));
        let w = tape.leaf(randn(&[4, 5], 2));
        let b = tape.leaf(randn(&[5], 3));
        assert!(matches!(linear(&mut tape, x, w, Some(b)), Err(Error::Shape(_))));
    }
}
