//! Batch norm (training and evaluation), the fused BN + PReLU and PReLU on the device, against the CPU
//! backend and an f64 composition.

use super::{cpu_or_none, vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, UnaryOp};
use engine::DType;

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

    let (y, saved) = r.be().batch_norm_forward_train(&gx, Some(&gg), Some(&gb), eps)?;
    let cpu_fwd = cpu_or_none(cpu.batch_norm_forward_train(&x, Some(&gamma), Some(&beta), eps))?;
    let (yr, dxr, dgr, dbr, _) = bn_ref(&xv, c, &gv, &bv, None, &dyv, eps);
    r.compare("batch norm train fwd f32", &y, cpu_fwd.as_ref().map(|t| t.0.clone()), || yr.clone(), 1e-5)?;
    let (dx, dg, db) = r.be().batch_norm_backward(&gdy, &gx, Some(&gg), &saved)?;
    let cpu_bwd = match &cpu_fwd {
        Some((_, s)) => cpu_or_none(cpu.batch_norm_backward(&dy, &x, Some(&gamma), s))?,
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
    let (y, saved) = r.be().batch_norm_prelu_forward_train(&gx, Some(&gg), Some(&gb), &ga, eps)?;
    let (yr, dxr, dgr, dbr, dar) = bn_ref(&xv, c, &gv, &bv, Some(&av), &dyv, eps);
    r.record("fused bn+prelu fwd f32", &vals(&y)?, &yr, 1e-5, "f64 formula");
    let (dx, dg, db, da) = r.be().batch_norm_prelu_backward(&gdy, &gx, Some(&gg), Some(&gb), &ga, &saved)?;
    r.record("fused bn+prelu bwd dx f32", &vals(&dx)?, &dxr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dgamma f32", &vals(&dg)?, &dgr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dbeta f32", &vals(&db)?, &dbr, 1e-4, "f64 formula");
    r.record("fused bn+prelu bwd dalpha f32", &vals(&da)?, &dar, 1e-4, "f64 formula");
    let xb = r.up(&x.to_dtype(DType::BF16)?)?;
    let (yb, _) = r.be().batch_norm_prelu_forward_train(&xb, Some(&gg), Some(&gb), &ga, eps)?;
    r.record("fused bn+prelu fwd bf16", &vals(&yb)?, &yr, 1e-2, "f64 formula");

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
