//! The CPU backend: the reference every other backend is tested against. f32 and f64, multithreaded with
//! rayon; every output element is produced by one task in a fixed order, so results are bit-identical
//! for a given input whatever the thread count.

mod amp;
mod batch_norm;
mod channels;
pub mod conv;
mod dropout;
mod elementwise;
pub mod gemm;
mod half;
mod head;
mod input;
mod optim;
mod prelu;
mod reduce;

#[cfg(test)]
mod determinism_tests;

use super::{
    AdamWStep, Backend, BatchNormSaved, BinaryOp, Conv2dParams, MarginHeadCall, MarginHeadOutput, SgdStep,
    UnaryOp,
};
use crate::tensor::{CpuStorage, DType, Device, Element, Float, Shape, Tensor};
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

/// The last dim of `x` (its channels), or a shape error for a scalar.
fn channels(op: &str, x: &Tensor) -> Result<usize> {
    x.dims()
        .last()
        .copied()
        .ok_or_else(|| Error::Shape(format!("{op}: needs a tensor of rank >= 1, got a scalar")))
}

/// Errors unless `v` is a vector `[len]` (a per-channel or per-row parameter).
fn check_vector(op: &str, what: &str, v: &Tensor, len: usize) -> Result<()> {
    if v.dims() != [len] {
        return Err(Error::Shape(format!("{op}: {what} must have shape [{len}], got {}", v.shape())));
    }
    Ok(())
}

fn check_dims(op: &str, what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return Err(Error::Shape(format!("{op}: {what} must have shape {want:?}, got {}", t.shape())));
    }
    Ok(())
}

/// Optional tensor as an optional slice of `T`.
fn opt_slice<T: Element>(t: Option<&Tensor>) -> Result<Option<&[T]>> {
    t.map(|t| t.as_slice::<T>()).transpose()
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
            wrap(elementwise::map(x, |v| al * v + be), a.shape().clone())
        })
    }

    fn sum_all(&self, a: &Tensor) -> Result<Tensor> {
        dispatch_float!(a, "sum_all", |x| wrap(vec![elementwise::sum_all(x)], Shape(vec![])))
    }

    fn sum_rows(&self, a: &Tensor) -> Result<Tensor> {
        let c = *a.dims().last().ok_or_else(|| Error::Shape("sum_rows of a scalar".into()))?;
        dispatch_float!(a, "sum_rows", |x| {
            let acc = elementwise::sum_rows(x, c);
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

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        let g = conv::Geometry::new(x.dims(), w.dims(), p)?;
        dispatch_float!(x, "conv2d_forward", |xs| {
            let mut y = vec![like(xs, 0.0); g.n * g.pixels_out() * g.o];
            conv::forward(&g, xs, w.as_slice()?, &mut y);
            wrap(y, [g.n, g.ho, g.wo, g.o])
        })
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        let g = conv::Geometry::new(x_shape.dims(), w.dims(), p)?;
        check_dims("conv2d_backward_data", "dy", dy, &[g.n, g.ho, g.wo, g.o])?;
        dispatch_float!(dy, "conv2d_backward_data", |dys| {
            let mut dx = vec![like(dys, 0.0); x_shape.numel()];
            conv::backward_data(&g, dys, w.as_slice()?, &mut dx);
            wrap(dx, x_shape.clone())
        })
    }

    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        let g = conv::Geometry::new(x.dims(), w_shape.dims(), p)?;
        check_dims("conv2d_backward_filter", "dy", dy, &[g.n, g.ho, g.wo, g.o])?;
        dispatch_float!(dy, "conv2d_backward_filter", |dys| {
            let mut dw = vec![like(dys, 0.0); w_shape.numel()];
            conv::backward_filter(&g, dys, x.as_slice()?, &mut dw);
            wrap(dw, w_shape.clone())
        })
    }

    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let op = "batch_norm_forward_train";
        let c = channels(op, x)?;
        for (name, t) in [("gamma", gamma), ("beta", beta)] {
            if let Some(t) = t {
                check_vector(op, name, t, c)?;
            }
        }
        if x.numel() == 0 {
            return Err(Error::Shape(format!("{op}: empty input {}", x.shape())));
        }
        dispatch_float!(x, op, |xs| {
            let st = batch_norm::batch_stats(xs, c);
            let invstd: Vec<f64> = st.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
            let (center, scale, shift) =
                batch_norm::coefficients(&st.mean, &invstd, opt_slice(gamma)?, opt_slice(beta)?);
            let y = batch_norm::normalize(xs, &center, &scale, &shift);
            let to_t = |v: &[f64]| wrap(v.iter().map(|&a| like(xs, a)).collect::<Vec<_>>(), [c]);
            let saved = BatchNormSaved {
                mean: to_t(&st.mean)?,
                var: to_t(&st.var)?,
                invstd: to_t(&invstd)?,
                pre_activation: None,
            };
            Ok((wrap(y, x.shape().clone())?, saved))
        })
    }

    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "batch_norm_forward_eval";
        let c = channels(op, x)?;
        for (name, t) in [
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", Some(running_mean)),
            ("running_var", Some(running_var)),
        ] {
            if let Some(t) = t {
                check_vector(op, name, t, c)?;
            }
        }
        dispatch_float!(x, op, |xs| {
            let rm = running_mean.to_f64_vec()?;
            let rv = running_var.to_f64_vec()?;
            let invstd: Vec<f64> = rv.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
            let (center, scale, shift) =
                batch_norm::coefficients(&rm, &invstd, opt_slice(gamma)?, opt_slice(beta)?);
            wrap(batch_norm::normalize(xs, &center, &scale, &shift), x.shape().clone())
        })
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "batch_norm_backward";
        let c = channels(op, x)?;
        check_same_shape(op, dy, x)?;
        if let Some(g) = gamma {
            check_vector(op, "gamma", g, c)?;
        }
        check_vector(op, "saved mean", &saved.mean, c)?;
        check_vector(op, "saved invstd", &saved.invstd, c)?;
        dispatch_float!(x, op, |xs| {
            let (dx, dg, db) = batch_norm::backward_train(
                dy.as_slice()?,
                xs,
                opt_slice(gamma)?,
                saved.mean.as_slice()?,
                saved.invstd.as_slice()?,
            );
            Ok((wrap(dx, x.shape().clone())?, wrap(dg, [c])?, wrap(db, [c])?))
        })
    }

    fn prelu_forward(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        let c = channels("prelu", x)?;
        check_vector("prelu", "alpha", alpha, c)?;
        dispatch_float!(x, "prelu", |xs| wrap(prelu::forward(xs, alpha.as_slice()?), x.shape().clone()))
    }

    fn prelu_backward(&self, dy: &Tensor, x: &Tensor, alpha: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = channels("prelu_backward", x)?;
        check_vector("prelu_backward", "alpha", alpha, c)?;
        check_same_shape("prelu_backward", dy, x)?;
        dispatch_float!(x, "prelu_backward", |xs| {
            let (dx, da) = prelu::backward(dy.as_slice()?, xs, alpha.as_slice()?);
            Ok((wrap(dx, x.shape().clone())?, wrap(da, [c])?))
        })
    }

    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Invalid(format!("dropout: probability {p} is outside [0, 1]")));
        }
        dispatch_float!(x, "dropout", |xs| {
            let (y, mask) = dropout::apply(xs, p, seed);
            Ok((wrap(y, x.shape().clone())?, wrap(mask, x.shape().clone())?))
        })
    }

    fn l2_normalize_rows(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        let (rows, d) = x.shape().matrix("l2_normalize_rows")?;
        dispatch_float!(x, "l2_normalize_rows", |xs| {
            let (y, n) = channels::l2_normalize_rows(xs, d, eps);
            Ok((wrap(y, [rows, d])?, wrap(n, [rows])?))
        })
    }

    fn l2_normalize_rows_backward(&self, dy: &Tensor, y: &Tensor, norms: &Tensor) -> Result<Tensor> {
        self.l2_normalize_rows_backward_eps(dy, y, norms, 0.0)
    }

    fn l2_normalize_rows_backward_eps(
        &self,
        dy: &Tensor,
        y: &Tensor,
        norms: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let op = "l2_normalize_rows_backward";
        let (rows, _) = y.shape().matrix(op)?;
        check_same_shape(op, dy, y)?;
        check_vector(op, "norms", norms, rows)?;
        dispatch_float!(y, op, |ys| {
            wrap(
                channels::l2_normalize_rows_backward(dy.as_slice()?, ys, norms.as_slice()?, eps),
                y.shape().clone(),
            )
        })
    }

    fn mul_channels(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let c = channels("mul_channels", x)?;
        check_vector("mul_channels", "scale", s, c)?;
        dispatch_float!(x, "mul_channels", |xs| {
            wrap(channels::per_channel(xs, s.as_slice()?, |a, b| a * b), x.shape().clone())
        })
    }

    fn add_channels(&self, x: &Tensor, b: &Tensor) -> Result<Tensor> {
        let c = channels("add_channels", x)?;
        check_vector("add_channels", "bias", b, c)?;
        dispatch_float!(x, "add_channels", |xs| {
            wrap(channels::per_channel(xs, b.as_slice()?, |a, v| a + v), x.shape().clone())
        })
    }

    fn scale_rows(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let rows = *x.dims().first().ok_or_else(|| Error::Shape("scale_rows of a scalar".into()))?;
        check_vector("scale_rows", "scale", s, rows)?;
        dispatch_float!(x, "scale_rows", |xs| wrap(
            channels::scale_rows(xs, s.as_slice()?),
            x.shape().clone()
        ))
    }

    fn emulates_half(&self) -> bool {
        true
    }

    fn broadcast_scalar(&self, s: &Tensor, shape: &Shape) -> Result<Tensor> {
        Tensor::full(shape.clone(), s.scalar_value()?, s.dtype(), &Device::Cpu)
    }

    fn scale_by_scalar(&self, t: &Tensor, s: &Tensor) -> Result<Tensor> {
        let scale = s.scalar_value()?;
        if scale == 1.0 {
            return Ok(t.clone());
        }
        let v: Vec<f64> = t.to_f64_vec()?.into_iter().map(|e| e * scale).collect();
        Tensor::from_vec(v, t.shape().clone())?.to_dtype(t.dtype())
    }

    fn slice_rows(&self, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
        let rows = *t.dims().first().ok_or_else(|| Error::Shape("slice_rows of a scalar".into()))?;
        if r0 > r1 || r1 > rows {
            return Err(Error::Shape(format!("slice_rows {r0}..{r1} of {}", t.shape())));
        }
        let per_row = t.numel().checked_div(rows).unwrap_or(0);
        let all = t.to_f64_vec()?;
        let mut dims = t.dims().to_vec();
        dims[0] = r1 - r0;
        let part = CpuStorage::F64(all[r0 * per_row..r1 * per_row].to_vec()).cast(t.dtype());
        Tensor::from_cpu(dims, part)
    }

    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        let dims = super::stacked_dims(parts)?;
        let mut all = Vec::with_capacity(dims.iter().product());
        for p in parts {
            all.extend(p.to_f64_vec()?);
        }
        Tensor::from_cpu(dims, CpuStorage::F64(all).cast(parts[0].dtype()))
    }

    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        half::cast(t, dtype)
    }

    fn half_operand(&self, t: &Tensor, half: DType) -> Result<Tensor> {
        half::half_operand(t, half)
    }

    fn half_result(&self, t: Tensor, half: DType) -> Result<Tensor> {
        half::half_result(t, half)
    }

    fn widen(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn batch_norm_prelu_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, BatchNormSaved)> {
        // Exactly the two ops; the batch norm's output is kept for the PReLU backward.
        let (z, mut saved) = self.batch_norm_forward_train(x, gamma, beta, eps)?;
        let y = self.prelu_forward(&z, alpha)?;
        saved.pre_activation = Some(z);
        Ok((y, saved))
    }

    fn batch_norm_prelu_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        alpha: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let z = saved.pre_activation.as_ref().ok_or_else(|| {
            Error::Invalid("batch_norm_prelu_backward: the forward kept no batch-norm output".into())
        })?;
        let (dz, dalpha) = self.prelu_backward(dy, z, alpha)?;
        let (dx, dgamma, dbeta) = self.batch_norm_backward(&dz, x, gamma, saved)?;
        Ok((dx, dgamma, dbeta, dalpha))
    }

    fn sgd_step(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        buf: &mut Option<Tensor>,
        h: &SgdStep,
    ) -> Result<Option<Tensor>> {
        optim::sgd_step(p, g, buf, h)
    }

    fn adamw_step(
        &self,
        p: &mut Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        h: &AdamWStep,
    ) -> Result<Option<Tensor>> {
        optim::adamw_step(p, g, m, v, h)
    }

    fn first_nonfinite(&self, ts: &[&Tensor]) -> Result<Option<usize>> {
        amp::first_nonfinite(ts)
    }

    fn scale_and_check(&self, ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
        amp::scale_and_check(ts, factor)
    }

    fn sum_of_squares(&self, ts: &[&Tensor]) -> Result<f64> {
        amp::sum_of_squares(ts)
    }

    fn images_to_nhwc(
        &self,
        images: &[u8],
        shape: [usize; 4],
        flip: &[bool],
        dtype: DType,
    ) -> Result<Tensor> {
        input::images_to_nhwc(images, shape, flip, dtype)
    }

    fn margin_head(&self, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
        head::margin_head(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|i| i as f32 * 0.1).collect::<Vec<_>>(), shape).unwrap()
    }

    #[test]
    fn misshaped_operands_are_shape_errors_not_panics() {
        let be = CpuBackend;
        let p = Conv2dParams { kernel: 3, stride: 2, padding: 1 };
        let (x, w) = (t(&[2, 6, 6, 3]), t(&[4, 3, 3, 3]));
        let shape_err = |r: Result<Tensor>| matches!(r, Err(Error::Shape(_)));
        assert!(shape_err(be.conv2d_backward_data(&t(&[2, 6, 6, 4]), &w, x.shape(), p)));
        assert!(shape_err(be.conv2d_backward_filter(&t(&[2, 3, 3, 5]), &x, w.shape(), p)));
        assert!(shape_err(be.conv2d_forward(&x, &t(&[4, 3, 3, 2]), p)));
        let (y, saved) = be.batch_norm_forward_train(&x, None, None, 1e-5).unwrap();
        assert!(matches!(be.batch_norm_backward(&t(&[2, 6, 6, 2]), &x, None, &saved), Err(Error::Shape(_))));
        assert!(matches!(be.batch_norm_forward_train(&x, Some(&t(&[4])), None, 1e-5), Err(Error::Shape(_))));
        assert!(shape_err(be.batch_norm_forward_eval(&y, None, None, &t(&[3]), &t(&[2]), 1e-5)));
        assert!(shape_err(be.prelu_forward(&x, &t(&[2]))));
        assert!(matches!(be.l2_normalize_rows(&x, 1e-12), Err(Error::Shape(_))));
        assert!(shape_err(be.scale_rows(&x, &t(&[3]))));
        assert!(shape_err(be.mul_channels(&x, &t(&[2]))));
        assert!(shape_err(be.add_channels(&x, &t(&[6]))));
        assert!(matches!(be.dropout(&x, -0.1, 1), Err(Error::Invalid(_))));
        let w64 = w.to_dtype(DType::F64).unwrap();
        assert!(matches!(be.conv2d_forward(&x, &w64, p), Err(Error::DType(_))));
    }
}
