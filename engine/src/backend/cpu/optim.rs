//! The optimizer updates on host slices, f32 or f64: the reference of kernels/cuda/optim.cu. torch.optim
//! semantics (see `crate::optim::{sgd, adamw}` for the formulas); every hyper-parameter is converted to
//! the element type once, so the arithmetic is the element type's. Tensor by tensor, in order.

use super::amp::all_finite;
use crate::backend::{AdamWParam, AdamWStep, SgdParam, SgdStep, Updated};
use crate::tensor::{DType, Element, Float, Tensor};
use crate::{Error, Result};
use std::borrow::Cow;

fn float_kind(t: &Tensor, who: &str) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        d => Err(Error::Unsupported(format!("{who}: the CPU update handles f32/f64 tensors, got {d}"))),
    }
}

/// The gradient as the update reads it: times `grad_scale` unless that is 1.
fn scaled<'a, T: Float + Element>(g: &'a Tensor, grad_scale: f64) -> Result<Cow<'a, [T]>> {
    let g = g.as_slice::<T>()?;
    if grad_scale == 1.0 {
        return Ok(Cow::Borrowed(g));
    }
    let s = T::from_f64(grad_scale);
    Ok(Cow::Owned(g.iter().map(|&v| v * s).collect()))
}

/// A 16-bit gradient widened to f32 (as the CUDA kernels read one); any other as it is.
fn widened(g: &Tensor) -> Result<Cow<'_, Tensor>> {
    match g.dtype() {
        DType::BF16 | DType::F16 => Ok(Cow::Owned(super::half::cast(g, DType::F32)?)),
        _ => Ok(Cow::Borrowed(g)),
    }
}

/// The new weights as a 16-bit GEMM operand, where asked.
fn half_copy(p: &Tensor, half: Option<DType>) -> Result<Option<Tensor>> {
    half.map(|d| super::half::half_operand(p, d)).transpose()
}

fn sgd_slices<T: Float + Element>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &Hyper) {
    let (lr, wd, mom, damp) = (
        T::from_f64(h.lr),
        T::from_f64(h.weight_decay),
        T::from_f64(h.momentum),
        T::from_f64(1.0 - h.dampening),
    );
    let decay = wd != T::ZERO;
    match buf {
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                let d = if decay { g + wd * *p } else { g };
                *p -= lr * d;
            }
        }
        Some(b) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                let d = if decay { g + wd * *p } else { g };
                *b = mom * *b + damp * d;
                let step = if h.nesterov { d + mom * *b } else { *b };
                *p -= lr * step;
            }
        }
    }
}

/// First step of a momentum buffer: torch clones d_p (no dampening), then updates p with it.
fn sgd_first_step<T: Float + Element>(p: &mut [T], g: &[T], h: &Hyper) -> Vec<T> {
    let (lr, wd, mom) = (T::from_f64(h.lr), T::from_f64(h.weight_decay), T::from_f64(h.momentum));
    let mut buf = Vec::with_capacity(p.len());
    for (p, &g) in p.iter_mut().zip(g) {
        let d = if wd != T::ZERO { g + wd * *p } else { g };
        buf.push(d);
        let step = if h.nesterov { d + mom * d } else { d };
        *p -= lr * step;
    }
    buf
}

/// One tensor's SGD numbers: the shared ones and its group's.
struct Hyper {
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    grad_scale: f64,
}

fn sgd_typed<T: Float + Element>(
    p: &mut Tensor,
    g: &Tensor,
    buf: &mut Option<Tensor>,
    h: &Hyper,
) -> Result<()> {
    let g = scaled::<T>(g, h.grad_scale)?;
    let shape = p.shape().clone();
    let ps = p.as_mut_slice::<T>()?;
    if h.momentum == 0.0 {
        sgd_slices(ps, &g, None, h);
        return Ok(());
    }
    match buf {
        Some(b) => sgd_slices(ps, &g, Some(b.as_mut_slice::<T>()?), h),
        None => *buf = Some(Tensor::from_vec(sgd_first_step(ps, &g, h), shape)?),
    }
    Ok(())
}

/// The flags of `Updated`: 1 where a tensor's new weights or state are not all finite.
fn flags(bad: Vec<bool>) -> Result<Tensor> {
    let n = bad.len();
    Tensor::from_vec(bad.into_iter().map(|b| b as u8 as f32).collect::<Vec<f32>>(), [n])
}

pub fn sgd_update(params: &mut [SgdParam<'_>], s: &SgdStep) -> Result<Updated> {
    let mut copies = Vec::with_capacity(params.len());
    let mut bad = Vec::with_capacity(params.len());
    for q in params.iter_mut() {
        let h = Hyper {
            lr: q.lr,
            weight_decay: q.weight_decay,
            momentum: s.momentum,
            dampening: s.dampening,
            nesterov: s.nesterov,
            grad_scale: s.grad_scale,
        };
        let g = widened(q.g)?;
        match float_kind(q.p, "sgd")? {
            DType::F32 => sgd_typed::<f32>(q.p, &g, q.buf, &h)?,
            _ => sgd_typed::<f64>(q.p, &g, q.buf, &h)?,
        }
        copies.push(half_copy(q.p, q.half_copy)?);
        bad.push(!all_finite(q.p)? || !q.buf.as_ref().map_or(Ok(true), all_finite)?);
    }
    Ok(Updated { half_copies: copies, nonfinite: flags(bad)? })
}

fn adamw_typed<T: Float + Element>(q: &mut AdamWParam<'_>, g: &Tensor, h: &AdamWStep) -> Result<()> {
    let t = q.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
    let f = T::from_f64;
    let (decay, b1, b2, eps) = (f(1.0 - q.lr * q.weight_decay), f(h.beta1), f(h.beta2), f(h.eps));
    let (step_size, bc2_sqrt) = (f(q.lr / bc1), f(bc2_sqrt));
    let g = scaled::<T>(g, h.grad_scale)?;
    let ea = q.m.as_mut_slice::<T>()?;
    let ev = q.v.as_mut_slice::<T>()?;
    let p = q.p.as_mut_slice::<T>()?;
    for i in 0..p.len() {
        p[i] *= decay;
        ea[i] += (T::ONE - b1) * (g[i] - ea[i]);
        ev[i] = b2 * ev[i] + (T::ONE - b2) * g[i] * g[i];
        let denom = ev[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step_size * ea[i] / denom;
    }
    Ok(())
}

pub fn adamw_update(params: &mut [AdamWParam<'_>], h: &AdamWStep) -> Result<Updated> {
    let mut copies = Vec::with_capacity(params.len());
    let mut bad = Vec::with_capacity(params.len());
    for q in params.iter_mut() {
        if q.step == 0 {
            return Err(Error::Invalid("adamw: step numbers start at 1".into()));
        }
        let g = widened(q.g)?.into_owned();
        match float_kind(q.p, "adamw")? {
            DType::F32 => adamw_typed::<f32>(q, &g, h)?,
            _ => adamw_typed::<f64>(q, &g, h)?,
        }
        copies.push(half_copy(q.p, q.half_copy)?);
        bad.push(!(all_finite(q.p)? && all_finite(q.m)? && all_finite(q.v)?));
    }
    Ok(Updated { half_copies: copies, nonfinite: flags(bad)? })
}
