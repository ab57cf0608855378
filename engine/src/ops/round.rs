//! Half-precision rounding on the tape: the explicit `round_to` cast op, and the helpers through which
//! the GEMM-running ops (conv2d, linear, matmul) honour the tape's autocast type. Without an autocast
//! type the helpers hand back the very tensors they were given (no copy, no change); with one, the
//! tensor's backend decides how it holds a 16-bit operand (`Backend::half_operand`: rounded f32 values
//! where 16 bits are emulated, as on the CPU; the real 16-bit type on a GPU; the same values either way).

use crate::tape::{Tape, Var};
use crate::tensor::half_round::round_tensor;
use crate::tensor::{DType, Tensor};
use crate::Result;
use std::borrow::Cow;

/// `x` rounded to `dtype` (f16 or bf16), kept in `x`'s dtype: what storing it in half precision does.
/// The backward is the identity followed by the same rounding (the gradient is stored in half too).
pub fn round_to(tape: &mut Tape, x: Var, dtype: DType) -> Result<Var> {
    let out = round_tensor(tape.value(x), dtype)?;
    Ok(tape.push(out, &[x], Box::new(move |g: &Tensor| Ok(vec![Some(round_tensor(g, dtype)?)]))))
}

/// An operand as a half-precision GEMM reads it under autocast (`Backend::half_operand`); without
/// autocast, `t` itself.
pub(crate) fn operand(t: &Tensor, half: Option<DType>) -> Result<Cow<'_, Tensor>> {
    match half {
        None => Ok(Cow::Borrowed(t)),
        Some(d) => Ok(Cow::Owned(t.backend().half_operand(t, d)?)),
    }
}

/// A GEMM's result as stored in half precision, handed on as f32 (`Backend::half_result`).
pub(crate) fn result(t: Tensor, half: Option<DType>) -> Result<Tensor> {
    let Some(d) = half else { return Ok(t) };
    let dev = t.device();
    crate::backend::for_device(&dev).half_result(t, d)
}

/// The f32 view of a tensor an autocast op holds, for the parts of the op that stay f32 (the bias).
pub(crate) fn widen(t: &Tensor) -> Result<Cow<'_, Tensor>> {
    Ok(Cow::Owned(t.backend().widen(t)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops;
    use crate::rng::Rng;
    use crate::tape::gradcheck::{random_projection, rel_error};

    fn randn(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| scale * r.normal()).collect()
    }

    /// L = sum(p · round(x)). Its tape gradient must be round(p) (identity, then rounded), which is the
    /// finite-difference gradient of the smooth L' = sum(round(p) · x) in f64.
    fn check_backward(dtype: DType, p_scale: f64) -> (Vec<f64>, f64) {
        let x = Tensor::from_vec(randn(24, 1, 1.0), [4, 6]).unwrap();
        let p = Tensor::from_vec(randn(24, 2, p_scale), [4, 6]).unwrap();
        let mut tape = Tape::new();
        let vx = tape.leaf(x.clone());
        let vp = tape.constant(p.clone());
        let r = round_to(&mut tape, vx, dtype).unwrap();
        let prod = ops::mul(&mut tape, r, vp).unwrap();
        let loss = ops::sum_all(&mut tape, prod).unwrap();
        let analytic = tape.backward(loss).unwrap().get(vx).unwrap().to_f64_vec().unwrap();

        let rp = round_tensor(&p, dtype).unwrap().to_f64_vec().unwrap();
        let smooth = |xs: &[f64]| xs.iter().zip(&rp).map(|(a, b)| a * b).sum::<f64>();
        let (h, mut xs) = (1e-6, x.to_f64_vec().unwrap());
        let numeric: Vec<f64> = (0..xs.len())
            .map(|i| {
                let o = xs[i];
                xs[i] = o + h;
                let plus = smooth(&xs);
                xs[i] = o - h;
                let minus = smooth(&xs);
                xs[i] = o;
                (plus - minus) / (2.0 * h)
            })
            .collect();
        let finite: Vec<f64> = analytic.iter().copied().filter(|v| v.is_finite()).collect();
        let err = if finite.len() == analytic.len() { rel_error(&analytic, &numeric) } else { f64::INFINITY };
        (analytic, err)
    }

    #[test]
    fn backward_is_identity_then_round_by_finite_differences() {
        for dtype in [DType::F16, DType::BF16] {
            let (g, err) = check_backward(dtype, 1.0);
            assert!(err < 1e-8, "{dtype}: {err:e}");
            // The gradient really is rounded: every element sits on the 16-bit grid.
            assert!(g.iter().all(|&v| crate::tensor::half_round::round_f64(v, dtype) == v));
        }
        // Gradients beyond fp16's range overflow to infinity in the backward, as fp16 storage would...
        let (g, _) = check_backward(DType::F16, 1e5);
        assert!(g.iter().any(|v| v.is_infinite()), "no fp16 gradient overflowed");
        // ...and stay finite in bf16, which has f32's range.
        let (_, err) = check_backward(DType::BF16, 1e5);
        assert!(err < 1e-8, "{err:e}");
    }

    #[test]
    fn forward_rounds_and_a_full_precision_tape_changes_nothing() {
        let x = Tensor::from_vec(vec![1.0f32 + 1.0 / 4096.0, 1e5, -3.0], [3]).unwrap();
        let mut tape = Tape::new();
        let v = tape.leaf(x.clone());
        let r = round_to(&mut tape, v, DType::F16).unwrap();
        assert_eq!(tape.value(r).to_vec::<f32>().unwrap(), vec![1.0, f32::INFINITY, -3.0]);
        assert!(matches!(operand(&x, None).unwrap(), Cow::Borrowed(_)));
        let same = result(x.clone(), None).unwrap();
        assert!(same.same_storage(&x));
        assert!(round_to(&mut tape, v, DType::F32).is_err());
    }

    #[test]
    fn autocast_rounds_linear_operands_outputs_and_gradients() {
        // Against a reference built from explicit round_to ops around a full-precision linear layer.
        let x = Tensor::from_vec(randn(5 * 7, 3, 1.0), [5, 7]).unwrap().to_dtype(DType::F32).unwrap();
        let w = Tensor::from_vec(randn(3 * 7, 4, 1.0), [3, 7]).unwrap().to_dtype(DType::F32).unwrap();
        let b = Tensor::from_vec(randn(3, 5, 1.0), [3]).unwrap().to_dtype(DType::F32).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let run = |auto: bool| {
                let mut t = Tape::new();
                let (vx, vw, vb) = (t.leaf(x.clone()), t.leaf(w.clone()), t.leaf(b.clone()));
                let y = if auto {
                    t.set_autocast(Some(dtype)).unwrap();
                    ops::linear(&mut t, vx, vw, Some(vb)).unwrap()
                } else {
                    let rx = round_to(&mut t, vx, dtype).unwrap();
                    let rw = round_to(&mut t, vw, dtype).unwrap();
                    let rb = round_to(&mut t, vb, dtype).unwrap();
                    let y = ops::linear(&mut t, rx, rw, Some(rb)).unwrap();
                    round_to(&mut t, y, dtype).unwrap()
                };
                let l = random_projection(&mut t, y, 6).unwrap();
                let g = t.backward(l).unwrap();
                let mut out = vec![t.value(y).to_vec::<f32>().unwrap()];
                for v in [vx, vw, vb] {
                    out.push(g.get(v).unwrap().to_vec::<f32>().unwrap());
                }
                out
            };
            let (a, r) = (run(true), run(false));
            // Output and every gradient identical bit for bit.
            assert!(a == r, "{dtype}: autocast linear differs from explicit rounding");
            let plain = {
                let mut t = Tape::new();
                let (vx, vw, vb) = (t.leaf(x.clone()), t.leaf(w.clone()), t.leaf(b.clone()));
                let y = ops::linear(&mut t, vx, vw, Some(vb)).unwrap();
                t.value(y).to_vec::<f32>().unwrap()
            };
            assert!(a[0] != plain, "{dtype}: autocast left the output unrounded");
        }
    }

    #[test]
    fn autocast_rounds_matmul_like_explicit_rounding() {
        let a = Tensor::from_vec(randn(4 * 6, 11, 1.0), [4, 6]).unwrap().to_dtype(DType::F32).unwrap();
        let b = Tensor::from_vec(randn(6 * 5, 12, 1.0), [6, 5]).unwrap().to_dtype(DType::F32).unwrap();
        let run = |half: Option<DType>, explicit: bool| {
            let mut t = Tape::new();
            let (va, vb) = (t.leaf(a.clone()), t.leaf(b.clone()));
            let y = match (half, explicit) {
                (Some(d), true) => {
                    let (ra, rb) = (round_to(&mut t, va, d).unwrap(), round_to(&mut t, vb, d).unwrap());
                    let y = ops::matmul(&mut t, ra, rb).unwrap();
                    round_to(&mut t, y, d).unwrap()
                }
                _ => {
                    t.set_autocast(half).unwrap();
                    ops::matmul(&mut t, va, vb).unwrap()
                }
            };
            let l = random_projection(&mut t, y, 13).unwrap();
            let g = t.backward(l).unwrap();
            [t.value(y), g.get(va).unwrap(), g.get(vb).unwrap()].map(|x| x.to_vec::<f32>().unwrap())
        };
        let full = run(None, false);
        for d in [DType::F16, DType::BF16] {
            let auto = run(Some(d), false);
            assert!(auto == run(Some(d), true), "{d}: autocast matmul differs from explicit rounding");
            assert!(auto.iter().zip(&full).all(|(x, f)| x != f), "{d}: a tensor was left unrounded");
        }
    }

    #[test]
    fn autocast_rounds_conv_operands_outputs_and_gradients() {
        let p = crate::backend::Conv2dParams { kernel: 3, stride: 1, padding: 1 };
        let x = Tensor::from_vec(randn(2 * 5 * 5 * 3, 7, 1.0), [2, 5, 5, 3])
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let w =
            Tensor::from_vec(randn(4 * 9 * 3, 8, 1.0), [4, 3, 3, 3]).unwrap().to_dtype(DType::F32).unwrap();
        let run = |half: Option<DType>, explicit: bool| {
            let mut t = Tape::new();
            let (vx, vw) = (t.leaf(x.clone()), t.leaf(w.clone()));
            let y = match (half, explicit) {
                (Some(d), true) => {
                    let (rx, rw) = (round_to(&mut t, vx, d).unwrap(), round_to(&mut t, vw, d).unwrap());
                    let y = ops::conv2d(&mut t, rx, rw, p).unwrap();
                    round_to(&mut t, y, d).unwrap()
                }
                _ => {
                    t.set_autocast(half).unwrap();
                    ops::conv2d(&mut t, vx, vw, p).unwrap()
                }
            };
            let l = random_projection(&mut t, y, 9).unwrap();
            let g = t.backward(l).unwrap();
            vec![
                t.value(y).to_vec::<f32>().unwrap(),
                g.get(vx).unwrap().to_vec::<f32>().unwrap(),
                g.get(vw).unwrap().to_vec::<f32>().unwrap(),
            ]
        };
        let full = run(None, false);
        for d in [DType::F16, DType::BF16] {
            let auto = run(Some(d), false);
            assert!(auto == run(Some(d), true), "{d}: autocast conv differs from explicit rounding");
            for (a, f) in auto.iter().zip(&full) {
                assert!(a != f, "{d}: a tensor was left unrounded");
                let (a64, f64v): (Vec<f64>, Vec<f64>) =
                    (a.iter().map(|&v| v as f64).collect(), f.iter().map(|&v| v as f64).collect());
                // Within a few half-precision rounding steps of the full-precision values.
                let tol = if d == DType::F16 { 4e-3 } else { 3e-2 };
                assert!(rel_error(&a64, &f64v) < tol, "{d}: {}", rel_error(&a64, &f64v));
            }
        }
    }
}
