//! Elementwise ops, reductions, matmul, dropout and the L2 normalization on the device.

use super::{cpu_or_none, vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, BinaryOp, UnaryOp};
use engine::DType;

pub(super) fn elementwise(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let a = r.rand(&[1000, 37], 1.0)?;
    let b = r.rand(&[1000, 37], 1.0)?;
    // Positive inputs for log/sqrt/recip/div.
    let pos = cpu.affine(&cpu.unary(UnaryOp::Square, &a)?, 1.0, 0.5)?;
    let (ga, gb, gp) = (r.up(&a)?, r.up(&b)?, r.up(&pos)?);
    for (op, name) in
        [(BinaryOp::Add, "add"), (BinaryOp::Sub, "sub"), (BinaryOp::Mul, "mul"), (BinaryOp::Div, "div")]
    {
        let (x, y, gx, gy) = if op == BinaryOp::Div { (&a, &pos, &ga, &gp) } else { (&a, &b, &ga, &gb) };
        let g = r.be().binary(op, gx, gy)?;
        let c = cpu.binary(op, x, y)?;
        r.compare(&format!("binary {name} f32"), &g, Some(c), Vec::new, 1e-6)?;
    }
    for (op, name, pos_only) in [
        (UnaryOp::Neg, "neg", false),
        (UnaryOp::Exp, "exp", false),
        (UnaryOp::Log, "log", true),
        (UnaryOp::Sqrt, "sqrt", true),
        (UnaryOp::Square, "square", false),
        (UnaryOp::Recip, "recip", true),
    ] {
        let (x, gx) = if pos_only { (&pos, &gp) } else { (&a, &ga) };
        let g = r.be().unary(op, gx)?;
        let c = cpu.unary(op, x)?;
        r.compare(&format!("unary {name} f32"), &g, Some(c), Vec::new, 1e-6)?;
    }
    let g = r.be().affine(&ga, 0.7, -0.3)?;
    r.compare("affine f32", &g, Some(cpu.affine(&a, 0.7, -0.3)?), Vec::new, 1e-6)?;
    // Residual add in bf16 against the f32 sum rounded once (the kernel sums in f32, rounds once).
    let (ab, bb) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    let g = r.be().binary(BinaryOp::Add, &r.up(&ab)?, &r.up(&bb)?)?;
    let want: Vec<f64> = vals(&ab)?.iter().zip(vals(&bb)?).map(|(x, y)| x + y).collect();
    r.record("residual add bf16", &vals(&g)?, &want, 8e-3, "f64 formula");
    let g = r.be().cast(&ga, DType::BF16)?;
    r.record("cast f32->bf16 (exact rounding)", &vals(&g)?, &vals(&ab)?, 0.0, "CPU cast");
    Ok(())
}

pub(super) fn reductions(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    for (rows, c) in [(100_000, 64), (3, 517), (4097, 3)] {
        let a = r.rand(&[rows, c], 1.0)?;
        let g = r.be().sum_rows(&r.up(&a)?)?;
        r.compare(&format!("sum_rows [{rows}, {c}]"), &g, Some(cpu.sum_rows(&a)?), Vec::new, 1e-5)?;
    }
    let a = r.rand(&[1_000_003], 1.0)?;
    let g = r.be().sum_all(&r.up(&a)?)?;
    r.compare("sum_all [1000003]", &g, Some(cpu.sum_all(&a)?), Vec::new, 1e-5)?;
    Ok(())
}

pub(super) fn matmul(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let (m, k, n) = (129, 70, 33);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = r.rand(&if ta { [k, m] } else { [m, k] }, 1.0)?;
        let b = r.rand(&if tb { [n, k] } else { [k, n] }, 1.0)?;
        let g = r.be().matmul(&r.up(&a)?, &r.up(&b)?, ta, tb)?;
        r.compare(
            &format!("matmul f32 ta={ta} tb={tb}"),
            &g,
            Some(cpu.matmul(&a, &b, ta, tb)?),
            Vec::new,
            1e-5,
        )?;
        let (ab, bb) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
        let g = r.be().matmul(&r.up(&ab)?, &r.up(&bb)?, ta, tb)?;
        let c = cpu.matmul(&ab.to_dtype(DType::F32)?, &bb.to_dtype(DType::F32)?, ta, tb)?;
        r.compare(&format!("matmul bf16 ta={ta} tb={tb}"), &g, Some(c), Vec::new, 1e-2)?;
    }
    Ok(())
}

pub(super) fn dropout_l2(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    let x = r.rand(&[300, 512], 1.0)?;
    let (p, seed) = (0.4, 1234u64);
    let (y, mask) = r.be().dropout(&r.up(&x)?, p, seed)?;
    let xv = vals(&x)?;
    // The kernel's scale is an f32 division; the mask holds that f32 exactly.
    let scale = (1.0f32 / (1.0 - p as f32)) as f64;
    let want_mask: Vec<f64> = (0..xv.len())
        .map(|i| if engine::backend::dropout_keep(seed, i as u64, p as f32) { scale } else { 0.0 })
        .collect();
    r.record("dropout mask (exact, host mirror)", &vals(&mask)?, &want_mask, 0.0, "f64 formula");
    let want_y: Vec<f64> = xv.iter().zip(&want_mask).map(|(a, m)| a * m).collect();
    r.record("dropout y f32", &vals(&y)?, &want_y, 1e-6, "f64 formula");

    let eps = 1e-12;
    let (y, norms) = r.be().l2_normalize_rows(&r.up(&x)?, eps)?;
    let d = 512;
    let nr: Vec<f64> = xv.chunks(d).map(|row| row.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let yr: Vec<f64> = (0..xv.len()).map(|i| xv[i] / nr[i / d]).collect();
    let cpu_l2 = cpu_or_none(cpu.l2_normalize_rows(&x, eps))?;
    r.compare("l2 normalize fwd f32", &y, cpu_l2.as_ref().map(|t| t.0.clone()), || yr.clone(), 1e-6)?;
    r.compare("l2 normalize norms f32", &norms, cpu_l2.as_ref().map(|t| t.1.clone()), || nr.clone(), 1e-6)?;
    let dy = r.rand(&[300, 512], 1.0)?;
    let dyv = vals(&dy)?;
    let dx = r.be().l2_normalize_rows_backward(&r.up(&dy)?, &y, &norms)?;
    let mut dxr = vec![0.0; xv.len()];
    for (row, &n) in nr.iter().enumerate() {
        let o = row * d;
        let dot: f64 = (0..d).map(|k| dyv[o + k] * yr[o + k]).sum();
        for k in 0..d {
            dxr[o + k] = (dyv[o + k] - yr[o + k] * dot) / n;
        }
    }
    let cpu_l2b = match &cpu_l2 {
        Some((cy, cn)) => cpu_or_none(cpu.l2_normalize_rows_backward(&dy, cy, cn))?,
        None => None,
    };
    r.compare("l2 normalize bwd f32", &dx, cpu_l2b, || dxr, 1e-5)?;
    Ok(())
}
