//! Batch norm (training and evaluation), the fused BN + PReLU and PReLU on the device, against the CPU
//! backend and an f64 composition.

use super::{cpu_or_none, vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, BatchNormSaved, RunningStats, ShortcutNorm, UnaryOp, UpstreamBn};
use engine::{DType, Tensor};

/// f64 batch norm (train) over the last dim, optionally followed by PReLU: (out, dx, dgamma, dbeta, dalpha).
#[allow(clippy::type_complexity)]
fn bn_ref(
    x: &[f64],
    c: usize,
    g: &[f64],
    b: &[f64],
    alpha: Option<&[f64]>,
    dy: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for i in 0..x.len() {
        mean[i % c] += x[i] / rows as f64;
    }
    for i in 0..x.len() {
        var[i % c] += (x[i] - mean[i % c]).powi(2) / rows as f64;
    }
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let xhat: Vec<f64> = (0..x.len()).map(|i| (x[i] - mean[i % c]) * inv[i % c]).collect();
    let z: Vec<f64> = (0..x.len()).map(|i| xhat[i] * g[i % c] + b[i % c]).collect();
    let mut out = z.clone();
    let mut dz = dy.to_vec();
    let mut dalpha = vec![0.0; c];
    if let Some(a) = alpha {
        for i in 0..x.len() {
            if z[i] <= 0.0 {
                out[i] = a[i % c] * z[i];
                dalpha[i % c] += dy[i] * z[i];
                dz[i] = a[i % c] * dy[i];
            }
        }
    }
    let mut sdz = vec![0.0; c];
    let mut sdzx = vec![0.0; c];
    for i in 0..x.len() {
        sdz[i % c] += dz[i];
        sdzx[i % c] += dz[i] * xhat[i];
    }
    let nf = rows as f64;
    let dx: Vec<f64> = (0..x.len())
        .map(|i| {
            let ch = i % c;
            g[ch] * inv[ch] / nf * (nf * dz[i] - sdz[ch] - xhat[i] * sdzx[ch])
        })
        .collect();
    (out, dx, sdzx, sdz, dalpha)
}

pub(super) fn batch_norm(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let (rows, c, eps) = (3000, 48, 1e-5);
    let x = cpu.affine(&r.rand(&[rows, c], 2.0)?, 1.0, 0.7)?;
    let gamma = cpu.affine(&r.rand(&[c], 0.2)?, 1.0, 1.0)?;
    let beta = r.rand(&[c], 0.3)?;
    let alpha = cpu.affine(&r.rand(&[c], 0.05)?, 1.0, 0.25)?;
    let dy = r.rand(&[rows, c], 1.0)?;
    let (xv, gv, bv, av, dyv) = (vals(&x)?, vals(&gamma)?, vals(&beta)?, vals(&alpha)?, vals(&dy)?);
    let (gx, gg, gb, ga, gdy) = (r.up(&x)?, r.up(&gamma)?, r.up(&beta)?, r.up(&alpha)?, r.up(&dy)?);

    // Running statistics updated by the statistics pass, against the CPU's update.
    let (rm0, rv0) = (cpu.affine(&r.rand(&[c], 0.1)?, 1.0, 0.2)?, cpu.affine(&r.rand(&[c], 0.1)?, 1.0, 1.0)?);
    let (mut grm, mut grv) = (r.up(&rm0)?, r.up(&rv0)?);
    let (mut crm, mut crv) = (rm0.clone(), rv0.clone());
    let running = |m, v| Some(RunningStats { mean: m, var: v, momentum: 0.1 });
    let (y, saved) =
        r.be().batch_norm_forward_train(&gx, Some(&gg), Some(&gb), eps, running(&mut grm, &mut grv))?;
    let cpu_fwd = cpu_or_none(cpu.batch_norm_forward_train(
        &x,
        Some(&gamma),
        Some(&beta),
        eps,
        running(&mut crm, &mut crv),
    ))?;
    r.compare("batch norm running mean", &grm, Some(crm.clone()), Vec::new, 1e-6)?;
    r.compare("batch norm running var", &grv, Some(crv.clone()), Vec::new, 1e-6)?;
    let (yr, dxr, dgr, dbr, _) = bn_ref(&xv, c, &gv, &bv, None, &dyv, eps);
    r.compare("batch norm train fwd f32", &y, cpu_fwd.as_ref().map(|t| t.0.clone()), || yr.clone(), 1e-5)?;
    let (dx, dg, db) = r.be().batch_norm_backward(&gdy, &gx, Some(&gg), &saved, None)?;
    let cpu_bwd = match &cpu_fwd {
        Some((_, s)) => cpu_or_none(cpu.batch_norm_backward(&dy, &x, Some(&gamma), s, None))?,
        None => None,
    };
    r.compare("batch norm bwd dx f32", &dx, cpu_bwd.as_ref().map(|t| t.0.clone()), || dxr.clone(), 1e-4)?;
    r.compare("batch norm bwd dgamma f32", &dg, cpu_bwd.as_ref().map(|t| t.1.clone()), || dgr.clone(), 1e-4)?;
    r.compare("batch norm bwd dbeta f32", &db, cpu_bwd.as_ref().map(|t| t.2.clone()), || dbr.clone(), 1e-4)?;

    let rm = cpu.affine(&r.rand(&[c], 0.1)?, 1.0, 0.5)?;
    let rv = cpu.affine(&cpu.unary(UnaryOp::Square, &r.rand(&[c], 1.0)?)?, 1.0, 0.5)?;
    let y = r.be().batch_norm_forward_eval(&gx, Some(&gg), Some(&gb), &r.up(&rm)?, &r.up(&rv)?, eps)?;
    let (rmv, rvv) = (vals(&rm)?, vals(&rv)?);
    let eval_ref = || {
        (0..xv.len())
            .map(|i| (xv[i] - rmv[i % c]) / (rvv[i % c] + eps).sqrt() * gv[i % c] + bv[i % c])
            .collect()
    };
    let cpu_eval = cpu_or_none(cpu.batch_norm_forward_eval(&x, Some(&gamma), Some(&beta), &rm, &rv, eps))?;
    r.compare("batch norm eval f32", &y, cpu_eval, eval_ref, 1e-5)?;

    // Fused BN + PReLU against the f64 composition.
    let (y, saved) = r.be().batch_norm_prelu_forward_train(&gx, Some(&gg), Some(&gb), &ga, eps, None)?;
    let (yr, dxr, dgr, dbr, dar) = bn_ref(&xv, c, &gv, &bv, Some(&av), &dyv, eps);
    r.record("fused bn+prelu fwd f32", &vals(&y)?, &yr, 1e-5, "f64 formula");
    let (dx, dg, db, da) = r.be().batch_norm_prelu_backward(&gdy, &gx, Some(&gg), Some(&gb), &ga, &saved)?;
    r.record("fused bn+prelu bwd dx f32", &vals(&dx)?, &dxr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dgamma f32", &vals(&dg)?, &dgr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dbeta f32", &vals(&db)?, &dbr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dalpha f32", &vals(&da)?, &dar, 1e-4, "f64 formula");
    let xb = r.up(&x.to_dtype(DType::BF16)?)?;
    let (yb, _) = r.be().batch_norm_prelu_forward_train(&xb, Some(&gg), Some(&gb), &ga, eps, None)?;
    r.record("fused bn+prelu fwd bf16", &vals(&yb)?, &yr, 1e-2, "f64 formula");

    // The end of a residual block: bn(x) + shortcut, and bn(x) + bn_s(shortcut), in one pass; the
    // backward adding a shortcut's gradient in its dx pass. Against the CPU backend's composition.
    let s = cpu.affine(&r.rand(&[rows, c], 1.5)?, 1.0, -0.4)?;
    let gs = r.up(&s)?;
    let (g2, b2) = (cpu.affine(&r.rand(&[c], 0.2)?, 1.0, 0.9)?, r.rand(&[c], 0.2)?);
    let (gg2, gb2) = (r.up(&g2)?, r.up(&b2)?);
    for norm in [false, true] {
        let tag = if norm { "bn(x) + bn(shortcut)" } else { "bn(x) + shortcut" };
        let gn = norm.then_some(ShortcutNorm { gamma: Some(&gg2), beta: Some(&gb2), running: None });
        let (y, _, _) = r.be().batch_norm_add_forward_train(&gx, Some(&gg), Some(&gb), eps, None, &gs, gn)?;
        let cn = norm.then_some(ShortcutNorm { gamma: Some(&g2), beta: Some(&b2), running: None });
        let c_y =
            cpu_or_none(cpu.batch_norm_add_forward_train(&x, Some(&gamma), Some(&beta), eps, None, &s, cn))?;
        r.compare(&format!("{tag} fwd f32"), &y, c_y.map(|t| t.0), Vec::new, 1e-5)?;
        // The next batch norm of the sum starts from the statistics its pass gathered: the same bits as
        // statistics read from a copy of the sum that carries none, running statistics included.
        for dt in [DType::F32, DType::BF16] {
            let (xd, sd) = (r.up(&x.to_dtype(dt)?)?, r.up(&s.to_dtype(dt)?)?);
            let gn = norm.then_some(ShortcutNorm { gamma: Some(&gg2), beta: Some(&gb2), running: None });
            let (y, _, _) =
                r.be().batch_norm_add_forward_train(&xd, Some(&gg), Some(&gb), eps, None, &sd, gn)?;
            let plain = r.up(&y.to_device(&engine::Device::Cpu)?)?;
            let next = |t: &Tensor| -> R<Vec<f64>> {
                let (mut rm, mut rv) = (r.up(&rm)?, r.up(&rv)?);
                let running = Some(RunningStats { mean: &mut rm, var: &mut rv, momentum: 0.1 });
                let (out, sv) = r.be().batch_norm_forward_train(t, Some(&gg2), Some(&gb2), eps, running)?;
                Ok([vals(&out)?, vals(&sv.mean)?, vals(&sv.invstd)?, vals(&rm)?, vals(&rv)?].concat())
            };
            let (from_gathered, from_pass) = (next(&y)?, next(&plain)?);
            r.record(
                format!("{tag} {dt}: next bn from the gathered statistics"),
                &from_gathered,
                &from_pass,
                0.0,
                "statistics pass",
            );
        }
    }
    let (dx, _, _) = r.be().batch_norm_backward(&gdy, &gx, Some(&gg), &saved, Some(&gs))?;
    let c_dx = match &cpu_fwd {
        Some((_, sv)) => {
            cpu_or_none(cpu.batch_norm_backward(&dy, &x, Some(&gamma), sv, Some(&s)))?.map(|t| t.0)
        }
        None => None,
    };
    r.compare("batch norm bwd dx + shortcut gradient f32", &dx, c_dx, Vec::new, 1e-4)?;

    gathered_sums(r, &x, &s, [&gg, &gb, &gg2, &gb2, &ga], eps)?;

    // PReLU alone.
    let y = r.be().prelu_forward(&gx, &ga)?;
    let pre_ref = || (0..xv.len()).map(|i| if xv[i] > 0.0 { xv[i] } else { av[i % c] * xv[i] }).collect();
    let cpu_p = cpu_or_none(cpu.prelu_forward(&x, &alpha))?;
    r.compare("prelu fwd f32", &y, cpu_p, pre_ref, 1e-6)?;
    let (dx, da) = r.be().prelu_backward(&gdy, &gx, &ga)?;
    let cpu_pb = cpu_or_none(cpu.prelu_backward(&dy, &x, &alpha))?;
    let dx_ref = || (0..xv.len()).map(|i| if xv[i] > 0.0 { dyv[i] } else { av[i % c] * dyv[i] }).collect();
    let mut da_ref = vec![0.0; c];
    for i in 0..xv.len() {
        if xv[i] <= 0.0 {
            da_ref[i % c] += dyv[i] * xv[i];
        }
    }
    r.compare("prelu bwd dx f32", &dx, cpu_pb.as_ref().map(|t| t.0.clone()), dx_ref, 1e-6)?;
    r.compare("prelu bwd dalpha f32", &da, cpu_pb.map(|t| t.1), || da_ref, 1e-5)?;
    Ok(())
}

/// The backward of the batch norm that first reads a residual block's output (or the stem's BN + PReLU)
/// gathers, in its dx pass, the sums of the batch norms that wrote that output: against each one's own
/// reduce over the dx as stored, and the upstream dx from those sums against its plain backward.
fn gathered_sums(r: &mut Run, x: &Tensor, s: &Tensor, p: [&Tensor; 5], eps: f64) -> R<()> {
    // Its own random stream, so that the sections after it see the data they always saw.
    let outer = std::mem::replace(&mut r.rng, engine::rng::Rng::new(0x9a7e));
    let out = gathered_sums_on(r, x, s, p, eps);
    r.rng = outer;
    out
}

/// A batch norm that wrote the tensor: its input, its PReLU and its saved statistics.
type Producer<'a> = (Tensor, Option<&'a Tensor>, BatchNormSaved);

fn gathered_sums_on(r: &mut Run, x: &Tensor, s: &Tensor, p: [&Tensor; 5], eps: f64) -> R<()> {
    let [g, b, g2, b2, alpha] = p;
    let rows = x.shape().dims()[0];
    let c = x.shape().dims()[1];
    for dt in [DType::F32, DType::BF16] {
        let (xd, sd) = (r.up(&x.to_dtype(dt)?)?, r.up(&s.to_dtype(dt)?)?);
        let (dy, res) = (r.rand(&[rows, c], 1.0)?.to_dtype(dt)?, r.rand(&[rows, c], 0.5)?.to_dtype(dt)?);
        let (dy, res) = (r.up(&dy)?, r.up(&res)?);
        for kind in ["bn3 + shortcut bn", "bn + prelu"] {
            let (y, ups): (Tensor, Vec<Producer>) = if kind == "bn + prelu" {
                let (y, sv) =
                    r.be().batch_norm_prelu_forward_train(&xd, Some(g), Some(b), alpha, eps, None)?;
                (y, vec![(xd.clone(), Some(alpha), sv)])
            } else {
                let norm = ShortcutNorm { gamma: Some(g2), beta: Some(b2), running: None };
                let (y, sv, svs) =
                    r.be().batch_norm_add_forward_train(&xd, Some(g), Some(b), eps, None, &sd, Some(norm))?;
                let svs = svs.ok_or("no shortcut statistics")?;
                (y, vec![(xd.clone(), None, sv), (sd.clone(), None, svs)])
            };
            let (_, saved) = r.be().batch_norm_forward_train(&y, Some(g2), Some(b2), eps, None)?;
            let (gammas, betas) = if ups.len() == 2 { ([g, g2], [b, b2]) } else { ([g, g], [b, b]) };
            let upstream: Vec<UpstreamBn> = ups
                .iter()
                .enumerate()
                .map(|(k, (ux, a, sv))| UpstreamBn {
                    x: ux,
                    gamma: Some(gammas[k]),
                    beta: Some(betas[k]),
                    alpha: *a,
                    saved: sv,
                })
                .collect();
            let ((dx, dg, db), sums) =
                r.be().batch_norm_backward_gathering(&dy, &y, Some(g2), &saved, Some(&res), &upstream)?;
            let (pdx, pdg, pdb) = r.be().batch_norm_backward(&dy, &y, Some(g2), &saved, Some(&res))?;
            let tag = format!("gathered sums, {kind} {dt}");
            r.record(format!("{tag}: dx"), &vals(&dx)?, &vals(&pdx)?, 1e-6, "plain backward");
            r.record(
                format!("{tag}: dgamma, dbeta"),
                &[vals(&dg)?, vals(&db)?].concat(),
                &[vals(&pdg)?, vals(&pdb)?].concat(),
                1e-6,
                "plain backward",
            );
            let sums = match sums {
                Some(s) if s.len() == upstream.len() => s,
                _ => return Err(format!("{tag}: the device gathered no sums").into()),
            };
            for (k, u) in upstream.iter().enumerate() {
                let (own_dx, own, gathered) = match u.alpha {
                    Some(a) => {
                        let (udx, udg, udb, uda) =
                            r.be().batch_norm_prelu_backward(&dx, u.x, u.gamma, u.beta, a, u.saved)?;
                        let da = sums[k].dalpha.as_ref().ok_or("no dalpha gathered")?;
                        (
                            udx,
                            [vals(&udg)?, vals(&udb)?, vals(&uda)?].concat(),
                            [vals(&sums[k].dgamma)?, vals(&sums[k].dbeta)?, vals(da)?].concat(),
                        )
                    }
                    None => {
                        let (udx, udg, udb) = r.be().batch_norm_backward(&dx, u.x, u.gamma, u.saved, None)?;
                        (
                            udx,
                            [vals(&udg)?, vals(&udb)?].concat(),
                            [vals(&sums[k].dgamma)?, vals(&sums[k].dbeta)?].concat(),
                        )
                    }
                };
                r.record(format!("{tag}: upstream {k} sums"), &gathered, &own, 1e-6, "its own reduce");
                let from_sums =
                    r.be().batch_norm_dx_from_sums(&dx, u.x, u.gamma, u.beta, u.alpha, u.saved, &sums[k])?;
                r.record(
                    format!("{tag}: upstream {k} dx"),
                    &vals(&from_sums)?,
                    &vals(&own_dx)?,
                    1e-6,
                    "its plain backward",
                );
            }
            if let [a, b] = &upstream[..] {
                // The two dx passes of bn3 and the shortcut's batch norm in one: the bits of each alone.
                let (da, db) = r.be().batch_norm_dx_from_sums_pair(&dx, (a, &sums[0]), (b, &sums[1]))?;
                let one = |u: &UpstreamBn, s| {
                    r.be().batch_norm_dx_from_sums(&dx, u.x, u.gamma, u.beta, u.alpha, u.saved, s)
                };
                let (oa, ob) = (one(a, &sums[0])?, one(b, &sums[1])?);
                let (pair, alone) = ([vals(&da)?, vals(&db)?].concat(), [vals(&oa)?, vals(&ob)?].concat());
                r.record(format!("{tag}: both dx in one pass"), &pair, &alone, 0.0, "one dx pass each");
            }
        }
    }
    Ok(())
}
