//! The head as one tape node: the forward runs the classifier on the embeddings' backend
//! (`Backend::margin_head`) together with its analytic backward, eagerly, because running state must
//! move exactly once per step; the node's backward scales the stored gradients by the seed (no pass
//! when the head's loss is what `Tape::backward` seeds with one).

use super::Head;
use crate::backend::MarginHeadCall;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
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
    if !x.device().same(&w.device()) {
        return Err(Error::Device(format!(
            "head loss: embeddings on {:?} but weight on {:?}",
            x.device(),
            w.device()
        )));
    }
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
    let grads = out.grads;
    Ok(tape.push_unit_seeded(
        out.loss,
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
    ))
}
