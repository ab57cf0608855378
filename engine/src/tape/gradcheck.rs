//! Finite-difference gradient checks in f64, used by the tests of every op, block and head.

use super::{Tape, Var};
use crate::ops;
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Norm-wise relative error ||a - b|| / ||b|| (0 when both are 0).
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_error on slices of different lengths");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// sum(v * r) for a fixed random r (seeded): a scalar that depends on every element of `v`, so one
/// backward checks the whole Jacobian-vector product.
pub fn random_projection(tape: &mut Tape, v: Var, seed: u64) -> Result<Var> {
    let val = tape.value(v);
    let mut rng = Rng::new(seed);
    let r: Vec<f64> = (0..val.numel()).map(|_| rng.normal()).collect();
    let r = Tensor::from_vec(r, val.shape().clone())?.to_dtype(val.dtype())?;
    let r = tape.constant(r);
    let prod = ops::mul(tape, v, r)?;
    ops::sum_all(tape, prod)
}

/// Compares the tape's gradient of `f(inputs)` with central differences of step `h`, for every element
/// of every input. Returns the norm-wise relative error per input.
pub fn check<F>(inputs: &[Tensor], f: F, h: f64) -> Result<Vec<f64>>
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    for t in inputs {
        if t.dtype() != DType::F64 {
            return Err(Error::DType("gradient checks run in f64".into()));
        }
    }
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&mut tape, &vars)?;
    let grads = tape.backward(out)?;
    let eval = |xs: &[Tensor]| -> Result<f64> {
        let mut t = Tape::no_grad();
        let vs: Vec<Var> = xs.iter().map(|x| t.constant(x.clone())).collect();
        let o = f(&mut t, &vs)?;
        t.value(o).scalar_value()
    };
    let mut errors = Vec::new();
    for (k, v) in vars.iter().enumerate() {
        let analytic = match grads.get(*v) {
            Some(g) => g.to_f64_vec()?,
            None => vec![0.0; inputs[k].numel()],
        };
        let mut numeric = vec![0.0; inputs[k].numel()];
        let mut xs: Vec<Tensor> = inputs.to_vec();
        for (i, n) in numeric.iter_mut().enumerate() {
            let orig = inputs[k].as_slice::<f64>()?[i];
            xs[k].as_mut_slice::<f64>()?[i] = orig + h;
            let plus = eval(&xs)?;
            xs[k].as_mut_slice::<f64>()?[i] = orig - h;
            let minus = eval(&xs)?;
            xs[k].as_mut_slice::<f64>()?[i] = orig;
            *n = (plus - minus) / (2.0 * h);
        }
        errors.push(rel_error(&analytic, &numeric));
    }
    Ok(errors)
}
