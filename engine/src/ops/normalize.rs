//! Row-wise L2 normalization x / max(||x||, eps) (torch's F.normalize), with the norms as a second,
//! differentiable output (magnitude-aware heads read them).

use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::Result;

/// Default eps of torch's F.normalize.
pub const NORMALIZE_EPS: f64 = 1e-12;

/// (x / max(||x||, eps), ||x||) for x `[rows, D]`; norms have shape `[rows]`.
pub fn normalize_rows_with_norms(tape: &mut Tape, x: Var, eps: f64) -> Result<(Var, Var)> {
    let tx = tape.value(x).clone();
    let (y, norms) = tx.backend().l2_normalize_rows(&tx, eps)?;
    let (y_bw, n_bw) = (y.clone(), norms.clone());
    let vy = tape.push(
        y.clone(),
        &[x],
        Box::new(move |g: &Tensor| {
            Ok(vec![Some(g.backend().l2_normalize_rows_backward_eps(g, &y_bw, &n_bw, eps)?)])
        }),
    );
    // d||x||/dx = x / ||x||, which is y wherever the norm was not clamped.
    let vn =
        tape.push(norms, &[x], Box::new(move |g: &Tensor| Ok(vec![Some(g.backend().scale_rows(&y, g)?)])));
    Ok((vy, vn))
}

/// x / max(||x||, eps) per row.
pub fn normalize_rows(tape: &mut Tape, x: Var, eps: f64) -> Result<Var> {
    Ok(normalize_rows_with_norms(tape, x, eps)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{add, mul, sum_all};
    use crate::tape::gradcheck;
    use crate::Error;

    fn x() -> Tensor {
        Tensor::from_vec(vec![0.3, -1.2, 2.0, 0.5, 1.0, 1.0, -0.7, 0.2, 0.0, 0.0, 3.0, -4.0], [3, 4]).unwrap()
    }

    #[test]
    fn rows_have_unit_norm_and_gradients_match() {
        let mut tape = Tape::no_grad();
        let v = tape.constant(x());
        let (y, n) = normalize_rows_with_norms(&mut tape, v, NORMALIZE_EPS).unwrap();
        let ys = tape.value(y).to_f64_vec().unwrap();
        for r in ys.chunks(4) {
            assert!((r.iter().map(|a| a * a).sum::<f64>() - 1.0).abs() < 1e-14);
        }
        assert!((tape.value(n).to_f64_vec().unwrap()[2] - 5.0).abs() < 1e-14);
        let errs = gradcheck::check(
            &[x()],
            |t, v| {
                let (y, n) = normalize_rows_with_norms(t, v[0], NORMALIZE_EPS)?;
                let py = gradcheck::random_projection(t, y, 1)?;
                let pn = gradcheck::random_projection(t, n, 2)?;
                add(t, py, pn)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs[0] < 1e-8, "{errs:?}");
    }

    #[test]
    fn clamped_rows_divide_by_eps() {
        let tiny = Tensor::from_vec(vec![1e-4, -2e-4, 3e-4], [1, 3]).unwrap();
        let errs = gradcheck::check(
            &[tiny],
            |t, v| {
                let y = normalize_rows(t, v[0], 1e-2)?;
                let sq = mul(t, y, y)?;
                let s = sum_all(t, sq)?;
                let p = gradcheck::random_projection(t, y, 3)?;
                add(t, s, p)
            },
            1e-7,
        )
        .unwrap();
        assert!(errs[0] < 1e-7, "{errs:?}");
    }

    #[test]
    fn non_matrix_is_an_error() {
        let mut tape = Tape::new();
        let v = tape.leaf(Tensor::from_vec(vec![1.0f64; 8], [2, 2, 2]).unwrap());
        assert!(matches!(normalize_rows(&mut tape, v, 1e-12), Err(Error::Shape(_))));
    }
}
