//! The backend interface: the one door to a device. Everything that computes on a tensor's device goes
//! through `Backend`, whose CPU implementation (`cpu/`) is the reference every other one is tested
//! against: the primitive ops that `crate::ops` composes and records on the tape, and the fused and
//! training primitives (16-bit casts, batch norm with PReLU, optimizer updates, non-finite checks, the
//! margin-softmax classifier, batch staging). Model, heads, optimizers and the trainer never name a
//! device; a new device implements this trait and adds a variant to `tensor::Device` and
//! `tensor::Storage`.
//!
//! Conventions shared by every implementation:
//! - tensors are contiguous; activations NHWC, convolution weights OHWI `[out, kh, kw, in]`;
//! - per-channel ops (batch norm, PReLU, bias) act on the last dimension, so BatchNorm2d on NHWC and
//!   BatchNorm1d on `[N, C]` are the same kernel over a `[rows, C]` view;
//! - f32 everywhere; the CPU backend also runs f64 (gradient checks, parity at 1e-10).
//!
//! A method a backend does not implement yet returns `Error::Unsupported` through the default body.

pub mod cpu;
pub mod cuda;
mod dropout_draw;
pub mod ledger;
mod margin_head;
pub mod meta;
pub mod multi_tensor;
mod optim_step;
mod staging;

pub use dropout_draw::dropout_keep;
pub use margin_head::{MarginHeadCall, MarginHeadOutput};
pub use optim_step::{AdamWParam, AdamWStep, SgdParam, SgdStep, Updated};
pub use staging::{BatchStager, HostPixels, StagedBatch};

use crate::tensor::{DType, Device, Shape, Tensor};
use crate::{Error, Result};

/// Geometry of a 2-D convolution (square kernel, same stride and padding on both axes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dParams {
    pub fn out_size(&self, input: usize) -> usize {
        (input + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// Elementwise binary ops on two tensors of one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Elementwise unary ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Square,
    Recip,
}

/// What training-mode batch norm saves for its backward.
#[derive(Clone)]
pub struct BatchNormSaved {
    /// Per-channel batch mean `[C]`.
    pub mean: Tensor,
    /// Per-channel biased variance `[C]` (the running variance uses the unbiased one).
    pub var: Tensor,
    /// Per-channel 1 / sqrt(var + eps) `[C]`.
    pub invstd: Tensor,
    /// Batch norm followed by PReLU: the batch norm's output, where a backend keeps it for the PReLU
    /// backward (the CPU does; a fused kernel recomputes it from x instead and leaves this `None`).
    pub pre_activation: Option<Tensor>,
}

/// A training batch norm's running statistics, which its forward updates as torch does:
/// r = (1 - momentum)·r + momentum·batch, with the unbiased variance. The tensors are replaced (updated out
/// of place), so copies of them elsewhere keep the old values.
pub struct RunningStats<'a> {
    pub mean: &'a mut Tensor,
    pub var: &'a mut Tensor,
    pub momentum: f64,
}

/// The batch norm on a residual connection's shortcut (a downsampling block's), applied in the same pass
/// as the main branch's.
pub struct ShortcutNorm<'a> {
    pub gamma: Option<&'a Tensor>,
    pub beta: Option<&'a Tensor>,
    pub running: Option<RunningStats<'a>>,
}

/// A batch norm (with the PReLU that follows it, when `alpha`) upstream of another batch norm's dx pass:
/// the gradient at its output is exactly the dx that pass writes, so the pass can gather its sums
/// (`Backend::batch_norm_backward_gathering`).
pub struct UpstreamBn<'a> {
    pub x: &'a Tensor,
    pub gamma: Option<&'a Tensor>,
    pub beta: Option<&'a Tensor>,
    pub alpha: Option<&'a Tensor>,
    pub saved: &'a BatchNormSaved,
}

/// The per-channel sums of a batch-norm backward: dgamma = Σ dz·x̂, dbeta = Σ dz (dz the gradient at the
/// batch norm's output) and, with PReLU, dalpha = Σ dy·z over z ≤ 0.
#[derive(Clone)]
pub struct BnSums {
    pub dgamma: Tensor,
    pub dbeta: Tensor,
    pub dalpha: Option<Tensor>,
}

/// Counters a device keeps about its own work (all zero on the CPU): what the throughput benchmark
/// reports beside its timings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceCounters {
    /// Kernels launched so far.
    pub kernel_launches: u64,
    /// Allocations that reached the driver (not served by the caching allocator).
    pub driver_allocs: u64,
    /// Allocations served from the caching allocator's free lists.
    pub reuses: u64,
    /// Bytes the caching allocator holds.
    pub bytes_held: u64,
    /// Convolution algorithms chosen so far: (algorithm, how many convolution cases chose it).
    pub conv_algorithms: Vec<(String, usize)>,
}

/// The shape of `parts` stacked along the first dim (`Backend::concat_rows`), or an error when they do not
/// share a dtype and trailing shape.
pub(crate) fn stacked_dims(parts: &[Tensor]) -> Result<Vec<usize>> {
    let first = parts.first().ok_or_else(|| Error::Shape("concat_rows of nothing".into()))?;
    let tail = &first.dims()[1..];
    let mut rows = 0;
    for p in parts {
        if p.dims().is_empty() || &p.dims()[1..] != tail || p.dtype() != first.dtype() {
            return Err(Error::Shape(format!(
                "concat_rows: {} {} does not stack on {} {}",
                p.shape(),
                p.dtype(),
                first.shape(),
                first.dtype()
            )));
        }
        rows += p.dims()[0];
    }
    let mut dims = vec![rows];
    dims.extend_from_slice(tail);
    Ok(dims)
}

fn unsupported<T>(backend: &str, op: &str) -> Result<T> {
    Err(Error::Unsupported(format!("{op} is not implemented on the {backend} backend yet")))
}

pub trait Backend: Send + Sync {
    fn name(&self) -> String;

    /// The device for people: "cpu", "cuda:0 (NVIDIA H100, sm_90)".
    fn describe(&self) -> String {
        self.name()
    }

    /// Whether 16-bit floating point is emulated here (f32 values rounded to the 16-bit grid) rather
    /// than stored and computed natively, so that bf16/fp16 only cost time (the CPU).
    fn emulates_half(&self) -> bool {
        false
    }

    /// Waits for all queued work (a no-op where work runs synchronously).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// The device's work counters (launches, allocations, algorithm choices).
    fn counters(&self) -> DeviceCounters {
        DeviceCounters::default()
    }

    /// Starts recording the launches of this device's work (`take_ledger` returns them).
    fn start_ledger(&self) {}

    /// The launches since `start_ledger`, in order: on the meta device with FLOPs and bytes, on a GPU the
    /// kernels it really launched (names only). Empty where nothing is launched (the CPU).
    fn take_ledger(&self) -> Vec<ledger::Launch> {
        Vec::new()
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor>;

    // ---- Primitive ops (each differentiable op of `crate::ops` composes these) ----

    /// out = op(a) @ op(b), where op transposes when the flag is set. a, b rank 2.
    fn matmul(&self, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let _ = (a, b, trans_a, trans_b);
        unsupported(&self.name(), "matmul")
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let _ = (op, a, b);
        unsupported(&self.name(), "binary")
    }

    fn unary(&self, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        let _ = (op, a);
        unsupported(&self.name(), "unary")
    }

    /// alpha * a + beta (scalars).
    fn affine(&self, a: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
        let _ = (a, alpha, beta);
        unsupported(&self.name(), "affine")
    }

    /// Sum over the leading dims: `[rows, C]` -> `[C]` (bias and per-channel gradients).
    fn sum_rows(&self, a: &Tensor) -> Result<Tensor> {
        let _ = a;
        unsupported(&self.name(), "sum_rows")
    }

    /// Sum of every element, rank 0.
    fn sum_all(&self, a: &Tensor) -> Result<Tensor> {
        let _ = a;
        unsupported(&self.name(), "sum_all")
    }

    /// A tensor of `shape` whose every element is the single value of `s` (the backward of a sum),
    /// without reading `s` on the host where that would stall the device.
    fn broadcast_scalar(&self, s: &Tensor, shape: &Shape) -> Result<Tensor> {
        let _ = (s, shape);
        unsupported(&self.name(), "broadcast_scalar")
    }

    /// `t * s` for a one-element tensor `s` (the tape's seed reaching a node that stored its gradients).
    fn scale_by_scalar(&self, t: &Tensor, s: &Tensor) -> Result<Tensor> {
        let _ = (t, s);
        unsupported(&self.name(), "scale_by_scalar")
    }

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        let _ = (x, w, p);
        unsupported(&self.name(), "conv2d_forward")
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        let _ = (dy, w, x_shape, p);
        unsupported(&self.name(), "conv2d_backward_data")
    }

    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        let _ = (dy, x, w_shape, p);
        unsupported(&self.name(), "conv2d_backward_filter")
    }

    /// Training-mode batch norm over the last dim (`gamma`/`beta` are `None` when affine is off); updates
    /// `running` when given. The output has x's dtype.
    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let _ = (x, gamma, beta, eps, running);
        unsupported(&self.name(), "batch_norm_forward_train")
    }

    /// The end of a residual block in one pass: bn(x) + shortcut, or bn(x) + bn_s(shortcut) with the
    /// shortcut's own batch norm `shortcut_norm` (both training-mode, both running statistics updated).
    /// Returns the sum and what each batch norm's backward needs.
    #[allow(clippy::type_complexity)]
    fn batch_norm_add_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
        running: Option<RunningStats<'_>>,
        shortcut: &Tensor,
        shortcut_norm: Option<ShortcutNorm<'_>>,
    ) -> Result<(Tensor, BatchNormSaved, Option<BatchNormSaved>)> {
        let _ = (x, gamma, beta, eps, running, shortcut, shortcut_norm);
        unsupported(&self.name(), "batch_norm_add_forward_train")
    }

    /// Eval-mode batch norm with running statistics.
    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let _ = (x, gamma, beta, running_mean, running_var, eps);
        unsupported(&self.name(), "batch_norm_forward_eval")
    }

    /// Returns (dx, dgamma, dbeta) of training-mode batch norm; dgamma/dbeta are per channel. With
    /// `residual`, dx + residual in the same pass (the gradient x already received from a shortcut).
    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let _ = (dy, x, gamma, saved, residual);
        unsupported(&self.name(), "batch_norm_backward")
    }

    /// `batch_norm_backward`, its dx pass also gathering the sums of the (one or two) batch norms
    /// `upstream` whose output gradient is that dx (the previous residual block's bn3 and shortcut batch
    /// norm, the stem's batch norm + PReLU); `None` for them where a backend does not fuse this, and each
    /// then runs its own backward. The sums are those the upstream backward would compute from the dx as
    /// stored.
    #[allow(clippy::type_complexity)]
    fn batch_norm_backward_gathering(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
        residual: Option<&Tensor>,
        upstream: &[UpstreamBn<'_>],
    ) -> Result<((Tensor, Tensor, Tensor), Option<Vec<BnSums>>)> {
        let _ = upstream;
        Ok((self.batch_norm_backward(dy, x, gamma, saved, residual)?, None))
    }

    /// The dx of a (PReLU-fused, with `alpha`) batch-norm backward whose sums were gathered already
    /// (`batch_norm_backward_gathering`).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_dx_from_sums(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: Option<&Tensor>,
        saved: &BatchNormSaved,
        sums: &BnSums,
    ) -> Result<Tensor> {
        let _ = (dy, x, gamma, beta, alpha, saved, sums);
        unsupported(&self.name(), "batch_norm_dx_from_sums")
    }

    /// `batch_norm_dx_from_sums` of two batch norms whose outputs were summed, so that they share `dy`
    /// (a residual block's bn3 and its shortcut's batch norm): one pass where a backend fuses them.
    fn batch_norm_dx_from_sums_pair(
        &self,
        dy: &Tensor,
        a: (&UpstreamBn<'_>, &BnSums),
        b: (&UpstreamBn<'_>, &BnSums),
    ) -> Result<(Tensor, Tensor)> {
        let dx = |(u, s): (&UpstreamBn<'_>, &BnSums)| {
            self.batch_norm_dx_from_sums(dy, u.x, u.gamma, u.beta, u.alpha, u.saved, s)
        };
        Ok((dx(a)?, dx(b)?))
    }

    /// y = x if x > 0 else alpha[c] * x, per channel on the last dim.
    fn prelu_forward(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        let _ = (x, alpha);
        unsupported(&self.name(), "prelu_forward")
    }

    /// Returns (dx, dalpha).
    fn prelu_backward(&self, dy: &Tensor, x: &Tensor, alpha: &Tensor) -> Result<(Tensor, Tensor)> {
        let _ = (dy, x, alpha);
        unsupported(&self.name(), "prelu_backward")
    }

    /// Inverted dropout: returns (y, mask) where mask holds 0 or 1/(1-p), drawn from `seed`.
    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        let _ = (x, p, seed);
        unsupported(&self.name(), "dropout")
    }

    /// Row-wise L2 normalization of `[rows, D]`: returns (x / ||x||, ||x|| as `[rows]`).
    fn l2_normalize_rows(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        let _ = (x, eps);
        unsupported(&self.name(), "l2_normalize_rows")
    }

    /// Backward of `l2_normalize_rows` given dy for the normalized rows.
    fn l2_normalize_rows_backward(&self, dy: &Tensor, y: &Tensor, norms: &Tensor) -> Result<Tensor> {
        let _ = (dy, y, norms);
        unsupported(&self.name(), "l2_normalize_rows_backward")
    }

    /// y[r, c] = x[r, c] * s[c] over the last dim (per-channel scaling, eval batch norm's backward).
    fn mul_channels(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let _ = (x, s);
        unsupported(&self.name(), "mul_channels")
    }

    /// y[r, c] = x[r, c] + b[c] over the last dim (bias).
    fn add_channels(&self, x: &Tensor, b: &Tensor) -> Result<Tensor> {
        let _ = (x, b);
        unsupported(&self.name(), "add_channels")
    }

    /// y[r, ...] = x[r, ...] * s[r] for x `[rows, ...]`, s `[rows]` (per-sample scaling).
    fn scale_rows(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let _ = (x, s);
        unsupported(&self.name(), "scale_rows")
    }

    /// Backward of `l2_normalize_rows(x, eps)`: `norms` are the raw ||x|| it returned; rows with
    /// ||x|| <= eps were divided by the constant eps, so their gradient is dy / eps.
    fn l2_normalize_rows_backward_eps(
        &self,
        dy: &Tensor,
        y: &Tensor,
        norms: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let _ = eps;
        self.l2_normalize_rows_backward(dy, y, norms)
    }

    /// Rows `r0..r1` of `t` (along the first dim), a copy.
    fn slice_rows(&self, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
        let _ = (t, r0, r1);
        unsupported(&self.name(), "slice_rows")
    }

    /// Tensors of one dtype and trailing shape stacked along the first dim.
    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        let _ = parts;
        unsupported(&self.name(), "concat_rows")
    }

    // ---- Half precision ----

    /// `t` converted to `dtype` (f32 <-> bf16/fp16: round to nearest even).
    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let _ = (t, dtype);
        unsupported(&self.name(), "cast")
    }

    /// A GEMM operand as a `half` (bf16/fp16) GEMM reads it: where 16 bits are emulated, an f32 copy
    /// rounded to the 16-bit grid; where they are native, the tensor cast to `half` itself. Same values.
    fn half_operand(&self, t: &Tensor, half: DType) -> Result<Tensor> {
        let _ = (t, half);
        unsupported(&self.name(), "half_operand")
    }

    /// A result as stored in `half` between ops under autocast: where 16 bits are emulated, rounded to the
    /// 16-bit grid (still f32); where they are native, cast to `half` when it is f32, else as it is.
    fn store_half(&self, t: Tensor, half: DType) -> Result<Tensor> {
        let _ = (t, half);
        unsupported(&self.name(), "store_half")
    }

    /// The f32 view of a tensor an autocast op holds (a native half tensor widened; an emulated one,
    /// already f32, as it is).
    fn widen(&self, t: &Tensor) -> Result<Tensor> {
        let _ = t;
        unsupported(&self.name(), "widen")
    }

    // ---- Fused training primitives ----

    /// Training batch norm followed by PReLU (IResNet's BN-PReLU pairs): y = prelu(bn(x)), with what the
    /// backward needs. The CPU runs the two ops exactly; a GPU runs one kernel and recomputes bn(x) in the
    /// backward instead of storing it.
    fn batch_norm_prelu_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: &Tensor,
        eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let _ = (x, gamma, beta, alpha, eps, running);
        unsupported(&self.name(), "batch_norm_prelu_forward_train")
    }

    /// Returns (dx, dgamma, dbeta, dalpha) of `batch_norm_prelu_forward_train`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_prelu_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let _ = (dy, x, gamma, beta, alpha, saved);
        unsupported(&self.name(), "batch_norm_prelu_backward")
    }

    /// One torch.optim.SGD update of every tensor of `params` (`SgdParam`): each one's 16-bit copy where
    /// asked, and which came out non-finite (`Updated`).
    fn sgd_update(&self, params: &mut [SgdParam<'_>], h: &SgdStep) -> Result<Updated> {
        let _ = (params, h);
        unsupported(&self.name(), "sgd_update")
    }

    /// One torch.optim.AdamW update of every tensor of `params` (`AdamWParam`), as `sgd_update`.
    fn adamw_update(&self, params: &mut [AdamWParam<'_>], h: &AdamWStep) -> Result<Updated> {
        let _ = (params, h);
        unsupported(&self.name(), "adamw_update")
    }

    /// The index of the first nonzero element of an f32 flag tensor of this device (`Updated::nonfinite`),
    /// if any (one host read on a GPU).
    fn first_flagged(&self, flags: &Tensor) -> Result<Option<usize>> {
        let _ = flags;
        unsupported(&self.name(), "first_flagged")
    }

    /// The index of the first tensor holding a NaN or an infinity, if any (one host read on a GPU).
    fn first_nonfinite(&self, ts: &[&Tensor]) -> Result<Option<usize>> {
        let _ = ts;
        unsupported(&self.name(), "first_nonfinite")
    }

    /// Replaces every tensor by itself times `factor` (an f32, as loss scaling keeps its scale) in f32 (a
    /// 16-bit tensor is widened first), then returns the index of the first holding a NaN or an infinity
    /// (the fp16 unscale; gradient clipping).
    fn scale_and_check(&self, ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
        let _ = (ts, factor);
        unsupported(&self.name(), "scale_and_check")
    }

    /// The sum of the squares of every element of every tensor (gradient-norm clipping).
    fn sum_of_squares(&self, ts: &[&Tensor]) -> Result<f64> {
        let _ = ts;
        unsupported(&self.name(), "sum_of_squares")
    }

    /// Decoded u8 HWC RGB images `[n, h, w, 3]` (host bytes) as a normalized NHWC tensor of `dtype` on
    /// this device, (x / 255 - 0.5) / 0.5, images with `flip[i]` mirrored left-right.
    fn images_to_nhwc(
        &self,
        images: &[u8],
        shape: [usize; 4],
        flip: &[bool],
        dtype: DType,
    ) -> Result<Tensor> {
        let _ = (images, shape, flip, dtype);
        unsupported(&self.name(), "images_to_nhwc")
    }

    /// A double-buffered uploader for training batches, where moving a batch to the device can overlap
    /// the previous step; `None` where batches are used where they are made (the CPU).
    fn batch_stager(&self) -> Result<Option<Box<dyn BatchStager>>> {
        Ok(None)
    }

    /// The margin-softmax classifier of a head (spec heads.md §0 and §13): batch-mean loss and, when
    /// asked, the gradients with respect to the embeddings and the class weights. The CPU runs the head's
    /// reference classifier (`heads::run`); a GPU runs chunked kernels that never hold the
    /// `[batch, classes]` logits, with the head's per-row scalars planned on the host by its own code.
    fn margin_head(&self, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
        let _ = call;
        unsupported(&self.name(), "margin_head")
    }
}

/// The backend that runs tensors on `device`.
pub fn for_device(device: &Device) -> &dyn Backend {
    match device {
        Device::Cpu => &cpu::CpuBackend,
        Device::Cuda(ctx) => ctx.as_ref(),
        Device::Meta(ctx) => ctx.as_ref(),
    }
}
