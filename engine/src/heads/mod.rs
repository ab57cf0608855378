//! Margin-softmax heads (spec: shared/spec/heads.md). One classifier path serves every head:
//!
//! 1. L2-normalize embeddings x_i (norm a_i) and class rows W_j; c_ij = x̂_i·Ŵ_j, clamped to the head's
//!    [-1+ε, 1-ε] (gradient 0 at and beyond the bounds, as torch.clamp).
//! 2. Logits: the target column through the row's [`TargetMap`], the other columns through the head's
//!    [`NonTarget`] map (which may compare c_ij with the row's threshold τ_i).
//! 3. Cross entropy through LSE (log p_y = z_y - LSE), per-sample weight I(p_y) with its gradient factor
//!    st_i, plus an optional extra term of the raw norm a_i (MagFace g, QCFace R). QCFace's p_d comes
//!    from a second log-sum-exp, of the margin-free non-target logits s·c_j, kept only when needed.
//! 4. Analytic backward: G = dL/dc, then through both normalizations, plus dL/da_i·x̂_i.
//!
//! # The contract a head declares (what the fused CUDA classifier must implement)
//! - [`Head::needs`]: per-sample norms (detached or with gradient), non-target modulation, p_y before
//!   weighting, the margin-free p_d, an extra term, running state (spec §13).
//! - [`Head::observe`]: updates running state from the batch's target cosines c_y and norms a, before the
//!   logits (training only; never all-reduced).
//! - [`Head::quality`]: a detached per-sample scalar computed from the batch and the state (AdaFace ẑ).
//! - [`Head::row`]: from (c_y, a_i, quality_i) the row's [`RowPlan`]: target map with its per-sample margin
//!   parameters, the hard-negative threshold τ_i, and dm/da for margins that depend on a_i with gradient.
//! - [`Head::non_target`]: the non-target map (one per head and step).
//! - [`Head::weight`]: I(p) and st(p) from log p_y.
//! - [`Head::extra`]: value and d/da of the per-sample extra term, given a_i and p_d.
//!
//! Per-row scalars are f64 (they are few); everything per element runs in the tensor's float type.

pub(crate) mod classifier;
pub mod kernel_plan;
pub(crate) mod maps;
mod params;
pub mod probe;
mod quality;
mod registry;
mod sharded;
mod state;
mod tape_op;
mod weighting;

pub mod adaface;
pub mod arcface;
pub mod combined;
pub mod cosface;
pub mod curricularface;
pub mod focal;
pub mod hm_softmax;
pub mod magface;
pub mod mv_softmax;
pub mod qamface;
pub mod qcface;
pub mod qqcface;
pub mod smaface;
pub mod softmax;
pub mod sphereface;

#[cfg(test)]
mod tests;

pub use classifier::{
    run, run_sharded, run_sharded_over, Frozen, Output, RowReport, RunOptions, Shard, CE_MAX, NORM_FLOOR,
};
pub use maps::{non_target_logit, NonTarget, RowPlan, TargetMap};
pub use params::{GradMode, HeadParams, Phase, Variant};
pub use registry::{from_name, has_phases, names};
pub use sharded::{partial_fc_rows, run_rank, Pick, RankGroup};
pub use state::{HeadState, RunningState};
pub use tape_op::{loss, sharded_loss};

use crate::Result;

/// What a head needs from the classifier (spec §13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The row's margin depends on a_i, with gradient (MagFace).
    pub norm_with_grad: bool,
    /// A detached per-sample quality from a_i and batch statistics (AdaFace, SMAFace family).
    pub norm_detached: bool,
    /// Non-target columns are modulated (CurricularFace, MV-Softmax, QAMFace).
    pub modulates_non_target: bool,
    /// The sample weight needs p_y of the margin logits (SMAFace family, HM/F-Softmax).
    pub p_y_before_weighting: bool,
    /// The extra term needs the margin-free, detached p_d = softmax(s·c)_y (QCFace).
    pub p_d: bool,
    /// An extra per-sample term of a_i (MagFace g, QCFace R).
    pub extra_term: bool,
    /// Running state that checkpoints must keep.
    pub running_state: bool,
}

/// I(p_y), the weight of a sample's cross entropy, and st = I + I'·p·log p, the factor of its gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleWeight {
    pub value: f64,
    pub st: f64,
}

impl SampleWeight {
    pub const ONE: SampleWeight = SampleWeight { value: 1.0, st: 1.0 };
}

/// What a head sees of the batch before the logits: target cosines (clamped) and raw norms, in f64.
pub struct BatchView<'a> {
    pub c_y: &'a [f64],
    pub norms: &'a [f64],
}

/// One row's inputs to [`Head::row`].
#[derive(Debug, Clone, Copy)]
pub struct RowInput {
    pub c_y: f64,
    pub norm: f64,
    /// The head's detached per-sample quality (0 for heads without one).
    pub quality: f64,
}

/// A margin-softmax head. Object safe; the classifier in this module is its CPU reference.
pub trait Head: Send + Sync {
    /// The command-line name (spec §15).
    fn name(&self) -> &'static str;
    fn needs(&self) -> Needs;
    /// The logit scale s (also the scale of p_d).
    fn scale(&self) -> f64;
    /// ε of the cosine clamp [-1+ε, 1-ε].
    fn clamp_eps(&self) -> f64;
    /// Smallest batch the head accepts in training mode.
    fn min_batch(&self) -> usize {
        1
    }
    /// Training mode updates running state in [`Head::observe`]; evaluation mode freezes it.
    fn set_training(&mut self, _on: bool) {}
    /// Updates running state from the batch, before the logits are formed.
    fn observe(&mut self, _batch: &BatchView) -> Result<()> {
        Ok(())
    }
    /// Detached per-sample scalar (after `observe`); empty when the head has none.
    fn quality(&self, _batch: &BatchView) -> Vec<f64> {
        Vec::new()
    }
    fn row(&self, r: &RowInput) -> RowPlan;
    fn non_target(&self) -> NonTarget {
        NonTarget::Plain
    }
    fn weight(&self, _log_p: f64) -> SampleWeight {
        SampleWeight::ONE
    }
    /// (value, d value / d a) of the extra term for one sample; (0, 0) when the head has none.
    fn extra(&self, _norm: f64, _p_d: f64) -> (f64, f64) {
        (0.0, 0.0)
    }
    /// Running state as named values (checkpoints).
    fn state(&self) -> HeadState {
        HeadState::default()
    }
    fn load_state(&mut self, state: &HeadState) -> Result<()> {
        state.expect_empty(self.name())
    }
    /// Warnings about the hyper-parameters (printed by the command line).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl std::fmt::Debug for dyn Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Head({})", self.name())
    }
}
