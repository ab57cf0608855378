//! Elementwise maps and reductions on the CPU.

use crate::backend::{BinaryOp, UnaryOp};
use crate::tensor::{Float, Tensor};
use crate::{Error, Result};

pub fn binary<T: Float + crate::tensor::Element>(op: BinaryOp, a: &[T], b: &[T]) -> Vec<T> {
    let f = match op {
        BinaryOp::Add => |x: T, y: T| x + y,
        BinaryOp::Sub => |x: T, y: T| x - y,
        BinaryOp::Mul => |x: T, y: T| x * y,
        BinaryOp::Div => |x: T, y: T| x / y,
    };
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

pub fn unary<T: Float>(op: UnaryOp, a: &[T]) -> Vec<T> {
    let f = match op {
        UnaryOp::Neg => |x: T| -x,
        UnaryOp::Exp => |x: T| x.exp(),
        UnaryOp::Log => |x: T| x.ln(),
        UnaryOp::Sqrt => |x: T| x.sqrt(),
        UnaryOp::Square => |x: T| x * x,
        UnaryOp::Recip => |x: T| T::ONE / x,
    };
    a.iter().map(|&x| f(x)).collect()
}

/// Sum in f64 whatever T is, in index order: deterministic and accurate enough for losses and checks.
pub fn sum_all<T: Float>(a: &[T]) -> T {
    T::from_f64(a.iter().map(|x| x.to_f64()).sum())
}

/// Runs `f` on the f32 or f64 slice of `t`, wrapping the result back into a tensor of `shape`.
macro_rules! dispatch_float {
    ($t:expr, $op:expr, |$s:ident| $body:expr) => {{
        match $t.dtype() {
            crate::tensor::DType::F32 => {
                let $s = $t.as_slice::<f32>()?;
                $body
            }
            crate::tensor::DType::F64 => {
                let $s = $t.as_slice::<f64>()?;
                $body
            }
            other => {
                return Err(crate::Error::DType(format!("{}: the CPU backend computes in f32 or f64, got {other}", $op)))
            }
        }
    }};
}
pub(crate) use dispatch_float;

pub fn check_same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        return Err(Error::Shape(format!(
            "{op}: operands {} {} and {} {} differ",
            a.shape(),
            a.dtype(),
            b.shape(),
            b.dtype()
        )));
    }
    Ok(())
}
