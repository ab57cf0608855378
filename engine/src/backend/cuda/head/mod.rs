//! The margin head on a CUDA device: the chunked classifier of kernels/cuda/margin_head.cu. cuBLAS
//! computes the cosines of one block of classes at a time, the kernels keep a running log-sum-exp per
//! row, and the backward recomputes (or, with one block, reuses) each block's cosines, so the
//! `[B, classes]` logits never exist at once. The head's host code (`heads::kernel_plan`) decides the
//! kernels' parameters:
//! - fixed parameters (`kernel_params` accepts the head): the target terms are computed on the device
//!   (`margin_target`, `margin_finish`); no host round trip;
//! - per-row plans (every other head): c_y and the norms come down, the head's own code computes z_y,
//!   z'_y and tau (`plan_rows`), which go up; the merged (max, sum) of the logits and of the margin-free
//!   non-target logits (QCFace's p_d) come down, the head finishes its rows (`finish_rows`: loss,
//!   weights, extra terms, dL/da) and the weight factors go up. Small copies of B values per step.
//!
//! Both paths clamp CE at CE_MAX in the loss value (p_y >= 1e-30, as insightface), not in the gradient.

mod launch;

use super::{ops, CudaContext};
use crate::backend::{Backend, BinaryOp, MarginHeadCall, MarginHeadOutput};
use crate::dist::nccl::DeviceGroup;
use crate::dist::{Communicator, ReduceOp};
use crate::heads::classifier::{all_reduce_as, merge_lse, merge_targets};
use crate::heads::kernel_plan::{finish_rows, kernel_params, plan_rows, MarginParams, MergedRows};
use crate::heads::{Head, NORM_FLOOR};
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};
use launch::{LseState, TargetTerms};
use std::ops::Range;
use std::sync::Arc;

/// Class blocks `[j0, j1)` so that each `[batch, nb]` cosine block stays under `max_elems`.
fn class_blocks(batch: usize, classes: usize, max_elems: usize) -> Vec<(usize, usize)> {
    let nb = (max_elems / batch.max(1)).clamp(1, classes.max(1));
    (0..classes).step_by(nb).map(|j0| (j0, (j0 + nb).min(classes))).collect()
}

/// The head step on `ctx`: fixed kernel parameters when the head's maps fit them, else row plans.
pub fn margin_head(ctx: &Arc<CudaContext>, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
    let classes = call.w.shape().matrix("head loss (weight)")?.0;
    check_labels(call.labels, call.x.shape().matrix("head loss (embeddings)")?.0, classes, false)?;
    let p = Prepared::new(ctx, call.x, call.w, call.labels, call.autocast, call.max_block_elems)?;
    let (loss, grads) = match kernel_params(call.head, p.b) {
        Some(hp) => p.with_fixed_params(&hp, call.grad)?,
        None => p.with_row_plans(call.head, call.grad, None)?,
    };
    Ok(MarginHeadOutput { loss, grads })
}

/// One rank of the class-sharded head (`heads::sharded`): `call.x` is the job's whole batch, `call.w`
/// this rank's classes, `call.labels` each row's class among them or -1 where another rank holds it.
/// Always the per-row plans, whatever the head: their host round trip is where the ranks' target
/// cosines and log-sum-exp pairs are merged (`ranks`), as the CPU's `run_sharded_over` merges them;
/// the embedding gradients are summed over the ranks on the device or through the host. Every rank
/// gets the job's loss, dL/dx of its own rows `rows` of the batch, and dL/dW of its classes.
pub fn sharded_margin_head(
    ctx: &Arc<CudaContext>,
    call: MarginHeadCall<'_>,
    ranks: Ranks<'_>,
    rows: Range<usize>,
) -> Result<MarginHeadOutput> {
    let classes = call.w.shape().matrix("sharded head (weight)")?.0;
    let b = call.x.shape().matrix("sharded head (embeddings)")?.0;
    check_labels(call.labels, b, classes, true)?;
    if rows.end > b || rows.start > rows.end {
        return Err(Error::Shape(format!("sharded head: this rank's rows {rows:?} of a batch of {b}")));
    }
    let owned: Vec<bool> = call.labels.iter().map(|&y| y >= 0).collect();
    // Another rank's class as one past this rank's last: no column of any block matches it, so the row
    // takes every class here as a non-target (the kernels' -1 would drop the row instead).
    let labels: Vec<i64> = call.labels.iter().map(|&y| if y < 0 { classes as i64 } else { y }).collect();
    let p = Prepared::new(ctx, call.x, call.w, &labels, call.autocast, call.max_block_elems)?;
    let sharding = Sharding { ranks, owned: &owned, rows };
    let (loss, grads) = p.with_row_plans(call.head, call.grad, Some(sharding))?;
    Ok(MarginHeadOutput { loss, grads })
}

/// Where a rank of the sharded head on CUDA meets the others.
#[derive(Clone, Copy)]
pub enum Ranks<'a> {
    /// Through the host communicator (`Single`: one rank, nothing moves).
    Host(&'a dyn Communicator),
    /// NCCL on the GPUs (the job's device group): every rank must hold as many rows of the batch.
    Gpus(&'a DeviceGroup),
}

impl Ranks<'_> {
    fn world(&self) -> usize {
        match self {
            Ranks::Host(c) => c.world(),
            Ranks::Gpus(g) => g.world(),
        }
    }

    /// Every rank's `t` (f32 on this device; one length everywhere for NCCL), in rank order, on the
    /// host.
    pub(crate) fn gather(&self, t: &Tensor) -> Result<Vec<Vec<f64>>> {
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        match self {
            Ranks::Host(c) => c.all_gather(&wide(&t.to_vec::<f32>()?)),
            Ranks::Gpus(g) => {
                let all = g.all_gather(t)?.to_vec::<f32>()?;
                g.check()?;
                Ok(all.chunks(t.numel().max(1)).map(wide).collect())
            }
        }
    }

    /// The ranks' `t` `[B, dim]` summed (each holds its classes' part of every row's gradient), rows
    /// `rows` (this rank's) kept: NCCL's reduce-scatter, or the host's all-reduce.
    fn sum_rows(&self, t: &Tensor, rows: Range<usize>) -> Result<Tensor> {
        let (b, dim) = t.shape().matrix("embedding gradient")?;
        match self {
            Ranks::Host(c) => {
                let mut v = t.to_vec::<f32>()?;
                all_reduce_as(*c, &mut v, ReduceOp::Sum)?;
                let own = v[rows.start * dim..rows.end * dim].to_vec();
                Tensor::from_vec(own, [rows.len(), dim])?.to_device(&t.device())
            }
            Ranks::Gpus(g) => {
                let (r, w) = (g.rank(), g.world());
                if b % w != 0 || rows != (r * b / w..(r + 1) * b / w) {
                    return Err(Error::Shape(format!(
                        "rank {r}: rows {rows:?} of {b} are not its equal part for NCCL's reduce-scatter"
                    )));
                }
                g.reduce_scatter_sum(&t.reshape([b * dim])?)?.reshape([rows.len(), dim])
            }
        }
    }
}

/// A sharded head's rank: who it merges with, which rows hold one of its classes, and which are its own.
struct Sharding<'a> {
    ranks: Ranks<'a>,
    owned: &'a [bool],
    rows: Range<usize>,
}

/// What both paths start from: labels on the device, the normalized rows with their norms, and the
/// operands of the cosine GEMMs (the normalized rows, in bf16/fp16 under autocast: the cosines are
/// then computed, kept and read in that type, halving their memory and traffic). Under autocast the
/// classifier's rows are normalized straight into the GEMM's type and never exist in f32: the target
/// cosines and the backward recompute them from the raw rows and their norms, with the same bits.
struct Prepared {
    ctx: Arc<CudaContext>,
    dev: Device,
    lab: Tensor,
    b: usize,
    xh: Tensor,
    a: Tensor,
    /// The raw classifier rows.
    w: Tensor,
    /// Their normalized f32 copy: only when the GEMMs run in f32 (where it is their operand).
    wh: Option<Tensor>,
    wn: Tensor,
    xg: Tensor,
    wg: Tensor,
    blocks: Vec<(usize, usize)>,
}

impl Prepared {
    fn new(
        ctx: &Arc<CudaContext>,
        x: &Tensor,
        w: &Tensor,
        labels: &[i64],
        gemm: Option<DType>,
        max_block_elems: usize,
    ) -> Result<Prepared> {
        if x.dtype() != DType::F32 || w.dtype() != DType::F32 {
            return Err(Error::DType(format!(
                "head on CUDA runs in f32, got {} and {}",
                x.dtype(),
                w.dtype()
            )));
        }
        let (b, _) = x.shape().matrix("head loss (embeddings)")?;
        let (classes, _) = w.shape().matrix("head loss (weight)")?;
        let dev = Device::Cuda(ctx.clone());
        let lab = Tensor::from_vec(labels.to_vec(), [b])?.to_device(&dev)?;
        let (xh, a) = ctx.l2_normalize_rows(x, NORM_FLOOR)?;
        let (wh, wn, xg, wg) = match gemm {
            None | Some(DType::F32) => {
                let (wh, wn) = ctx.l2_normalize_rows(w, NORM_FLOOR)?;
                (Some(wh.clone()), wn, xh.clone(), wh)
            }
            Some(d) => {
                let (wg, wn) = ops::l2_normalize_rows_to(ctx, w, NORM_FLOOR, d)?;
                (None, wn, ctx.cast(&xh, d)?, wg)
            }
        };
        let blocks = class_blocks(b, classes, max_block_elems);
        Ok(Prepared { ctx: ctx.clone(), dev, lab, b, xh, a, w: w.clone(), wh, wn, xg, wg, blocks })
    }

    fn be(&self) -> &dyn Backend {
        self.ctx.as_ref()
    }

    /// The GEMM operand of classes j0..j1.
    fn block_w(&self, j0: usize, j1: usize) -> Result<Tensor> {
        if self.blocks.len() == 1 {
            Ok(self.wg.clone())
        } else {
            self.ctx.slice_rows(&self.wg, j0, j1)
        }
    }

    /// c_y of every row from the normalized f32 rows.
    fn target_cosines(&self) -> Result<Tensor> {
        let zero = self.be().zeros(&[self.b].into(), DType::F32)?;
        match &self.wh {
            Some(wh) => launch::gather_cy(&self.ctx, &self.xh, wh, None, 0, &self.lab, zero),
            None => launch::gather_cy(
                &self.ctx,
                &self.xh,
                &self.w,
                Some((&self.wn, NORM_FLOOR)),
                0,
                &self.lab,
                zero,
            ),
        }
    }

    /// The running log-sum-exp over every class block. With one block its cosines are returned for the
    /// backward; with several they are recomputed there.
    fn forward(&self, terms: &TargetTerms, hp: &MarginParams) -> Result<(LseState, Option<Tensor>)> {
        let mut state = launch::lse_init(&self.ctx, self.b)?;
        let mut kept = None;
        for &(j0, j1) in &self.blocks {
            let cos = self.be().matmul(&self.xg, &self.block_w(j0, j1)?, false, true)?;
            state = launch::forward_block(&self.ctx, &cos, j0, &self.lab, terms, hp, state)?;
            if self.blocks.len() == 1 {
                kept = Some(cos);
            }
        }
        Ok((state, kept))
    }

    /// Gradients with respect to the normalized embeddings and classifier rows.
    fn backward(
        &self,
        mut kept: Option<Tensor>,
        terms: &TargetTerms,
        lse: &Tensor,
        st: Option<&Tensor>,
        hp: &MarginParams,
    ) -> Result<(Tensor, Tensor)> {
        let be = self.be();
        let mut dxh: Option<Tensor> = None;
        let mut dw_parts = Vec::with_capacity(self.blocks.len());
        for &(j0, j1) in &self.blocks {
            let wb = self.block_w(j0, j1)?;
            let cos = match kept.take() {
                Some(c) => c,
                None => be.matmul(&self.xg, &wb, false, true)?,
            };
            // G comes in the cosines' type; its products are widened before they are summed.
            let g = launch::backward_block(&self.ctx, &cos, j0, &self.lab, terms, lse, st, hp)?;
            let part = be.widen(&be.matmul(&g, &wb, false, false)?)?;
            dxh = Some(match dxh {
                None => part,
                Some(acc) => be.binary(BinaryOp::Add, &acc, &part)?,
            });
            // The classifier's part stays in the GEMM's type: its backward through the normalization
            // widens it as it reads it.
            let dw = be.matmul(&g, &self.xg, true, false)?;
            dw_parts.push(if self.wh.is_some() { be.widen(&dw)? } else { dw });
        }
        let dwh =
            if dw_parts.len() == 1 { dw_parts.pop().expect("one block") } else { be.concat_rows(&dw_parts)? };
        let dxh = dxh.ok_or_else(|| Error::Shape("head on CUDA: no classes".into()))?;
        Ok((dxh, dwh))
    }

    /// Through both normalizations back to the raw embeddings and weights.
    fn unnormalize(&self, dxh: &Tensor, dwh: &Tensor) -> Result<(Tensor, Tensor)> {
        let dx = self.be().l2_normalize_rows_backward_eps(dxh, &self.xh, &self.a, NORM_FLOOR)?;
        Ok((dx, self.unnormalize_w(dwh)?))
    }

    /// Through the classifier's normalization back to its raw rows.
    fn unnormalize_w(&self, dwh: &Tensor) -> Result<Tensor> {
        match &self.wh {
            Some(wh) => self.be().l2_normalize_rows_backward_eps(dwh, wh, &self.wn, NORM_FLOOR),
            None => ops::l2_normalize_rows_backward_raw(&self.ctx, dwh, &self.w, &self.wn, NORM_FLOOR),
        }
    }

    /// Heads whose maps the kernels' fixed parameters express: everything on the device.
    fn with_fixed_params(&self, hp: &MarginParams, grad: bool) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let be = self.be();
        let terms = launch::target(&self.ctx, &self.target_cosines()?, hp)?;
        let (state, kept) = self.forward(&terms, hp)?;
        let (lse, rows) = launch::finish(&self.ctx, &self.lab, &state, &terms.zy)?;
        let loss = be.affine(&be.sum_all(&rows)?, 1.0 / self.b as f64, 0.0)?;
        if !grad {
            return Ok((loss, None));
        }
        let (dxh, dwh) = self.backward(kept, &terms, &lse, None, hp)?;
        Ok((loss, Some(self.unnormalize(&dxh, &dwh)?)))
    }

    /// Any head: its per-row scalars computed on the host by its own code, its per-element work here.
    /// On a rank of a sharded head the per-row values are merged over the ranks as they pass, and dL/dx
    /// is of its own rows; without one (the whole head) nothing moves.
    fn with_row_plans(
        &self,
        head: &mut dyn Head,
        grad: bool,
        shard: Option<Sharding<'_>>,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (be, dev) = (self.be(), &self.dev);
        let cy = self.target_cosines()?;
        let raw_cy: Vec<f32> = match &shard {
            None => cy.to_vec::<f32>()?,
            Some(sh) => {
                // The rank holding a row's class gathered its c_y, the others zero; one gather carries
                // them with the owner flags.
                let flags = sh.owned.iter().map(|&o| f32::from(u8::from(o))).collect::<Vec<f32>>();
                let part = be.concat_rows(&[cy, upload_rows(flags, dev)?])?;
                merge_targets(&sh.ranks.gather(&part)?, self.b)?
            }
        };
        let plans = plan_rows(head, &raw_cy, &self.a.to_vec::<f32>()?)?;
        let hp = plans.hp;
        let terms = TargetTerms {
            zy: upload_rows(plans.zy.clone(), dev)?,
            zpy: upload_rows(plans.zpy.clone(), dev)?,
            tau: upload_rows(plans.tau.clone(), dev)?,
        };
        let (state, kept) = self.forward(&terms, &hp)?;
        let [max, sum, max_d, sum_d] = match shard.as_ref().filter(|sh| sh.ranks.world() > 1) {
            Some(sh) => {
                let part = be.concat_rows(&[
                    state.m.clone(),
                    state.s.clone(),
                    state.m_d.clone(),
                    state.s_d.clone(),
                ])?;
                merge_lse::<f32>(&sh.ranks.gather(&part)?, self.b)?
            }
            None => {
                let [max, sum, max_d, sum_d] =
                    [&state.m, &state.s, &state.m_d, &state.s_d].map(|t| t.to_vec::<f32>());
                [max?, sum?, max_d?, sum_d?]
            }
        };
        let res =
            finish_rows(head, &plans, &MergedRows { max: &max, sum: &sum, max_d: &max_d, sum_d: &sum_d })?;
        let loss = Tensor::scalar(res.loss as f32).to_device(dev)?;
        if !grad {
            return Ok((loss, None));
        }
        let lse = upload_rows(res.lse, dev)?;
        let st = upload_rows(res.st, dev)?;
        let (dxh, dwh) = self.backward(kept, &terms, &lse, Some(&st), &hp)?;
        let mut d_norm = res.d_norm;
        let (dxh, xh, a) = match shard {
            None => (dxh, self.xh.clone(), self.a.clone()),
            Some(sh) => {
                // Every rank's classes contribute to every row's gradient: summed over the ranks, each
                // keeping its rows, before the normalization's backward (as on the CPU).
                let (r0, r1) = (sh.rows.start, sh.rows.end);
                d_norm = d_norm[r0..r1].to_vec();
                let own = sh.ranks.sum_rows(&dxh, sh.rows)?;
                (own, be.slice_rows(&self.xh, r0, r1)?, be.slice_rows(&self.a, r0, r1)?)
            }
        };
        let mut dx = be.l2_normalize_rows_backward_eps(&dxh, &xh, &a, NORM_FLOOR)?;
        let dw = self.unnormalize_w(&dwh)?;
        if d_norm.iter().any(|&v| v != 0.0) {
            // The radial part: dL/da_i along x̂_i.
            let radial = be.scale_rows(&xh, &upload_rows(d_norm, dev)?)?;
            dx = be.binary(BinaryOp::Add, &dx, &radial)?;
        }
        Ok((loss, Some((dx, dw))))
    }
}

/// Rows `rows` (sorted, distinct) of `w` `[C, D]` as `[rows.len(), D]`: Partial FC's chosen classes.
pub fn take_rows(ctx: &Arc<CudaContext>, w: &Tensor, rows: &[usize]) -> Result<Tensor> {
    let (_, d) = w.shape().matrix("chosen class rows")?;
    let out = ctx.zeros(&[rows.len(), d].into(), DType::F32)?;
    launch::copy_rows(ctx, w, Some(&row_index(rows, &w.device())?), None, rows.len(), out)
}

/// `g` `[rows.len(), D]` at rows `rows` of a zero `[count, D]`: the chosen classes' gradients in place.
pub fn put_rows(ctx: &Arc<CudaContext>, g: &Tensor, rows: &[usize], count: usize) -> Result<Tensor> {
    let (_, d) = g.shape().matrix("chosen class gradients")?;
    let out = ctx.zeros(&[count, d].into(), DType::F32)?;
    launch::copy_rows(ctx, g, None, Some(&row_index(rows, &g.device())?), rows.len(), out)
}

fn row_index(rows: &[usize], dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(rows.iter().map(|&r| r as i64).collect(), [rows.len()])?.to_device(dev)
}

/// The kernels skip rows whose label is outside their block, so a bad label must be refused here.
/// `elsewhere`: a rank of a sharded head, where -1 marks another rank's class.
fn check_labels(labels: &[i64], b: usize, classes: usize, elsewhere: bool) -> Result<()> {
    if labels.len() != b {
        return Err(Error::Shape(format!("head loss: {} labels for {b} embeddings", labels.len())));
    }
    let bad = |y: i64| !(y == -1 && elsewhere) && (y < 0 || y as usize >= classes);
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| bad(y)) {
        return Err(Error::Invalid(format!("label {y} of sample {i} is outside 0..{classes}")));
    }
    Ok(())
}

fn upload_rows(v: Vec<f32>, dev: &Device) -> Result<Tensor> {
    let n = v.len();
    Tensor::from_vec(v, [n])?.to_device(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under autocast the classifier's rows exist only in the GEMM's type; the target cosines and the
    /// backward rebuild the f32 rows from the raw ones. Against the path through an f32 copy: same bits.
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_the_classifier_without_an_f32_copy_gives_the_same_bits() {
        let Device::Cuda(ctx) = Device::parse("cuda").expect("this test needs a GPU") else {
            unreachable!("cuda opens a CUDA device")
        };
        let (b, c, d) = (8usize, 50usize, 40usize);
        let val = |i: usize, k: usize, m: usize| ((i * k % m) as f32 - (m / 2) as f32) / m as f32;
        let mut wv: Vec<f32> = (0..c * d).map(|i| val(i, 37, 101) * 3.0).collect();
        wv[3 * d..4 * d].fill(0.0); // a row under the norm floor
        let xv: Vec<f32> = (0..b * d).map(|i| val(i, 53, 97)).collect();
        let dev = Device::Cuda(ctx.clone());
        let w = Tensor::from_vec(wv, [c, d]).unwrap().to_device(&dev).unwrap();
        let x = Tensor::from_vec(xv, [b, d]).unwrap().to_device(&dev).unwrap();
        let labels: Vec<i64> = (0..b as i64).map(|i| (i * 7) % c as i64).collect();
        let lab = Tensor::from_vec(labels, [b]).unwrap().to_device(&dev).unwrap();
        let (xh, _) = ctx.l2_normalize_rows(&x, NORM_FLOOR).unwrap();
        let (wh, wn) = ctx.l2_normalize_rows(&w, NORM_FLOOR).unwrap();
        let bits = |t: &Tensor| t.to_f64_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u64>>();
        for dt in [DType::BF16, DType::F16] {
            let (wg, wn2) = ops::l2_normalize_rows_to(&ctx, &w, NORM_FLOOR, dt).unwrap();
            assert_eq!(bits(&wg), bits(&ctx.cast(&wh, dt).unwrap()), "{dt}: normalized into {dt}");
            assert_eq!(bits(&wn2), bits(&wn), "{dt}: norms");
            let dy16 = ctx.cast(&ctx.affine(&w, 0.7, 0.1).unwrap(), dt).unwrap();
            let plain = ctx.l2_normalize_rows_backward_eps(&ctx.widen(&dy16).unwrap(), &wh, &wn, NORM_FLOOR);
            let raw = ops::l2_normalize_rows_backward_raw(&ctx, &dy16, &w, &wn, NORM_FLOOR).unwrap();
            assert_eq!(bits(&raw), bits(&plain.unwrap()), "{dt}: backward from the raw rows");
        }
        let zero = || ctx.zeros(&[b].into(), DType::F32).unwrap();
        let plain = launch::gather_cy(&ctx, &xh, &wh, None, 0, &lab, zero()).unwrap();
        let raw = launch::gather_cy(&ctx, &xh, &w, Some((&wn, NORM_FLOOR)), 0, &lab, zero()).unwrap();
        assert_eq!(bits(&raw), bits(&plain), "target cosines from the raw rows");
    }

    #[test]
    fn class_blocks_cover_every_class_once() {
        let max = MarginHeadCall::DEFAULT_BLOCK_ELEMS;
        assert_eq!(class_blocks(128, 600, max), vec![(0, 600)]);
        let b = class_blocks(1 << 20, 200, max);
        assert_eq!(b.len(), 4);
        assert_eq!(b.first().unwrap().0, 0);
        assert_eq!(b.last().unwrap().1, 200);
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
