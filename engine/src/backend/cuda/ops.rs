//! Launches of the NVRTC kernels behind the Backend methods. Each function checks shapes and dtypes,
//! allocates its outputs from the pool and queues its kernels on the compute stream; none synchronizes.

use super::launch::Kernels;
use super::{driver_err, CudaContext, CudaStorage};
use crate::backend::{BinaryOp, UnaryOp};
use crate::tensor::{DType, Shape, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::PushKernelArg;
use std::sync::Arc;

/// A null device pointer for optional kernel arguments.
pub(super) const NULL: u64 = 0;

pub(super) fn wrap(shape: impl Into<Shape>, s: CudaStorage) -> Result<Tensor> {
    Tensor::from_storage(shape, Storage::Cuda(s))
}

pub(super) fn need_f32(t: &Tensor, op: &str, what: &str) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::DType(format!("{op} on CUDA: {what} must be f32, found {}", t.dtype())));
    }
    Ok(())
}

pub(super) fn last_dim(t: &Tensor, op: &str) -> Result<(usize, usize)> {
    let c = *t.dims().last().ok_or_else(|| Error::Shape(format!("{op} of a scalar")))?;
    if c == 0 {
        return Err(Error::Shape(format!("{op}: last dimension of {} is 0", t.shape())));
    }
    Ok((t.numel() / c, c))
}

pub(super) fn per_channel(t: &Tensor, c: usize, op: &str, what: &str) -> Result<()> {
    need_f32(t, op, what)?;
    if t.numel() != c {
        return Err(Error::Shape(format!("{op}: {what} has shape {} but there are {c} channels", t.shape())));
    }
    Ok(())
}

pub fn binary(ctx: &Arc<CudaContext>, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!("binary op on {} and {}", a.shape(), b.shape())));
    }
    if op == BinaryOp::Add && matches!(a.dtype(), DType::BF16 | DType::F16) {
        return residual_add(ctx, a, b);
    }
    need_f32(a, "binary", "a")?;
    need_f32(b, "binary", "b")?;
    let code: i32 = match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    };
    let n = a.numel();
    let mut out = ctx.alloc_storage(DType::F32, n)?;
    let f = ctx.kernels.get("elementwise", "binary_f32")?;
    {
        let (av, bv) = (ctx.storage(a)?.bytes(), ctx.storage(b)?.bytes());
        let mut ov = out.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&code).arg(&n64).arg(&av).arg(&bv).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("binary_f32"))?;
    }
    wrap(a.shape().clone(), out)
}

pub fn unary(ctx: &Arc<CudaContext>, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
    need_f32(a, "unary", "a")?;
    let code: i32 = match op {
        UnaryOp::Neg => 0,
        UnaryOp::Exp => 1,
        UnaryOp::Log => 2,
        UnaryOp::Sqrt => 3,
        UnaryOp::Square => 4,
        UnaryOp::Recip => 5,
    };
    let n = a.numel();
    let mut out = ctx.alloc_storage(DType::F32, n)?;
    let f = ctx.kernels.get("elementwise", "unary_f32")?;
    {
        let av = ctx.storage(a)?.bytes();
        let mut ov = out.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&code).arg(&n64).arg(&av).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("unary_f32"))?;
    }
    wrap(a.shape().clone(), out)
}

pub fn affine(ctx: &Arc<CudaContext>, a: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
    need_f32(a, "affine", "a")?;
    let n = a.numel();
    let mut out = ctx.alloc_storage(DType::F32, n)?;
    let f = ctx.kernels.get("elementwise", "affine_f32")?;
    {
        let av = ctx.storage(a)?.bytes();
        let mut ov = out.bytes_mut();
        let (n64, al, be) = (n as i64, alpha as f32, beta as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&al).arg(&be).arg(&av).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("affine_f32"))?;
    }
    wrap(a.shape().clone(), out)
}

/// Residual add in the activation dtype (f32, bf16 or f16), summed in f32 and rounded once.
fn residual_add(ctx: &Arc<CudaContext>, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(Error::Shape(format!(
            "residual add of {} {} and {} {}",
            a.shape(),
            a.dtype(),
            b.shape(),
            b.dtype()
        )));
    }
    let name = kname!("residual_add", a.dtype(), "residual_add");
    let n = a.numel();
    let mut out = ctx.alloc_storage(a.dtype(), n)?;
    let f = ctx.kernels.get("elementwise", name)?;
    {
        let (av, bv) = (ctx.storage(a)?.bytes(), ctx.storage(b)?.bytes());
        let mut ov = out.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&av).arg(&bv).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    wrap(a.shape().clone(), out)
}

/// Converts between f32 and bf16/f16 on the device.
pub fn cast(ctx: &Arc<CudaContext>, a: &Tensor, to: DType) -> Result<Tensor> {
    if a.dtype() == to {
        return Ok(a.clone());
    }
    let name = match (a.dtype(), to) {
        (DType::F32, DType::BF16) => "cast_f32_bf16",
        (DType::F32, DType::F16) => "cast_f32_f16",
        (DType::BF16, DType::F32) => "cast_bf16_f32",
        (DType::F16, DType::F32) => "cast_f16_f32",
        (from, to) => return Err(Error::Unsupported(format!("CUDA cast from {from} to {to}"))),
    };
    let n = a.numel();
    let mut out = ctx.alloc_storage(to, n)?;
    let f = ctx.kernels.get("elementwise", name)?;
    {
        let av = ctx.storage(a)?.bytes();
        let mut ov = out.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&av).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    wrap(a.shape().clone(), out)
}

/// Second stage of every column reduction: out[c] = sum over chunks of part[chunk, c].
fn sum_chunks(ctx: &Arc<CudaContext>, part: &CudaStorage, chunks: usize, c: usize) -> Result<CudaStorage> {
    let mut out = ctx.alloc_storage(DType::F32, c)?;
    let f = ctx.kernels.get("reduce", "sum_rows_final_f32")?;
    {
        let pv = part.bytes();
        let mut ov = out.bytes_mut();
        let (nc, c32) = (chunks as i32, c as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&nc).arg(&c32).arg(&pv).arg(&mut ov);
        unsafe { l.launch(Kernels::per_channel(c)) }.map_err(driver_err("sum_rows_final_f32"))?;
    }
    Ok(out)
}

/// Sum over rows of `[rows, C]` (any leading shape); f32 result whatever the input dtype.
pub fn sum_rows(ctx: &Arc<CudaContext>, a: &Tensor) -> Result<Tensor> {
    let (rows, c) = last_dim(a, "sum_rows")?;
    let name = kname!("sum_rows_partial", a.dtype(), "sum_rows");
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    let mut part = ctx.alloc_storage(DType::F32, chunks * c)?;
    let f = ctx.kernels.get("reduce", name)?;
    {
        let av = ctx.storage(a)?.bytes();
        let mut pv = part.bytes_mut();
        let (r64, c32, rpc64) = (rows as i64, c as i32, rpc as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r64).arg(&c32).arg(&rpc64).arg(&av).arg(&mut pv);
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    let out = sum_chunks(ctx, &part, chunks, c)?;
    wrap([c], out)
}

pub fn sum_all(ctx: &Arc<CudaContext>, a: &Tensor) -> Result<Tensor> {
    need_f32(a, "sum_all", "a")?;
    let n = a.numel();
    let cfg = ctx.kernels.elementwise(n);
    let nparts = cfg.grid_dim.0 as usize;
    let mut part = ctx.alloc_storage(DType::F64, nparts)?;
    let mut out = ctx.alloc_storage(DType::F32, 1)?;
    let f1 = ctx.kernels.get("reduce", "sum_all_partial_f32")?;
    let f2 = ctx.kernels.get("reduce", "sum_all_final_f32")?;
    {
        let av = ctx.storage(a)?.bytes();
        let mut pv = part.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f1);
        l.arg(&n64).arg(&av).arg(&mut pv);
        unsafe { l.launch(cfg) }.map_err(driver_err("sum_all_partial_f32"))?;
    }
    {
        let pv = part.bytes();
        let mut ov = out.bytes_mut();
        let np = nparts as i32;
        let mut l = ctx.compute.launch_builder(&f2);
        l.arg(&np).arg(&pv).arg(&mut ov);
        unsafe { l.launch(Kernels::per_row(1, 32)) }.map_err(driver_err("sum_all_final_f32"))?;
    }
    wrap(Shape(vec![]), out)
}

pub fn prelu_forward(ctx: &Arc<CudaContext>, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    let (_, c) = last_dim(x, "prelu")?;
    per_channel(alpha, c, "prelu", "alpha")?;
    let name = kname!("prelu_fwd", x.dtype(), "prelu");
    let n = x.numel();
    let mut out = ctx.alloc_storage(x.dtype(), n)?;
    let f = ctx.kernels.get("prelu", name)?;
    {
        let (xv, av) = (ctx.storage(x)?.bytes(), ctx.storage(alpha)?.bytes());
        let mut ov = out.bytes_mut();
        let (n64, c32) = (n as i64, c as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&c32).arg(&xv).arg(&av).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    wrap(x.shape().clone(), out)
}

pub fn prelu_backward(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    alpha: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (rows, c) = last_dim(x, "prelu_backward")?;
    per_channel(alpha, c, "prelu_backward", "alpha")?;
    if dy.shape() != x.shape() || dy.dtype() != x.dtype() {
        return Err(Error::Shape(format!("prelu_backward: dy {} vs x {}", dy.shape(), x.shape())));
    }
    let n = x.numel();
    let dx_name = kname!("prelu_bwd_dx", x.dtype(), "prelu_backward");
    let da_name = kname!("prelu_dalpha_partial", x.dtype(), "prelu_backward");
    let mut dx = ctx.alloc_storage(x.dtype(), n)?;
    let (n64, c32) = (n as i64, c as i32);
    {
        let f = ctx.kernels.get("prelu", dx_name)?;
        let (dyv, xv, av) = (ctx.storage(dy)?.bytes(), ctx.storage(x)?.bytes(), ctx.storage(alpha)?.bytes());
        let mut ov = dx.bytes_mut();
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&c32).arg(&dyv).arg(&xv).arg(&av).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(dx_name))?;
    }
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    let mut part = ctx.alloc_storage(DType::F32, chunks * c)?;
    {
        let f = ctx.kernels.get("prelu", da_name)?;
        let (dyv, xv) = (ctx.storage(dy)?.bytes(), ctx.storage(x)?.bytes());
        let mut pv = part.bytes_mut();
        let (r64, rpc64) = (rows as i64, rpc as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r64).arg(&c32).arg(&rpc64).arg(&dyv).arg(&xv).arg(&mut pv);
        unsafe { l.launch(cfg) }.map_err(driver_err(da_name))?;
    }
    let dalpha = sum_chunks(ctx, &part, chunks, c)?;
    Ok((wrap(x.shape().clone(), dx)?, wrap([c], dalpha)?))
}

/// Inverted dropout; the mask is f32 (0 or 1/(1-p)) whatever the input dtype.
pub fn dropout(ctx: &Arc<CudaContext>, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid(format!("dropout rate {p} is outside [0, 1)")));
    }
    let name = kname!("dropout", x.dtype(), "dropout");
    let n = x.numel();
    let mut y = ctx.alloc_storage(x.dtype(), n)?;
    let mut mask = ctx.alloc_storage(DType::F32, n)?;
    {
        let f = ctx.kernels.get("dropout", name)?;
        let xv = ctx.storage(x)?.bytes();
        let (mut yv, mut mv) = (y.bytes_mut(), mask.bytes_mut());
        let (n64, p32) = (n as i64, p as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&p32).arg(&seed).arg(&xv).arg(&mut yv).arg(&mut mv);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    Ok((wrap(x.shape().clone(), y)?, wrap(x.shape().clone(), mask)?))
}

fn row_threads(d: usize) -> u32 {
    (d.div_ceil(32) * 32).clamp(32, 256) as u32
}

pub fn l2_normalize_rows(ctx: &Arc<CudaContext>, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    l2_normalize_rows_to(ctx, x, eps, x.dtype())
}

/// Row normalization writing `out_dtype` (f32 input may go straight to bf16/f16 for a GEMM).
pub fn l2_normalize_rows_to(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    eps: f64,
    out_dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let (rows, d) = last_dim(x, "l2_normalize_rows")?;
    let name = match (x.dtype(), out_dtype) {
        (DType::F32, DType::F32) => "l2norm_fwd_f32",
        (DType::F32, DType::BF16) => "l2norm_fwd_f32_bf16",
        (DType::F32, DType::F16) => "l2norm_fwd_f32_f16",
        (DType::BF16, DType::BF16) => "l2norm_fwd_bf16",
        (a, b) => return Err(Error::Unsupported(format!("l2_normalize_rows on CUDA from {a} to {b}"))),
    };
    let mut y = ctx.alloc_storage(out_dtype, x.numel())?;
    let mut norms = ctx.alloc_storage(DType::F32, rows)?;
    {
        let f = ctx.kernels.get("l2norm", name)?;
        let xv = ctx.storage(x)?.bytes();
        let (mut yv, mut nv) = (y.bytes_mut(), norms.bytes_mut());
        let (r32, d32, eps32) = (rows as i32, d as i32, eps as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r32).arg(&d32).arg(&eps32).arg(&xv).arg(&mut yv).arg(&mut nv);
        unsafe { l.launch(Kernels::per_row(rows, row_threads(d))) }.map_err(driver_err(name))?;
    }
    let mut norm_shape = x.dims().to_vec();
    norm_shape.pop();
    Ok((wrap(x.shape().clone(), y)?, wrap(Shape(norm_shape), norms)?))
}

/// The eps of the forward is not passed by the Backend trait; norms at or below this floor are
/// treated as clamped (torch's F.normalize default, as `ops::normalize`).
const L2_EPS: f32 = crate::ops::NORMALIZE_EPS as f32;

pub fn l2_normalize_rows_backward(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    y: &Tensor,
    norms: &Tensor,
) -> Result<Tensor> {
    l2_normalize_rows_backward_eps(ctx, dy, y, norms, L2_EPS as f64)
}

/// Backward of `l2_normalize_rows(x, eps)` with the forward's eps (rows with ||x|| <= eps get dy / eps).
pub fn l2_normalize_rows_backward_eps(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    y: &Tensor,
    norms: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    need_f32(dy, "l2_normalize_rows_backward", "dy")?;
    l2norm_bwd(ctx, "l2norm_bwd_f32", dy, y, norms, eps)
}

/// `l2_normalize_rows_backward_eps` from the raw rows `x` (f32) and the forward's norms, with `dy` in
/// f32, bf16 or f16 (`l2norm_bwd_raw`: y recomputed as the forward computed it, dy widened in the kernel).
pub fn l2_normalize_rows_backward_raw(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    norms: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let name = match dy.dtype() {
        DType::F32 => "l2norm_bwd_raw_f32",
        DType::BF16 => "l2norm_bwd_raw_bf16",
        DType::F16 => "l2norm_bwd_raw_f16",
        other => return Err(Error::Unsupported(format!("l2_normalize_rows_backward on CUDA from {other}"))),
    };
    l2norm_bwd(ctx, name, dy, x, norms, eps)
}

/// One launch of an l2norm backward kernel `name`: (rows, D, eps, dy, rows (y or x), norms, dx f32).
fn l2norm_bwd(
    ctx: &Arc<CudaContext>,
    name: &'static str,
    dy: &Tensor,
    rows_in: &Tensor,
    norms: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (rows, d) = last_dim(rows_in, "l2_normalize_rows_backward")?;
    need_f32(rows_in, "l2_normalize_rows_backward", "rows")?;
    need_f32(norms, "l2_normalize_rows_backward", "norms")?;
    if dy.shape() != rows_in.shape() || norms.numel() != rows {
        return Err(Error::Shape(format!(
            "l2_normalize_rows_backward: dy {}, rows {}, norms {}",
            dy.shape(),
            rows_in.shape(),
            norms.shape()
        )));
    }
    let mut dx = ctx.alloc_storage(DType::F32, rows_in.numel())?;
    {
        let f = ctx.kernels.get("l2norm", name)?;
        let (dyv, yv, nv) =
            (ctx.storage(dy)?.bytes(), ctx.storage(rows_in)?.bytes(), ctx.storage(norms)?.bytes());
        let mut ov = dx.bytes_mut();
        let (r32, d32, eps32) = (rows as i32, d as i32, eps as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r32).arg(&d32).arg(&eps32).arg(&dyv).arg(&yv).arg(&nv).arg(&mut ov);
        unsafe { l.launch(Kernels::per_row(rows, row_threads(d))) }.map_err(driver_err(name))?;
    }
    wrap(rows_in.shape().clone(), dx)
}

/// x `[..., C]` combined with v `[C]` per channel: `mul` false adds (bias), true multiplies.
pub fn per_channel_op(ctx: &Arc<CudaContext>, x: &Tensor, v: &Tensor, mul: bool) -> Result<Tensor> {
    let op_name = if mul { "mul_channels" } else { "add_channels" };
    let (_, c) = last_dim(x, op_name)?;
    need_f32(x, op_name, "x")?;
    per_channel(v, c, op_name, if mul { "scale" } else { "bias" })?;
    let n = x.numel();
    let mut out = ctx.alloc_storage(DType::F32, n)?;
    {
        let f = ctx.kernels.get("elementwise", "per_channel_f32")?;
        let (xv, vv) = (ctx.storage(x)?.bytes(), ctx.storage(v)?.bytes());
        let mut ov = out.bytes_mut();
        let (code, n64, c32) = (mul as i32, n as i64, c as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&code).arg(&n64).arg(&c32).arg(&xv).arg(&vv).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("per_channel_f32"))?;
    }
    wrap(x.shape().clone(), out)
}

/// x `[rows, ...]` times s `[rows]`, row by row.
pub fn scale_rows(ctx: &Arc<CudaContext>, x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let rows = *x.dims().first().ok_or_else(|| Error::Shape("scale_rows of a scalar".into()))?;
    need_f32(x, "scale_rows", "x")?;
    need_f32(s, "scale_rows", "scale")?;
    if s.dims() != [rows] {
        return Err(Error::Shape(format!("scale_rows: scale must have shape [{rows}], got {}", s.shape())));
    }
    let n = x.numel();
    let mut out = ctx.alloc_storage(DType::F32, n)?;
    if n == 0 {
        return wrap(x.shape().clone(), out);
    }
    {
        let f = ctx.kernels.get("elementwise", "scale_rows_f32")?;
        let (xv, sv) = (ctx.storage(x)?.bytes(), ctx.storage(s)?.bytes());
        let mut ov = out.bytes_mut();
        let (n64, cols) = (n as i64, (n / rows) as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&cols).arg(&xv).arg(&sv).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("scale_rows_f32"))?;
    }
    wrap(x.shape().clone(), out)
}

/// Rows r0..r1 of a `[rows, ...]` tensor as a new tensor (a device-to-device copy).
pub fn slice_rows(ctx: &Arc<CudaContext>, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
    let rows = *t.dims().first().ok_or_else(|| Error::Shape("slice_rows of a scalar".into()))?;
    if r0 > r1 || r1 > rows {
        return Err(Error::Shape(format!("slice_rows {r0}..{r1} of {}", t.shape())));
    }
    let per_row = t.numel().checked_div(rows).unwrap_or(0);
    let esz = t.dtype().size_in_bytes();
    let mut out = ctx.alloc_storage(t.dtype(), (r1 - r0) * per_row)?;
    if r1 > r0 {
        let src = ctx.storage(t)?.bytes();
        let src = src.slice(r0 * per_row * esz..r1 * per_row * esz);
        let mut dst = out.bytes_mut();
        ctx.kernels.note("memcpy_dtod");
        ctx.compute.memcpy_dtod(&src, &mut dst).map_err(driver_err("row slice copy"))?;
    }
    let mut dims = t.dims().to_vec();
    dims[0] = r1 - r0;
    wrap(Shape(dims), out)
}

/// Tensors of one dtype and trailing shape stacked along the first dim (device-to-device copies).
pub fn concat_rows(ctx: &Arc<CudaContext>, parts: &[Tensor]) -> Result<Tensor> {
    let dims = crate::backend::stacked_dims(parts)?;
    let first = &parts[0];
    let total: usize = parts.iter().map(Tensor::numel).sum();
    let esz = first.dtype().size_in_bytes();
    let mut out = ctx.alloc_storage(first.dtype(), total)?;
    let mut at = 0;
    for p in parts {
        let nb = p.numel() * esz;
        if nb == 0 {
            continue;
        }
        let src = ctx.storage(p)?.bytes();
        let mut all = out.bytes_mut();
        let mut dst = all.slice_mut(at..at + nb);
        ctx.kernels.note("memcpy_dtod");
        ctx.compute.memcpy_dtod(&src, &mut dst).map_err(driver_err("row concat copy"))?;
        at += nb;
    }
    wrap(Shape(dims), out)
}
