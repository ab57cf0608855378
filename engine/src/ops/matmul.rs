//! Matrix product of two rank-2 tensors.

use super::{autocast_operand, autocast_store, same_device_and_dtype, var_operand, weight_grad};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// a [m, k] @ b [k, n] -> [m, n]. Under the tape's autocast type the product runs in it; the output and
/// the gradients of inputs held in it stay in it, the others come back in f32 (see `Tape::set_autocast`).
pub fn matmul(tape: &mut Tape, a: Var, b: Var) -> Result<Var> {
    same_device_and_dtype(tape, "matmul", &[a, b])?;
    let half = tape.autocast();
    let (a_half, b_half) = (tape.storage_type(a), tape.storage_type(b));
    let (a_param, b_param) = (tape.is_param(a), tape.is_param(b));
    let ta = var_operand(tape, a, half)?;
    let tb = var_operand(tape, b, half)?;
    let (m, k) = ta.shape().matrix("matmul")?;
    let (k2, n) = tb.shape().matrix("matmul")?;
    if k != k2 {
        return Err(Error::Shape(format!("matmul: [{m}, {k}] @ [{k2}, {n}]")));
    }
    let out = autocast_store(ta.backend().matmul(&ta, &tb, false, false)?, half)?;
    Ok(tape.push(
        out,
        &[a, b],
        Box::new(move |g: &Tensor| {
            let g = autocast_operand(g, half)?;
            let be = g.backend();
            // da = g @ b^T, db = a^T @ g
            let da = weight_grad(be.matmul(&g, &tb, false, true)?, half, a_half, a_param)?;
            let db = weight_grad(be.matmul(&ta, &g, true, false)?, half, b_half, b_param)?;
            Ok(vec![Some(da), Some(db)])
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::gradcheck;

    #[test]
    fn matmul_values_and_gradients() {
        let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        let b = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 0.0, 1.0, 3.0], [3, 2]).unwrap();
        let mut tape = Tape::new();
        let (va, vb) = (tape.leaf(a.clone()), tape.leaf(b.clone()));
        let c = matmul(&mut tape, va, vb).unwrap();
        assert_eq!(tape.value(c).to_f64_vec().unwrap(), vec![7.5, 8.0, 18.0, 14.0]);
        let errs = gradcheck::check(
            &[a, b],
            |t, v| {
                let c = matmul(t, v[0], v[1])?;
                gradcheck::random_projection(t, c, 5)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
    }
}
