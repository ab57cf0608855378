//! Launches of margin_head.cu. All row arrays are `[B]` f32 device tensors; labels are `[B]` i64.

use crate::backend::cuda::launch::Kernels;
use crate::backend::cuda::{driver_err, CudaContext, CudaStorage};
use crate::heads::kernel_plan::MarginParams;
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::Arc;

const NULL: u64 = 0;

// SAFETY: plain old data with C layout (all fields 4 bytes); passed by value as a kernel parameter.
unsafe impl cudarc::driver::DeviceRepr for MarginParams {}

/// Per-row target terms: z_y, z'_y and the hard-negative threshold tau.
pub struct TargetTerms {
    pub zy: Tensor,
    pub zpy: Tensor,
    pub tau: Tensor,
}

/// The running log-sum-exp of every row as (max, sum), and that of the margin-free non-target logits
/// (kept only under `F_PLAIN_SUM`; otherwise it stays at -inf, 0).
pub struct LseState {
    pub m: Tensor,
    pub s: Tensor,
    pub m_d: Tensor,
    pub s_d: Tensor,
}

/// `t`'s device storage, to write in place (copied only if another tensor shares it).
fn cuda_storage(t: Tensor) -> Result<CudaStorage> {
    match t.into_storage()? {
        Storage::Cuda(s) => Ok(s),
        _ => Err(Error::Device("margin head: a row array off the device".into())),
    }
}

fn rows(t: &Tensor, b: usize, dtype: DType, what: &str) -> Result<()> {
    if t.numel() != b || t.dtype() != dtype {
        return Err(Error::Shape(format!(
            "margin head: {what} must be [{b}] {dtype}, found {} {}",
            t.shape(),
            t.dtype()
        )));
    }
    Ok(())
}

fn per_row(b: usize) -> LaunchConfig {
    Kernels::per_channel(b)
}

fn wrap(b: usize, s: CudaStorage) -> Result<Tensor> {
    Tensor::from_storage([b], Storage::Cuda(s))
}

fn cos_geometry(cos: &Tensor) -> Result<(usize, usize, &'static str)> {
    let (b, nb) = cos.shape().matrix("margin head cosines")?;
    let suf = match cos.dtype() {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => return Err(Error::Unsupported(format!("margin head on {other} cosines"))),
    };
    Ok((b, nb, suf))
}

pub fn target(ctx: &Arc<CudaContext>, cy: &Tensor, hp: &MarginParams) -> Result<TargetTerms> {
    let b = cy.numel();
    rows(cy, b, DType::F32, "c_y")?;
    let mut out: Vec<CudaStorage> =
        (0..3).map(|_| ctx.alloc_storage(DType::F32, b)).collect::<Result<_>>()?;
    {
        let f = ctx.kernels.get("margin_head", "margin_target")?;
        let cv = ctx.storage(cy)?.bytes();
        let [a, bb, c] = &mut out[..] else { unreachable!() };
        let (mut a, mut bb, mut c) = (a.bytes_mut(), bb.bytes_mut(), c.bytes_mut());
        let b32 = b as i32;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&b32).arg(&cv).arg(hp).arg(&mut a).arg(&mut bb).arg(&mut c);
        unsafe { l.launch(per_row(b)) }.map_err(driver_err("margin_target"))?;
    }
    let mut it = out.into_iter();
    let mut next = || wrap(b, it.next().expect("three outputs"));
    Ok(TargetTerms { zy: next()?, zpy: next()?, tau: next()? })
}

/// c_y = xhat_i . what_{y_i} for the rows whose label falls in this class block (rows j0..j0+nb of
/// the normalized weights `what`), written into `cy`; the other rows keep their value. With `raw_norms`
/// (the forward's norms and floor), `what` holds the raw rows, normalized on the fly with the bits
/// l2norm_fwd gives them.
pub fn gather_cy(
    ctx: &Arc<CudaContext>,
    xhat: &Tensor,
    what: &Tensor,
    raw_norms: Option<(&Tensor, f64)>,
    j0: usize,
    labels: &Tensor,
    cy: Tensor,
) -> Result<Tensor> {
    let (b, d) = xhat.shape().matrix("gather_cy x")?;
    let (nb, d2) = what.shape().matrix("gather_cy w")?;
    if d != d2 || xhat.dtype() != what.dtype() {
        return Err(Error::Shape(format!(
            "gather_cy: x {} {} and w {} {}",
            xhat.shape(),
            xhat.dtype(),
            what.shape(),
            what.dtype()
        )));
    }
    rows(labels, b, DType::I64, "labels")?;
    rows(&cy, b, DType::F32, "c_y")?;
    let name = match xhat.dtype() {
        DType::F32 => "margin_gather_cy_f32",
        DType::BF16 => "margin_gather_cy_bf16",
        DType::F16 => "margin_gather_cy_f16",
        other => return Err(Error::Unsupported(format!("gather_cy on {other}"))),
    };
    let mut out = cuda_storage(cy)?;
    {
        let f = ctx.kernels.get("margin_head", name)?;
        let (xv, wv, lv) =
            (ctx.storage(xhat)?.bytes(), ctx.storage(what)?.bytes(), ctx.storage(labels)?.bytes());
        let nv = match raw_norms {
            Some((n, _)) => {
                rows(n, nb, DType::F32, "the weights' norms")?;
                Some(ctx.storage(n)?.bytes())
            }
            None => None,
        };
        let eps = raw_norms.map_or(0.0, |(_, e)| e as f32);
        let mut ov = out.bytes_mut();
        let (b32, d32, j64, nb64) = (b as i32, d as i32, j0 as i64, nb as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&b32).arg(&d32).arg(&j64).arg(&nb64).arg(&xv).arg(&wv);
        match &nv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(&eps).arg(&lv).arg(&mut ov);
        // One warp per row, 8 rows per block of 256 threads.
        let cfg = LaunchConfig {
            grid_dim: (b.div_ceil(8).max(1) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    wrap(b, out)
}

/// M = M_d = -inf, S = S_d = 0 for `b` rows.
pub fn lse_init(ctx: &Arc<CudaContext>, b: usize) -> Result<LseState> {
    use crate::backend::Backend;
    let minus_inf = || -> Result<Tensor> {
        let mut m = ctx.alloc_storage(DType::F32, b)?;
        {
            let f = ctx.kernels.get("elementwise", "fill_f32")?;
            let mut mv = m.bytes_mut();
            let (n64, v) = (b as i64, f32::NEG_INFINITY);
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&n64).arg(&v).arg(&mut mv);
            unsafe { l.launch(ctx.kernels.elementwise(b)) }.map_err(driver_err("fill_f32"))?;
        }
        wrap(b, m)
    };
    Ok(LseState {
        m: minus_inf()?,
        s: ctx.zeros(&[b].into(), DType::F32)?,
        m_d: minus_inf()?,
        s_d: ctx.zeros(&[b].into(), DType::F32)?,
    })
}

/// Merges one class block (columns j0..j0+nb of the classifier, cosines `[B, nb]`) into the state.
pub fn forward_block(
    ctx: &Arc<CudaContext>,
    cos: &Tensor,
    j0: usize,
    labels: &Tensor,
    t: &TargetTerms,
    hp: &MarginParams,
    state: LseState,
) -> Result<LseState> {
    let (b, nb, suf) = cos_geometry(cos)?;
    rows(labels, b, DType::I64, "labels")?;
    let name = match suf {
        "f32" => "margin_fwd_block_f32",
        "bf16" => "margin_fwd_block_bf16",
        _ => "margin_fwd_block_f16",
    };
    // Updated in place (the state passes from block to block).
    let (mut m, mut s) = (cuda_storage(state.m)?, cuda_storage(state.s)?);
    let (mut md, mut sd) = (cuda_storage(state.m_d)?, cuda_storage(state.s_d)?);
    {
        let f = ctx.kernels.get("margin_head", name)?;
        let (cv, lv) = (ctx.storage(cos)?.bytes(), ctx.storage(labels)?.bytes());
        let (tv, zv) = (ctx.storage(&t.tau)?.bytes(), ctx.storage(&t.zy)?.bytes());
        let (mut mv, mut sv) = (m.bytes_mut(), s.bytes_mut());
        let (mut mdv, mut sdv) = (md.bytes_mut(), sd.bytes_mut());
        let (b32, nb32, j64, ldc) = (b as i32, nb as i32, j0 as i64, nb as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&b32).arg(&nb32).arg(&j64).arg(&ldc).arg(&cv).arg(&lv).arg(&tv).arg(&zv).arg(hp);
        l.arg(&mut mv).arg(&mut sv).arg(&mut mdv).arg(&mut sdv);
        unsafe { l.launch(Kernels::per_row(b, 256)) }.map_err(driver_err(name))?;
    }
    Ok(LseState { m: wrap(b, m)?, s: wrap(b, s)?, m_d: wrap(b, md)?, s_d: wrap(b, sd)? })
}

/// (lse, loss) per row of a fixed-parameter head.
pub fn finish(
    ctx: &Arc<CudaContext>,
    labels: &Tensor,
    state: &LseState,
    zy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let b = labels.numel();
    rows(labels, b, DType::I64, "labels")?;
    let (mut lse, mut loss) = (ctx.alloc_storage(DType::F32, b)?, ctx.alloc_storage(DType::F32, b)?);
    {
        let f = ctx.kernels.get("margin_head", "margin_finish")?;
        let lv = ctx.storage(labels)?.bytes();
        let (mv, sv) = (ctx.storage(&state.m)?.bytes(), ctx.storage(&state.s)?.bytes());
        let zv = ctx.storage(zy)?.bytes();
        let (mut a, mut c) = (lse.bytes_mut(), loss.bytes_mut());
        let b32 = b as i32;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&b32).arg(&lv).arg(&mv).arg(&sv).arg(&zv).arg(&mut a).arg(&mut c);
        unsafe { l.launch(per_row(b)) }.map_err(driver_err("margin_finish"))?;
    }
    Ok((wrap(b, lse)?, wrap(b, loss)?))
}

/// G = dL/dcos for one class block, in the cosines' dtype.
pub fn backward_block(
    ctx: &Arc<CudaContext>,
    cos: &Tensor,
    j0: usize,
    labels: &Tensor,
    t: &TargetTerms,
    lse: &Tensor,
    st: Option<&Tensor>,
    hp: &MarginParams,
) -> Result<Tensor> {
    let (b, nb, suf) = cos_geometry(cos)?;
    rows(labels, b, DType::I64, "labels")?;
    let name = match suf {
        "f32" => "margin_bwd_block_f32",
        "bf16" => "margin_bwd_block_bf16",
        _ => "margin_bwd_block_f16",
    };
    let mut g = ctx.alloc_storage(cos.dtype(), b * nb)?;
    {
        let f = ctx.kernels.get("margin_head", name)?;
        let (cv, lv) = (ctx.storage(cos)?.bytes(), ctx.storage(labels)?.bytes());
        let (tv, zv, zpv) =
            (ctx.storage(&t.tau)?.bytes(), ctx.storage(&t.zy)?.bytes(), ctx.storage(&t.zpy)?.bytes());
        let lsev = ctx.storage(lse)?.bytes();
        let stv = st.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()?;
        let mut gv = g.bytes_mut();
        let (b32, nb32, j64, ld) = (b as i32, nb as i32, j0 as i64, nb as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&b32).arg(&nb32).arg(&j64).arg(&ld).arg(&cv).arg(&lv).arg(&tv).arg(&zv).arg(&zpv);
        l.arg(&lsev);
        match &stv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(hp).arg(&ld).arg(&mut gv);
        let cfg = LaunchConfig {
            grid_dim: (nb.div_ceil(256).max(1) as u32, b.max(1) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    Tensor::from_storage([b, nb], Storage::Cuda(g))
}

/// Rows of `d` f32 copied from `src` into `dst`: row `to[k]` of dst = row `from[k]` of src for k < n
/// (`None`: k), through i64 index tensors (margin_copy_rows). The rows of dst not written keep theirs.
pub fn copy_rows(
    ctx: &Arc<CudaContext>,
    src: &Tensor,
    from: Option<&Tensor>,
    to: Option<&Tensor>,
    n: usize,
    dst: Tensor,
) -> Result<Tensor> {
    let (rs, d) = src.shape().matrix("copy_rows source")?;
    let (rd, dd) = dst.shape().matrix("copy_rows destination")?;
    if d != dd || src.dtype() != DType::F32 || dst.dtype() != DType::F32 {
        return Err(Error::Shape(format!(
            "copy_rows: {} {} into {} {}",
            src.shape(),
            src.dtype(),
            dst.shape(),
            dst.dtype()
        )));
    }
    for (idx, rows_of, what) in [(from, rs, "source rows"), (to, rd, "destination rows")] {
        match idx {
            Some(t) => rows(t, n, DType::I64, what)?,
            None if n > rows_of => {
                return Err(Error::Shape(format!("copy_rows: {n} {what} of {rows_of}")));
            }
            None => {}
        }
    }
    let shape = dst.shape().clone();
    let mut out = cuda_storage(dst)?;
    {
        let f = ctx.kernels.get("margin_head", "margin_copy_rows")?;
        let sv = ctx.storage(src)?.bytes();
        let fv = from.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()?;
        let tv = to.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()?;
        let mut ov = out.bytes_mut();
        let (n64, d32) = (n as i64, d as i32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&d32);
        match &fv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        match &tv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(&sv).arg(&mut ov);
        unsafe { l.launch(ctx.kernels.elementwise(n * d)) }.map_err(driver_err("margin_copy_rows"))?;
    }
    Tensor::from_storage(shape, Storage::Cuda(out))
}
