//! 2-D convolution without bias on NHWC activations and OHWI weights.

use super::{
    autocast_grad, autocast_operand, autocast_store, same_device_and_dtype, var_operand, weight_grad,
};
use crate::backend::Conv2dParams;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::Result;

/// x `[N, H, W, C]` conv w `[O, k, k, C]` -> `[N, Ho, Wo, O]`. Under the tape's autocast type the
/// convolutions run in it: the output and x's gradient are held in it, and so is w's when w is a
/// parameter (read widened by the optimizer; see `ops::round::weight_grad`), else it comes back in f32.
pub fn conv2d(tape: &mut Tape, x: Var, w: Var, p: Conv2dParams) -> Result<Var> {
    same_device_and_dtype(tape, "conv2d", &[x, w])?;
    let half = tape.autocast();
    let (x_half, w_half) = (tape.storage_type(x), tape.storage_type(w));
    let w_param = tape.is_param(w);
    let tx = var_operand(tape, x, half)?;
    let tw = var_operand(tape, w, half)?;
    let out = autocast_store(tx.backend().conv2d_forward(&tx, &tw, p)?, half)?;
    let (need_dx, need_dw) = (tape.requires_grad(x), tape.requires_grad(w));
    Ok(tape.push(
        out,
        &[x, w],
        Box::new(move |g: &Tensor| {
            let g = autocast_operand(g, half)?;
            let be = g.backend();
            // The first conv's input is data: skip its gradient.
            let dx = if need_dx {
                Some(autocast_grad(be.conv2d_backward_data(&g, &tw, tx.shape(), p)?, half, x_half)?)
            } else {
                None
            };
            let dw = if need_dw {
                Some(weight_grad(be.conv2d_backward_filter(&g, &tx, tw.shape(), p)?, half, w_half, w_param)?)
            } else {
                None
            };
            Ok(vec![dx, dw])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tape::gradcheck;
    use crate::Error;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut r = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| r.normal()).collect::<Vec<f64>>(), shape).unwrap()
    }

    fn check(k: usize, stride: usize, padding: usize, h: usize, w: usize) {
        let p = Conv2dParams { kernel: k, stride, padding };
        let x = randn(&[2, h, w, 3], 1);
        let wt = randn(&[4, k, k, 3], 2);
        let errs = gradcheck::check(
            &[x, wt],
            |t, v| {
                let y = conv2d(t, v[0], v[1], p)?;
                gradcheck::random_projection(t, y, 3)
            },
            1e-5,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "k={k} s={stride} p={padding}: {errs:?}");
    }

    #[test]
    fn gradients_3x3_stride_1_pad_1() {
        check(3, 1, 1, 5, 4);
    }

    #[test]
    fn gradients_3x3_stride_2_pad_1() {
        check(3, 2, 1, 6, 5);
    }

    #[test]
    fn gradients_1x1_stride_2() {
        check(1, 2, 0, 5, 6);
    }

    #[test]
    fn gradients_1x1_stride_1() {
        check(1, 1, 0, 3, 4);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let p = Conv2dParams { kernel: 3, stride: 1, padding: 1 };
        let mut tape = Tape::new();
        let x = tape.leaf(randn(&[1, 4, 4, 3], 1));
        let w_bad = tape.leaf(randn(&[2, 3, 3, 2], 2));
        assert!(matches!(conv2d(&mut tape, x, w_bad, p), Err(Error::Shape(_))));
        let x3 = tape.leaf(randn(&[4, 4, 3], 1));
        let w = tape.leaf(randn(&[2, 3, 3, 3], 2));
        assert!(matches!(conv2d(&mut tape, x3, w, p), Err(Error::Shape(_))));
        let xf = tape.leaf(randn(&[1, 4, 4, 3], 1).to_dtype(crate::DType::F32).unwrap());
        assert!(matches!(conv2d(&mut tape, xf, w, p), Err(Error::DType(_))));
    }
}
