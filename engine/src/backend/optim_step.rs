//! The hyper-parameters of one optimizer update as a backend applies it (`Backend::sgd_step`,
//! `Backend::adamw_step`): the group's options already folded in, so the backend sees plain numbers.

/// One torch.optim.SGD update (dampening applies from the second step on, as torch does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Multiplies the raw gradient first (1 / loss scale when the unscale is fused); 1 otherwise.
    pub grad_scale: f64,
    /// Also return the updated weights as bf16 (the copy a 16-bit forward would read).
    pub bf16_copy: bool,
}

/// One torch.optim.AdamW update (amsgrad off) at 1-based step `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u32,
    /// As `SgdStep::grad_scale`.
    pub grad_scale: f64,
    /// As `SgdStep::bf16_copy`.
    pub bf16_copy: bool,
}
