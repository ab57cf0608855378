//! 16 bits on the CPU: real casts for storage, and the autocast emulation (f32 values rounded to the
//! 16-bit grid where a GPU would hold the tensor in bf16/fp16), whose CUDA twins are real casts.

use crate::tensor::half_round::{round_in_place, round_tensor};
use crate::tensor::{DType, Tensor};
use crate::Result;

/// A real conversion (round to nearest even), as the device's cast kernels do.
pub fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    Tensor::from_cpu(t.shape().clone(), t.cpu_storage()?.cast(dtype))
}

/// The emulated operand: an f32 (or f64) copy rounded to `half`.
pub fn half_operand(t: &Tensor, half: DType) -> Result<Tensor> {
    round_tensor(t, half)
}

/// The emulated result: rounded in place (results are fresh, unshared tensors).
pub fn half_result(mut t: Tensor, half: DType) -> Result<Tensor> {
    round_in_place(&mut t, half)?;
    Ok(t)
}
