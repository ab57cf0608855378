//! The training primitives on the device: the multi-tensor SGD and AdamW updates (several tables of
//! tensors, 16-bit gradients, a gradient scale, the 16-bit copies of the weights), the multi-tensor
//! checks (non-finite flags, square sums, the unscale) and the uint8 batch conversion, against f64
//! formulas and the CPU backend.

use super::{vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::multi_tensor::{CHECK_MAX, MT_CHUNK};
use engine::backend::{AdamWParam, AdamWStep, Backend, SgdParam, SgdStep};
use engine::{DType, Tensor};

fn cpu_scale(t: &Tensor, s: f64) -> R<Tensor> {
    Ok(CpuBackend.affine(t, s, 0.0)?)
}

/// Tensor sizes for the multi-tensor updates: more than one table (OPT_MAX entries), tensors spanning
/// several blocks and ones smaller than a block, one empty.
fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (0..37).map(|i| 1 + (i * 977) % 3001).collect();
    v[3] = 10_007;
    v[11] = 0;
    v[20] = 3 * MT_CHUNK + 5;
    v
}

pub(super) fn training(r: &mut Run) -> R<()> {
    let sz = sizes();
    let p0: Vec<Tensor> = sz.iter().map(|&n| r.rand(&[n], 1.0)).collect::<R<_>>()?;
    let g1: Vec<Tensor> = sz.iter().map(|&n| r.rand(&[n], 0.1)).collect::<R<_>>()?;
    let g2: Vec<Tensor> = sz.iter().map(|&n| r.rand(&[n], 0.1)).collect::<R<_>>()?;
    // Every third gradient arrives in bf16 (a weight's gradient from an autocast GEMM), read widened:
    // the reference uses the same rounded values.
    let as_grad = |k: usize, g: &Tensor| -> R<Tensor> {
        Ok(if k % 3 == 1 { CpuBackend.cast(g, DType::BF16)? } else { g.clone() })
    };
    let half_of = |k: usize| match k % 4 {
        0 => Some(DType::BF16),
        1 => Some(DType::F16),
        _ => None,
    };
    // SGD, two steps (torch semantics: the buffer starts as the first decayed gradient), gradients given
    // at twice their size with a gradient scale of 0.5, per-tensor learning rates and decays.
    let sgd = SgdStep { momentum: 0.9, dampening: 0.0, nesterov: false, grad_scale: 0.5 };
    let lr_of = |k: usize| 0.1 / (1.0 + k as f64 / 8.0);
    let wd_of = |k: usize| if k.is_multiple_of(2) { 5e-4 } else { 0.0 };
    let mut ps: Vec<Tensor> = p0.iter().map(|p| r.up(p)).collect::<R<_>>()?;
    let mut bufs: Vec<Option<Tensor>> = vec![None; sz.len()];
    let mut copies = Vec::new();
    for gs in [&g1, &g2] {
        let gd: Vec<Tensor> =
            gs.iter().enumerate().map(|(k, g)| r.up(&as_grad(k, &cpu_scale(g, 2.0)?)?)).collect::<R<_>>()?;
        let mut params: Vec<SgdParam<'_>> = ps
            .iter_mut()
            .zip(&gd)
            .zip(bufs.iter_mut())
            .enumerate()
            .map(|(k, ((p, g), buf))| SgdParam {
                p,
                g,
                buf,
                lr: lr_of(k),
                weight_decay: wd_of(k),
                half_copy: half_of(k),
            })
            .collect();
        copies = r.be().sgd_update(&mut params, &sgd)?.half_copies;
    }
    let (mut got, mut want, mut got16, mut want16) = (vec![], vec![], vec![], vec![]);
    for k in 0..sz.len() {
        let mut w = vals(&p0[k])?;
        let mut b = vec![0.0; sz[k]];
        for (step, g) in [&g1[k], &g2[k]].iter().enumerate() {
            let g = vals(&as_grad(k, &cpu_scale(g, 2.0)?)?)?;
            for i in 0..sz[k] {
                let d = 0.5 * g[i] + wd_of(k) * w[i];
                b[i] = if step == 0 { d } else { 0.9 * b[i] + d };
                w[i] -= lr_of(k) * b[i];
            }
        }
        got.extend(vals(&ps[k])?);
        if let Some(c) = &copies[k] {
            if c.dtype() != half_of(k).ok_or("a copy nobody asked for")? {
                return Err(format!("sgd: tensor {k}'s copy is {}, not {:?}", c.dtype(), half_of(k)).into());
            }
            got16.extend(vals(c)?);
            want16.extend(&w);
        } else if half_of(k).is_some() {
            return Err(format!("sgd: no 16-bit copy of tensor {k}").into());
        }
        want.extend(w);
    }
    r.record(
        format!("sgd_multi momentum+wd, 2 steps, {} tensors", sz.len()),
        &got,
        &want,
        1e-6,
        "f64 formula",
    );
    r.record("sgd_multi 16-bit copies of the weights", &got16, &want16, 5e-3, "f64 formula");
    // The same two steps on the CPU backend.
    let mut pc: Vec<Tensor> = p0.clone();
    let mut bc: Vec<Option<Tensor>> = vec![None; sz.len()];
    for gs in [&g1, &g2] {
        let gd: Vec<Tensor> =
            gs.iter().enumerate().map(|(k, g)| as_grad(k, &cpu_scale(g, 2.0)?)).collect::<R<_>>()?;
        let mut params: Vec<SgdParam<'_>> = pc
            .iter_mut()
            .zip(&gd)
            .zip(bc.iter_mut())
            .enumerate()
            .map(|(k, ((p, g), buf))| SgdParam {
                p,
                g,
                buf,
                lr: lr_of(k),
                weight_decay: wd_of(k),
                half_copy: None,
            })
            .collect();
        CpuBackend.sgd_update(&mut params, &sgd)?;
    }
    let cpu: Vec<f64> = pc.iter().map(vals).collect::<R<Vec<_>>>()?.concat();
    r.record("sgd_multi, 2 steps", &got, &cpu, 1e-6, "CPU backend");
    // The flags an update sets where its results are not finite: none for a plain step; a learning rate
    // of 1e38 on gradients scaled by 1e10 overflows every non-empty tensor; an infinite gradient in one
    // tensor flags it alone.
    let gd: Vec<Tensor> = g1.iter().map(|g| r.up(g)).collect::<R<_>>()?;
    let mut bad_g = g1[5].clone();
    bad_g.as_mut_slice::<f32>()?[0] = f32::INFINITY;
    let mut gd_bad = gd.clone();
    gd_bad[5] = r.up(&bad_g)?;
    let mut flagged = Vec::new();
    for (lr, gs, grads) in [(0.1, 1.0, &gd), (1e38, 1e10, &gd), (0.1, 1.0, &gd_bad)] {
        let mut ps2 = ps.clone();
        let mut bufs2 = bufs.clone();
        let mut params: Vec<SgdParam<'_>> = ps2
            .iter_mut()
            .zip(bufs2.iter_mut())
            .zip(grads)
            .map(|((p, buf), g)| SgdParam { p, g, buf, lr, weight_decay: 0.0, half_copy: None })
            .collect();
        let up = r.be().sgd_update(&mut params, &SgdStep { grad_scale: gs, ..sgd })?;
        let f: Vec<f64> = vals(&up.nonfinite)?;
        flagged.push(f.iter().filter(|&&v| v != 0.0).count() as f64);
        flagged.push(r.be().first_flagged(&up.nonfinite)?.map_or(-1.0, |i| i as f64));
    }
    let overflowing = sz.iter().filter(|&&n| n > 0).count() as f64;
    r.record(
        "sgd_multi non-finite flags (none; overflow: every non-empty tensor; inf gradient in tensor 5: it)",
        &flagged,
        &[0.0, -1.0, overflowing, 0.0, 1.0, 5.0],
        0.0,
        "f64 formula",
    );
    // AdamW, two updates; the tensors start at different steps (torch counts steps per parameter).
    let adamw = AdamWStep { beta1: 0.9, beta2: 0.999, eps: 1e-8, grad_scale: 1.0 };
    let start = |k: usize| (k % 3) as u32;
    let zeros = |n: usize| Tensor::zeros([n], DType::F32, &r.dev);
    let mut ps: Vec<Tensor> = p0.iter().map(|p| r.up(p)).collect::<R<_>>()?;
    let mut ms: Vec<Tensor> = sz.iter().map(|&n| zeros(n)).collect::<engine::Result<_>>()?;
    let mut vs: Vec<Tensor> = ms.clone();
    for (t, gs) in [&g1, &g2].into_iter().enumerate() {
        let gd: Vec<Tensor> = gs.iter().enumerate().map(|(k, g)| r.up(&as_grad(k, g)?)).collect::<R<_>>()?;
        let mut params: Vec<AdamWParam<'_>> = ps
            .iter_mut()
            .zip(&gd)
            .zip(ms.iter_mut().zip(vs.iter_mut()))
            .enumerate()
            .map(|(k, ((p, g), (m, v)))| AdamWParam {
                p,
                g,
                m,
                v,
                lr: 1e-3,
                weight_decay: 0.05,
                step: start(k) + t as u32 + 1,
                half_copy: None,
            })
            .collect();
        r.be().adamw_update(&mut params, &adamw)?;
    }
    let (mut got, mut want) = (vec![], vec![]);
    for k in 0..sz.len() {
        let mut w = vals(&p0[k])?;
        let (mut mm, mut vv) = (vec![0.0; sz[k]], vec![0.0; sz[k]]);
        for (t, g) in [&g1[k], &g2[k]].iter().enumerate() {
            let g = vals(&as_grad(k, g)?)?;
            let t = (start(k) as usize + t + 1) as i32;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            for i in 0..sz[k] {
                w[i] *= 1.0 - 1e-3 * 0.05;
                mm[i] = 0.9 * mm[i] + 0.1 * g[i];
                vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
                w[i] -= 1e-3 / bc1 * mm[i] / (vv[i].sqrt() / bc2.sqrt() + 1e-8);
            }
        }
        got.extend(vals(&ps[k])?);
        want.extend(w);
    }
    r.record(
        format!("adamw_multi, 2 steps from steps 1-3, {} tensors", sz.len()),
        &got,
        &want,
        1e-6,
        "f64 formula",
    );
    // The checks over more tensors than one table holds (CHECK_MAX), f32 and bf16.
    let many: Vec<Tensor> = (0..CHECK_MAX + 9)
        .map(|k| {
            let t = r.rand(&[1 + (k * 131) % 700], 1.0)?;
            as_grad(k, &t)
        })
        .collect::<R<_>>()?;
    let dev_many: Vec<Tensor> = many.iter().map(|t| r.up(t)).collect::<R<_>>()?;
    let refs: Vec<&Tensor> = dev_many.iter().collect();
    let clean = r.be().first_nonfinite(&refs)?.map_or(-1.0, |i| i as f64);
    let mut bad = many[CHECK_MAX + 4].clone();
    if bad.dtype() == DType::F32 {
        bad.as_mut_slice::<f32>()?[0] = f32::INFINITY;
    } else {
        bad = CpuBackend.cast(
            &CpuBackend.affine(&CpuBackend.cast(&bad, DType::F32)?, f64::INFINITY, 0.0)?,
            bad.dtype(),
        )?;
    }
    let mut with_bad = dev_many.clone();
    with_bad[CHECK_MAX + 4] = r.up(&bad)?;
    let refs_bad: Vec<&Tensor> = with_bad.iter().collect();
    let found = r.be().first_nonfinite(&refs_bad)?.map_or(-1.0, |i| i as f64);
    r.record(
        format!(
            "nonfinite_multi over {} tensors (clean: none; inf in tensor {}: found)",
            many.len(),
            CHECK_MAX + 4
        ),
        &[clean, found],
        &[-1.0, (CHECK_MAX + 4) as f64],
        0.0,
        "f64 formula",
    );
    let total = r.be().sum_of_squares(&refs)?;
    let want_sq: f64 =
        many.iter().map(|t| vals(t).map(|v| v.iter().map(|x| x * x).sum::<f64>())).sum::<R<f64>>()?;
    r.record(format!("sumsq_multi over {} tensors", many.len()), &[total], &[want_sq], 1e-9, "f64 formula");
    let mut scaled = dev_many.clone();
    let mut refs_mut: Vec<&mut Tensor> = scaled.iter_mut().collect();
    let none = r.be().scale_and_check(&mut refs_mut, 0.25)?.map_or(-1.0, |i| i as f64);
    let kinds_ok = scaled.iter().all(|t| t.dtype() == DType::F32);
    let got: Vec<f64> = scaled.iter().map(vals).collect::<R<Vec<_>>>()?.concat();
    let want: Vec<f64> =
        many.iter().map(vals).collect::<R<Vec<_>>>()?.concat().iter().map(|v| v * 0.25).collect();
    r.record("scale_multi x0.25 (16-bit inputs widened to f32)", &got, &want, 0.0, "f64 formula");
    r.record(
        "scale_multi: all f32, none flagged",
        &[kinds_ok as u8 as f64, none],
        &[1.0, -1.0],
        0.0,
        "f64 formula",
    );
    // uint8 images -> normalized NHWC with flips.
    let (ni, h, w) = (3, 5, 7);
    let img: Vec<u8> = (0..ni * h * w * 3).map(|_| r.rng.below(256) as u8).collect();
    let flips = [false, true, true];
    let t = r.be().images_to_nhwc(&img, [ni, h, w, 3], &flips, DType::F32)?;
    let mut want = vec![0.0; img.len()];
    for b in 0..ni {
        for y in 0..h {
            for x in 0..w {
                let sx = if flips[b] { w - 1 - x } else { x };
                for ch in 0..3 {
                    let v = img[((b * h + y) * w + sx) * 3 + ch] as f64;
                    want[((b * h + y) * w + x) * 3 + ch] = (v / 255.0 - 0.5) / 0.5;
                }
            }
        }
    }
    r.record("uint8 HWC -> normalized NHWC + flip", &vals(&t)?, &want, 1e-6, "f64 formula");
    let c = CpuBackend.images_to_nhwc(&img, [ni, h, w, 3], &flips, DType::F32)?;
    r.record("uint8 HWC -> normalized NHWC + flip", &vals(&t)?, &vals(&c)?, 1e-6, "CPU backend");
    Ok(())
}
