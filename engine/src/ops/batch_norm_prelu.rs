//! Training batch norm followed by PReLU (IResNet's BN-PReLU pairs) as one op, one tape node: the
//! backend's `batch_norm_prelu_forward_train` and `batch_norm_prelu_backward`. On a GPU that is one fused
//! kernel each way (batch_norm.cu: the PReLU input is never stored, the backward recomputes it from x);
//! on the CPU it is exactly batch norm then PReLU, so CPU results are those of the two ops.

use super::autocast_store;
use super::batch_norm::{train_inputs, Running, Upstream, UpstreamPart};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// y = prelu(batch_norm(x; gamma, beta), alpha), updating `running` when given; under autocast y and x's
/// gradient are held in the 16-bit type (rounded once, after the PReLU).
pub fn batch_norm_prelu_train(
    tape: &mut Tape,
    x: Var,
    gamma: Var,
    beta: Var,
    alpha: Var,
    eps: f64,
    running: Option<Running<'_>>,
) -> Result<Var> {
    let op = "batch_norm_prelu_train";
    let (mut inputs, tx, tg, tb, _) = train_inputs(tape, op, x, Some(gamma), Some(beta))?;
    let ta = tape.value(alpha).clone();
    if ta.dims() != [*tx.dims().last().expect("rank checked")] || !ta.device().same(&tx.device()) {
        return Err(Error::Shape(format!("{op}: alpha {} does not fit input {}", ta.shape(), tx.shape())));
    }
    inputs.push(alpha);
    let half = tape.autocast();
    let be = tx.backend();
    let (y, saved) = be.batch_norm_prelu_forward_train(&tx, tg.as_ref(), tb.as_ref(), &ta, eps, running)?;
    let part = UpstreamPart {
        x: tx.clone(),
        gamma: tg.clone(),
        beta: tb.clone(),
        alpha: Some(ta.clone()),
        saved: saved.clone(),
    };
    let up = Upstream::new(vec![part]);
    let for_backward = up.clone();
    let out = tape.push(
        autocast_store(y, half)?,
        &inputs,
        Box::new(move |g: &Tensor| {
            let be = g.backend();
            // The sums the next batch norm's dx pass gathered for this one (see `Upstream`), if any.
            let (dx, dg, db, da) = match for_backward.take()? {
                Some(mut sums) => {
                    let s = sums.remove(0);
                    let dx =
                        be.batch_norm_dx_from_sums(g, &tx, tg.as_ref(), tb.as_ref(), Some(&ta), &saved, &s)?;
                    let da =
                        s.dalpha.ok_or_else(|| Error::Invalid(format!("{op}: no PReLU sums gathered")))?;
                    (dx, s.dgamma, s.dbeta, da)
                }
                None => be.batch_norm_prelu_backward(g, &tx, tg.as_ref(), tb.as_ref(), &ta, &saved)?,
            };
            Ok(vec![Some(autocast_store(dx, half)?), Some(dg), Some(db), Some(da)])
        }),
    );
    up.leave(tape, out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{batch_norm_train, prelu};
    use crate::rng::Rng;

    /// On the CPU the fused op is the two ops: same values, same gradients, bit for bit.
    #[test]
    fn on_the_cpu_it_is_batch_norm_then_prelu_exactly() {
        let mut r = Rng::new(4);
        let mut t = |n: usize, shape: &[usize], off: f64| {
            Tensor::from_vec((0..n).map(|_| off + r.normal()).collect::<Vec<f64>>(), shape).unwrap()
        };
        let (x, g, b, a) =
            (t(2 * 3 * 3 * 4, &[2, 3, 3, 4], 0.0), t(4, &[4], 1.0), t(4, &[4], 0.0), t(4, &[4], 0.25));
        let run = |fused: bool| {
            let mut tape = Tape::new();
            let vs: Vec<Var> = [&x, &g, &b, &a].iter().map(|v| tape.leaf((*v).clone())).collect();
            let (mut rm, mut rv) = (
                Tensor::full([4], 0.5, x.dtype(), &x.device()).unwrap(),
                Tensor::full([4], 2.0, x.dtype(), &x.device()).unwrap(),
            );
            let running = Some(Running { mean: &mut rm, var: &mut rv, momentum: 0.1 });
            let y = if fused {
                batch_norm_prelu_train(&mut tape, vs[0], vs[1], vs[2], vs[3], 1e-5, running).unwrap()
            } else {
                let y = batch_norm_train(&mut tape, vs[0], Some(vs[1]), Some(vs[2]), 1e-5, running).unwrap();
                prelu(&mut tape, y, vs[3]).unwrap()
            };
            let loss = crate::ops::sum_all(&mut tape, y).unwrap();
            let grads = tape.backward(loss).unwrap();
            let mut out = tape.value(y).to_f64_vec().unwrap();
            out.extend(rm.to_f64_vec().unwrap());
            out.extend(rv.to_f64_vec().unwrap());
            for v in &vs {
                out.extend(grads.get(*v).unwrap().to_f64_vec().unwrap());
            }
            out
        };
        let (fused, plain) = (run(true), run(false));
        assert_eq!(fused.len(), plain.len());
        assert!(fused.iter().zip(&plain).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
}
