//! The head as one tape node: the forward runs the classifier on the embeddings' backend
//! (`Backend::margin_head`) together with its analytic backward, eagerly, because running state must
//! move exactly once per step; the node's backward scales the stored gradients by the seed (no pass
//! when the head's loss is what `Tape::backward` seeds with one).

use super::sharded::run_rank_cuda;
use super::{run_rank, Head, Pick, RankGroup, RunOptions};
use crate::backend::MarginHeadCall;
use crate::tape::{Tape, Var};
use crate::tensor::half_round::round_tensor;
use crate::tensor::{DType, Device, Element, Float, Tensor};
use crate::{Error, Result};

/// Batch-mean loss of `head` for embeddings [B, D], class weights [C, D] and labels in 0..C; one node on
/// the tape whose backward gives dL/d embeddings and dL/d weight. State moves iff the head is training.
///
/// Under the tape's autocast type only the cosine GEMM runs in 16 bits (on the CPU embeddings and weight
/// are rounded as that GEMM would read them; on a GPU the GEMM really runs in it on the normalized rows).
/// Everything after it (margins, softmax, loss) and the gradients out of the head stay f32: as in
/// insightface's partial FC, where only the logits GEMM runs in half, the logits are cast back to float,
/// and the gradients reach embeddings and weight through the L2 normalization, run in f32. (Rounding
/// them instead would overflow fp16 on the classifier, whose 1/|w| factor is large at init.)
pub fn loss(
    tape: &mut Tape,
    embeddings: Var,
    weight: Var,
    labels: &[i64],
    head: &mut dyn Head,
) -> Result<Var> {
    let (x, w) = (tape.value(embeddings).clone(), tape.value(weight).clone());
    let (b, d) = x.shape().matrix("head loss (embeddings)")?;
    let (_, dw) = w.shape().matrix("head loss (weight)")?;
    if d != dw {
        return Err(Error::Shape(format!("head loss: embeddings [{b}, {d}] but weight rows of {dw}")));
    }
    if labels.len() != b {
        return Err(Error::Shape(format!("head loss: {} labels for {b} embeddings", labels.len())));
    }
    if x.dtype() != w.dtype() {
        return Err(Error::DType(format!(
            "head loss: embeddings are {} but weight is {}",
            x.dtype(),
            w.dtype()
        )));
    }
    same_device(&x, &w, "head loss")?;
    let grad = tape.grad_enabled() && (tape.requires_grad(embeddings) || tape.requires_grad(weight));
    let out = x.backend().margin_head(MarginHeadCall {
        x: &x,
        w: &w,
        labels,
        head,
        grad,
        autocast: tape.autocast(),
        max_block_elems: MarginHeadCall::DEFAULT_BLOCK_ELEMS,
    })?;
    Ok(push(tape, embeddings, weight, out.loss, out.grads))
}

/// The head's node: its loss, and a backward that hands over the gradients computed with it.
fn push(tape: &mut Tape, embeddings: Var, weight: Var, loss: Tensor, grads: Option<(Tensor, Tensor)>) -> Var {
    tape.push_unit_seeded(
        loss,
        &[embeddings, weight],
        Box::new(move |g: Option<&Tensor>| {
            let Some((gx, gw)) = &grads else { return Ok(vec![None, None]) };
            match g {
                // The loss itself, seeded with one: the gradients as the head computed them.
                None => Ok(vec![Some(gx.clone()), Some(gw.clone())]),
                Some(g) => {
                    let be = g.backend();
                    Ok(vec![Some(be.scale_by_scalar(gx, g)?), Some(be.scale_by_scalar(gw, g)?)])
                }
            }
        }),
    )
}

/// As `loss`, for one rank of a class-sharded head (`heads::run_rank`): this rank's embeddings [b, D]
/// with their global labels, and its classes `first_class..first_class + C_r` (`weight` [C_r, D]). The
/// loss is the whole job's batch mean (the same on every rank); the node's gradients are dL/d(this rank's
/// embeddings) and dL/d(its weight rows). Every rank calls it at the same point. The CPU's classifier
/// runs it (f32, f64; 16-bit autocast rounds the inputs as `loss` does), or on a CUDA device the
/// chunked one (f32; 16-bit autocast runs its GEMMs in that type, as `loss` does). `pick`: Partial FC's choice of
/// this rank's classes (`heads::run_rank`); `None`: all of them. `group`: the host's communicator, the
/// job's NCCL group on GPUs and how the head's running state moves (`RankGroup`).
#[allow(clippy::too_many_arguments)]
pub fn sharded_loss(
    tape: &mut Tape,
    embeddings: Var,
    weight: Var,
    labels: &[i64],
    first_class: usize,
    group: RankGroup<'_>,
    head: &mut dyn Head,
    pick: Option<Pick<'_>>,
) -> Result<Var> {
    let (x, w) = (tape.value(embeddings).clone(), tape.value(weight).clone());
    let (b, d) = x.shape().matrix("sharded head loss (embeddings)")?;
    if labels.len() != b || w.shape().matrix("sharded head loss (weight)")?.1 != d {
        return Err(Error::Shape(format!(
            "sharded head loss: [{b}, {d}] embeddings, {} labels, weight {}",
            labels.len(),
            w.shape()
        )));
    }
    same_device(&x, &w, "sharded head loss")?;
    let grad = tape.grad_enabled() && (tape.requires_grad(embeddings) || tape.requires_grad(weight));
    match x.device() {
        Device::Cpu => {}
        Device::Cuda(_) => {
            // The chunked classifier, its GEMMs in the autocast type as the whole head's.
            let ac = tape.autocast();
            let (loss, grads) = run_rank_cuda(group, &x, labels, &w, first_class, head, grad, ac, pick)?;
            return Ok(push(tape, embeddings, weight, loss, grads));
        }
        other => return Err(Error::Device(format!("the class-sharded head does not run on {other:?}"))),
    }
    let (xr, wr) = match tape.autocast() {
        Some(h) => (round_tensor(&x, h)?, round_tensor(&w, h)?),
        None => (x.clone(), w.clone()),
    };
    fn run_as<T: Float + Element>(
        x: &Tensor,
        w: &Tensor,
        call: (&[i64], usize, RankGroup<'_>, &mut dyn Head, bool, Option<Pick<'_>>),
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (labels, first_class, group, head, grad, pick) = call;
        let (_, d) = x.shape().matrix("sharded head loss")?;
        let opts = RunOptions { compute_grad: grad, frozen: None };
        let (xs, ws) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
        run_rank::<T>(group.comm, xs, labels, ws, first_class, d, head, &opts, pick, group.running_state)?
            .into_tensors(x.shape(), w.shape(), grad)
    }
    let call = (labels, first_class, group, head, grad, pick);
    let (loss, grads) = match xr.dtype() {
        DType::F32 => run_as::<f32>(&xr, &wr, call)?,
        DType::F64 => run_as::<f64>(&xr, &wr, call)?,
        other => return Err(Error::DType(format!("the sharded head runs in f32 or f64, got {other}"))),
    };
    Ok(push(tape, embeddings, weight, loss, grads))
}

/// The embeddings `x` and the classifier `w` of `what` on one device, or an error naming both.
fn same_device(x: &Tensor, w: &Tensor, what: &str) -> Result<()> {
    if x.device().same(&w.device()) {
        return Ok(());
    }
    Err(Error::Device(format!("{what}: embeddings on {:?} but weight on {:?}", x.device(), w.device())))
}
