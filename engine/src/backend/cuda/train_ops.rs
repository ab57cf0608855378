//! Training-step kernels: optimizer updates, the non-finite checks of a step, square sums for clipping and
//! the uint8 batch conversion. Updates are out of place (new parameter and state tensors from the pool),
//! so tensors shared elsewhere are never written behind their owners' backs.

use super::{driver_err, CudaContext};
use crate::backend::{AdamWStep, Backend, BinaryOp, SgdStep};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{CudaView, PushKernelArg};
use std::sync::Arc;

const NULL: u64 = 0;

fn same_f32(op: &str, ts: &[&Tensor]) -> Result<()> {
    let first = ts[0];
    for t in ts {
        if t.dtype() != DType::F32 || t.shape() != first.shape() {
            return Err(Error::Shape(format!(
                "{op}: every tensor must be f32 of shape {}, found {} {}",
                first.shape(),
                t.shape(),
                t.dtype()
            )));
        }
    }
    Ok(())
}

fn copy_of(ctx: &Arc<CudaContext>, t: &Tensor) -> Result<super::CudaStorage> {
    ctx.storage(t)?.try_clone()
}

/// One SGD step, out of place: `p` and `buf` are replaced by new tensors; returns the bf16 copy of the
/// weights when asked. A restored buffer (host tensor) moves to the device first.
pub fn sgd_step(
    ctx: &Arc<CudaContext>,
    p: &mut Tensor,
    g: &Tensor,
    buf: &mut Option<Tensor>,
    h: &SgdStep,
) -> Result<Option<Tensor>> {
    same_f32("sgd", &[p, g])?;
    let n = p.numel();
    let mut p_new = copy_of(ctx, p)?;
    let first_step = buf.is_none();
    let mut buf_new = match (h.momentum != 0.0, &*buf) {
        (false, _) => None,
        (true, Some(b)) => {
            let b = b.to_device(&p.device())?;
            same_f32("sgd", &[p, &b])?;
            Some(copy_of(ctx, &b)?)
        }
        (true, None) => Some(ctx.alloc_storage(DType::F32, n)?),
    };
    let mut p16 = if h.bf16_copy { Some(ctx.alloc_storage(DType::BF16, n)?) } else { None };
    {
        let f = ctx.kernels.get("optim", "sgd_f32")?;
        let gv = ctx.storage(g)?.bytes();
        let mut pv = p_new.bytes_mut();
        let mut bv = buf_new.as_mut().map(|b| b.bytes_mut());
        let mut hv = p16.as_mut().map(|b| b.bytes_mut());
        let (n64, nest, first) = (n as i64, h.nesterov as i32, first_step as i32);
        let (lr, mom, damp, wd, gs) =
            (h.lr as f32, h.momentum as f32, h.dampening as f32, h.weight_decay as f32, h.grad_scale as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&lr).arg(&mom).arg(&damp).arg(&wd);
        l.arg(&nest).arg(&first).arg(&gs).arg(&mut pv).arg(&gv);
        match &mut bv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        match &mut hv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("sgd_f32"))?;
    }
    let shape = p.shape().clone();
    let wrap = |s| Tensor::from_storage(shape.clone(), Storage::Cuda(s));
    *p = wrap(p_new)?;
    if let Some(b) = buf_new {
        *buf = Some(wrap(b)?);
    }
    p16.map(wrap).transpose()
}

/// One AdamW step, out of place: `p`, `m` and `v` are replaced by new tensors (restored host moments
/// move to the device first); returns the bf16 copy of the weights when asked.
pub fn adamw_step(
    ctx: &Arc<CudaContext>,
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: &AdamWStep,
) -> Result<Option<Tensor>> {
    if h.step == 0 {
        return Err(Error::Invalid("adamw: step numbers start at 1".into()));
    }
    let dev = p.device();
    let (m0, v0) = (m.to_device(&dev)?, v.to_device(&dev)?);
    same_f32("adamw", &[p, g, &m0, &v0])?;
    let n = p.numel();
    let (mut p_new, mut m_new, mut v_new) = (copy_of(ctx, p)?, copy_of(ctx, &m0)?, copy_of(ctx, &v0)?);
    let mut p16 = if h.bf16_copy { Some(ctx.alloc_storage(DType::BF16, n)?) } else { None };
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    {
        let f = ctx.kernels.get("optim", "adamw_f32")?;
        let gv = ctx.storage(g)?.bytes();
        let (mut pv, mut mv, mut vv) = (p_new.bytes_mut(), m_new.bytes_mut(), v_new.bytes_mut());
        let mut hv = p16.as_mut().map(|b| b.bytes_mut());
        let (n64, bc1, bc2) = (n as i64, bc1 as f32, bc2 as f32);
        let (lr, b1, b2, eps, wd, gs) = (
            h.lr as f32,
            h.beta1 as f32,
            h.beta2 as f32,
            h.eps as f32,
            h.weight_decay as f32,
            h.grad_scale as f32,
        );
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&lr).arg(&b1).arg(&b2).arg(&eps).arg(&wd);
        l.arg(&bc1).arg(&bc2).arg(&gs).arg(&mut pv).arg(&gv).arg(&mut mv).arg(&mut vv);
        match &mut hv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("adamw_f32"))?;
    }
    let shape = p.shape().clone();
    let wrap = |s| Tensor::from_storage(shape.clone(), Storage::Cuda(s));
    (*p, *m, *v) = (wrap(p_new)?, wrap(m_new)?, wrap(v_new)?);
    p16.map(wrap).transpose()
}

/// The index of the first tensor holding a NaN or an infinity: one flag per tensor on the device, set by
/// amp.cu's check, read back in one copy.
pub fn first_nonfinite(ctx: &Arc<CudaContext>, ts: &[&Tensor]) -> Result<Option<usize>> {
    if ts.is_empty() {
        return Ok(None);
    }
    let mut flags = ctx.alloc_storage(DType::F32, ts.len())?; // 4 bytes per tensor, read as ints
    {
        let mut fv = flags.bytes_mut();
        ctx.compute.memset_zeros(&mut fv).map_err(driver_err("zeroing the non-finite flags"))?;
    }
    for (k, t) in ts.iter().enumerate() {
        let name = match t.dtype() {
            DType::F32 => "nonfinite_f32",
            DType::BF16 => "nonfinite_bf16",
            DType::F16 => "nonfinite_f16",
            other => return Err(Error::Unsupported(format!("non-finite check of {other} tensors"))),
        };
        let n = t.numel();
        let f = ctx.kernels.get("amp", name)?;
        let tv = ctx.storage(t)?.bytes();
        let mut all = flags.bytes_mut();
        let mut fv = all.slice_mut(4 * k..4 * k + 4);
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&tv).arg(&mut fv);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    let mut host = vec![0u8; 4 * ts.len()];
    let fv = flags.bytes();
    ctx.compute.memcpy_dtoh(&fv, &mut host[..]).map_err(driver_err("reading the non-finite flags"))?;
    ctx.compute.synchronize().map_err(driver_err("reading the non-finite flags"))?;
    Ok(host.chunks_exact(4).position(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0))
}

/// Every tensor times `factor` (affine kernels, replacing each tensor), then one non-finite check.
pub fn scale_and_check(ctx: &Arc<CudaContext>, ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
    for t in ts.iter_mut() {
        **t = ctx.affine(t, factor as f64, 0.0)?;
    }
    let all: Vec<&Tensor> = ts.iter().map(|t| &**t).collect();
    first_nonfinite(ctx, &all)
}

/// Sum of squares accumulated on the device (f32 sums per tensor) and read once.
pub fn sum_of_squares(ctx: &Arc<CudaContext>, ts: &[&Tensor]) -> Result<f64> {
    let mut acc: Option<Tensor> = None;
    for t in ts {
        let sq = ctx.sum_all(&ctx.binary(BinaryOp::Mul, t, t)?)?;
        acc = Some(match acc {
            None => sq,
            Some(a) => ctx.binary(BinaryOp::Add, &a, &sq)?,
        });
    }
    acc.map_or(Ok(0.0), |a| a.scalar_value())
}

/// A batch of uint8 HWC RGB images `[n, h, w, 3]` (host bytes) as a normalized NHWC tensor of `dtype`,
/// images with `flip[i]` mirrored left-right. Synchronous: the copy joins the compute stream both ways
/// (training stages its batches ahead with `prefetch::BatchUploader` instead).
pub fn images_to_nhwc(
    ctx: &Arc<CudaContext>,
    images: &[u8],
    shape: [usize; 4],
    flip: &[bool],
    dtype: DType,
) -> Result<Tensor> {
    let [n, h, w, c] = shape;
    let numel = n * h * w * 3;
    if c != 3 || images.len() != numel || flip.len() != n {
        return Err(Error::Shape(format!(
            "images_to_nhwc: {} bytes and {} flips for {n} images of {h}x{w}x3",
            images.len(),
            flip.len()
        )));
    }
    input_kernel(dtype)?;
    let mut src = ctx.pool.alloc(numel)?;
    let mut flips = ctx.pool.alloc(n)?;
    let flip_bytes: Vec<u8> = flip.iter().map(|&f| f as u8).collect();
    ctx.copy.join(&ctx.compute).map_err(driver_err("ordering an upload"))?;
    {
        let mut sv = src.slice_mut().slice_mut(..numel);
        ctx.copy.memcpy_htod(images, &mut sv).map_err(driver_err("uploading images"))?;
        let mut fv = flips.slice_mut().slice_mut(..n);
        ctx.copy.memcpy_htod(flip_bytes.as_slice(), &mut fv).map_err(driver_err("uploading flips"))?;
    }
    ctx.compute.join(&ctx.copy).map_err(driver_err("ordering an upload"))?;
    let (sv, fv) = (src.slice().slice(..numel), flips.slice().slice(..n));
    let out = u8_to_nhwc(ctx, &sv, Some(&fv), n, h, w, dtype)?;
    Tensor::from_storage([n, h, w, 3], Storage::Cuda(out))
}

/// input.cu's kernel for `dtype`.
pub(super) fn input_kernel(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("u8_to_nhwc_f32"),
        DType::BF16 => Ok("u8_to_nhwc_bf16"),
        DType::F16 => Ok("u8_to_nhwc_f16"),
        other => Err(Error::Unsupported(format!("images as {other}"))),
    }
}

/// Queues input.cu's conversion on the compute stream: `n` u8 HWC images already on the device in `src`
/// become a new normalized NHWC storage of `dtype`; `flips` (one byte per image) mirrors, None does not.
/// The caller orders the compute stream after whatever wrote `src` and `flips`.
pub(super) fn u8_to_nhwc(
    ctx: &Arc<CudaContext>,
    src: &CudaView<'_, u8>,
    flips: Option<&CudaView<'_, u8>>,
    n: usize,
    h: usize,
    w: usize,
    dtype: DType,
) -> Result<super::CudaStorage> {
    let numel = n * h * w * 3;
    let name = input_kernel(dtype)?;
    if src.len() < numel || flips.is_some_and(|f| f.len() < n) {
        return Err(Error::Shape(format!(
            "u8_to_nhwc: device buffers too small for {n} images of {h}x{w}x3"
        )));
    }
    let mut out = ctx.alloc_storage(dtype, numel)?;
    {
        let f = ctx.kernels.get("input", name)?;
        let mut ov = out.bytes_mut();
        let (n32, h32, w32) = (n as i32, h as i32, w as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n32).arg(&h32).arg(&w32).arg(src);
        match flips {
            Some(fv) => l.arg(fv),
            None => l.arg(&NULL),
        };
        l.arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(numel)) }.map_err(driver_err(name))?;
    }
    Ok(out)
}
