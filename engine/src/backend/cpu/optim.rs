//! The optimizer updates on host slices, f32 or f64: the reference of kernels/cuda/optim.cu. torch.optim
//! semantics (see `crate::optim::{sgd, adamw}` for the formulas); every hyper-parameter is converted to
//! the element type once, so the arithmetic is the element type's.

use crate::backend::{AdamWStep, SgdStep};
use crate::tensor::{DType, Element, Float, Tensor};
use crate::{Error, Result};

fn float_kind(t: &Tensor, who: &str) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        d => Err(Error::Unsupported(format!("{who}: the CPU update handles f32/f64 tensors, got {d}"))),
    }
}

/// The gradient as the update reads it: times `grad_scale` unless that is 1.
fn scaled<'a, T: Float + Element>(g: &'a Tensor, grad_scale: f64) -> Result<std::borrow::Cow<'a, [T]>> {
    let g = g.as_slice::<T>()?;
    if grad_scale == 1.0 {
        return Ok(std::borrow::Cow::Borrowed(g));
    }
    let s = T::from_f64(grad_scale);
    Ok(std::borrow::Cow::Owned(g.iter().map(|&v| v * s).collect()))
}

fn bf16_copy(p: &Tensor, want: bool) -> Result<Option<Tensor>> {
    want.then(|| super::half::cast(p, DType::BF16)).transpose()
}

fn sgd_update<T: Float + Element>(p: &mut [T], g: &[T], buf: Option<&mut [T]>, h: &SgdStep) {
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
fn sgd_first_step<T: Float + Element>(p: &mut [T], g: &[T], h: &SgdStep) -> Vec<T> {
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

fn sgd_typed<T: Float + Element>(
    p: &mut Tensor,
    g: &Tensor,
    buf: &mut Option<Tensor>,
    h: &SgdStep,
) -> Result<()> {
    let g = scaled::<T>(g, h.grad_scale)?;
    let shape = p.shape().clone();
    let ps = p.as_mut_slice::<T>()?;
    if h.momentum == 0.0 {
        sgd_update(ps, &g, None, h);
        return Ok(());
    }
    match buf {
        Some(b) => sgd_update(ps, &g, Some(b.as_mut_slice::<T>()?), h),
        None => *buf = Some(Tensor::from_vec(sgd_first_step(ps, &g, h), shape)?),
    }
    Ok(())
}

pub fn sgd_step(p: &mut Tensor, g: &Tensor, buf: &mut Option<Tensor>, h: &SgdStep) -> Result<Option<Tensor>> {
    match float_kind(g, "sgd")? {
        DType::F32 => sgd_typed::<f32>(p, g, buf, h)?,
        _ => sgd_typed::<f64>(p, g, buf, h)?,
    }
    bf16_copy(p, h.bf16_copy)
}

fn adamw_typed<T: Float + Element>(
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: &AdamWStep,
) -> Result<()> {
    let t = h.step as i32;
    let bc1 = 1.0 - h.beta1.powi(t);
    let bc2_sqrt = (1.0 - h.beta2.powi(t)).sqrt();
    let f = T::from_f64;
    let (decay, b1, b2, eps) = (f(1.0 - h.lr * h.weight_decay), f(h.beta1), f(h.beta2), f(h.eps));
    let (step_size, bc2_sqrt) = (f(h.lr / bc1), f(bc2_sqrt));
    let g = scaled::<T>(g, h.grad_scale)?;
    let ea = m.as_mut_slice::<T>()?;
    let ev = v.as_mut_slice::<T>()?;
    let p = p.as_mut_slice::<T>()?;
    for i in 0..p.len() {
        p[i] *= decay;
        ea[i] += (T::ONE - b1) * (g[i] - ea[i]);
        ev[i] = b2 * ev[i] + (T::ONE - b2) * g[i] * g[i];
        let denom = ev[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step_size * ea[i] / denom;
    }
    Ok(())
}

pub fn adamw_step(
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    h: &AdamWStep,
) -> Result<Option<Tensor>> {
    if h.step == 0 {
        return Err(Error::Invalid("adamw: step numbers start at 1".into()));
    }
    match float_kind(g, "adamw")? {
        DType::F32 => adamw_typed::<f32>(p, g, m, v, h)?,
        _ => adamw_typed::<f64>(p, g, m, v, h)?,
    }
    bf16_copy(p, h.bf16_copy)
}
