//! One call of the margin-softmax classifier on a backend (`Backend::margin_head`).

use crate::heads::Head;
use crate::tensor::{DType, Tensor};

/// The inputs of one classifier step.
pub struct MarginHeadCall<'a> {
    /// Embeddings `[B, D]` (f32, or f64 on the CPU).
    pub x: &'a Tensor,
    /// Class weights `[C, D]`, same dtype and device.
    pub w: &'a Tensor,
    /// One class per embedding, in 0..C.
    pub labels: &'a [i64],
    /// The head: its maps, weights and running state (which moves once per training call).
    pub head: &'a mut dyn Head,
    /// Whether to compute the gradients.
    pub grad: bool,
    /// Under autocast, the 16-bit type the cosine GEMM reads its operands in (the CPU rounds the
    /// embeddings and weights to it; a GPU runs its cosine GEMMs in it); `None` in full precision.
    pub autocast: Option<DType>,
    /// Upper bound on the elements of one `[B, classes]` block of cosines a chunked implementation
    /// holds at once (`MarginHeadCall::DEFAULT_BLOCK_ELEMS` in training; checks force several blocks).
    pub max_block_elems: usize,
}

impl MarginHeadCall<'_> {
    /// 2^26 elements: 256 MiB of f32 cosines per block, as much again for their gradient.
    pub const DEFAULT_BLOCK_ELEMS: usize = 1 << 26;
}

/// Batch-mean loss (rank 0, on the embeddings' device) and, when asked, (dL/dx, dL/dW).
pub struct MarginHeadOutput {
    pub loss: Tensor,
    pub grads: Option<(Tensor, Tensor)>,
}
