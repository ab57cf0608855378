//! Optimizers (SGD, AdamW) with torch.optim semantics, per-parameter-group options, gradient clipping and
//! learning-rate schedules. Optimizers update a `ParamStore` from the tape's named gradients and keep their
//! state as named tensors, so checkpoints save and restore it like weights.

mod adamw;
mod clip;
mod groups;
mod schedule;
mod sgd;
mod update;

pub use update::UpdateCheck;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_coefficient, clip_grad_norm};
pub use groups::{GroupOptions, ParamGroups};
pub use schedule::LrSchedule;
pub use sgd::{Sgd, SgdConfig};

use crate::model::ParamStore;
use crate::tensor::Tensor;
use crate::Result;

/// What the training loop needs from any optimizer.
pub trait Optimizer: Send {
    /// Updates every parameter of `store` that has a gradient in `grads`, with base learning rate `lr`
    /// (each group scales it). Gradients whose names are not in `store` are left for another store (the
    /// head's); a gradient for a frozen parameter or a buffer is an error.
    fn step(&mut self, store: &mut ParamStore, grads: &[(String, Tensor)], lr: f64) -> Result<()> {
        self.step_scaled(store, grads, lr, 1.0).map(|_| ())
    }

    /// As `step`, every gradient first multiplied by `grad_scale` in the gradient's precision (gradient
    /// clipping's coefficient, applied inside the update instead of in a pass of its own); returns what
    /// tells afterwards whether the update left a parameter non-finite.
    fn step_scaled(
        &mut self,
        store: &mut ParamStore,
        grads: &[(String, Tensor)],
        lr: f64,
        grad_scale: f64,
    ) -> Result<UpdateCheck>;

    /// The state as named tensors (names like `layer1.0.conv1.weight.momentum_buffer`).
    fn state(&self) -> Vec<(String, Tensor)>;

    /// Restores `state()` output; every name must be one this optimizer kind writes.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;

    /// Short name stored in checkpoints ("sgd", "adamw"), checked on resume.
    fn kind(&self) -> &'static str;
}
