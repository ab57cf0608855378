//! Whole-step checks over many tensors: the reference of kernels/cuda/amp.cu's non-finite flags and of
//! the device square sums of gradient clipping.

use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Whether every element is finite, read in place for f32/f64 tensors (no copy per step).
fn all_finite(t: &Tensor) -> Result<bool> {
    match t.dtype() {
        DType::F32 => Ok(t.as_slice::<f32>()?.iter().all(|v| v.is_finite())),
        DType::F64 => Ok(t.as_slice::<f64>()?.iter().all(|v| v.is_finite())),
        _ => Ok(t.to_f64_vec()?.iter().all(|v| v.is_finite())),
    }
}

pub fn first_nonfinite(ts: &[&Tensor]) -> Result<Option<usize>> {
    for (i, t) in ts.iter().enumerate() {
        if !all_finite(t)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Multiplies f32 tensors by `factor` in place (one pass each, which also checks finiteness).
pub fn scale_and_check(ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
    let mut found = None;
    for (i, t) in ts.iter_mut().enumerate() {
        let v = t.as_mut_slice::<f32>().map_err(|e| Error::DType(format!("unscaling tensor {i}: {e}")))?;
        let mut finite = true;
        for e in v.iter_mut() {
            *e *= factor;
            finite &= e.is_finite();
        }
        if !finite && found.is_none() {
            found = Some(i);
        }
    }
    Ok(found)
}

/// Sum of squares in f64, tensor by tensor.
pub fn sum_of_squares(ts: &[&Tensor]) -> Result<f64> {
    let mut sq = 0.0;
    for t in ts {
        sq += t.to_f64_vec()?.iter().map(|x| x * x).sum::<f64>();
    }
    Ok(sq)
}
