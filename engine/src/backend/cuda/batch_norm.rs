//! Launches of kernels/cuda/batch_norm.cu: training batch norm as two launches forward (statistics with
//! the running update and the fold; apply, with PReLU or a residual shortcut fused) and two backward
//! (reduce; dx with a shortcut's gradient fused). CPU twins: `backend/cpu/mod.rs` (batch norm methods).

use super::launch::Kernels;
use super::ops::{last_dim, per_channel, wrap, NULL};
use super::storage::ChannelMoments;
use super::{driver_err, CudaContext, CudaStorage};
use crate::backend::{BatchNormSaved, BnSums, RunningStats, ShortcutNorm, UpstreamBn};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{DevicePtr, PushKernelArg};
use std::sync::Arc;

/// What `bn_stats` writes per channel.
struct Stats {
    mean: CudaStorage,
    var: CudaStorage,
    invstd: CudaStorage,
    scale: CudaStorage,
    shift: CudaStorage,
}

fn check_affine(
    c: usize,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    alpha: Option<&Tensor>,
) -> Result<()> {
    for (t, what) in [(gamma, "gamma"), (beta, "beta"), (alpha, "alpha")] {
        if let Some(t) = t {
            per_channel(t, c, "batch_norm", what)?;
        }
    }
    Ok(())
}

fn view_of<'a>(
    ctx: &Arc<CudaContext>,
    t: Option<&'a Tensor>,
) -> Result<Option<cudarc::driver::CudaView<'a, u8>>> {
    t.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()
}

/// What a statistics launch writes: mean, var, invstd, scale and shift (`[C]` each) and, with running
/// statistics, their updated copies (out of place) with the momentum.
struct StatsOutputs {
    out: Vec<CudaStorage>,
    momentum: f32,
    run_out: Option<(CudaStorage, CudaStorage)>,
}

impl StatsOutputs {
    fn new(ctx: &Arc<CudaContext>, c: usize, running: Option<&RunningStats<'_>>) -> Result<StatsOutputs> {
        let out = (0..5).map(|_| ctx.alloc_storage(DType::F32, c)).collect::<Result<_>>()?;
        let run_out = match running {
            Some(r) => {
                per_channel(r.mean, c, "batch_norm", "running_mean")?;
                per_channel(r.var, c, "batch_norm", "running_var")?;
                Some((ctx.alloc_storage(DType::F32, c)?, ctx.alloc_storage(DType::F32, c)?))
            }
            None => None,
        };
        Ok(StatsOutputs { out, momentum: running.map_or(0.0, |r| r.momentum) as f32, run_out })
    }

    /// After the launch: the running tensors replaced by the updated ones, and the statistics.
    fn finish(self, c: usize, running: Option<RunningStats<'_>>) -> Result<Stats> {
        if let (Some(r), Some((a, b))) = (running, self.run_out) {
            *r.mean = wrap([c], a)?;
            *r.var = wrap([c], b)?;
        }
        let [mean, var, invstd, scale, shift]: [CudaStorage; 5] =
            self.out.try_into().map_err(|_| Error::Invalid("batch norm: five statistics".into()))?;
        Ok(Stats { mean, var, invstd, scale, shift })
    }
}

/// One launch: the batch statistics of `[rows, C]`, the fold with gamma/beta and, with `running`, its
/// update (the running tensors are replaced by the updated ones). When x's producer gathered its
/// statistics (`bn_apply_stats`), `bn_stats_finish` starts from them instead of reading x; with `apply`
/// (a plain batch norm's), `bn_finish_apply` then also writes y = x·scale + shift, returned beside.
fn bn_stats(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
    apply: bool,
) -> Result<(Stats, Option<Tensor>)> {
    let (rows, c) = last_dim(x, "batch_norm")?;
    check_affine(c, gamma, beta, None)?;
    let name = kname!("bn_stats", x.dtype(), "batch_norm");
    let gathered = ctx.storage(x)?.moments.clone().filter(|m| m.rows == rows && m.channels == c);
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    let chunks = if gathered.is_some() { 0 } else { chunks };
    let mut y = match apply && gathered.is_some() && c <= FINISH_APPLY_MAX {
        true => Some(ctx.alloc_storage(x.dtype(), x.numel())?),
        false => None,
    };
    let mut pmean = ctx.alloc_storage(DType::F32, chunks * c)?;
    let mut pm2 = ctx.alloc_storage(DType::F32, chunks * c)?;
    let StatsOutputs { mut out, momentum, mut run_out } = StatsOutputs::new(ctx, c, running.as_ref())?;
    {
        let name = match (&gathered, &y) {
            (Some(_), Some(_)) => kname!("bn_finish_apply", x.dtype(), "batch_norm"),
            (Some(_), None) => "bn_stats_finish",
            (None, _) => name,
        };
        let f = ctx.kernels.get("batch_norm", name)?;
        let xv = ctx.storage(x)?.bytes();
        let (gv, bv) = (view_of(ctx, gamma)?, view_of(ctx, beta)?);
        let rmv = view_of(ctx, running.as_ref().map(|r| &*r.mean))?;
        let rvv = view_of(ctx, running.as_ref().map(|r| &*r.var))?;
        let counters = ctx.counters.slice().slice(..);
        let (mut pa, mut pb) = (pmean.bytes_mut(), pm2.bytes_mut());
        let [m, v, is, sc, sh] = &mut out[..] else { unreachable!() };
        let (mut m, mut v, mut is, mut sc, mut sh) =
            (m.bytes_mut(), v.bytes_mut(), is.bytes_mut(), sc.bytes_mut(), sh.bytes_mut());
        let mut ro = run_out.as_mut().map(|(a, b)| (a.bytes_mut(), b.bytes_mut()));
        let (r64, c32, rpc64, eps32) = (rows as i64, c as i32, rpc as i64, eps as f32);
        let (n64, gm) = (rows as f64, gathered.as_ref().map(|g| (g.mean.bytes(), g.m2.bytes())));
        let mut l = ctx.compute.launch_builder(&f);
        match &gm {
            Some((sm, s2)) => l.arg(&c32).arg(&n64).arg(sm).arg(s2),
            None => l.arg(&r64).arg(&c32).arg(&rpc64).arg(&xv).arg(&mut pa).arg(&mut pb).arg(&counters),
        };
        l.arg(&eps32).arg(&momentum);
        for o in [&gv, &bv, &rmv, &rvv] {
            match o {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
        }
        l.arg(&mut m).arg(&mut v).arg(&mut is).arg(&mut sc).arg(&mut sh);
        match &mut ro {
            Some((a, b)) => l.arg(a).arg(b),
            None => l.arg(&NULL).arg(&NULL),
        };
        let (n64, applying) = (x.numel() as i64, y.is_some());
        let mut yv = y.as_mut().map(|y| y.bytes_mut());
        if let Some(yv) = &mut yv {
            l.arg(&n64).arg(&xv).arg(yv);
        }
        let cfg = match (&gathered, applying) {
            (Some(_), true) => ctx.kernels.elementwise(x.numel()),
            (Some(_), false) => Kernels::per_channel(c),
            (None, _) => cfg,
        };
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    let st = StatsOutputs { out, momentum, run_out }.finish(c, running)?;
    Ok((st, y.map(|y| wrap(x.shape().clone(), y)).transpose()?))
}

/// One launch: y = x·scale + shift per channel, then PReLU with `alpha`, then + the shortcut `res`
/// (normalized by its own (scale, shift) when given); y has x's dtype. With `gather`, in `bn_stats`'s
/// geometry (`bn_apply_stats`), keeping y's per-channel statistics with y for the batch norm that reads
/// it next.
fn bn_apply(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    scale: &CudaStorage,
    shift: &CudaStorage,
    alpha: Option<&Tensor>,
    res: Option<(&Tensor, Option<(&CudaStorage, &CudaStorage)>)>,
    gather: bool,
) -> Result<Tensor> {
    let (rows, c) = last_dim(x, "batch_norm")?;
    let name = if gather {
        kname!("bn_apply_stats", x.dtype(), "batch_norm")
    } else {
        kname!("bn_apply", x.dtype(), "batch_norm")
    };
    if let Some((r, _)) = res {
        if r.shape() != x.shape() || r.dtype() != x.dtype() {
            return Err(Error::Shape(format!(
                "batch_norm_add: shortcut {} {} vs x {} {}",
                r.shape(),
                r.dtype(),
                x.shape(),
                x.dtype()
            )));
        }
    }
    let n = x.numel();
    let mut out = ctx.alloc_storage(x.dtype(), n)?;
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    let mut gathered = if gather {
        let f64s = || ctx.alloc_storage(DType::F64, c);
        let parts = || ctx.alloc_storage(DType::F32, chunks * c);
        Some((parts()?, parts()?, ChannelMoments { rows, channels: c, mean: f64s()?, m2: f64s()? }))
    } else {
        None
    };
    {
        let f = ctx.kernels.get("batch_norm", name)?;
        let xv = ctx.storage(x)?.bytes();
        let av = view_of(ctx, alpha)?;
        let rv = view_of(ctx, res.map(|r| r.0))?;
        let rn = res.and_then(|r| r.1).map(|(a, b)| (a.bytes(), b.bytes()));
        let (sv, hv) = (scale.bytes(), shift.bytes());
        let mut ov = out.bytes_mut();
        let (n64, c32, r64, rpc64) = (n as i64, c as i32, rows as i64, rpc as i64);
        let counters = ctx.counters.slice().slice(..);
        let mut g = gathered
            .as_mut()
            .map(|(pa, pb, m)| (pa.bytes_mut(), pb.bytes_mut(), m.mean.bytes_mut(), m.m2.bytes_mut()));
        let mut l = ctx.compute.launch_builder(&f);
        match g {
            Some(_) => l.arg(&r64).arg(&c32).arg(&rpc64),
            None => l.arg(&n64).arg(&c32),
        };
        l.arg(&xv).arg(&sv).arg(&hv);
        for o in [&av, &rv] {
            match o {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
        }
        match &rn {
            Some((a, b)) => l.arg(a).arg(b),
            None => l.arg(&NULL).arg(&NULL),
        };
        l.arg(&mut ov);
        let cfg = match &mut g {
            Some((pa, pb, sm, s2)) => {
                l.arg(pa).arg(pb).arg(&counters).arg(sm).arg(s2);
                cfg
            }
            None => ctx.kernels.elementwise(n),
        };
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    out.moments = gathered.map(|(_, _, m)| Arc::new(m));
    wrap(x.shape().clone(), out)
}

fn saved(c: usize, st: Stats) -> Result<BatchNormSaved> {
    Ok(BatchNormSaved {
        mean: wrap([c], st.mean)?,
        var: wrap([c], st.var)?,
        invstd: wrap([c], st.invstd)?,
        pre_activation: None,
    })
}

/// Training-mode batch norm, with the PReLU that follows it fused when `alpha` is given.
pub fn batch_norm_train(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    alpha: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
) -> Result<(Tensor, BatchNormSaved)> {
    let (_, c) = last_dim(x, "batch_norm")?;
    check_affine(c, None, None, alpha)?;
    let (st, applied) = bn_stats(ctx, x, gamma, beta, eps, running, alpha.is_none())?;
    let y = match applied {
        Some(y) => y,
        None => bn_apply(ctx, x, &st.scale, &st.shift, alpha, None, false)?,
    };
    Ok((y, saved(c, st)?))
}

/// BN_FINISH_APPLY_MAX of batch_norm.cu: the channels `bn_finish_apply` folds in shared memory (the meta
/// backend's dry run follows the same bound).
pub const FINISH_APPLY_MAX: usize = 1024;

/// bn(x) + shortcut, or bn(x) + bn_s(shortcut): the statistics of each, then one apply for both.
#[allow(clippy::type_complexity)]
pub fn batch_norm_add_train(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    eps: f64,
    running: Option<RunningStats<'_>>,
    shortcut: &Tensor,
    shortcut_norm: Option<ShortcutNorm<'_>>,
) -> Result<(Tensor, BatchNormSaved, Option<BatchNormSaved>)> {
    let (_, c) = last_dim(x, "batch_norm")?;
    let (st, _) = bn_stats(ctx, x, gamma, beta, eps, running, false)?;
    let st_s = shortcut_norm
        .map(|n| bn_stats(ctx, shortcut, n.gamma, n.beta, eps, n.running, false).map(|s| s.0))
        .transpose()?;
    let res_norm = st_s.as_ref().map(|s| (&s.scale, &s.shift));
    // A block's output: the next block's first batch norm reads it, so its statistics are gathered here.
    let y = bn_apply(ctx, x, &st.scale, &st.shift, None, Some((shortcut, res_norm)), true)?;
    Ok((y, saved(c, st)?, st_s.map(|s| saved(c, s)).transpose()?))
}

pub fn batch_norm_eval(
    ctx: &Arc<CudaContext>,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (_, c) = last_dim(x, "batch_norm")?;
    check_affine(c, gamma, beta, None)?;
    per_channel(running_mean, c, "batch_norm", "running_mean")?;
    per_channel(running_var, c, "batch_norm", "running_var")?;
    let mut scale = ctx.alloc_storage(DType::F32, c)?;
    let mut shift = ctx.alloc_storage(DType::F32, c)?;
    {
        let f = ctx.kernels.get("batch_norm", "bn_eval_fold")?;
        let (gv, bv) = (view_of(ctx, gamma)?, view_of(ctx, beta)?);
        let (rm, rv) = (ctx.storage(running_mean)?.bytes(), ctx.storage(running_var)?.bytes());
        let (mut sv, mut hv) = (scale.bytes_mut(), shift.bytes_mut());
        let (c32, eps32) = (c as i32, eps as f32);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&c32).arg(&rm).arg(&rv);
        for o in [&gv, &bv] {
            match o {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
        }
        l.arg(&eps32).arg(&mut sv).arg(&mut hv);
        unsafe { l.launch(Kernels::per_channel(c)) }.map_err(driver_err("bn_eval_fold"))?;
    }
    bn_apply(ctx, x, &scale, &shift, None, None, false)
}

/// The per-channel sums of a (fused) batch-norm backward as `bn_bwd_reduce` writes them.
fn check_backward_inputs(dy: &Tensor, x: &Tensor, residual: Option<&Tensor>) -> Result<(usize, usize)> {
    let (rows, c) = last_dim(x, "batch_norm_backward")?;
    for (t, what) in [(Some(dy), "dy"), (residual, "the shortcut's gradient")] {
        if let Some(t) = t {
            if t.shape() != x.shape() || t.dtype() != x.dtype() {
                return Err(Error::Shape(format!(
                    "batch_norm_backward: {what} {} {} vs x {} {}",
                    t.shape(),
                    t.dtype(),
                    x.shape(),
                    x.dtype()
                )));
            }
        }
    }
    Ok((rows, c))
}

/// `bn_bwd_reduce`: (dbeta, dgamma, dalpha when fused) of a (fused PReLU) batch-norm backward.
#[allow(clippy::too_many_arguments)]
fn bwd_reduce(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    alpha: Option<&Tensor>,
    saved: &BatchNormSaved,
) -> Result<BnSums> {
    let (rows, c) = check_backward_inputs(dy, x, None)?;
    check_affine(c, gamma, beta, alpha)?;
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    let mut p: Vec<CudaStorage> =
        (0..3).map(|_| ctx.alloc_storage(DType::F32, chunks * c)).collect::<Result<_>>()?;
    let mut dbeta = ctx.alloc_storage(DType::F32, c)?;
    let mut dgamma = ctx.alloc_storage(DType::F32, c)?;
    let mut dalpha = if alpha.is_some() { Some(ctx.alloc_storage(DType::F32, c)?) } else { None };
    {
        let (mean, invstd) = (ctx.storage(&saved.mean)?.bytes(), ctx.storage(&saved.invstd)?.bytes());
        let (gv, bv, av) = (view_of(ctx, gamma)?, view_of(ctx, beta)?, view_of(ctx, alpha)?);
        let (dyv, xv) = (ctx.storage(dy)?.bytes(), ctx.storage(x)?.bytes());
        let name = kname!("bn_bwd_reduce", x.dtype(), "batch_norm_backward");
        let f = ctx.kernels.get("batch_norm", name)?;
        let counters = ctx.counters.slice().slice(..);
        let [pa, pb, pd] = &mut p[..] else { unreachable!() };
        let (mut pa, mut pb, mut pd) = (pa.bytes_mut(), pb.bytes_mut(), pd.bytes_mut());
        let (mut db, mut dg) = (dbeta.bytes_mut(), dgamma.bytes_mut());
        let mut da = dalpha.as_mut().map(|s| s.bytes_mut());
        let (r64, c32, rpc64) = (rows as i64, c as i32, rpc as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r64).arg(&c32).arg(&rpc64).arg(&dyv).arg(&xv).arg(&mean).arg(&invstd);
        for o in [&gv, &bv, &av] {
            match o {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
        }
        l.arg(&mut pa).arg(&mut pb).arg(&mut pd).arg(&counters).arg(&mut db).arg(&mut dg);
        match &mut da {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    Ok(BnSums {
        dgamma: wrap([c], dgamma)?,
        dbeta: wrap([c], dbeta)?,
        dalpha: dalpha.map(|s| wrap([c], s)).transpose()?,
    })
}

/// `bn_bwd_dx`: the dx of a (fused PReLU) batch-norm backward from its sums, plus `residual`.
#[allow(clippy::too_many_arguments)]
pub fn bwd_dx(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    alpha: Option<&Tensor>,
    saved: &BatchNormSaved,
    sums: &BnSums,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (rows, c) = check_backward_inputs(dy, x, residual)?;
    check_affine(c, gamma, beta, alpha)?;
    per_channel(&sums.dbeta, c, "batch_norm_backward", "dbeta")?;
    per_channel(&sums.dgamma, c, "batch_norm_backward", "dgamma")?;
    let n = x.numel();
    let dx_name = kname!("bn_bwd_dx", x.dtype(), "batch_norm_backward");
    let mut dx = ctx.alloc_storage(x.dtype(), n)?;
    {
        let (mean, invstd) = (ctx.storage(&saved.mean)?.bytes(), ctx.storage(&saved.invstd)?.bytes());
        let (gv, bv, av) = (view_of(ctx, gamma)?, view_of(ctx, beta)?, view_of(ctx, alpha)?);
        let (dyv, xv) = (ctx.storage(dy)?.bytes(), ctx.storage(x)?.bytes());
        let f = ctx.kernels.get("batch_norm", dx_name)?;
        let resv = view_of(ctx, residual)?;
        let (sdz, sdzx) = (ctx.storage(&sums.dbeta)?.bytes(), ctx.storage(&sums.dgamma)?.bytes());
        let mut dxv = dx.bytes_mut();
        let (n64, c32, r64) = (n as i64, c as i32, rows as i64);
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&c32).arg(&r64).arg(&dyv).arg(&xv).arg(&mean).arg(&invstd);
        for o in [&gv, &bv, &av] {
            match o {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
        }
        l.arg(&sdz).arg(&sdzx);
        match &resv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(&mut dxv);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(dx_name))?;
    }
    Tensor::from_storage(x.shape().clone(), Storage::Cuda(dx))
}

/// An upstream batch norm's input has `like`'s shape and type, and its parameters `c` channels.
fn check_upstream(u: &UpstreamBn<'_>, like: &Tensor, c: usize, op: &str) -> Result<()> {
    if u.x.shape() != like.shape() || u.x.dtype() != like.dtype() {
        return Err(Error::Shape(format!(
            "{op}: upstream input {} {} vs {} {}",
            u.x.shape(),
            u.x.dtype(),
            like.shape(),
            like.dtype()
        )));
    }
    check_affine(c, u.gamma, u.beta, u.alpha)
}

/// `BnDx` of batch_norm.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BnDx {
    x: u64,
    mean: u64,
    invstd: u64,
    gamma: u64,
    beta: u64,
    alpha: u64,
    sum_dz: u64,
    sum_dzx: u64,
    dx: u64,
}

// SAFETY: plain old data laid out as the C struct.
unsafe impl cudarc::driver::DeviceRepr for BnDx {}

/// `bn_bwd_dx_pair`: the dx passes of two batch norms that share `dy`, from their sums, in one pass.
pub fn bwd_dx_pair(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    parts: [(&UpstreamBn<'_>, &BnSums); 2],
) -> Result<(Tensor, Tensor)> {
    let (rows, c) = check_backward_inputs(dy, parts[0].0.x, None)?;
    for (u, s) in parts {
        check_upstream(u, dy, c, "batch_norm_backward")?;
        per_channel(&s.dbeta, c, "batch_norm_backward", "dbeta")?;
        per_channel(&s.dgamma, c, "batch_norm_backward", "dgamma")?;
    }
    let n = dy.numel();
    let name = kname!("bn_bwd_dx_pair", dy.dtype(), "batch_norm_backward");
    let outs = [ctx.alloc_storage(dy.dtype(), n)?, ctx.alloc_storage(dy.dtype(), n)?];
    {
        let ptr = |t: &Tensor| -> Result<u64> { Ok(ctx.storage(t)?.buf.slice().device_ptr(&ctx.compute).0) };
        let optr = |t: Option<&Tensor>| -> Result<u64> { t.map_or(Ok(0), ptr) };
        let mut args = [BnDx::default(); 2];
        for (k, (u, s)) in parts.iter().enumerate() {
            args[k] = BnDx {
                x: ptr(u.x)?,
                mean: ptr(&u.saved.mean)?,
                invstd: ptr(&u.saved.invstd)?,
                gamma: optr(u.gamma)?,
                beta: optr(u.beta)?,
                alpha: optr(u.alpha)?,
                sum_dz: ptr(&s.dbeta)?,
                sum_dzx: ptr(&s.dgamma)?,
                dx: outs[k].buf.slice().device_ptr(&ctx.compute).0,
            };
        }
        let dyv = ctx.storage(dy)?.bytes();
        let (n64, c32, r64) = (n as i64, c as i32, rows as i64);
        let f = ctx.kernels.get("batch_norm", name)?;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&n64).arg(&c32).arg(&r64).arg(&dyv).arg(&args[0]).arg(&args[1]);
        unsafe { l.launch(ctx.kernels.elementwise(n)) }.map_err(driver_err(name))?;
    }
    let [o0, o1] = outs;
    Ok((
        Tensor::from_storage(dy.shape().clone(), Storage::Cuda(o0))?,
        Tensor::from_storage(dy.shape().clone(), Storage::Cuda(o1))?,
    ))
}

/// `BnUp` of batch_norm.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BnUp {
    x: u64,
    mean: u64,
    invstd: u64,
    gamma: u64,
    beta: u64,
    alpha: u64,
    p_dz: u64,
    p_dzx: u64,
    p_da: u64,
    dbeta: u64,
    dgamma: u64,
    dalpha: u64,
}

// SAFETY: plain old data laid out as the C struct.
unsafe impl cudarc::driver::DeviceRepr for BnUp {}

/// Backward of (fused) training batch norm: (dx, dgamma, dbeta, dalpha when fused). With `alpha`, `dy` is
/// the gradient at the PReLU output (its input is recomputed from x, gamma and beta); with `residual`, dx
/// also carries the gradient x received from a shortcut.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub fn batch_norm_backward(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    alpha: Option<&Tensor>,
    saved: &BatchNormSaved,
    residual: Option<&Tensor>,
) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
    let sums = bwd_reduce(ctx, dy, x, gamma, beta, alpha, saved)?;
    let dx = bwd_dx(ctx, dy, x, gamma, beta, alpha, saved, &sums, residual)?;
    Ok((dx, sums.dgamma, sums.dbeta, sums.dalpha))
}

/// As `batch_norm_backward` without PReLU, its dx pass (`bn_bwd_dx_reduce`) also gathering the sums of
/// the (one or two) batch norms upstream whose output gradient is that dx.
#[allow(clippy::type_complexity)]
pub fn batch_norm_backward_gathering(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    saved: &BatchNormSaved,
    residual: Option<&Tensor>,
    upstream: &[UpstreamBn<'_>],
) -> Result<((Tensor, Tensor, Tensor), Vec<BnSums>)> {
    if upstream.is_empty() || upstream.len() > 2 {
        return Err(Error::Invalid(format!(
            "batch_norm_backward_gathering: {} upstream batch norms (1 or 2)",
            upstream.len()
        )));
    }
    let sums = bwd_reduce(ctx, dy, x, gamma, None, None, saved)?;
    let (rows, c) = check_backward_inputs(dy, x, residual)?;
    for u in upstream {
        check_upstream(u, x, c, "batch_norm_backward_gathering")?;
    }
    let (cfg, rpc, chunks) = ctx.kernels.column_chunks(rows, c);
    struct Out {
        parts: [CudaStorage; 3],
        dbeta: CudaStorage,
        dgamma: CudaStorage,
        dalpha: Option<CudaStorage>,
    }
    let mut outs: Vec<Out> = upstream
        .iter()
        .map(|u| {
            let part = || ctx.alloc_storage(DType::F32, chunks * c);
            Ok(Out {
                parts: [part()?, part()?, part()?],
                dbeta: ctx.alloc_storage(DType::F32, c)?,
                dgamma: ctx.alloc_storage(DType::F32, c)?,
                dalpha: if u.alpha.is_some() { Some(ctx.alloc_storage(DType::F32, c)?) } else { None },
            })
        })
        .collect::<Result<_>>()?;
    let n = x.numel();
    let name = kname!("bn_bwd_dx_reduce", x.dtype(), "batch_norm_backward");
    let mut dx = ctx.alloc_storage(x.dtype(), n)?;
    {
        let ptr = |t: &Tensor| -> Result<u64> { Ok(ctx.storage(t)?.buf.slice().device_ptr(&ctx.compute).0) };
        let optr = |t: Option<&Tensor>| -> Result<u64> { t.map_or(Ok(0), ptr) };
        let sptr = |s: &CudaStorage| s.buf.slice().device_ptr(&ctx.compute).0;
        let mut ups = [BnUp::default(); 2];
        for (k, (u, o)) in upstream.iter().zip(&outs).enumerate() {
            ups[k] = BnUp {
                x: ptr(u.x)?,
                mean: ptr(&u.saved.mean)?,
                invstd: ptr(&u.saved.invstd)?,
                gamma: optr(u.gamma)?,
                beta: optr(u.beta)?,
                alpha: optr(u.alpha)?,
                p_dz: sptr(&o.parts[0]),
                p_dzx: sptr(&o.parts[1]),
                p_da: sptr(&o.parts[2]),
                dbeta: sptr(&o.dbeta),
                dgamma: sptr(&o.dgamma),
                dalpha: o.dalpha.as_ref().map_or(0, sptr),
            };
        }
        let (mean, invstd) = (ctx.storage(&saved.mean)?.bytes(), ctx.storage(&saved.invstd)?.bytes());
        let gv = view_of(ctx, gamma)?;
        let (dyv, xv) = (ctx.storage(dy)?.bytes(), ctx.storage(x)?.bytes());
        let resv = view_of(ctx, residual)?;
        let (sdz, sdzx) = (ctx.storage(&sums.dbeta)?.bytes(), ctx.storage(&sums.dgamma)?.bytes());
        let counters = ctx.counters.slice().slice(..);
        let mut dxv = dx.bytes_mut();
        let (r64, c32, rpc64, n_up) = (rows as i64, c as i32, rpc as i64, upstream.len() as i32);
        let f = ctx.kernels.get("batch_norm", name)?;
        let mut l = ctx.compute.launch_builder(&f);
        l.arg(&r64).arg(&c32).arg(&rpc64).arg(&dyv).arg(&xv).arg(&mean).arg(&invstd);
        match &gv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(&sdz).arg(&sdzx);
        match &resv {
            Some(v) => l.arg(v),
            None => l.arg(&NULL),
        };
        l.arg(&mut dxv).arg(&counters).arg(&n_up).arg(&ups[0]).arg(&ups[1]);
        unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
    }
    let gathered = outs
        .drain(..)
        .map(|o| {
            Ok(BnSums {
                dgamma: wrap([c], o.dgamma)?,
                dbeta: wrap([c], o.dbeta)?,
                dalpha: o.dalpha.map(|s| wrap([c], s)).transpose()?,
            })
        })
        .collect::<Result<_>>()?;
    let dx = Tensor::from_storage(x.shape().clone(), Storage::Cuda(dx))?;
    Ok(((dx, sums.dgamma, sums.dbeta), gathered))
}
