//! The head on a CUDA device: the chunked classifier of kernels/cuda/margin_head.cu (cuBLAS cosines per
//! block of classes, a running log-sum-exp per row, the backward recomputing or reusing each block).
//!
//! The kernel takes one fixed `HeadParams` per step, so it runs heads whose every row uses one logit map
//! chosen from c_y alone and that need nothing else from the batch (no norms, no non-target modulation,
//! no sample weight, no extra term, no running state): softmax, cosface, arcface (exact, easy margin,
//! STE), combined, sphereface. Which heads qualify is not a list of names: `kernel_params` reads the
//! head's own `row()` on a grid of cosines and accepts the encoding only when it reproduces every map.
//! The other heads run their CPU reference on copies of the embeddings and weights (`host_fallback`).
//!
//! None of this has run on a GPU yet (written on a machine without one); the opt-in GPU test
//! `gpu_head_matches_the_cpu_reference` compares it with the CPU classifier.

use super::classifier::{run, RunOptions};
use super::maps::{NonTarget, TargetMap};
use super::{Head, Needs, RowInput, SampleWeight};
use crate::backend::cuda::head::{launch, HeadParams as KernelParams, F_EASY, F_FALLBACK, F_STE};
use crate::backend::cuda::{ops as cuda_ops, CudaContext};
use crate::backend::Backend;
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};
use std::f64::consts::PI;
use std::sync::Arc;

/// Denominator floor of both L2 normalizations (as the CPU classifier's `NORM_FLOOR`).
const NORM_FLOOR: f64 = 1e-12;

/// Largest cosine block (elements of `[B, nb]`): 2^26 f32 = 256 MiB for the block and as much for its G.
const MAX_BLOCK_ELEMS: usize = 1 << 26;

/// The kernel's choice of target map at cosine `c` for the encoding `hp` (mirrors `margin_target`).
fn encoded_map(hp: &KernelParams, c: f64) -> TargetMap {
    let (m1, m2, m3) = (hp.m1 as f64, hp.m2 as f64, hp.m3 as f64);
    if hp.flags & F_EASY != 0 && c <= 0.0 {
        TargetMap::Shift { m: 0.0 }
    } else if hp.flags & F_STE != 0 {
        TargetMap::Straight { m: m2 }
    } else if hp.flags & F_FALLBACK != 0 && m1 * c.acos() + m2 >= PI {
        TargetMap::Fallback { m: m2 }
    } else {
        TargetMap::Angular { m1, m2, m3 }
    }
}

/// Whether the CPU map `cpu` and the kernel's map `gpu` give the same logit function (f32 parameters).
fn same_map(cpu: &TargetMap, gpu: &TargetMap) -> bool {
    let eq = |a: f64, b: f64| (a as f32) == (b as f32);
    match (*cpu, *gpu) {
        // s·(c - m) is the angular map with m1 = 1, m2 = 0, m3 = m.
        (TargetMap::Shift { m }, TargetMap::Angular { m1, m2, m3 }) => eq(m1, 1.0) && eq(m2, 0.0) && eq(m, m3),
        (TargetMap::Shift { m }, TargetMap::Shift { m: g }) => eq(m, g),
        (TargetMap::Angular { m1, m2, m3 }, TargetMap::Angular { m1: a, m2: b, m3: c }) => {
            eq(m1, a) && eq(m2, b) && eq(m3, c)
        }
        (TargetMap::Fallback { m }, TargetMap::Fallback { m: g }) => eq(m, g),
        (TargetMap::Straight { m }, TargetMap::Straight { m: g }) => eq(m, g),
        _ => false,
    }
}

/// The fixed kernel parameters that reproduce `head` for a batch of `batch` rows, or `None` when the head
/// needs more than margin_head.cu's fixed-parameter path gives (it then runs on the host).
pub fn kernel_params(head: &dyn Head, batch: usize) -> Option<KernelParams> {
    if head.needs() != Needs::default() || !matches!(head.non_target(), NonTarget::Plain) {
        return None;
    }
    if [-20.0, -1.0, -0.1, 0.0].iter().any(|&lp| head.weight(lp) != SampleWeight::ONE) {
        return None;
    }
    let (s, eps) = (head.scale(), head.clamp_eps());
    let row = |c: f64| head.row(&RowInput { c_y: c, norm: 1.0, quality: 0.0 });
    let mut hp = KernelParams { eps: eps as f32, ..KernelParams::plain(s as f32, batch) };
    match row(0.5).target {
        TargetMap::Shift { m } => hp.m3 = m as f32,
        TargetMap::Angular { m1, m2, m3 } => {
            (hp.m1, hp.m2, hp.m3) = (m1 as f32, m2 as f32, m3 as f32);
            if m3 == 0.0 && matches!(row(-1.0 + eps).target, TargetMap::Fallback { .. }) {
                hp.flags |= F_FALLBACK;
            }
        }
        TargetMap::Straight { m } => {
            hp.m2 = m as f32;
            hp.flags |= F_STE;
        }
        _ => return None,
    }
    if matches!(row(-0.5).target, TargetMap::Shift { m } if m == 0.0) && !matches!(row(0.5).target, TargetMap::Shift { .. }) {
        hp.flags |= F_EASY;
    }
    // Accept only when the encoding picks the head's own map everywhere in [-1+eps, 1-eps].
    let n = 2000;
    let ok = (0..=n).all(|k| {
        let c = (-1.0 + eps) + (2.0 - 2.0 * eps) * k as f64 / n as f64;
        let plan = row(c);
        plan.margin_da == 0.0 && same_map(&plan.target, &encoded_map(&hp, c))
    });
    ok.then_some(hp)
}

fn cuda_context(t: &Tensor) -> Result<Arc<CudaContext>> {
    match t.device() {
        Device::Cuda(ctx) => Ok(ctx),
        Device::Cpu => Err(Error::Device("head on CUDA: tensor is on the CPU".into())),
    }
}

/// Class blocks `[j0, j1)` so that each `[batch, nb]` cosine block stays under `max_elems`.
pub fn class_blocks(batch: usize, classes: usize, max_elems: usize) -> Vec<(usize, usize)> {
    let nb = (max_elems / batch.max(1)).clamp(1, classes.max(1));
    (0..classes).step_by(nb).map(|j0| (j0, (j0 + nb).min(classes))).collect()
}

/// Loss (rank 0) and, when asked, (dL/dx, dL/dW) for f32 device tensors, through margin_head.cu.
pub fn step_on_device(
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    hp: &KernelParams,
    grad: bool,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    step_on_device_blocked(x, w, labels, hp, grad, MAX_BLOCK_ELEMS)
}

/// `step_on_device` with cosine blocks of at most `max_block_elems` (checks force several blocks).
pub fn step_on_device_blocked(
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    hp: &KernelParams,
    grad: bool,
    max_block_elems: usize,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let ctx = cuda_context(x)?;
    let be: &dyn Backend = ctx.as_ref();
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Err(Error::DType(format!("head on CUDA runs in f32, got {} and {}", x.dtype(), w.dtype())));
    }
    let (b, _) = x.shape().matrix("head loss (embeddings)")?;
    let (classes, _) = w.shape().matrix("head loss (weight)")?;
    let dev = Device::Cuda(ctx.clone());
    let lab = Tensor::from_vec(labels.to_vec(), [b])?.to_device(&dev)?;
    let (xh, a) = be.l2_normalize_rows(x, NORM_FLOOR)?;
    let (wh, wn) = be.l2_normalize_rows(w, NORM_FLOOR)?;
    let cy = launch::gather_cy(&ctx, &xh, &wh, 0, &lab, &be.zeros(&[b].into(), DType::F32)?)?;
    let terms = launch::target(&ctx, &cy, None, None, hp)?;
    let blocks = class_blocks(b, classes, max_block_elems);
    let whole = blocks.len() == 1;
    let block_w = |j0: usize, j1: usize| -> Result<Tensor> {
        if whole {
            Ok(wh.clone())
        } else {
            cuda_ops::slice_rows(&ctx, &wh, j0, j1)
        }
    };
    let mut state = launch::lse_init(&ctx, b)?;
    // With one block its cosines are kept for the backward; with several they are recomputed there.
    let mut kept = None;
    for &(j0, j1) in &blocks {
        let cos = be.matmul(&xh, &block_w(j0, j1)?, false, true)?;
        state = launch::forward_block(&ctx, &cos, j0, &lab, &terms, hp, &state)?;
        if whole {
            kept = Some(cos);
        }
    }
    let rows = launch::finish(&ctx, &lab, &state, &terms, 0.0, hp)?;
    let loss = be.affine(&be.sum_all(&rows.loss)?, 1.0 / b as f64, 0.0)?;
    if !grad {
        return Ok((loss, None));
    }
    let mut dxh: Option<Tensor> = None;
    let mut dw_parts = Vec::with_capacity(blocks.len());
    for &(j0, j1) in &blocks {
        let wb = block_w(j0, j1)?;
        let cos = match kept.take() {
            Some(c) => c,
            None => be.matmul(&xh, &wb, false, true)?,
        };
        let g = launch::backward_block(&ctx, &cos, j0, &lab, &terms, &rows, hp)?;
        let part = be.matmul(&g, &wb, false, false)?;
        dxh = Some(match dxh {
            None => part,
            Some(acc) => be.binary(crate::backend::BinaryOp::Add, &acc, &part)?,
        });
        dw_parts.push(be.matmul(&g, &xh, true, false)?);
    }
    let dwh = if dw_parts.len() == 1 { dw_parts.pop().expect("one block") } else { cuda_ops::concat_rows(&ctx, &dw_parts)? };
    let dxh = dxh.ok_or_else(|| Error::Shape("head on CUDA: no classes".into()))?;
    let dx = be.l2_normalize_rows_backward_eps(&dxh, &xh, &a, NORM_FLOOR)?;
    let dw = be.l2_normalize_rows_backward_eps(&dwh, &wh, &wn, NORM_FLOOR)?;
    Ok((loss, Some((dx, dw))))
}

/// Heads the kernel cannot express: the CPU reference on host copies, results copied back (one round
/// trip of the embeddings and the whole classifier weight per step: correct, not fast).
pub fn host_fallback(
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    head: &mut dyn Head,
    grad: bool,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let dev = x.device();
    let (hx, hw) = (x.to_device(&Device::Cpu)?, w.to_device(&Device::Cpu)?);
    let (_, d) = hx.shape().matrix("head loss (embeddings)")?;
    if hx.dtype() != DType::F32 {
        return Err(Error::DType(format!("head on CUDA runs in f32, got {}", hx.dtype())));
    }
    let opts = RunOptions { compute_grad: grad, frozen: None };
    let out = run::<f32>(hx.as_slice::<f32>()?, hw.as_slice::<f32>()?, labels, d, head, &opts)?;
    let loss = Tensor::scalar(out.loss as f32).to_device(&dev)?;
    let grads = if grad {
        Some((
            Tensor::from_vec(out.grad_x, x.shape().clone())?.to_device(&dev)?,
            Tensor::from_vec(out.grad_w, w.shape().clone())?.to_device(&dev)?,
        ))
    } else {
        None
    };
    Ok((loss, grads))
}

/// `t * g` for a rank-0 device tensor `g` without reading it on the host (a one-row `scale_rows`).
pub fn scale_by_scalar(t: &Tensor, g: &Tensor) -> Result<Tensor> {
    let n = t.numel();
    let y = t.backend().scale_rows(&t.reshape([1, n])?, &g.reshape([1])?)?;
    y.reshape(t.shape().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::{from_name, HeadParams, Phase};

    fn params(name: &str) -> Option<KernelParams> {
        let p = HeadParams::default();
        let h = from_name(name, &p).unwrap();
        kernel_params(h.as_ref(), 8)
    }

    #[test]
    fn stateless_single_map_heads_are_encoded_and_the_rest_fall_back() {
        for name in ["softmax", "cosface", "arcface", "combined", "sphereface"] {
            assert!(params(name).is_some(), "{name} should run in margin_head.cu");
        }
        for name in [
            "curricularface", "mv-am", "mv-arc", "magface", "adaface", "qamface", "sm-cosface", "smaface",
            "smaface-star", "nsmaface-star", "hm-softmax", "focal",
        ] {
            assert!(params(name).is_none(), "{name} must take the host path");
        }
        let qc = HeadParams { phase: Some(Phase::Planning), ..HeadParams::default() };
        assert!(kernel_params(from_name("qcface", &qc).unwrap().as_ref(), 8).is_none());
    }

    #[test]
    fn encodings_carry_the_head_parameters() {
        let cos = params("cosface").unwrap();
        assert_eq!((cos.s, cos.m1, cos.m2, cos.m3, cos.flags, cos.eps), (64.0, 1.0, 0.0, 0.35, 0, 0.0));
        let arc = params("arcface").unwrap();
        assert_eq!((arc.m1, arc.m2, arc.m3, arc.flags), (1.0, 0.5, 0.0, F_FALLBACK));
        assert_eq!(arc.eps, 1e-6);
        assert_eq!(arc.inv_batch, 1.0 / 8.0);
        let easy = HeadParams { easy_margin: Some(true), ..HeadParams::default() };
        let e = kernel_params(from_name("arcface", &easy).unwrap().as_ref(), 8).unwrap();
        assert_eq!(e.flags, F_EASY);
        let ste = HeadParams { grad_mode: Some(crate::heads::GradMode::Ste), ..HeadParams::default() };
        let s = kernel_params(from_name("arcface", &ste).unwrap().as_ref(), 8).unwrap();
        assert_eq!((s.flags, s.m2), (F_STE, 0.5));
    }

    #[test]
    fn the_kernel_branch_mirror_agrees_with_the_cpu_maps_on_logits() {
        // For every encoded head, the logit and slope of the mirrored kernel branch equal the CPU map's
        // at f64 (the kernel computes the same expressions in f32).
        use crate::heads::maps::target_logit;
        for name in ["softmax", "cosface", "arcface", "combined", "sphereface"] {
            let h = from_name(name, &HeadParams::default()).unwrap();
            let hp = kernel_params(h.as_ref(), 4).unwrap();
            for k in 0..=200 {
                let c = -0.999 + 1.998 * k as f64 / 200.0;
                let cpu = target_logit(&h.row(&RowInput { c_y: c, norm: 1.0, quality: 0.0 }).target, 30.0, c);
                let gpu = target_logit(&encoded_map(&hp, c), 30.0, c);
                // cos(acos(c)) loses a few digits near c = -1 (the kernel writes s·(c - m) that way too).
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (30.0 + b.abs());
                assert!(close(gpu.0, cpu.0) && close(gpu.1, cpu.1), "{name} at {c}: {cpu:?} {gpu:?}");
            }
        }
    }

    #[test]
    fn class_blocks_cover_every_class_once() {
        assert_eq!(class_blocks(128, 600, MAX_BLOCK_ELEMS), vec![(0, 600)]);
        let b = class_blocks(1 << 20, 200, MAX_BLOCK_ELEMS);
        assert_eq!(b.len(), 4);
        assert_eq!(b.first().unwrap().0, 0);
        assert_eq!(b.last().unwrap().1, 200);
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
