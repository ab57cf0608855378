//! The backend interface: the primitive kernels every device implements. Ops (`crate::ops`) compose these
//! and record their backward on the tape, so model code never names a device.
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
pub struct BatchNormSaved {
    /// Per-channel batch mean `[C]`.
    pub mean: Tensor,
    /// Per-channel biased variance `[C]` (the running variance uses the unbiased one).
    pub var: Tensor,
    /// Per-channel 1 / sqrt(var + eps) `[C]`.
    pub invstd: Tensor,
}

fn unsupported<T>(backend: &str, op: &str) -> Result<T> {
    Err(Error::Unsupported(format!("{op} is not implemented on the {backend} backend yet")))
}

pub trait Backend: Send + Sync {
    fn name(&self) -> String;

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor>;

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

    /// Training-mode batch norm over the last dim. `gamma`/`beta` are `None` when affine is off.
    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let _ = (x, gamma, beta, eps);
        unsupported(&self.name(), "batch_norm_forward_train")
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

    /// Returns (dx, dgamma, dbeta) of training-mode batch norm; dgamma/dbeta are per channel.
    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let _ = (dy, x, gamma, saved);
        unsupported(&self.name(), "batch_norm_backward")
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
}

/// The backend that runs tensors on `device`.
pub fn for_device(device: &Device) -> &dyn Backend {
    match device {
        Device::Cpu => &cpu::CpuBackend,
        Device::Cuda(ctx) => ctx.as_ref(),
    }
}
