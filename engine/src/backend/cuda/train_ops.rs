//! Training-step kernels outside the Backend trait: optimizer updates, the loss-scale overflow check and
//! the uint8 batch conversion. Updates are out of place (new parameter and state tensors from the
//! pool), so tensors shared elsewhere are never written behind their owners' backs.

use super::{driver_err, CudaContext};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{CudaView, PushKernelArg};
use std::sync::Arc;

const NULL: u64 = 0;

/// Hyper-parameters of torch.optim.SGD.
#[derive(Debug, Clone, Copy)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

/// Hyper-parameters of torch.optim.AdamW.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

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

/// One SGD step: returns (new parameters, new momentum buffer, bf16 copy of the parameters when asked).
/// `buf` is ignored (and may be None) on the first step or without momentum.
pub fn sgd_step(
    ctx: &Arc<CudaContext>,
    cfg: SgdConfig,
    p: &Tensor,
    g: &Tensor,
    buf: Option<&Tensor>,
    first_step: bool,
    grad_scale: f32,
    bf16_copy: bool,
) -> Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    same_f32("sgd", &[p, g])?;
    let n = p.numel();
    let mut p_new = copy_of(ctx, p)?;
    let mut buf_new = if cfg.momentum != 0.0 {
        match (buf, first_step) {
            (Some(b), false) => {
                same_f32("sgd", &[p, b])?;
                Some(copy_of(ctx, b)?)
            }
            (None, false) => {
                return Err(Error::Invalid("sgd: momentum buffer missing after the first step".into()))
            }
            (_, true) => Some(ctx.alloc_storage(DType::F32, n)?),
        }
    } else {
        None
    };
    let mut p16 = if bf16_copy { Some(ctx.alloc_storage(DType::BF16, n)?) } else { None };
    {
        let f = ctx.kernels.get("optim", "sgd_f32")?;
        let gv = ctx.storage(g)?.bytes();
        let mut pv = p_new.bytes_mut();
        let mut bv = buf_new.as_mut().map(|b| b.bytes_mut());
        let mut hv = p16.as_mut().map(|b| b.bytes_mut());
        let (n64, nest, first) = (n as i64, cfg.nesterov as i32, first_step as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&cfg.lr).arg(&cfg.momentum).arg(&cfg.dampening).arg(&cfg.weight_decay);
        l.arg(&nest).arg(&first).arg(&grad_scale).arg(&mut pv).arg(&gv);
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
    Ok((wrap(p_new)?, buf_new.map(wrap).transpose()?, p16.map(wrap).transpose()?))
}

/// One AdamW step at step number `t` (1-based): returns (p, m, v, bf16 copy when asked).
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    ctx: &Arc<CudaContext>,
    cfg: AdamWConfig,
    t: u32,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad_scale: f32,
    bf16_copy: bool,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    same_f32("adamw", &[p, g, m, v])?;
    if t == 0 {
        return Err(Error::Invalid("adamw: step numbers start at 1".into()));
    }
    let n = p.numel();
    let (mut p_new, mut m_new, mut v_new) = (copy_of(ctx, p)?, copy_of(ctx, m)?, copy_of(ctx, v)?);
    let mut p16 = if bf16_copy { Some(ctx.alloc_storage(DType::BF16, n)?) } else { None };
    let bc1 = 1.0 - (cfg.beta1 as f64).powi(t as i32);
    let bc2 = 1.0 - (cfg.beta2 as f64).powi(t as i32);
    {
        let f = ctx.kernels.get("optim", "adamw_f32")?;
        let gv = ctx.storage(g)?.bytes();
        let (mut pv, mut mv, mut vv) = (p_new.bytes_mut(), m_new.bytes_mut(), v_new.bytes_mut());
        let mut hv = p16.as_mut().map(|b| b.bytes_mut());
        let (n64, bc1, bc2) = (n as i64, bc1 as f32, bc2 as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&cfg.lr).arg(&cfg.beta1).arg(&cfg.beta2).arg(&cfg.eps).arg(&cfg.weight_decay);
        l.arg(&bc1).arg(&bc2).arg(&grad_scale).arg(&mut pv).arg(&gv).arg(&mut mv).arg(&mut vv);
        match &mut hv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err("adamw_f32"))?;
    }
    let shape = p.shape().clone();
    let wrap = |s| Tensor::from_storage(shape.clone(), Storage::Cuda(s));
    Ok((wrap(p_new)?, wrap(m_new)?, wrap(v_new)?, p16.map(wrap).transpose()?))
}

/// True when any element of any tensor is NaN or infinite (one device-to-host read of a flag).
pub fn any_nonfinite(ctx: &Arc<CudaContext>, ts: &[&Tensor]) -> Result<bool> {
    let mut flag = ctx.alloc_storage(DType::F32, 1)?; // 4 bytes read as an int by the kernel
    {
        let mut fv = flag.bytes_mut();
        ctx.compute.memset_zeros(&mut fv).map_err(driver_err("zeroing the overflow flag"))?;
    }
    for t in ts {
        let name = match t.dtype() {
            DType::F32 => "nonfinite_f32",
            DType::BF16 => "nonfinite_bf16",
            DType::F16 => "nonfinite_f16",
            other => return Err(Error::Unsupported(format!("overflow check of {other} tensors"))),
        };
        let n = t.numel();
        let f = ctx.kernels.get("amp", name)?;
        let tv = ctx.storage(t)?.bytes();
        let mut fv = flag.bytes_mut();
        let n64 = n as i64;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&tv).arg(&mut fv);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    let mut host = [0u8; 4];
    let fv = flag.bytes();
    ctx.compute.memcpy_dtoh(&fv, &mut host[..]).map_err(driver_err("reading the overflow flag"))?;
    ctx.compute.synchronize().map_err(driver_err("reading the overflow flag"))?;
    Ok(i32::from_le_bytes(host) != 0)
}

/// A batch of uint8 HWC RGB images `[n, h, w, 3]` (host bytes) as a normalized NHWC tensor of `dtype`,
/// images with `flip[i]` mirrored left-right. Synchronous: the copy joins the compute stream both ways
/// (training stages its batches ahead with `prefetch::BatchUploader` instead).
pub fn images_to_nhwc(
    ctx: &Arc<CudaContext>,
    images: &[u8],
    n: usize,
    h: usize,
    w: usize,
    flip: &[bool],
    dtype: DType,
) -> Result<Tensor> {
    let numel = n * h * w * 3;
    if images.len() != numel || flip.len() != n {
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
