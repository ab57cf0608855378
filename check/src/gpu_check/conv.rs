//! Convolutions on the device against the CPU backend and a direct f64 convolution.

use super::{cpu_or_none, vals, Run, R};
use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, Conv2dParams};
use engine::DType;

/// Direct NHWC/OHWI convolution in f64: (y, dx, dw) for dy.
#[allow(clippy::type_complexity)]
fn conv_ref(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    dy: &[f64],
    p: Conv2dParams,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, h, wd, c] = xs;
    let [o, kh, kw, _] = ws;
    let (ho, wo) = (p.out_size(h), p.out_size(wd));
    let mut y = vec![0.0; n * ho * wo * o];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for b in 0..n {
        for oy in 0..ho {
            for ox in 0..wo {
                for oc in 0..o {
                    let yi = ((b * ho + oy) * wo + ox) * o + oc;
                    let mut acc = 0.0;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                            let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            for ic in 0..c {
                                let xi = ((b * h + iy as usize) * wd + ix as usize) * c + ic;
                                let wi = ((oc * kh + ky) * kw + kx) * c + ic;
                                acc += x[xi] * w[wi];
                                dx[xi] += dy[yi] * w[wi];
                                dw[wi] += dy[yi] * x[xi];
                            }
                        }
                    }
                    y[yi] = acc;
                }
            }
        }
    }
    (y, dx, dw)
}

pub(super) fn conv2d(r: &mut Run) -> R<()> {
    let cpu = CpuBackend;
    for (k, s, pd, c, o) in [(3, 1, 1, 16, 32), (3, 2, 1, 32, 16), (1, 2, 0, 16, 24)] {
        let p = Conv2dParams { kernel: k, stride: s, padding: pd };
        let (n, h) = (2, 9);
        let x = r.rand(&[n, h, h, c], 1.0)?;
        let w = r.rand(&[o, k, k, c], 0.2)?;
        let ho = p.out_size(h);
        let dy = r.rand(&[n, ho, ho, o], 1.0)?;
        let (xv, wv, dyv) = (vals(&x)?, vals(&w)?, vals(&dy)?);
        let (yr, dxr, dwr) = conv_ref(&xv, [n, h, h, c], &wv, [o, k, k, c], &dyv, p);
        let (gx, gw, gdy) = (r.up(&x)?, r.up(&w)?, r.up(&dy)?);
        let tag = format!("k{k} s{s} p{pd} {c}->{o}");
        // cuDNN picks the fastest algorithm by timing; in f32 that may be FFT or Winograd, whose
        // transforms round more than a direct sum (Winograd's larger tiles up to ~1e-5..1e-4 norm-wise).
        let tol = 1e-4;
        let g = r.be().conv2d_forward(&gx, &gw, p)?;
        let c0 = cpu_or_none(cpu.conv2d_forward(&x, &w, p))?;
        r.compare(&format!("conv2d fwd f32 {tag}"), &g, c0, || yr.clone(), tol)?;
        let g = r.be().conv2d_backward_data(&gdy, &gw, x.shape(), p)?;
        let c1 = cpu_or_none(cpu.conv2d_backward_data(&dy, &w, x.shape(), p))?;
        r.compare(&format!("conv2d bwd data f32 {tag}"), &g, c1, || dxr.clone(), tol)?;
        let g = r.be().conv2d_backward_filter(&gdy, &gx, w.shape(), p)?;
        let c2 = cpu_or_none(cpu.conv2d_backward_filter(&dy, &x, w.shape(), p))?;
        r.compare(&format!("conv2d bwd filter f32 {tag}"), &g, c2, || dwr.clone(), tol)?;
        let (xb, wb) = (r.up(&x.to_dtype(DType::BF16)?)?, r.up(&w.to_dtype(DType::BF16)?)?);
        let g = r.be().conv2d_forward(&xb, &wb, p)?;
        r.record(format!("conv2d fwd bf16 {tag}"), &vals(&g)?, &yr, 2e-2, "f64 formula");
    }
    Ok(())
}
