//! The margin head on the CPU: the heads' reference classifier (`heads::run`) on the whole
//! `[batch, classes]` problem, with the embeddings and weights rounded as a 16-bit logits GEMM would read
//! them under autocast.

use crate::backend::{MarginHeadCall, MarginHeadOutput};
use crate::heads::{run, RunOptions};
use crate::tensor::half_round::round_tensor;
use crate::tensor::{DType, Element, Float, Tensor};
use crate::{Error, Result};

fn step<T: Float + Element>(x: &Tensor, w: &Tensor, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
    let (_, dim) = x.shape().matrix("head loss (embeddings)")?;
    let opts = RunOptions { compute_grad: call.grad, frozen: None };
    let out = run::<T>(x.as_slice::<T>()?, w.as_slice::<T>()?, call.labels, dim, call.head, &opts)?;
    let (loss, grads) = out.into_tensors(x.shape(), w.shape(), call.grad)?;
    Ok(MarginHeadOutput { loss, grads })
}

pub fn margin_head(call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
    let (x, w) = match call.autocast {
        Some(d) => (round_tensor(call.x, d)?, round_tensor(call.w, d)?),
        None => (call.x.clone(), call.w.clone()),
    };
    match x.dtype() {
        DType::F32 => step::<f32>(&x, &w, call),
        DType::F64 => step::<f64>(&x, &w, call),
        other => Err(Error::DType(format!("head loss runs in f32 or f64, got {other}"))),
    }
}
