//! The training primitives on the device: SGD and AdamW updates (with a gradient scale and the bf16 copy
//! of the weights), the non-finite check and the uint8 batch conversion, against f64 formulas and the
//! CPU backend.

use super::{vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::{AdamWStep, Backend, SgdStep};
use engine::{DType, Tensor};

fn cpu_scale(t: &Tensor, s: f64) -> R<Tensor> {
    Ok(CpuBackend.affine(t, s, 0.0)?)
}

pub(super) fn training(r: &mut Run) -> R<()> {
    let n = 10_007;
    let p0 = r.rand(&[n], 1.0)?;
    let g1 = r.rand(&[n], 0.1)?;
    let g2 = r.rand(&[n], 0.1)?;
    let (pv, g1v, g2v) = (vals(&p0)?, vals(&g1)?, vals(&g2)?);
    // SGD, two steps (torch semantics, momentum buffer starts as the first gradient), with the gradients
    // given at twice their size and a gradient scale of 0.5; the second step also writes the bf16 copy.
    let sgd = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 5e-4,
        nesterov: false,
        grad_scale: 0.5,
        bf16_copy: false,
    };
    let (mut p, mut buf) = (r.up(&p0)?, None);
    r.be().sgd_step(&mut p, &r.up(&cpu_scale(&g1, 2.0)?)?, &mut buf, &sgd)?;
    let h2 = r.be().sgd_step(
        &mut p,
        &r.up(&cpu_scale(&g2, 2.0)?)?,
        &mut buf,
        &SgdStep { bf16_copy: true, ..sgd },
    )?;
    let mut want = pv.clone();
    let mut b = vec![0.0; n];
    for (step, g) in [&g1v, &g2v].iter().enumerate() {
        for i in 0..n {
            let d = g[i] + 5e-4 * want[i];
            b[i] = if step == 0 { d } else { 0.9 * b[i] + d };
            want[i] -= 0.1 * b[i];
        }
    }
    r.record("sgd momentum+wd, 2 steps", &vals(&p)?, &want, 1e-6, "f64 formula");
    r.record("sgd bf16 copy of weights", &vals(&h2.ok_or("no bf16 copy")?)?, &want, 5e-3, "f64 formula");
    // The same two steps on the CPU backend.
    let (mut pc, mut bc) = (p0.clone(), None);
    CpuBackend.sgd_step(&mut pc, &cpu_scale(&g1, 2.0)?, &mut bc, &sgd)?;
    CpuBackend.sgd_step(&mut pc, &cpu_scale(&g2, 2.0)?, &mut bc, &sgd)?;
    r.record("sgd, 2 steps", &vals(&p)?, &vals(&pc)?, 1e-6, "CPU backend");
    // AdamW, two steps.
    let adamw = |step| AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
        step,
        grad_scale: 1.0,
        bf16_copy: false,
    };
    let zeros = Tensor::zeros([n], DType::F32, &r.dev)?;
    let (mut p, mut m, mut v) = (r.up(&p0)?, zeros.clone(), zeros);
    r.be().adamw_step(&mut p, &r.up(&g1)?, &mut m, &mut v, &adamw(1))?;
    r.be().adamw_step(&mut p, &r.up(&g2)?, &mut m, &mut v, &adamw(2))?;
    let mut want = pv.clone();
    let (mut mm, mut vv) = (vec![0.0; n], vec![0.0; n]);
    for (t, g) in [&g1v, &g2v].iter().enumerate() {
        let t = (t + 1) as i32;
        for i in 0..n {
            want[i] *= 1.0 - 1e-3 * 0.05;
            mm[i] = 0.9 * mm[i] + 0.1 * g[i];
            vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
            let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
            want[i] -= 1e-3 / bc1 * mm[i] / (vv[i].sqrt() / bc2.sqrt() + 1e-8);
        }
    }
    r.record("adamw, 2 steps", &vals(&p)?, &want, 1e-6, "f64 formula");
    // Non-finite check: the index of the first tensor with an inf.
    let clean = r.up(&g1)?;
    let mut bad = g2.clone();
    bad.as_mut_slice::<f32>()?[n / 2] = f32::INFINITY;
    let bad = r.up(&bad)?;
    let found_clean = r.be().first_nonfinite(&[&clean, &clean])?.map_or(-1.0, |i| i as f64);
    let found_bad = r.be().first_nonfinite(&[&clean, &bad, &clean])?.map_or(-1.0, |i| i as f64);
    r.record(
        "non-finite check (clean: none; inf in the 2nd of 3: index 1)",
        &[found_clean, found_bad],
        &[-1.0, 1.0],
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
