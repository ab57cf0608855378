//! Differentiable ops: each runs its forward on the operands' backend and records its backward on the
//! tape. One file per op family.

mod elementwise;
mod matmul;

pub use elementwise::{add, mul, sub, sum_all};
pub use matmul::matmul;

use crate::tape::{Tape, Var};
use crate::{Error, Result};

/// Errors unless every var holds a tensor on the same device with the same dtype.
pub(crate) fn same_device_and_dtype(tape: &Tape, op: &str, vars: &[Var]) -> Result<()> {
    let first = tape.value(vars[0]);
    for &v in &vars[1..] {
        let t = tape.value(v);
        if t.dtype() != first.dtype() {
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
