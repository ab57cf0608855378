//! The launches of the CUDA backend's multi-kernel methods, as the meta device records them: batch norm
//! (statistics, fold, apply; and its backward), the two-stage column sums, convolutions and GEMMs with
//! their FLOPs, the optimizer updates and the chunked margin head. Each function follows its CUDA
//! counterpart in `backend/cuda` (named in its comment) kernel for kernel.

use super::{MetaContext, SMS};
use crate::backend::cuda::FINISH_APPLY_MAX;
use crate::backend::ledger::{Launch, Math};
use crate::backend::multi_tensor::{plan, CHECK_MAX, OPT_MAX};
use crate::backend::{
    AdamWParam, AdamWStep, Backend, BatchNormSaved, BnSums, Conv2dParams, MarginHeadCall, MarginHeadOutput,
    RunningStats, SgdParam, SgdStep, Updated, UpstreamBn,
};
use crate::heads::kernel_plan::{finish_rows, kernel_params, plan_rows, MergedRows};
use crate::tensor::{DType, Device, Storage, Tensor};
use crate::{Error, Result};

/// Bytes a tensor holds at its stored dtype.
pub fn bytes(t: &Tensor) -> f64 {
    (t.numel() * t.dtype().size_in_bytes()) as f64
}

/// The dtype suffix of a kernel name, as `kname!` in cuda/ops.rs.
pub fn suffix(d: DType) -> Result<&'static str> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        DType::F16 => Ok("f16"),
        other => Err(Error::Unsupported(format!("no CUDA kernel takes {other}"))),
    }
}

/// Blocks of a grid-stride launch over `n` elements (cuda/launch.rs `Kernels::elementwise`).
pub fn grid_blocks(n: usize) -> usize {
    n.div_ceil(256).clamp(1, SMS * 8)
}

/// Chunks of a two-stage column reduction over `[rows, c]` (cuda/launch.rs `Kernels::column_chunks`).
fn chunks(rows: usize, c: usize) -> usize {
    let col_blocks = c.div_ceil(32).max(1);
    let want = (SMS * 8 / col_blocks).max(1);
    let chunks = want.min(rows.div_ceil(64).max(1));
    let per_chunk = rows.div_ceil(chunks).max(1);
    rows.div_ceil(per_chunk).max(1)
}

pub fn channels(x: &Tensor) -> Result<usize> {
    match x.dims().last() {
        Some(&c) if c > 0 => Ok(c),
        _ => Err(Error::Shape(format!("a per-channel op of {}", x.shape()))),
    }
}

/// A per-chunk partial sum reading `input` bytes, then `sum_rows_final_f32` (cuda/ops.rs `sum_rows`,
/// `sum_chunks`).
pub fn column_sum(ctx: &MetaContext, partial: &str, family: &'static str, rows: usize, c: usize, input: f64) {
    let part = 4.0 * (chunks(rows, c) * c) as f64;
    ctx.rec(Launch::memory(partial, family, input + part));
    ctx.rec(Launch::memory("sum_rows_final_f32", family, part + 4.0 * c as f64));
}

/// cuBLAS GEMM of [m, k] x [k, n].
pub fn gemm(m: usize, n: usize, k: usize, dtype: DType) -> Launch {
    let e = dtype.size_in_bytes() as f64;
    let math = if dtype == DType::F32 { Math::F32 } else { Math::Tensor16 };
    Launch::compute("cublas_gemm", "gemm", 2.0 * (m * n * k) as f64, e * (m * k + k * n + m * n) as f64, math)
}

/// NHWC output of a convolution.
pub fn conv_out_shape(x: &[usize], w: &[usize], p: Conv2dParams) -> Result<Vec<usize>> {
    match (x, w) {
        ([n, h, wd, c], [o, kh, kw, ci]) if c == ci && *kh == p.kernel && *kw == p.kernel => {
            Ok(vec![*n, p.out_size(*h), p.out_size(*wd), *o])
        }
        _ => Err(Error::Shape(format!("conv2d of {x:?} by {w:?}"))),
    }
}

/// One cuDNN convolution call (forward, backward data or backward filter) on input `x`, filter `w` and
/// output `y` of the forward: 2 x multiply-adds, every operand read or written once.
pub fn conv(kernel: &str, x: &Tensor, w: &Tensor, y: &Tensor) -> Launch {
    let (o, khw_c) = (w.dims()[0], w.numel() / w.dims()[0].max(1));
    let macs = (y.numel() / o.max(1)) * o * khw_c;
    let math = if y.dtype() == DType::F32 { Math::F32 } else { Math::Tensor16 };
    Launch::compute(kernel, "conv", 2.0 * macs as f64, bytes(x) + bytes(w) + bytes(y), math)
}

/// `bn_apply_<dt>`: y = x·scale + shift per channel, then PReLU, then + a shortcut (itself normalized
/// when `res_norm`) (cuda/batch_norm.rs `bn_apply`).
pub fn bn_apply(
    ctx: &MetaContext,
    x: &Tensor,
    prelu: bool,
    res: Option<(&Tensor, bool)>,
    gather: bool,
) -> Result<Tensor> {
    let c = channels(x)?;
    let mut per_channel = 2 + usize::from(prelu);
    let mut elems = 2.0 * bytes(x);
    if let Some((r, norm)) = res {
        elems += bytes(r);
        per_channel += if norm { 2 } else { 0 };
    }
    let (stem, gathered) = if gather {
        // The chunks' partials (written, then read by the last block) and the f64 mean and M2.
        ("bn_apply_stats", 2.0 * 8.0 * (chunks(x.numel() / c, c) * c) as f64 + 16.0 * c as f64)
    } else {
        ("bn_apply", 0.0)
    };
    let name = format!("{stem}_{}", suffix(x.dtype())?);
    ctx.rec(Launch::memory(name, "batch norm", elems + 4.0 * (per_channel * c) as f64 + gathered));
    if gather {
        ctx.out_gathered(x.shape().clone(), x.dtype(), x.numel() / c, c)
    } else {
        ctx.out(x.shape().clone(), x.dtype())
    }
}

/// Whether `x`'s writer gathered its per-channel statistics as `[rows, c]`.
fn gathered(x: &Tensor, rows: usize, c: usize) -> bool {
    matches!(x.storage(), Storage::Meta(m) if m.gathered == Some((rows, c)))
}

/// `bn_stats_<dt>`: the statistics, their merge, fold and running update in one launch, or
/// `bn_stats_finish` from what x's writer gathered, or with `apply` (a plain batch norm's) and few enough
/// channels `bn_finish_apply_<dt>`, which also writes y (cuda/batch_norm.rs `bn_stats`); returns what
/// the backward keeps, and y when applied.
pub fn bn_stats(
    ctx: &MetaContext,
    x: &Tensor,
    running: bool,
    apply: bool,
) -> Result<(BatchNormSaved, Option<Tensor>)> {
    let c = channels(x)?;
    let rows = x.numel() / c;
    let per_channel = 4.0 * c as f64 * if running { 11.0 } else { 7.0 };
    let mut y = None;
    if gathered(x, rows, c) && apply && c <= FINISH_APPLY_MAX {
        let name = format!("bn_finish_apply_{}", suffix(x.dtype())?);
        ctx.rec(Launch::memory(name, "batch norm", 2.0 * bytes(x) + 16.0 * c as f64 + per_channel));
        y = Some(ctx.out(x.shape().clone(), x.dtype())?);
    } else if gathered(x, rows, c) {
        ctx.rec(Launch::memory("bn_stats_finish", "batch norm", 16.0 * c as f64 + per_channel));
    } else {
        let part = 8.0 * (chunks(rows, c) * c) as f64;
        let name = format!("bn_stats_{}", suffix(x.dtype())?);
        ctx.rec(Launch::memory(name, "batch norm", bytes(x) + 2.0 * part + per_channel));
    }
    let v = || ctx.out([c], DType::F32);
    Ok((BatchNormSaved { mean: v()?, var: v()?, invstd: v()?, pre_activation: None }, y))
}

/// The running statistics replaced by the updated ones (out of place, as the CUDA kernel writes them).
pub fn replace_running(ctx: &MetaContext, running: Option<RunningStats<'_>>) -> Result<()> {
    if let Some(r) = running {
        *r.mean = ctx.out(r.mean.shape().clone(), DType::F32)?;
        *r.var = ctx.out(r.var.shape().clone(), DType::F32)?;
    }
    Ok(())
}

/// The backward of training batch norm (with PReLU when `prelu`, adding a shortcut's gradient when
/// `residual`): (dx, dgamma, dbeta, dalpha) (cuda/batch_norm.rs `batch_norm_backward`).
pub fn batch_norm_backward(
    ctx: &MetaContext,
    dy: &Tensor,
    x: &Tensor,
    prelu: bool,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let (dg, db) = bwd_reduce(ctx, dy, x, prelu)?;
    let dx = bwd_dx(ctx, x, prelu, residual)?;
    let c = channels(x)?;
    Ok((dx, dg, db, ctx.out([c], DType::F32)?))
}

/// `bn_bwd_reduce_<dt>` (cuda/batch_norm.rs `bwd_reduce`): (dgamma, dbeta).
fn bwd_reduce(ctx: &MetaContext, dy: &Tensor, x: &Tensor, prelu: bool) -> Result<(Tensor, Tensor)> {
    let c = channels(x)?;
    let rows = x.numel() / c;
    let part = 12.0 * (chunks(rows, c) * c) as f64;
    let per_channel = 4.0 * c as f64 * if prelu { 8.0 } else { 5.0 };
    let name = format!("bn_bwd_reduce_{}", suffix(x.dtype())?);
    ctx.rec(Launch::memory(name, "batch norm", bytes(dy) + bytes(x) + 2.0 * part + per_channel));
    Ok((ctx.out([c], DType::F32)?, ctx.out([c], DType::F32)?))
}

/// `bn_bwd_dx_<dt>` (cuda/batch_norm.rs `bwd_dx`).
pub fn bwd_dx(ctx: &MetaContext, x: &Tensor, prelu: bool, residual: Option<&Tensor>) -> Result<Tensor> {
    let c = channels(x)?;
    let per_channel = 4.0 * c as f64 * if prelu { 8.0 } else { 5.0 };
    let res = residual.map_or(0.0, bytes);
    let name = format!("bn_bwd_dx_{}", suffix(x.dtype())?);
    ctx.rec(Launch::memory(name, "batch norm", 3.0 * bytes(x) + res + per_channel));
    ctx.out(x.shape().clone(), x.dtype())
}

/// `bn_bwd_dx_pair_<dt>` (cuda/batch_norm.rs `bwd_dx_pair`): one read of `dy`, each part's input read
/// and its dx written.
pub fn bwd_dx_pair(ctx: &MetaContext, dy: &Tensor, parts: [&UpstreamBn<'_>; 2]) -> Result<(Tensor, Tensor)> {
    let c = channels(dy)?;
    let mut moved = bytes(dy);
    for u in parts {
        moved += 2.0 * bytes(u.x) + 4.0 * c as f64 * if u.alpha.is_some() { 8.0 } else { 5.0 };
    }
    ctx.rec(Launch::memory(format!("bn_bwd_dx_pair_{}", suffix(dy.dtype())?), "batch norm", moved));
    Ok((ctx.out(dy.shape().clone(), dy.dtype())?, ctx.out(dy.shape().clone(), dy.dtype())?))
}

/// cuda/batch_norm.rs `batch_norm_backward_gathering`: the reduce, then `bn_bwd_dx_reduce_<dt>`, which
/// also reads each upstream input and writes its sums.
#[allow(clippy::type_complexity)]
pub fn batch_norm_backward_gathering(
    ctx: &MetaContext,
    dy: &Tensor,
    x: &Tensor,
    residual: Option<&Tensor>,
    upstream: &[UpstreamBn<'_>],
) -> Result<((Tensor, Tensor, Tensor), Vec<BnSums>)> {
    let (dg, db) = bwd_reduce(ctx, dy, x, false)?;
    let c = channels(x)?;
    let rows = x.numel() / c;
    let part = 12.0 * (chunks(rows, c) * c) as f64;
    let mut moved = 3.0 * bytes(x) + residual.map_or(0.0, bytes) + 4.0 * 5.0 * c as f64;
    for u in upstream {
        moved += bytes(u.x) + 2.0 * part + 4.0 * c as f64 * if u.alpha.is_some() { 8.0 } else { 5.0 };
    }
    let name = format!("bn_bwd_dx_reduce_{}", suffix(x.dtype())?);
    ctx.rec(Launch::memory(name, "batch norm", moved));
    let v = || ctx.out([c], DType::F32);
    let sums = upstream
        .iter()
        .map(|u| Ok(BnSums { dgamma: v()?, dbeta: v()?, dalpha: u.alpha.map(|_| v()).transpose()? }))
        .collect::<Result<_>>()?;
    Ok(((ctx.out(x.shape().clone(), x.dtype())?, dg, db), sums))
}

/// One launch per table of cuda/multi_tensor.rs over tensors of `sizes` elements, each moving `bytes[i]`.
fn multi_launches(
    ctx: &MetaContext,
    kernel: &str,
    family: &'static str,
    max: usize,
    sizes: &[usize],
    bytes: &[f64],
) {
    for l in plan(sizes, max) {
        ctx.rec(Launch::memory(kernel, family, l.range.map(|i| bytes[i]).sum()));
    }
}

/// The 16-bit copy an optimizer entry writes, where asked.
fn half_copy(ctx: &MetaContext, p: &Tensor, half: Option<DType>) -> Result<Option<Tensor>> {
    half.map(|d| ctx.out(p.shape().clone(), d)).transpose()
}

/// cuda/multi_tensor.rs `sgd_update`: `sgd_multi` per table of tensors, out of place.
pub fn sgd_update(ctx: &MetaContext, params: &mut [SgdParam<'_>], h: &SgdStep) -> Result<Updated> {
    ctx.rec(Launch::memory("memset", "checks", 4.0 * params.len() as f64));
    let sizes: Vec<usize> = params.iter().map(|q| q.p.numel()).collect();
    let mut moved = Vec::with_capacity(params.len());
    let mut copies = Vec::with_capacity(params.len());
    for q in params.iter_mut() {
        let b = bytes(q.p);
        let mut m = 2.0 * b + bytes(q.g);
        if h.momentum != 0.0 {
            m += if q.buf.is_some() { 2.0 * b } else { b };
            *q.buf = Some(ctx.out(q.p.shape().clone(), DType::F32)?);
        }
        let copy = half_copy(ctx, q.p, q.half_copy)?;
        m += copy.as_ref().map_or(0.0, bytes);
        copies.push(copy);
        moved.push(m);
        *q.p = ctx.out(q.p.shape().clone(), DType::F32)?;
    }
    multi_launches(ctx, "sgd_multi", "optimizer", OPT_MAX, &sizes, &moved);
    Ok(Updated { half_copies: copies, nonfinite: ctx.out([params.len()], DType::F32)? })
}

/// cuda/multi_tensor.rs `adamw_update`: `adamw_multi` per table of tensors, out of place.
pub fn adamw_update(ctx: &MetaContext, params: &mut [AdamWParam<'_>], _h: &AdamWStep) -> Result<Updated> {
    ctx.rec(Launch::memory("memset", "checks", 4.0 * params.len() as f64));
    let sizes: Vec<usize> = params.iter().map(|q| q.p.numel()).collect();
    let mut moved = Vec::with_capacity(params.len());
    let mut copies = Vec::with_capacity(params.len());
    for q in params.iter_mut() {
        let copy = half_copy(ctx, q.p, q.half_copy)?;
        moved.push(6.0 * bytes(q.p) + bytes(q.g) + copy.as_ref().map_or(0.0, bytes));
        copies.push(copy);
        let shape = q.p.shape().clone();
        (*q.p, *q.m, *q.v) = (
            ctx.out(shape.clone(), DType::F32)?,
            ctx.out(shape.clone(), DType::F32)?,
            ctx.out(shape, DType::F32)?,
        );
    }
    multi_launches(ctx, "adamw_multi", "optimizer", OPT_MAX, &sizes, &moved);
    Ok(Updated { half_copies: copies, nonfinite: ctx.out([params.len()], DType::F32)? })
}

/// cuda/multi_tensor.rs's checks: `kernel` per table over `ts`, reading each once and writing
/// `write_factor` times its element count in f32.
pub fn checks(ctx: &MetaContext, kernel: &str, ts: &[&Tensor], write_f32: bool) {
    let sizes: Vec<usize> = ts.iter().map(|t| t.numel()).collect();
    let moved: Vec<f64> =
        ts.iter().map(|t| bytes(t) + if write_f32 { 4.0 * t.numel() as f64 } else { 0.0 }).collect();
    multi_launches(ctx, kernel, "checks", CHECK_MAX, &sizes, &moved);
}

/// cuda/head: the chunked classifier, fixed parameters or row plans, as `head::margin_head` runs it.
pub fn margin_head(ctx: &MetaContext, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
    let (x, w) = (call.x, call.w);
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Err(Error::DType(format!("head on CUDA runs in f32, got {} and {}", x.dtype(), w.dtype())));
    }
    let (b, d) = x.shape().matrix("head loss (embeddings)")?;
    let (classes, _) = w.shape().matrix("head loss (weight)")?;
    let dev = Device::Meta(ctx.arc());
    let _labels = Tensor::from_vec(call.labels.to_vec(), [b])?.to_device(&dev)?;
    let (xh, a) = ctx.l2_normalize_rows(x, 0.0)?;
    // Under autocast the classifier's rows are normalized straight into the GEMM's type (no f32 copy).
    let n = w.numel();
    let (wh, xg, wg) = match call.autocast {
        None | Some(DType::F32) => {
            let (wh, _) = ctx.l2_normalize_rows(w, 0.0)?;
            (Some(wh.clone()), xh.clone(), wh)
        }
        Some(h) => {
            let name = format!("l2norm_fwd_f32_{}", suffix(h)?);
            ctx.rec(Launch::memory(
                name,
                "normalize",
                bytes(w) + (n * h.size_in_bytes()) as f64 + 4.0 * classes as f64,
            ));
            let wg = ctx.out(w.shape().clone(), h)?;
            ctx.out([classes], DType::F32)?;
            (None, ctx.cast(&xh, h)?, wg)
        }
    };
    let raw = wh.is_none();
    let nb = (call.max_block_elems / b.max(1)).clamp(1, classes.max(1));
    let blocks: Vec<(usize, usize)> =
        (0..classes).step_by(nb).map(|j0| (j0, (j0 + nb).min(classes))).collect();
    let target_cosines = || -> Result<Tensor> {
        let cy = ctx.zeros(&[b].into(), DType::F32)?;
        let norms = if raw { b } else { 0 };
        ctx.rec(Launch::memory("margin_gather_cy_f32", "head", 4.0 * (2 * b * d + 3 * b + norms) as f64));
        Ok(cy)
    };
    let fixed = kernel_params(call.head, b);
    let plans = match fixed {
        Some(_) => {
            target_cosines()?;
            ctx.rec(Launch::memory("margin_target", "head", 16.0 * b as f64));
            None
        }
        None => {
            let raw = target_cosines()?.to_vec::<f32>()?;
            let plans = plan_rows(call.head, &raw, &a.to_vec::<f32>()?)?;
            for _ in 0..3 {
                ctx.upload(&Tensor::from_vec(vec![0f32; b], [b])?)?;
            }
            Some(plans)
        }
    };
    // The running log-sum-exps, of the logits and of the margin-free non-targets (head/launch.rs
    // lse_init, forward_block).
    for _ in 0..2 {
        ctx.rec(Launch::memory("fill_f32", "head", 4.0 * b as f64));
        ctx.zeros(&[b].into(), DType::F32)?;
    }
    let row_block = |ctx: &MetaContext, kernel: String, cos_elems: usize, cos: DType| {
        let rows = 4.0 * (6 * b) as f64;
        ctx.rec(Launch::memory(kernel, "head", (cos_elems * cos.size_in_bytes()) as f64 + rows));
    };
    let gd = suffix(xg.dtype())?;
    for &(j0, j1) in &blocks {
        if blocks.len() > 1 {
            ctx.slice_rows(&wg, j0, j1)?;
        }
        ctx.matmul(&xg, &ctx.out([j1 - j0, d], wg.dtype())?, false, true)?;
        row_block(ctx, format!("margin_fwd_block_{gd}"), b * (j1 - j0), xg.dtype());
    }
    let loss = match &plans {
        None => {
            ctx.rec(Launch::memory("margin_finish", "head", 4.0 * (6 * b) as f64));
            let l = ctx.sum_all(&ctx.out([b], DType::F32)?)?;
            ctx.affine(&l, 1.0 / b as f64, 0.0)?
        }
        Some(p) => {
            let (zeros, ones, minus_inf) = (vec![0f32; b], vec![1f32; b], vec![f32::NEG_INFINITY; b]);
            for _ in 0..4 {
                ctx.download(&ctx.out([b], DType::F32)?)?;
            }
            let merged = MergedRows { max: &zeros, sum: &ones, max_d: &minus_inf, sum_d: &zeros };
            let res = finish_rows(call.head, p, &merged)?;
            let _ = res;
            ctx.upload(&Tensor::scalar(0f32))?
        }
    };
    if !call.grad {
        return Ok(MarginHeadOutput { loss, grads: None });
    }
    if plans.is_some() {
        ctx.upload(&Tensor::from_vec(vec![0f32; b], [b])?)?;
        ctx.upload(&Tensor::from_vec(vec![0f32; b], [b])?)?;
    }
    for (parts, &(j0, j1)) in blocks.iter().enumerate() {
        let wb = if blocks.len() > 1 { ctx.slice_rows(&wg, j0, j1)? } else { wg.clone() };
        if blocks.len() > 1 {
            ctx.matmul(&xg, &wb, false, true)?;
        }
        row_block(ctx, format!("margin_bwd_block_{gd}"), 2 * b * (j1 - j0), xg.dtype());
        let g = ctx.out([b, j1 - j0], xg.dtype())?;
        ctx.widen(&ctx.matmul(&g, &wb, false, false)?)?;
        if parts > 0 {
            ctx.binary(
                crate::backend::BinaryOp::Add,
                &ctx.out([b, d], DType::F32)?,
                &ctx.out([b, d], DType::F32)?,
            )?;
        }
        let dw = ctx.matmul(&g, &xg, true, false)?;
        if !raw {
            ctx.widen(&dw)?;
        }
    }
    let dw_type = if raw { wg.dtype() } else { DType::F32 };
    if blocks.len() > 1 {
        let dw: Vec<Tensor> =
            blocks.iter().map(|&(j0, j1)| ctx.out([j1 - j0, d], dw_type)).collect::<Result<_>>()?;
        ctx.concat_rows(&dw)?;
    }
    let dx = ctx.l2_normalize_rows_backward_eps(&ctx.out([b, d], DType::F32)?, &xh, &a, 0.0)?;
    let dw = match &wh {
        Some(wh) => ctx.l2_normalize_rows_backward_eps(
            &ctx.out([classes, d], DType::F32)?,
            wh,
            &ctx.out([classes], DType::F32)?,
            0.0,
        )?,
        None => {
            let name = format!("l2norm_bwd_raw_{}", suffix(dw_type)?);
            let moved = (n * dw_type.size_in_bytes()) as f64 + 2.0 * bytes(w) + 4.0 * classes as f64;
            ctx.rec(Launch::memory(name, "normalize", moved));
            ctx.out([classes, d], DType::F32)?
        }
    };
    Ok(MarginHeadOutput { loss, grads: Some((dx, dw)) })
}
