//! Shared plumbing of the optimizers: matching gradients to parameters and checking restored state.

use crate::model::{ParamKind, ParamStore};
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// The gradients that belong to `store`, after checking each targets a trainable parameter of the same
/// shape and dtype (or is a 16-bit gradient of an f32 weight, as an autocast GEMM leaves it on a GPU).
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
        let half_of_f32 = p.dtype() == DType::F32 && matches!(g.dtype(), DType::BF16 | DType::F16);
        if p.dims() != g.dims() || (p.dtype() != g.dtype() && !half_of_f32) {
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

/// What an update can tell afterwards: which parameter it left non-finite (its new weights or their
/// optimizer state), from the flags the update set as it wrote them (`Backend::sgd_update`). Reading
/// them waits for the update to finish (one device read on a GPU).
pub struct UpdateCheck {
    names: Vec<String>,
    flags: Option<Tensor>,
}

impl UpdateCheck {
    /// An update of nothing.
    pub fn none() -> UpdateCheck {
        UpdateCheck { names: Vec::new(), flags: None }
    }

    pub(super) fn new(names: &[&str], flags: Tensor) -> UpdateCheck {
        UpdateCheck { names: names.iter().map(|n| n.to_string()).collect(), flags: Some(flags) }
    }

    /// The first parameter whose new weights or optimizer state hold a NaN or an infinity.
    pub fn first_nonfinite(&self) -> Result<Option<&str>> {
        let Some(f) = &self.flags else { return Ok(None) };
        let i = crate::backend::for_device(&f.device()).first_flagged(f)?;
        Ok(i.and_then(|i| self.names.get(i)).map(String::as_str))
    }
}
