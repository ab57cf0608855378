//! Elementwise maps and reductions on the CPU.

use super::reduce::{reduce_rows, ELEMS_PER_TASK};
use crate::backend::{BinaryOp, UnaryOp};
use crate::tensor::{Float, Tensor};
use crate::{Error, Result};
use rayon::prelude::*;

/// out[i] = f(a[i]) in parallel blocks (each element alone, so the blocking does not affect results).
pub fn map<T: Float>(a: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; a.len()];
    out.par_chunks_mut(ELEMS_PER_TASK).zip(a.par_chunks(ELEMS_PER_TASK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    });
    out
}

/// out[i] = f(a[i], b[i]) in parallel blocks.
pub fn zip_map<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; a.len()];
    out.par_chunks_mut(ELEMS_PER_TASK)
        .zip(a.par_chunks(ELEMS_PER_TASK).zip(b.par_chunks(ELEMS_PER_TASK)))
        .for_each(|(o, (x, y))| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = f(x, y);
            }
        });
    out
}

/// Per-channel sums over the rows of `[rows, c]`, in f64 (fixed row blocks, deterministic).
pub fn sum_rows<T: Float>(a: &[T], c: usize) -> Vec<f64> {
    let rows = a.len().checked_div(c).unwrap_or(0);
    reduce_rows(rows, c, |r, acc| {
        for row in a[r.start * c..r.end * c].chunks_exact(c) {
            for (s, v) in acc.iter_mut().zip(row) {
                *s += v.to_f64();
            }
        }
    })
}

pub fn binary<T: Float + crate::tensor::Element>(op: BinaryOp, a: &[T], b: &[T]) -> Vec<T> {
    let f = match op {
        BinaryOp::Add => |x: T, y: T| x + y,
        BinaryOp::Sub => |x: T, y: T| x - y,
        BinaryOp::Mul => |x: T, y: T| x * y,
        BinaryOp::Div => |x: T, y: T| x / y,
    };
    zip_map(a, b, f)
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
    map(a, f)
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
                return Err(crate::Error::DType(format!(
                    "{}: the CPU backend computes in f32 or f64, got {other}",
                    $op
                )))
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
