//! Reshapes as ops: the data is shared, the gradient is reshaped back.

use crate::tape::{Tape, Var};
use crate::tensor::{Shape, Tensor};
use crate::Result;

pub fn reshape(tape: &mut Tape, x: Var, shape: impl Into<Shape>) -> Result<Var> {
    let tx = tape.value(x);
    let in_shape = tx.shape().clone();
    let y = tx.reshape(shape)?;
    Ok(tape.push(y, &[x], Box::new(move |g: &Tensor| Ok(vec![Some(g.reshape(in_shape.clone())?)]))))
}

/// `[N, ...]` -> `[N, prod(...)]` (NHWC flatten: H, W, C order; see the IResNet export for the FC weight).
pub fn flatten(tape: &mut Tape, x: Var) -> Result<Var> {
    let dims = tape.value(x).dims().to_vec();
    let Some((&n, rest)) = dims.split_first() else {
        return Err(crate::Error::Shape("flatten: needs a tensor of rank >= 1, got a scalar".into()));
    };
    reshape(tape, x, [n, rest.iter().product()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::gradcheck;
    use crate::Error;

    #[test]
    fn flatten_gradient_and_errors() {
        let x = Tensor::from_vec((0..24).map(|i| i as f64).collect::<Vec<_>>(), [2, 3, 2, 2]).unwrap();
        let errs = gradcheck::check(
            std::slice::from_ref(&x),
            |t, v| {
                let f = flatten(t, v[0])?;
                assert_eq!(t.value(f).dims(), &[2, 12]);
                gradcheck::random_projection(t, f, 1)
            },
            1e-6,
        )
        .unwrap();
        assert!(errs[0] < 1e-7, "{errs:?}");
        let mut tape = Tape::new();
        let v = tape.leaf(x);
        assert!(matches!(reshape(&mut tape, v, [5, 5]), Err(Error::Shape(_))));
        let s = tape.leaf(Tensor::scalar(1.0f64));
        assert!(matches!(flatten(&mut tape, s), Err(Error::Shape(_))));
    }
}
