//! An optimizer update as a backend applies it (`Backend::sgd_update`, `Backend::adamw_update`): many
//! parameter tensors at once (the CUDA backend updates them in a few multi-tensor launches), each with
//! its group's learning rate and weight decay already folded in, so the backend sees plain numbers.

use crate::tensor::{DType, Tensor};

/// What every tensor of one torch.optim.SGD update shares (dampening applies from a buffer's second
/// step on, as torch does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// Multiplies the raw gradient first (1 / loss scale, or the clipping coefficient); 1 otherwise.
    pub grad_scale: f64,
}

/// What every tensor of one torch.optim.AdamW update (amsgrad off) shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// As `SgdStep::grad_scale`.
    pub grad_scale: f64,
}

/// One parameter tensor of an SGD update. `p` (f32 or f64) and `buf` are replaced by new tensors; `g`
/// has `p`'s shape and dtype, or is a 16-bit gradient of an f32 weight (read widened).
pub struct SgdParam<'a> {
    pub p: &'a mut Tensor,
    pub g: &'a Tensor,
    /// The momentum buffer: None before its first step (it starts as the first decayed gradient).
    pub buf: &'a mut Option<Tensor>,
    pub lr: f64,
    pub weight_decay: f64,
    /// Also return the new weights in this 16-bit type, as `Backend::half_operand` would give them.
    pub half_copy: Option<DType>,
}

/// One parameter tensor of an AdamW update at its 1-based step `step`; as `SgdParam` otherwise.
pub struct AdamWParam<'a> {
    pub p: &'a mut Tensor,
    pub g: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
    pub lr: f64,
    pub weight_decay: f64,
    pub step: u32,
    pub half_copy: Option<DType>,
}

/// What an update returns: each tensor's 16-bit copy where asked, and one flag per tensor (an f32 tensor
/// on the update's device, nonzero where the new weights or their optimizer state hold a NaN or an
/// infinity), set as the update wrote them and read when wanted (`Backend::first_flagged`).
pub struct Updated {
    pub half_copies: Vec<Option<Tensor>>,
    pub nonfinite: Tensor,
}
