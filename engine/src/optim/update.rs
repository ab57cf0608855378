//! Shared plumbing of the optimizers: matching gradients to parameters and checking restored state.

use crate::model::{ParamKind, ParamStore};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The gradients that belong to `store`, after checking each targets a trainable parameter of the same
/// shape and dtype.
pub fn owned_grads<'a>(
    store: &ParamStore,
    grads: &'a [(String, Tensor)],
) -> Result<Vec<(&'a str, &'a Tensor)>> {
    let mut out = Vec::new();
    for (name, g) in grads {
        let Some(kind) = store.kind(name) else { continue };
        if kind != ParamKind::Trainable {
            return Err(Error::Invalid(format!("optimizer: '{name}' is {kind:?} but received a gradient")));
        }
        let p = store.get(name)?;
        if p.dims() != g.dims() || p.dtype() != g.dtype() {
            return Err(Error::Shape(format!(
                "optimizer: gradient of '{name}' is {} {}, parameter is {} {}",
                g.shape(),
                g.dtype(),
                p.shape(),
                p.dtype()
            )));
        }
        out.push((name.as_str(), g));
    }
    Ok(out)
}

/// A state tensor looked up by name, or an error naming what was expected.
pub fn check_state_shape(name: &str, t: &Tensor, like: &Tensor) -> Result<()> {
    if t.dims() != like.dims() || t.dtype() != like.dtype() {
        return Err(Error::Shape(format!(
            "optimizer state '{name}' is {} {}, its parameter is {} {}",
            t.shape(),
            t.dtype(),
            like.shape(),
            like.dtype()
        )));
    }
    Ok(())
}
