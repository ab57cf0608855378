//! Elementwise arithmetic on tensors of one shape, and the full sum.

use super::same_device_and_dtype;
use crate::backend::{BinaryOp, UnaryOp};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

fn binary(tape: &mut Tape, op: BinaryOp, a: Var, b: Var) -> Result<Var> {
    same_device_and_dtype(tape, "binary op", &[a, b])?;
    let (ta, tb) = (tape.value(a).clone(), tape.value(b).clone());
    if ta.dims() != tb.dims() {
        return Err(Error::Shape(format!("{op:?}: shapes {} and {} differ", ta.shape(), tb.shape())));
    }
    let out = ta.backend().binary(op, &ta, &tb)?;
    let backward: crate::tape::BackwardFn = match op {
        BinaryOp::Add => Box::new(|g: &Tensor| Ok(vec![Some(g.clone()), Some(g.clone())])),
        BinaryOp::Sub => {
            Box::new(|g: &Tensor| Ok(vec![Some(g.clone()), Some(g.backend().unary(UnaryOp::Neg, g)?)]))
        }
        BinaryOp::Mul => Box::new(move |g: &Tensor| {
            let be = g.backend();
            Ok(vec![Some(be.binary(BinaryOp::Mul, g, &tb)?), Some(be.binary(BinaryOp::Mul, g, &ta)?)])
        }),
        BinaryOp::Div => {
            return Err(Error::Unsupported("division is not differentiable on the tape yet".into()))
        }
    };
    Ok(tape.push(out, &[a, b], backward))
}

pub fn add(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    binary(tape, BinaryOp::Add, a, b)
}

pub fn sub(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    binary(tape, BinaryOp::Sub, a, b)
}

pub fn mul(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    binary(tape, BinaryOp::Mul, a, b)
}

/// Sum of all elements, as a rank-0 tensor.
pub fn sum_all(tape: &mut Tape, a: Var) -> Result<Var> {
    let ta = tape.value(a).clone();
    let out = ta.backend().sum_all(&ta)?;
    let shape = ta.shape().clone();
    Ok(tape.push(
        out,
        &[a],
        Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().broadcast_scalar(g, &shape)?)])),
    ))
}

/// alpha * x (a constant factor).
pub fn scale(tape: &mut Tape, x: Var, alpha: f64) -> Result<Var> {
    let tx = tape.value(x);
    let out = tx.backend().affine(tx, alpha, 0.0)?;
    Ok(tape.push(out, &[x], Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().affine(g, alpha, 0.0)?)]))))
}

/// x + beta (a constant shift).
pub fn add_scalar(tape: &mut Tape, x: Var, beta: f64) -> Result<Var> {
    let tx = tape.value(x);
    let out = tx.backend().affine(tx, 1.0, beta)?;
    Ok(tape.push(out, &[x], Box::new(|g: &Tensor| Ok(vec![Some(g.clone())]))))
}

pub fn exp(tape: &mut Tape, x: Var) -> Result<Var> {
    let tx = tape.value(x);
    let out = tx.backend().unary(UnaryOp::Exp, tx)?;
    let y = out.clone();
    Ok(tape.push(
        out,
        &[x],
        Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().binary(BinaryOp::Mul, g, &y)?)])),
    ))
}

pub fn log(tape: &mut Tape, x: Var) -> Result<Var> {
    let tx = tape.value(x).clone();
    let out = tx.backend().unary(UnaryOp::Log, &tx)?;
    Ok(tape.push(
        out,
        &[x],
        Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().binary(BinaryOp::Div, g, &tx)?)])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::gradcheck;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn add_mul_sub_gradients_match_finite_differences() {
        let a = t(&[0.5, -1.0, 2.0, 3.0, 0.1, -0.7], &[2, 3]);
        let b = t(&[1.5, 2.0, -0.5, 0.25, -2.0, 0.3], &[2, 3]);
        let errs = gradcheck::check(
            &[a, b],
            |tape, v| {
                let p = mul(tape, v[0], v[1])?;
                let s = add(tape, p, v[0])?;
                let d = sub(tape, s, v[1])?;
                gradcheck::random_projection(tape, d, 3)
            },
            1e-6,
        )
        .unwrap();
        for e in errs {
            assert!(e < 1e-8, "relative error {e}");
        }
    }

    #[test]
    fn scale_shift_exp_log_gradients() {
        let a = t(&[0.5, 1.0, 2.0, 3.0, 0.1, 0.7], &[2, 3]);
        let errs = gradcheck::check(
            &[a],
            |tape, v| {
                let s = scale(tape, v[0], -1.5)?;
                let e = exp(tape, s)?;
                let sh = add_scalar(tape, v[0], 0.25)?;
                let l = log(tape, sh)?;
                let p = add(tape, e, l)?;
                gradcheck::random_projection(tape, p, 7)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs[0] < 1e-8, "{errs:?}");
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let mut tape = Tape::new();
        let a = tape.leaf(t(&[1.0, 2.0], &[2]));
        let b = tape.leaf(t(&[1.0, 2.0, 3.0], &[3]));
        assert!(matches!(add(&mut tape, a, b), Err(Error::Shape(_))));
    }

    #[test]
    fn a_var_used_twice_accumulates_its_gradient() {
        let mut tape = Tape::new();
        let a = tape.leaf(t(&[3.0], &[1]));
        let sq = mul(&mut tape, a, a).unwrap();
        let s = sum_all(&mut tape, sq).unwrap();
        let g = tape.backward(s).unwrap();
        assert_eq!(g.get(a).unwrap().to_f64_vec().unwrap(), vec![6.0]);
    }

    #[test]
    fn no_grad_tape_keeps_no_backward() {
        let mut tape = Tape::no_grad();
        let a = tape.leaf(t(&[3.0], &[1]));
        let s = sum_all(&mut tape, a).unwrap();
        assert_eq!(tape.value(s).scalar_value().unwrap(), 3.0);
        assert!(tape.backward(s).is_err());
    }
}
