//! The end of a residual block as one op: bn(x) + shortcut, or bn(x) + bn_s(shortcut) when the shortcut
//! has its own batch norm (a downsampling block), both training-mode. On a GPU the sum is one pass after
//! the two statistics (batch_norm.cu `bn_apply`), not two batch-norm outputs and an add; on the CPU it is
//! exactly the two batch norms and the add, so CPU results are those of the three ops.

use super::autocast_store;
use super::batch_norm::{train_grads, train_inputs, Running, Upstream, UpstreamPart};
use crate::backend::{ShortcutNorm, UpstreamBn};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The shortcut's batch norm: its gamma, beta and running statistics.
pub struct ShortcutBn<'a> {
    pub gamma: Var,
    pub beta: Var,
    pub running: Option<Running<'a>>,
}

/// bn(x) + shortcut (or + bn_s(shortcut)), updating both running statistics when given. Under autocast
/// the sum and both inputs' gradients are held in the 16-bit type (the sum rounded once).
pub fn batch_norm_add_train(
    tape: &mut Tape,
    x: Var,
    gamma: Var,
    beta: Var,
    eps: f64,
    running: Option<Running<'_>>,
    shortcut: Var,
    shortcut_bn: Option<ShortcutBn<'_>>,
) -> Result<Var> {
    let op = "batch_norm_add_train";
    let (mut inputs, tx, tg, tb, _) = train_inputs(tape, op, x, Some(gamma), Some(beta))?;
    let ts = tape.value(shortcut).clone();
    if ts.shape() != tx.shape() || !ts.device().same(&tx.device()) {
        return Err(Error::Shape(format!("{op}: shortcut {} does not fit input {}", ts.shape(), tx.shape())));
    }
    inputs.push(shortcut);
    let (sg, sb, norm) = match shortcut_bn {
        Some(n) => {
            let (more, _, sg, sb, _) = train_inputs(tape, op, shortcut, Some(n.gamma), Some(n.beta))?;
            inputs.extend(&more[1..]);
            (sg, sb, Some(n.running))
        }
        None => (None, None, None),
    };
    let half = tape.autocast();
    let shortcut_norm = norm.map(|running| ShortcutNorm { gamma: sg.as_ref(), beta: sb.as_ref(), running });
    let (y, saved, saved_s) = tx.backend().batch_norm_add_forward_train(
        &tx,
        tg.as_ref(),
        tb.as_ref(),
        eps,
        running,
        &ts,
        shortcut_norm,
    )?;
    let mut parts = vec![UpstreamPart {
        x: tx.clone(),
        gamma: tg.clone(),
        beta: tb.clone(),
        alpha: None,
        saved: saved.clone(),
    }];
    if let Some(s) = &saved_s {
        parts.push(UpstreamPart {
            x: ts.clone(),
            gamma: sg.clone(),
            beta: sb.clone(),
            alpha: None,
            saved: s.clone(),
        });
    }
    let up = Upstream::new(parts);
    let for_backward = up.clone();
    let out = tape.push(
        autocast_store(y, half)?,
        &inputs,
        Box::new(move |g: &Tensor| {
            let be = g.backend();
            // The sums the next batch norm's dx pass gathered for bn and bn_s (see `Upstream`), if any:
            // then each runs only its dx pass.
            let gathered = for_backward.take()?;
            let own = |k: usize, dx: Tensor| -> Result<(Tensor, Tensor, Tensor)> {
                let sums = gathered.as_ref().ok_or_else(|| Error::Invalid("batch norm: no sums".into()))?;
                Ok((dx, sums[k].dgamma.clone(), sums[k].dbeta.clone()))
            };
            // (dx, dgamma, dbeta) of bn, and of bn_s when the shortcut has one.
            let (main, short) = match (&gathered, &saved_s) {
                (Some(sums), Some(s)) => {
                    // Both dx passes read the one gradient they share in a single pass.
                    let a = UpstreamBn { x: &tx, gamma: tg.as_ref(), beta: None, alpha: None, saved: &saved };
                    let b = UpstreamBn { x: &ts, gamma: sg.as_ref(), beta: None, alpha: None, saved: s };
                    let (dx, ds) = be.batch_norm_dx_from_sums_pair(g, (&a, &sums[0]), (&b, &sums[1]))?;
                    (own(0, dx)?, Some(own(1, ds)?))
                }
                (Some(sums), None) => {
                    let dx = be.batch_norm_dx_from_sums(g, &tx, tg.as_ref(), None, None, &saved, &sums[0])?;
                    (own(0, dx)?, None)
                }
                (None, s) => (
                    be.batch_norm_backward(g, &tx, tg.as_ref(), &saved, None)?,
                    s.as_ref().map(|s| be.batch_norm_backward(g, &ts, sg.as_ref(), s, None)).transpose()?,
                ),
            };
            let (dx, dg, db) = main;
            let mut grads = train_grads(autocast_store(dx, half)?, dg, db, true, true);
            match short {
                None => grads.push(Some(g.clone())),
                Some((ds, dsg, dsb)) => {
                    grads.extend(train_grads(autocast_store(ds, half)?, dsg, dsb, true, true))
                }
            }
            Ok(grads)
        }),
    );
    up.leave(tape, out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{add, batch_norm_train};
    use crate::rng::Rng;
    use crate::tape::gradcheck;

    fn randn(shape: &[usize], seed: u64, off: f64) -> Tensor {
        let mut r = Rng::new(seed);
        let n = shape.iter().product();
        Tensor::from_vec((0..n).map(|_| off + r.normal()).collect::<Vec<f64>>(), shape).unwrap()
    }

    /// On the CPU the fused op is the batch norms and the add: same values, running statistics and
    /// gradients, bit for bit, with and without the shortcut's own batch norm.
    #[test]
    fn on_the_cpu_it_is_the_batch_norms_and_the_add_exactly() {
        let (x, s) = (randn(&[2, 3, 3, 4], 1, 0.5), randn(&[2, 3, 3, 4], 2, -0.3));
        let params: Vec<Tensor> =
            (0..4).map(|k| randn(&[4], 3 + k, if k % 2 == 0 { 1.0 } else { 0.0 })).collect();
        for with_norm in [false, true] {
            let run = |fused: bool| {
                let mut tape = Tape::new();
                let vx = tape.leaf(x.clone());
                let vs = tape.leaf(s.clone());
                let vp: Vec<Var> = params.iter().map(|p| tape.leaf(p.clone())).collect();
                let mut st: Vec<Tensor> = (0..4)
                    .map(|k| Tensor::full([4], 0.25 * k as f64 + 0.5, x.dtype(), &x.device()).unwrap())
                    .collect();
                let [m1, v1, m2, v2] = &mut st[..] else { unreachable!() };
                let r1 = Some(Running { mean: m1, var: v1, momentum: 0.1 });
                let r2 = Some(Running { mean: m2, var: v2, momentum: 0.1 });
                let y = if fused {
                    let sbn = with_norm.then_some(ShortcutBn { gamma: vp[2], beta: vp[3], running: r2 });
                    batch_norm_add_train(&mut tape, vx, vp[0], vp[1], 1e-5, r1, vs, sbn).unwrap()
                } else {
                    let a = batch_norm_train(&mut tape, vx, Some(vp[0]), Some(vp[1]), 1e-5, r1).unwrap();
                    let b = if with_norm {
                        batch_norm_train(&mut tape, vs, Some(vp[2]), Some(vp[3]), 1e-5, r2).unwrap()
                    } else {
                        vs
                    };
                    add(&mut tape, a, b).unwrap()
                };
                let loss = gradcheck::random_projection(&mut tape, y, 5).unwrap();
                let grads = tape.backward(loss).unwrap();
                let mut out = tape.value(y).to_f64_vec().unwrap();
                for t in &st {
                    out.extend(t.to_f64_vec().unwrap());
                }
                for v in [vx, vs].iter().chain(if with_norm { &vp[..] } else { &vp[..2] }) {
                    out.extend(grads.get(*v).unwrap().to_f64_vec().unwrap());
                }
                out
            };
            let (fused, plain) = (run(true), run(false));
            assert_eq!(fused.len(), plain.len());
            assert!(
                fused.iter().zip(&plain).all(|(p, q)| p.to_bits() == q.to_bits()),
                "with_norm {with_norm}"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = randn(&[3, 2, 2, 3], 7, 0.2);
        let s = randn(&[3, 2, 2, 3], 8, -0.1);
        let p: Vec<Tensor> = (0..4).map(|k| randn(&[3], 9 + k, if k % 2 == 0 { 1.0 } else { 0.0 })).collect();
        let errs = gradcheck::check(
            &[x, s, p[0].clone(), p[1].clone(), p[2].clone(), p[3].clone()],
            |t, v| {
                let sbn = ShortcutBn { gamma: v[4], beta: v[5], running: None };
                let y = batch_norm_add_train(t, v[0], v[2], v[3], 1e-5, None, v[1], Some(sbn))?;
                gradcheck::random_projection(t, y, 11)
            },
            1e-5,
        )
        .unwrap();
        assert!(errs.iter().all(|&e| e < 1e-7), "{errs:?}");
    }
}
