//! Differentiable ops: each runs its forward on the operands' backend and records its backward on the
//! tape. One file per op family.

mod batch_norm;
mod batch_norm_add;
mod batch_norm_prelu;
mod broadcast;
mod conv;
mod dropout;
mod elementwise;
mod linear;
mod matmul;
mod normalize;
mod prelu;
mod reduce;
mod round;
mod shape;

pub use crate::backend::Conv2dParams;
pub use batch_norm::{batch_norm_eval, batch_norm_train, Running};
pub use batch_norm_add::{batch_norm_add_train, ShortcutBn};
pub use batch_norm_prelu::batch_norm_prelu_train;
pub use broadcast::{add_channels, mul_channels, scale_rows};
pub use conv::conv2d;
pub use dropout::dropout;
pub use elementwise::{add, add_scalar, exp, log, mul, scale, sub, sum_all};
pub use linear::linear;
pub use matmul::matmul;
pub use normalize::{normalize_rows, normalize_rows_with_norms, NORMALIZE_EPS};
pub use prelu::prelu;
pub use reduce::{mean_all, sum_rows};
pub(crate) use round::{
    grad_for as autocast_grad, operand as autocast_operand, store as autocast_store, var_operand,
    weight_grad, widen as autocast_widen,
};
pub use round::{round_to, widen_to_f32};
pub use shape::{flatten, reshape};

use crate::tape::{Tape, Var};
use crate::tensor::DType;
use crate::{Error, Result};

/// Errors unless every var holds a tensor on the same device with the same dtype (a 16-bit activation
/// beside f32 parameters is the one mix allowed: under autocast a GPU holds activations in 16 bits).
pub(crate) fn same_device_and_dtype(tape: &Tape, op: &str, vars: &[Var]) -> Result<()> {
    let first = tape.value(vars[0]);
    let half = |d: DType| matches!(d, DType::BF16 | DType::F16);
    for &v in &vars[1..] {
        let t = tape.value(v);
        let mixed = (half(t.dtype()) && first.dtype() == DType::F32)
            || (half(first.dtype()) && t.dtype() == DType::F32);
        if t.dtype() != first.dtype() && !mixed {
            return Err(Error::DType(format!("{op}: operands are {} and {}", first.dtype(), t.dtype())));
        }
        if !t.device().same(&first.device()) {
            return Err(Error::Device(format!(
                "{op}: operands are on {:?} and {:?}",
                first.device(),
                t.device()
            )));
        }
    }
    Ok(())
}
