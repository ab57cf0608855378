//! The head as one tape node: forward runs the classifier (and its analytic backward, eagerly, because
//! running state must move exactly once per step); the node's backward scales the stored gradients.

use super::classifier::{run, RunOptions};
use super::device;
use super::Head;
use crate::tape::{Tape, Var};
use crate::tensor::{DType, Float, Tensor};
use crate::{Error, Result};

fn step<T: Float + crate::tensor::Element>(
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    dim: usize,
    head: &mut dyn Head,
    grad: bool,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let opts = RunOptions { compute_grad: grad, frozen: None };
    let out = run::<T>(x.as_slice::<T>()?, w.as_slice::<T>()?, labels, dim, head, &opts)?;
    let loss = Tensor::scalar(T::from_f64(out.loss));
    let grads = if grad {
        Some((
            Tensor::from_vec(out.grad_x, x.shape().clone())?,
            Tensor::from_vec(out.grad_w, w.shape().clone())?,
        ))
    } else {
        None
    };
    Ok((loss, grads))
}

/// Batch-mean loss of `head` for embeddings [B, D], class weights [C, D] and labels in 0..C; one node on
/// the tape whose backward gives dL/d embeddings and dL/d weight. State moves iff the head is training.
///
/// Under the tape's autocast type, on the CPU embeddings and weight are rounded as a half-precision logits
/// GEMM would read them; on a GPU the cosine GEMMs run in that type on the normalized rows. Everything after the GEMM (margins, softmax, loss) and the gradients out of the head stay
/// f32: as in insightface's partial FC, where only the logits GEMM runs in half, the logits are cast back
/// to float, and the gradients reach embeddings and weight through the L2 normalization, run in f32.
/// (Rounding them instead would overflow fp16 on the classifier, whose 1/|w| factor is large at init.)
pub fn loss(
    tape: &mut Tape,
    embeddings: Var,
    weight: Var,
    labels: &[i64],
    head: &mut dyn Head,
) -> Result<Var> {
    // On a GPU the autocast type goes to the chunked head itself (its cosine GEMMs run in it); the
    // embeddings and weight it reads stay f32 for the L2 normalization.
    let (half, gemm) = if tape.value(embeddings).device().is_cpu() {
        (tape.autocast(), None)
    } else {
        (None, tape.autocast())
    };
    let x = crate::ops::autocast_operand(tape.value(embeddings), half)?.into_owned();
    let w = crate::ops::autocast_operand(tape.value(weight), half)?.into_owned();
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
    if !x.device().is_cpu() {
        return device_loss(tape, embeddings, weight, &x, &w, labels, head, grad, gemm);
    }
    let (value, grads) = match x.dtype() {
        DType::F32 => step::<f32>(&x, &w, labels, d, head, grad)?,
        DType::F64 => step::<f64>(&x, &w, labels, d, head, grad)?,
        other => return Err(Error::DType(format!("head loss runs in f32 or f64, got {other}"))),
    };
    let grads = grads.unwrap_or_else(|| (x.clone(), w.clone()));
    Ok(tape.push(
        value,
        &[embeddings, weight],
        Box::new(move |g: &Tensor| {
            let scale = g.scalar_value()?;
            let scaled = |t: &Tensor| -> Result<Tensor> {
                if scale == 1.0 {
                    return Ok(t.clone());
                }
                let v: Vec<f64> = t.to_f64_vec()?.into_iter().map(|e| e * scale).collect();
                Tensor::from_vec(v, t.shape().clone())?.to_dtype(t.dtype())
            };
            Ok(vec![Some(scaled(&grads.0)?), Some(scaled(&grads.1)?)])
        }),
    ))
}

/// The head on a CUDA device: margin_head.cu with fixed parameters for the heads it expresses alone, else
/// with per-row plans from the head's host code. The node's backward scales the stored gradients on the
/// device (no host read of the seed).
#[allow(clippy::too_many_arguments)]
fn device_loss(
    tape: &mut Tape,
    embeddings: Var,
    weight: Var,
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    head: &mut dyn Head,
    grad: bool,
    gemm: Option<DType>,
) -> Result<Var> {
    let (b, _) = x.shape().matrix("head loss (embeddings)")?;
    let (value, grads) = match device::kernel_params(head, b) {
        Some(hp) => device::step_on_device(x, w, labels, &hp, grad, gemm)?,
        None => device::step_with_row_plans(x, w, labels, head, grad, device::MAX_BLOCK_ELEMS, gemm)?,
    };
    let grads = grads.unwrap_or_else(|| (x.clone(), w.clone()));
    Ok(tape.push(
        value,
        &[embeddings, weight],
        Box::new(move |g: &Tensor| {
            Ok(vec![Some(device::scale_by_scalar(&grads.0, g)?), Some(device::scale_by_scalar(&grads.1, g)?)])
        }),
    ))
}
