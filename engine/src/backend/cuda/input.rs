//! The uint8 batch conversion (kernels/cuda/input.cu): decoded images to a normalized NHWC tensor.

use super::{driver_err, CudaContext};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{CudaView, PushKernelArg};
use std::sync::Arc;

const NULL: u64 = 0;

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
        ctx.kernels.note("memcpy_htod");
        ctx.copy.memcpy_htod(images, &mut sv).map_err(driver_err("uploading images"))?;
        ctx.kernels.note("memcpy_htod");
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
