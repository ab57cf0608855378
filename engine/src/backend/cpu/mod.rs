//! The CPU backend: the reference every other backend is tested against. f32 and f64, multithreaded with
//! rayon; every output element is produced by one task in a fixed order, so results are bit-identical
//! for a given input whatever the thread count.

mod elementwise;
pub mod gemm;

use super::{Backend, BinaryOp, UnaryOp};
use crate::tensor::{CpuStorage, DType, Element, Float, Shape, Tensor};
use crate::{Error, Result};
use elementwise::{check_same_shape, dispatch_float};

pub struct CpuBackend;

/// `v` converted to the element type of `_slice` (lets `dispatch_float!` bodies stay generic).
pub(crate) fn like<T: Float>(_slice: &[T], v: f64) -> T {
    T::from_f64(v)
}

fn wrap<T: Element>(v: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape)
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor> {
        Tensor::from_cpu(shape.clone(), CpuStorage::zeros(dtype, shape.numel()))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        check_same_shape("binary", a, b)?;
        dispatch_float!(a, "binary", |x| wrap(elementwise::binary(op, x, b.as_slice()?), a.shape().clone()))
    }

    fn unary(&self, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        dispatch_float!(a, "unary", |x| wrap(elementwise::unary(op, x), a.shape().clone()))
    }

    fn affine(&self, a: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
        dispatch_float!(a, "affine", |x| {
            let (al, be) = (like(x, alpha), like(x, beta));
            wrap(x.iter().map(|&v| al * v + be).collect::<Vec<_>>(), a.shape().clone())
        })
    }

    fn sum_all(&self, a: &Tensor) -> Result<Tensor> {
        dispatch_float!(a, "sum_all", |x| wrap(vec![elementwise::sum_all(x)], Shape(vec![])))
    }

    fn sum_rows(&self, a: &Tensor) -> Result<Tensor> {
        let c = *a.dims().last().ok_or_else(|| Error::Shape("sum_rows of a scalar".into()))?;
        dispatch_float!(a, "sum_rows", |x| {
            let mut acc = vec![0.0f64; c];
            for row in x.chunks(c.max(1)) {
                for (s, v) in acc.iter_mut().zip(row) {
                    *s += crate::tensor::Float::to_f64(*v);
                }
            }
            wrap(acc.into_iter().map(|v| like(x, v)).collect::<Vec<_>>(), [c])
        })
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let (ar, ac) = a.shape().matrix("matmul")?;
        let (br, bc) = b.shape().matrix("matmul")?;
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
        if k != k2 || a.dtype() != b.dtype() {
            return Err(Error::Shape(format!(
                "matmul: {} {} (transposed: {trans_a}) and {} {} (transposed: {trans_b})",
                a.shape(),
                a.dtype(),
                b.shape(),
                b.dtype()
            )));
        }
        dispatch_float!(a, "matmul", |x| {
            let mut c = vec![like(x, 0.0); m * n];
            gemm::gemm(m, k, n, x, trans_a, b.as_slice()?, trans_b, &mut c, false);
            wrap(c, [m, n])
        })
    }
}
