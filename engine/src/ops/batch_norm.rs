//! Batch normalization over the last dim (BatchNorm2d on NHWC, BatchNorm1d on `[N, C]`), as torch: the
//! batch is normalized with the biased variance; the running variance is updated with the unbiased one.

use super::{autocast_store, same_device_and_dtype};
use crate::backend::{BatchNormSaved, BinaryOp, BnSums, UnaryOp, UpstreamBn};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// A training batch norm's running statistics, which its forward updates (torch's momentum rule).
pub use crate::backend::RunningStats as Running;

/// Rows of the `[rows, C]` view of `x`, and C.
fn rows_and_channels(op: &str, x: &Tensor) -> Result<(usize, usize)> {
    if x.shape().rank() < 2 {
        return Err(Error::Shape(format!("{op}: expected [N, C] or NHWC input, got {}", x.shape())));
    }
    let c = *x.dims().last().expect("rank >= 2");
    Ok((x.numel() / c.max(1), c))
}

fn check_param(op: &str, what: &str, t: &Tensor, c: usize) -> Result<()> {
    if t.dims() != [c] {
        return Err(Error::Shape(format!("{op}: {what} must have shape [{c}], got {}", t.shape())));
    }
    Ok(())
}

/// The inputs of a training batch norm, checked: (tape inputs, x, gamma, beta, rows).
#[allow(clippy::type_complexity)]
pub(super) fn train_inputs(
    tape: &Tape,
    op: &str,
    x: Var,
    gamma: Option<Var>,
    beta: Option<Var>,
) -> Result<(Vec<Var>, Tensor, Option<Tensor>, Option<Tensor>, usize)> {
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    same_device_and_dtype(tape, op, &inputs)?;
    let tx = tape.value(x).clone();
    let (rows, c) = rows_and_channels(op, &tx)?;
    if rows < 2 {
        return Err(Error::Shape(format!(
            "{op}: training needs more than one value per channel, got input {}",
            tx.shape()
        )));
    }
    let tg = gamma.map(|g| tape.value(g).clone());
    let tb = beta.map(|b| tape.value(b).clone());
    for (name, t) in [("gamma", &tg), ("beta", &tb)] {
        if let Some(t) = t {
            check_param(op, name, t, c)?;
        }
    }
    Ok((inputs, tx, tg, tb, rows))
}

/// The gradients of (x, gamma, beta) a training batch norm's backward returns, the affine ones as present.
pub(super) fn train_grads(
    dx: Tensor,
    dg: Tensor,
    db: Tensor,
    has_g: bool,
    has_b: bool,
) -> Vec<Option<Tensor>> {
    let mut grads = vec![Some(dx)];
    if has_g {
        grads.push(Some(dg));
    }
    if has_b {
        grads.push(Some(db));
    }
    grads
}

/// One batch norm of an `Upstream` record: its input, affine parameters, PReLU and saved statistics.
pub(super) struct UpstreamPart {
    pub(super) x: Tensor,
    pub(super) gamma: Option<Tensor>,
    pub(super) beta: Option<Tensor>,
    pub(super) alpha: Option<Tensor>,
    pub(super) saved: BatchNormSaved,
}

/// A training batch norm's record of itself left on its output (`Tape::set_note`; with the shortcut's
/// batch norm at the end of a residual block, or the PReLU that follows). The batch norm that reads that
/// output first writes, in its backward's dx pass, exactly the gradient at it; a backend that fuses this
/// (`Backend::batch_norm_backward_gathering`) gathers there the sums this backward needs, and this one
/// then runs only its dx pass (`Backend::batch_norm_dx_from_sums`).
pub(super) struct Upstream {
    parts: Vec<UpstreamPart>,
    sums: Mutex<Option<Vec<BnSums>>>,
}

impl Upstream {
    /// The record of `parts`, for the producer's backward and (`leave`) its output.
    pub(super) fn new(parts: Vec<UpstreamPart>) -> Arc<Upstream> {
        Arc::new(Upstream { parts, sums: Mutex::new(None) })
    }

    /// Leaves the record on the producer's output `out`.
    pub(super) fn leave(self: &Arc<Self>, tape: &mut Tape, out: Var) {
        tape.set_note(out, self.clone());
    }

    fn as_backend(&self) -> Vec<UpstreamBn<'_>> {
        self.parts
            .iter()
            .map(|p| UpstreamBn {
                x: &p.x,
                gamma: p.gamma.as_ref(),
                beta: p.beta.as_ref(),
                alpha: p.alpha.as_ref(),
                saved: &p.saved,
            })
            .collect()
    }

    fn put(&self, sums: Option<Vec<BnSums>>) -> Result<()> {
        *self.sums.lock().map_err(|_| Error::Invalid("batch norm: a poisoned lock".into()))? = sums;
        Ok(())
    }

    /// The sums the reader's backward gathered, one per part, taken: `None` when it gathered none.
    pub(super) fn take(&self) -> Result<Option<Vec<BnSums>>> {
        let got = self.sums.lock().map_err(|_| Error::Invalid("batch norm: a poisoned lock".into()))?.take();
        Ok(got.filter(|s| s.len() == self.parts.len()))
    }
}

/// Training-mode batch norm (`gamma`/`beta` are `None` when affine is off, or one of them is absent);
/// updates `running` when given. Under autocast its output and x's gradient are held in the 16-bit type
/// (statistics and parameter gradients in f32). Its backward adds the gradient x already received from a
/// shortcut (a residual block's input) in the pass that writes its own.
pub fn batch_norm_train(
    tape: &mut Tape,
    x: Var,
    gamma: Option<Var>,
    beta: Option<Var>,
    eps: f64,
    running: Option<Running<'_>>,
) -> Result<Var> {
    let op = "batch_norm_train";
    let (inputs, tx, tg, tb, _) = train_inputs(tape, op, x, gamma, beta)?;
    let half = tape.autocast();
    let (y, saved) = tx.backend().batch_norm_forward_train(&tx, tg.as_ref(), tb.as_ref(), eps, running)?;
    let y = autocast_store(y, half)?;
    let (has_g, has_b) = (gamma.is_some(), beta.is_some());
    // x made by a batch norm that nothing has read yet: this backward's dx is the whole gradient at x.
    let upstream = tape.note::<Upstream>(x).filter(|_| tape.unread(x));
    Ok(tape.push_accumulating(
        y,
        &inputs,
        Box::new(move |g: &Tensor, acc: Option<Tensor>| {
            let be = g.backend();
            let (dx, dg, db) = match &upstream {
                Some(up) => {
                    let (own, sums) = be.batch_norm_backward_gathering(
                        g,
                        &tx,
                        tg.as_ref(),
                        &saved,
                        acc.as_ref(),
                        &up.as_backend(),
                    )?;
                    up.put(sums)?;
                    own
                }
                None => be.batch_norm_backward(g, &tx, tg.as_ref(), &saved, acc.as_ref())?,
            };
            Ok(train_grads(autocast_store(dx, half)?, dg, db, has_g, has_b))
        }),
    ))
}

/// Eval-mode batch norm with running statistics (differentiable w.r.t. x, gamma and beta).
pub fn batch_norm_eval(
    tape: &mut Tape,
    x: Var,
    gamma: Option<Var>,
    beta: Option<Var>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Var> {
    let op = "batch_norm_eval";
    let mut inputs = vec![x];
    inputs.extend(gamma);
    inputs.extend(beta);
    same_device_and_dtype(tape, op, &inputs)?;
    let tx = tape.value(x).clone();
    let (_, c) = rows_and_channels(op, &tx)?;
    let tg = gamma.map(|g| tape.value(g).clone());
    let tb = beta.map(|b| tape.value(b).clone());
    for (name, t) in [
        ("gamma", tg.as_ref()),
        ("beta", tb.as_ref()),
        ("running_mean", Some(running_mean)),
        ("running_var", Some(running_var)),
    ] {
        if let Some(t) = t {
            check_param(op, name, t, c)?;
        }
    }
    let be = tx.backend();
    let y = be.batch_norm_forward_eval(&tx, tg.as_ref(), tb.as_ref(), running_mean, running_var, eps)?;
    let (rm, rv) = (running_mean.to_dtype(tx.dtype())?, running_var.to_dtype(tx.dtype())?);
    let (has_g, has_b) = (gamma.is_some(), beta.is_some());
    Ok(tape.push(
        y,
        &inputs,
        Box::new(move |g: &Tensor| {
            let be = g.backend();
            // y = (x - rm) * invstd * gamma + beta, a per-channel affine map of x.
            let invstd = be.unary(UnaryOp::Recip, &be.unary(UnaryOp::Sqrt, &be.affine(&rv, 1.0, eps)?)?)?;
            let scale = match &tg {
                Some(gm) => be.binary(BinaryOp::Mul, gm, &invstd)?,
                None => invstd.clone(),
            };
            let mut grads = vec![Some(be.mul_channels(g, &scale)?)];
            let sum_g = be.sum_rows(g)?;
            if has_g {
                // dgamma = invstd * (sum(g * x) - rm * sum(g))
                let sum_gx = be.sum_rows(&be.binary(BinaryOp::Mul, g, &tx)?)?;
                let centered = be.binary(BinaryOp::Sub, &sum_gx, &be.binary(BinaryOp::Mul, &rm, &sum_g)?)?;
                grads.push(Some(be.binary(BinaryOp::Mul, &centered, &invstd)?));
            }
            if has_b {
                grads.push(Some(sum_g));
            }
            Ok(grads)
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tape::gradcheck;

    fn randn(shape: &[usize], seed: u64, scale: f64, shift: f64) -> Tensor {
        let mut r = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| r.normal() * scale + shift).collect::<Vec<f64>>(), shape).unwrap()
    }

    #[test]
    fn train_gradients_with_and_without_affine() {
        let x = randn(&[2, 3, 2, 4], 1, 2.0, 0.5);
        let g = randn(&[4], 2, 0.5, 1.0);
        let b = randn(&[4], 3, 0.5, 0.0);
        let errs = gradcheck::check(
            &[x.clone(), g, b],
            |t, v| {
                let y = batch_norm_train(t, v[0], Some(v[1]), Some(v[2]), 1e-5, None)?;
                gradcheck::random_projection(t, y, 4)
            },
            1e-5,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-7), "affine: {errs:?}");
        let errs = gradcheck::check(
            &[randn(&[6, 3], 5, 1.0, -2.0)],
            |t, v| {
                let y = batch_norm_train(t, v[0], None, None, 1e-5, None)?;
                gradcheck::random_projection(t, y, 6)
            },
            1e-5,
        )
        .unwrap();
        assert!(errs[0] < 1e-7, "no affine: {errs:?}");
    }

    #[test]
    fn eval_gradients_and_values() {
        let x = randn(&[3, 2, 2, 3], 7, 1.0, 0.0);
        let rm = Tensor::from_vec(vec![0.1, -0.2, 0.3], [3]).unwrap();
        let rv = Tensor::from_vec(vec![0.5, 1.5, 2.0], [3]).unwrap();
        let errs = gradcheck::check(
            &[x.clone(), randn(&[3], 8, 0.3, 1.0), randn(&[3], 9, 0.3, 0.0)],
            |t, v| {
                let y = batch_norm_eval(t, v[0], Some(v[1]), Some(v[2]), &rm, &rv, 1e-5)?;
                gradcheck::random_projection(t, y, 10)
            },
            1e-5,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-8), "{errs:?}");
        let mut tape = Tape::no_grad();
        let vx = tape.constant(x.clone());
        let y = batch_norm_eval(&mut tape, vx, None, None, &rm, &rv, 1e-5).unwrap();
        let (xs, ys) = (x.to_f64_vec().unwrap(), tape.value(y).to_f64_vec().unwrap());
        for i in 0..xs.len() {
            let c = i % 3;
            let want = (xs[i] - [0.1, -0.2, 0.3][c]) / ([0.5f64, 1.5, 2.0][c] + 1e-5).sqrt();
            assert!((ys[i] - want).abs() < 1e-12);
        }
    }

    #[test]
    fn batch_is_normalized_and_running_stats_follow_torch() {
        let x = randn(&[50, 2], 11, 3.0, 5.0);
        let mut tape = Tape::new();
        let vx = tape.leaf(x.clone());
        let mut rm = Tensor::from_vec(vec![0.0f64, 0.0], [2]).unwrap();
        let mut rv = Tensor::from_vec(vec![1.0f64, 1.0], [2]).unwrap();
        let running = Running { mean: &mut rm, var: &mut rv, momentum: 0.1 };
        let y = batch_norm_train(&mut tape, vx, None, None, 1e-5, Some(running)).unwrap();
        let ys = tape.value(y).to_f64_vec().unwrap();
        let xs = x.to_f64_vec().unwrap();
        for c in 0..2 {
            let col: Vec<f64> = ys.iter().skip(c).step_by(2).copied().collect();
            let m = col.iter().sum::<f64>() / 50.0;
            let v = col.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 50.0;
            assert!(m.abs() < 1e-12 && (v - 1.0).abs() < 1e-5, "channel {c}: mean {m} var {v}");
            let xc: Vec<f64> = xs.iter().skip(c).step_by(2).copied().collect();
            let xm = xc.iter().sum::<f64>() / 50.0;
            let xv = xc.iter().map(|a| (a - xm) * (a - xm)).sum::<f64>() / 49.0;
            assert!((rm.to_f64_vec().unwrap()[c] - 0.1 * xm).abs() < 1e-12);
            assert!((rv.to_f64_vec().unwrap()[c] - (0.9 + 0.1 * xv)).abs() < 1e-12);
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut tape = Tape::new();
        let x = tape.leaf(randn(&[4, 3], 1, 1.0, 0.0));
        let g = tape.leaf(randn(&[2], 1, 1.0, 0.0));
        assert!(matches!(batch_norm_train(&mut tape, x, Some(g), None, 1e-5, None), Err(Error::Shape(_))));
        let one = tape.leaf(randn(&[1, 3], 1, 1.0, 0.0));
        assert!(matches!(batch_norm_train(&mut tape, one, None, None, 1e-5, None), Err(Error::Shape(_))));
        let v = tape.leaf(randn(&[3], 1, 1.0, 0.0));
        assert!(matches!(batch_norm_train(&mut tape, v, None, None, 1e-5, None), Err(Error::Shape(_))));
        let rm = Tensor::from_vec(vec![0.0f64; 2], [2]).unwrap();
        assert!(matches!(batch_norm_eval(&mut tape, x, None, None, &rm, &rm, 1e-5), Err(Error::Shape(_))));
        let (mut m3, mut v3) = (
            Tensor::from_vec(vec![0.0f64; 3], [3]).unwrap(),
            Tensor::from_vec(vec![1.0f64; 3], [3]).unwrap(),
        );
        let bad = Running { mean: &mut m3, var: &mut v3, momentum: 1.5 };
        assert!(matches!(
            batch_norm_train(&mut tape, x, None, None, 1e-5, Some(bad)),
            Err(Error::Invalid(_))
        ));
        let (mut m2, mut v2) = (rm.clone(), rm.clone());
        let short = Running { mean: &mut m2, var: &mut v2, momentum: 0.1 };
        assert!(matches!(
            batch_norm_train(&mut tape, x, None, None, 1e-5, Some(short)),
            Err(Error::Shape(_))
        ));
    }
}
