//! Launchers of the multi-tensor kernels: the optimizer updates (kernels/cuda/optim.cu) and the step's
//! checks (kernels/cuda/amp.cu) over every parameter or gradient in a few launches, each taking its
//! table of tensors by value (`backend::multi_tensor::plan` decides the tables). CPU twins:
//! `backend::cpu::optim` and `backend::cpu::amp`.

use super::{driver_err, CudaContext, CudaStorage};
use crate::backend::multi_tensor::{plan, CHECK_MAX, MT_CHUNK, OPT_MAX};
use crate::backend::{AdamWParam, AdamWStep, SgdParam, SgdStep, Updated};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

const BLOCK: u32 = 256;

/// `OptimTable` of optim.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct OptimTable {
    n: [i64; OPT_MAX],
    p: [u64; OPT_MAX],
    p_out: [u64; OPT_MAX],
    g: [u64; OPT_MAX],
    s1: [u64; OPT_MAX],
    s1_out: [u64; OPT_MAX],
    s2: [u64; OPT_MAX],
    s2_out: [u64; OPT_MAX],
    half_out: [u64; OPT_MAX],
    first_block: [i32; OPT_MAX + 1],
    lr: [f32; OPT_MAX],
    wd: [f32; OPT_MAX],
    bc1: [f32; OPT_MAX],
    bc2: [f32; OPT_MAX],
    g_type: [u8; OPT_MAX],
    half_type: [u8; OPT_MAX],
    count: i32,
    base: i32,
}

/// `CheckTable` of amp.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct CheckTable {
    n: [i64; CHECK_MAX],
    x: [u64; CHECK_MAX],
    out: [u64; CHECK_MAX],
    first_block: [i32; CHECK_MAX + 1],
    dtype: [u8; CHECK_MAX],
    count: i32,
    base: i32,
}

// SAFETY: plain old data laid out as the C structs the kernels declare.
unsafe impl DeviceRepr for OptimTable {}
unsafe impl DeviceRepr for CheckTable {}

// Every CUDA version takes 4 KB of kernel arguments; the tables leave room for the scalars beside them.
const _: () = assert!(std::mem::size_of::<OptimTable>() + 32 <= 4096);
const _: () = assert!(std::mem::size_of::<CheckTable>() + 32 <= 4096);

fn zeroed<T: Copy>() -> T {
    // SAFETY: only instantiated with the tables above, whose fields are integers and floats.
    unsafe { std::mem::zeroed() }
}

/// The element-type tag of common.cuh (DT_F32, DT_BF16, DT_F16).
fn tag(d: DType, what: &str) -> Result<u8> {
    match d {
        DType::F32 => Ok(0),
        DType::BF16 => Ok(1),
        DType::F16 => Ok(2),
        other => {
            Err(Error::Unsupported(format!("{what} on CUDA takes f32, bf16 or f16 tensors, not {other}")))
        }
    }
}

fn config(blocks: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn ptr(ctx: &CudaContext, s: &CudaStorage) -> u64 {
    s.buf.slice().device_ptr(&ctx.compute).0
}

/// A state tensor on this device as f32 of `like`'s shape (restored state arrives on the host).
fn state_on_device(t: &Tensor, like: &Tensor, what: &str) -> Result<Tensor> {
    let t = t.to_device(&like.device())?;
    if t.dtype() != DType::F32 || t.shape() != like.shape() {
        return Err(Error::Shape(format!(
            "{what} is {} {}, its parameter is {} f32",
            t.shape(),
            t.dtype(),
            like.shape()
        )));
    }
    Ok(t)
}

/// One parameter's part of an optimizer table: its inputs, and the outputs the launch writes.
struct Entry {
    n: usize,
    g: Tensor,
    p: Tensor,
    s1: Option<Tensor>,
    s2: Option<Tensor>,
    p_out: CudaStorage,
    s1_out: Option<CudaStorage>,
    s2_out: Option<CudaStorage>,
    half_out: Option<CudaStorage>,
    lr: f32,
    wd: f32,
    bc: (f32, f32),
}

impl Entry {
    fn new(ctx: &Arc<CudaContext>, p: &Tensor, g: &Tensor, half: Option<DType>, who: &str) -> Result<Entry> {
        if p.dtype() != DType::F32
            || g.shape() != p.shape()
            || !matches!(g.dtype(), DType::F32 | DType::BF16 | DType::F16)
        {
            return Err(Error::Shape(format!(
                "{who}: parameter {} {} with gradient {} {} (CUDA updates f32 weights from f32 or 16-bit gradients)",
                p.shape(),
                p.dtype(),
                g.shape(),
                g.dtype()
            )));
        }
        ctx.storage(p)?;
        ctx.storage(g)?;
        let n = p.numel();
        let half_out = match half {
            None => None,
            Some(d @ (DType::BF16 | DType::F16)) => Some(ctx.alloc_storage(d, n)?),
            Some(d) => return Err(Error::Unsupported(format!("{who}: a {d} copy of the weights"))),
        };
        Ok(Entry {
            n,
            g: g.clone(),
            p: p.clone(),
            s1: None,
            s2: None,
            p_out: ctx.alloc_storage(DType::F32, n)?,
            s1_out: None,
            s2_out: None,
            half_out,
            lr: 0.0,
            wd: 0.0,
            bc: (1.0, 1.0),
        })
    }
}

/// The tables (and launch shapes) covering `entries`, for `kernel`.
fn optim_tables(
    ctx: &CudaContext,
    kernel: &str,
    entries: &[Entry],
) -> Result<Vec<(OptimTable, LaunchConfig)>> {
    let sizes: Vec<usize> = entries.iter().map(|e| e.n).collect();
    let mut out = Vec::new();
    for l in plan(&sizes, OPT_MAX) {
        let mut t: OptimTable = zeroed();
        for (k, e) in entries[l.range.clone()].iter().enumerate() {
            let opt = |s: &Option<Tensor>| -> Result<u64> {
                s.as_ref().map_or(Ok(0), |s| Ok(ptr(ctx, ctx.storage(s)?)))
            };
            t.n[k] = e.n as i64;
            t.p[k] = ptr(ctx, ctx.storage(&e.p)?);
            t.g[k] = ptr(ctx, ctx.storage(&e.g)?);
            t.g_type[k] = tag(e.g.dtype(), kernel)?;
            t.s1[k] = opt(&e.s1)?;
            t.s2[k] = opt(&e.s2)?;
            t.p_out[k] = ptr(ctx, &e.p_out);
            t.s1_out[k] = e.s1_out.as_ref().map_or(0, |s| ptr(ctx, s));
            t.s2_out[k] = e.s2_out.as_ref().map_or(0, |s| ptr(ctx, s));
            t.half_out[k] = e.half_out.as_ref().map_or(0, |s| ptr(ctx, s));
            t.half_type[k] = e.half_out.as_ref().map_or(Ok(0), |s| tag(s.dtype(), kernel))?;
            (t.lr[k], t.wd[k], t.bc1[k], t.bc2[k]) = (e.lr, e.wd, e.bc.0, e.bc.1);
        }
        t.first_block[..l.first_block.len()].copy_from_slice(&l.first_block);
        t.count = l.range.len() as i32;
        t.base = l.range.start as i32;
        out.push((t, config(l.blocks())));
    }
    Ok(out)
}

fn wrap(shape: &crate::tensor::Shape, s: CudaStorage) -> Result<Tensor> {
    Tensor::from_storage(shape.clone(), Storage::Cuda(s))
}

/// SGD over every tensor of `params`, out of place (new weights and buffers from the pool).
pub fn sgd_update(ctx: &Arc<CudaContext>, params: &mut [SgdParam<'_>], h: &SgdStep) -> Result<Updated> {
    let mut entries = Vec::with_capacity(params.len());
    for q in params.iter() {
        let mut e = Entry::new(ctx, q.p, q.g, q.half_copy, "sgd")?;
        if h.momentum != 0.0 {
            e.s1 = q.buf.as_ref().map(|b| state_on_device(b, q.p, "sgd momentum buffer")).transpose()?;
            e.s1_out = Some(ctx.alloc_storage(DType::F32, e.n)?);
        }
        (e.lr, e.wd) = (q.lr as f32, q.weight_decay as f32);
        entries.push(e);
    }
    let (mom, damp, nest, gs) =
        (h.momentum as f32, h.dampening as f32, h.nesterov as i32, h.grad_scale as f32);
    let mut fl = flags(ctx, entries.len())?;
    for (t, cfg) in optim_tables(ctx, "sgd_multi", &entries)? {
        let f = ctx.kernels.get("optim", "sgd_multi")?;
        let mut fv = fl.bytes_mut();
        let mut b = ctx.compute.launch_builder(&f);
        b.arg(&t).arg(&mom).arg(&damp).arg(&nest).arg(&gs).arg(&mut fv);
        unsafe { b.launch(cfg) }.map_err(driver_err("sgd_multi"))?;
    }
    let mut copies = Vec::with_capacity(entries.len());
    for (q, e) in params.iter_mut().zip(entries) {
        let shape = q.p.shape().clone();
        *q.p = wrap(&shape, e.p_out)?;
        if let Some(b) = e.s1_out {
            *q.buf = Some(wrap(&shape, b)?);
        }
        copies.push(e.half_out.map(|s| wrap(&shape, s)).transpose()?);
    }
    Ok(Updated { half_copies: copies, nonfinite: wrap(&[params.len()].into(), fl)? })
}

/// AdamW over every tensor of `params`, out of place.
pub fn adamw_update(ctx: &Arc<CudaContext>, params: &mut [AdamWParam<'_>], h: &AdamWStep) -> Result<Updated> {
    let mut entries = Vec::with_capacity(params.len());
    for q in params.iter() {
        if q.step == 0 {
            return Err(Error::Invalid("adamw: step numbers start at 1".into()));
        }
        let mut e = Entry::new(ctx, q.p, q.g, q.half_copy, "adamw")?;
        e.s1 = Some(state_on_device(q.m, q.p, "adamw exp_avg")?);
        e.s2 = Some(state_on_device(q.v, q.p, "adamw exp_avg_sq")?);
        e.s1_out = Some(ctx.alloc_storage(DType::F32, e.n)?);
        e.s2_out = Some(ctx.alloc_storage(DType::F32, e.n)?);
        (e.lr, e.wd) = (q.lr as f32, q.weight_decay as f32);
        let t = q.step as i32;
        e.bc = ((1.0 - h.beta1.powi(t)) as f32, (1.0 - h.beta2.powi(t)) as f32);
        entries.push(e);
    }
    let (b1, b2, eps, gs) = (h.beta1 as f32, h.beta2 as f32, h.eps as f32, h.grad_scale as f32);
    let mut fl = flags(ctx, entries.len())?;
    for (t, cfg) in optim_tables(ctx, "adamw_multi", &entries)? {
        let f = ctx.kernels.get("optim", "adamw_multi")?;
        let mut fv = fl.bytes_mut();
        let mut b = ctx.compute.launch_builder(&f);
        b.arg(&t).arg(&b1).arg(&b2).arg(&eps).arg(&gs).arg(&mut fv);
        unsafe { b.launch(cfg) }.map_err(driver_err("adamw_multi"))?;
    }
    let mut copies = Vec::with_capacity(entries.len());
    for (q, e) in params.iter_mut().zip(entries) {
        let shape = q.p.shape().clone();
        *q.p = wrap(&shape, e.p_out)?;
        *q.m = wrap(&shape, e.s1_out.expect("allocated above"))?;
        *q.v = wrap(&shape, e.s2_out.expect("allocated above"))?;
        copies.push(e.half_out.map(|s| wrap(&shape, s)).transpose()?);
    }
    Ok(Updated { half_copies: copies, nonfinite: wrap(&[params.len()].into(), fl)? })
}

/// The first nonzero flag of an f32 flag tensor.
pub fn first_flagged(ctx: &Arc<CudaContext>, flags: &Tensor) -> Result<Option<usize>> {
    if flags.dtype() != DType::F32 {
        return Err(Error::DType(format!("flags must be f32, got {}", flags.dtype())));
    }
    if flags.numel() == 0 {
        return Ok(None);
    }
    first_flag(ctx, ctx.storage(flags)?, flags.numel())
}

/// The tables (and launch shapes) covering `ts` for `kernel`; `outs` (scale_multi) are the f32 results,
/// one per tensor. A table's base is its first entry's index, or with `per_block_base` its first block's
/// number over all launches (the partials of sumsq_multi).
fn check_tables(
    ctx: &CudaContext,
    kernel: &str,
    ts: &[&Tensor],
    outs: &[CudaStorage],
    per_block_base: bool,
) -> Result<Vec<(CheckTable, LaunchConfig)>> {
    let sizes: Vec<usize> = ts.iter().map(|t| t.numel()).collect();
    let mut blocks_before = 0;
    let mut out = Vec::new();
    for l in plan(&sizes, CHECK_MAX) {
        let mut t: CheckTable = zeroed();
        for (k, i) in l.range.clone().enumerate() {
            t.n[k] = sizes[i] as i64;
            t.x[k] = ptr(ctx, ctx.storage(ts[i])?);
            t.dtype[k] = tag(ts[i].dtype(), kernel)?;
            t.out[k] = outs.get(i).map_or(0, |s| ptr(ctx, s));
        }
        t.first_block[..l.first_block.len()].copy_from_slice(&l.first_block);
        t.count = l.range.len() as i32;
        t.base = if per_block_base { blocks_before } else { l.range.start } as i32;
        out.push((t, config(l.blocks())));
        blocks_before += l.blocks();
    }
    Ok(out)
}

/// Zeroed per-tensor flags for `count` tensors (f32; the kernels store 1.0f or an int 1, read as nonzero
/// bits).
fn flags(ctx: &Arc<CudaContext>, count: usize) -> Result<CudaStorage> {
    let mut f = ctx.alloc_storage(DType::F32, count.max(1))?; // 4 bytes per tensor, read as ints
    ctx.kernels.note("memset");
    ctx.compute.memset_zeros(&mut f.bytes_mut()).map_err(driver_err("zeroing the non-finite flags"))?;
    Ok(f)
}

/// The index of the first flag set (one copy to the host).
fn first_flag(ctx: &Arc<CudaContext>, flags: &CudaStorage, count: usize) -> Result<Option<usize>> {
    let mut host = vec![0u8; 4 * count];
    let fv = flags.bytes();
    ctx.kernels.note("memcpy_dtoh");
    ctx.compute
        .memcpy_dtoh(&fv.slice(..4 * count), &mut host[..])
        .map_err(driver_err("reading the non-finite flags"))?;
    ctx.compute.synchronize().map_err(driver_err("reading the non-finite flags"))?;
    Ok(host.chunks_exact(4).position(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 0))
}

/// The index of the first tensor holding a NaN or an infinity.
pub fn first_nonfinite(ctx: &Arc<CudaContext>, ts: &[&Tensor]) -> Result<Option<usize>> {
    if ts.is_empty() {
        return Ok(None);
    }
    let mut f = flags(ctx, ts.len())?;
    for (t, cfg) in check_tables(ctx, "nonfinite_multi", ts, &[], false)? {
        let k = ctx.kernels.get("amp", "nonfinite_multi")?;
        let mut fv = f.bytes_mut();
        let mut b = ctx.compute.launch_builder(&k);
        b.arg(&t).arg(&mut fv);
        unsafe { b.launch(cfg) }.map_err(driver_err("nonfinite_multi"))?;
    }
    first_flag(ctx, &f, ts.len())
}

/// Every tensor replaced by itself times `factor` in f32, then the first non-finite one.
pub fn scale_and_check(ctx: &Arc<CudaContext>, ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
    if ts.is_empty() {
        return Ok(None);
    }
    let outs = ts.iter().map(|t| ctx.alloc_storage(DType::F32, t.numel())).collect::<Result<Vec<_>>>()?;
    let mut f = flags(ctx, ts.len())?;
    let all: Vec<&Tensor> = ts.iter().map(|t| &**t).collect();
    for (t, cfg) in check_tables(ctx, "scale_multi", &all, &outs, false)? {
        let k = ctx.kernels.get("amp", "scale_multi")?;
        let mut fv = f.bytes_mut();
        let mut b = ctx.compute.launch_builder(&k);
        b.arg(&t).arg(&factor).arg(&mut fv);
        unsafe { b.launch(cfg) }.map_err(driver_err("scale_multi"))?;
    }
    for (t, o) in ts.iter_mut().zip(outs) {
        let shape = t.shape().clone();
        **t = wrap(&shape, o)?;
    }
    first_flag(ctx, &f, ts.len())
}

/// The sum of squares of every element: f64 partials per block, summed on the host in block order.
pub fn sum_of_squares(ctx: &Arc<CudaContext>, ts: &[&Tensor]) -> Result<f64> {
    let blocks: usize = ts.iter().map(|t| t.numel().div_ceil(MT_CHUNK)).sum();
    if blocks == 0 {
        return Ok(0.0);
    }
    let mut partials = ctx.alloc_storage(DType::F64, blocks)?;
    for (t, cfg) in check_tables(ctx, "sumsq_multi", ts, &[], true)? {
        let k = ctx.kernels.get("amp", "sumsq_multi")?;
        let mut pv = partials.bytes_mut();
        let mut b = ctx.compute.launch_builder(&k);
        b.arg(&t).arg(&mut pv);
        unsafe { b.launch(cfg) }.map_err(driver_err("sumsq_multi"))?;
    }
    let mut host = vec![0u8; 8 * blocks];
    ctx.kernels.note("memcpy_dtoh");
    ctx.compute
        .memcpy_dtoh(&partials.bytes(), &mut host[..])
        .map_err(driver_err("reading the square sums"))?;
    ctx.compute.synchronize().map_err(driver_err("reading the square sums"))?;
    Ok(host.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).sum())
}
