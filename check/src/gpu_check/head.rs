//! The chunked margin head on the device against the heads' own classifier in f64, and the caching
//! allocator's steady state.

use super::{Run, R};
use engine::backend::MarginHeadCall;
use engine::heads::{self, HeadParams, RunOptions};
use engine::{DType, Tensor};

/// The three kinds of non-target map the kernels implement beside the plain one, through the fixed
/// parameters (ArcFace) and the row plans (CurricularFace, QAMFace), and QCFace's margin-free sum beside
/// modulated negatives (QCFace-Cur, QCFace-MVS: p_d from a second log-sum-exp merged across the blocks),
/// with the classes in 3 blocks, the cosines in f32 and in bf16: loss, dL/dx and dL/dW against
/// `heads::run` in f64 on the same inputs.
/// bf16 cosines are held at 300 times the f32 tolerances (a cosine moves by up to 2^-9, a logit by s
/// times that).
pub(super) fn margin_head(r: &mut Run) -> R<()> {
    let (b, d, c, block) = (64usize, 32usize, 1000usize, 384usize);
    let x = r.rand(&[b, d], 2.0)?;
    let w = r.rand(&[c, d], 0.1)?;
    let labels: Vec<i64> = (0..b).map(|_| r.rng.below(c as u64) as i64).collect();
    // Make some targets easy (large cosines) so that margins and hard negatives are exercised.
    let mut xv = x.to_f64_vec()?;
    let wv = w.to_f64_vec()?;
    for i in (0..b).step_by(3) {
        let y = labels[i] as usize;
        for k in 0..d {
            xv[i * d + k] += 30.0 * wv[y * d + k];
        }
    }
    let x = Tensor::from_vec(xv.iter().map(|&v| v as f32).collect::<Vec<f32>>(), [b, d])?;
    let (x64, w64) = (x.to_dtype(DType::F64)?, w.to_dtype(DType::F64)?);
    let (gx, gw) = (r.up(&x)?, r.up(&w)?);
    let heads = [
        ("arcface", 64.0),
        ("curricularface", 64.0),
        ("qamface", 6.0),
        ("qcface-cur", 64.0),
        ("qcface-mvs", 32.0),
    ];
    for (name, s) in heads {
        let params = HeadParams { s: Some(s), ..HeadParams::default() };
        let mut reference = heads::from_name(name, &params)?;
        reference.set_training(true);
        let opts = RunOptions { compute_grad: true, frozen: None };
        let want =
            heads::run::<f64>(x64.as_slice()?, w64.as_slice()?, &labels, d, reference.as_mut(), &opts)?;
        for (dtype, k) in [(None, 1.0), (Some(DType::BF16), 300.0)] {
            let mut head = heads::from_name(name, &params)?;
            head.set_training(true);
            let call = MarginHeadCall {
                x: &gx,
                w: &gw,
                labels: &labels,
                head: head.as_mut(),
                grad: true,
                autocast: dtype,
                max_block_elems: b * block,
            };
            let out = r.be().margin_head(call)?;
            let (dx, dw) = out.grads.ok_or("the head returned no gradients")?;
            let tag = format!("margin head {name} ({} cosines, 3 blocks)", dtype.unwrap_or(DType::F32));
            let src = "heads' classifier, f64";
            r.record(format!("{tag}: loss"), &out.loss.to_f64_vec()?, &[want.loss], 1e-5 * k, src);
            r.record(format!("{tag}: dL/dx"), &dx.to_f64_vec()?, &want.grad_x, 1e-4 * k, src);
            r.record(format!("{tag}: dL/dW"), &dw.to_f64_vec()?, &want.grad_w, 1e-4 * k, src);
        }
    }
    Ok(())
}

pub(super) fn allocator(r: &mut Run) -> R<()> {
    // The same shapes again must come from the free lists, not the driver.
    let before = r.be().counters();
    for _ in 0..3 {
        let host = r.rand(&[256, 256], 1.0)?;
        let a = r.up(&host)?;
        let _ = r.be().affine(&a, 2.0, 1.0)?;
    }
    r.be().synchronize()?;
    let mid = r.be().counters();
    for _ in 0..3 {
        let host = r.rand(&[256, 256], 1.0)?;
        let a = r.up(&host)?;
        let _ = r.be().affine(&a, 2.0, 1.0)?;
    }
    let after = r.be().counters();
    let new_allocs = (after.driver_allocs - mid.driver_allocs) as f64;
    println!("allocator: {} driver allocations before, {} reuses", before.driver_allocs, after.reuses);
    r.record("allocator: no driver allocation in steady state", &[new_allocs], &[0.0], 0.0, "count");
    Ok(())
}
