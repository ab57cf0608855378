//! The parameters of margin_head.cu, laid out as its `HeadParams` struct (all fields 4 bytes, so the
//! C and Rust layouts agree without padding), and the codes the kernel switches on.

/// Target logit kinds.
pub const TGT_COMBINED: i32 = 0;
pub const TGT_QAM: i32 = 1;
/// Target flags.
pub const F_FALLBACK: i32 = 1;
pub const F_EASY: i32 = 2;
pub const F_CLIP: i32 = 4;
pub const F_STE: i32 = 8;
/// Non-target kinds.
pub const NT_PLAIN: i32 = 0;
pub const NT_CURRICULAR: i32 = 1;
pub const NT_MV_ADAPTIVE: i32 = 2;
pub const NT_MV_FIXED: i32 = 3;
pub const NT_QAM: i32 = 4;
/// Weight kinds.
pub const W_NONE: i32 = 0;
pub const W_SMA: i32 = 1;
pub const W_HM: i32 = 2;
pub const W_FOCAL: i32 = 3;
/// SMAFace variants (the beta variant is W_SMA with w_beta != 1 and base clamping).
pub const SMA_BASE: i32 = 0;
pub const SMA_WEAK: i32 = 1;
pub const SMA_STRONG: i32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadParams {
    pub s: f32,
    pub m1: f32,
    pub m2: f32,
    pub m3: f32,
    pub eps: f32,
    pub t: f32,
    pub inv_batch: f32,
    pub w_alpha: f32,
    pub w_p0: f32,
    pub w_c: f32,
    pub w_beta: f32,
    pub w_gamma: f32,
    pub target_kind: i32,
    pub flags: i32,
    pub nontarget_kind: i32,
    pub weight_kind: i32,
    pub sma_variant: i32,
}

// SAFETY: plain old data with C layout; passed by value as a kernel parameter.
unsafe impl cudarc::driver::DeviceRepr for HeadParams {}

impl HeadParams {
    /// NormFace-like defaults (s*c everywhere, unit weights) for a batch of `batch` rows.
    pub fn plain(s: f32, batch: usize) -> HeadParams {
        HeadParams {
            s,
            m1: 1.0,
            m2: 0.0,
            m3: 0.0,
            eps: 0.0,
            t: 0.0,
            inv_batch: 1.0 / batch.max(1) as f32,
            w_alpha: 0.0,
            w_p0: 0.0,
            w_c: 1.0,
            w_beta: 1.0,
            w_gamma: 0.0,
            target_kind: TGT_COMBINED,
            flags: 0,
            nontarget_kind: NT_PLAIN,
            weight_kind: W_NONE,
            sma_variant: SMA_BASE,
        }
    }

    /// ArcFace (§4) in EXACT mode with the fallback.
    pub fn arcface(s: f32, m: f32, batch: usize) -> HeadParams {
        HeadParams { m2: m, flags: F_FALLBACK, ..HeadParams::plain(s, batch) }
    }

    /// CosFace (§3).
    pub fn cosface(s: f32, m: f32, batch: usize) -> HeadParams {
        HeadParams { m3: m, ..HeadParams::plain(s, batch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_cuda_struct() {
        // 12 floats then 5 ints, no padding: the order must follow margin_head.cu.
        assert_eq!(std::mem::size_of::<HeadParams>(), 17 * 4);
        let src = kernels::MARGIN_HEAD.source;
        let start = src.find("struct HeadParams {").expect("struct in margin_head.cu");
        let body = &src[start..start + src[start..].find("};").unwrap()];
        let fields: Vec<&str> = body
            .lines()
            .skip(1)
            .flat_map(|l| l.split("//").next().unwrap().split(|c| c == ',' || c == ';'))
            .map(|f| f.trim().trim_start_matches("float ").trim_start_matches("int ").trim())
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(
            fields,
            [
                "s",
                "m1",
                "m2",
                "m3",
                "eps",
                "t",
                "inv_batch",
                "w_alpha",
                "w_p0",
                "w_c",
                "w_beta",
                "w_gamma",
                "target_kind",
                "flags",
                "nontarget_kind",
                "weight_kind",
                "sma_variant"
            ]
        );
    }
}

/// Launches of margin_head.cu. All row arrays are `[B]` f32 device tensors; labels are `[B]` i64.
pub mod launch {
    use super::HeadParams;
    use crate::backend::cuda::launch::Kernels;
    use crate::backend::cuda::{driver_err, CudaContext, CudaStorage};
    use crate::tensor::{DType, Storage, Tensor};
    use crate::{Error, Result};
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    use std::sync::Arc;

    const NULL: u64 = 0;

    /// Per-row target terms (margin_target).
    pub struct TargetTerms {
        pub zy: Tensor,
        pub zpy: Tensor,
        pub tau: Tensor,
        pub dzy_dm: Tensor,
    }

    /// The running log-sum-exp of every row: max, sum, and sum without the target column.
    pub struct LseState {
        pub m: Tensor,
        pub s: Tensor,
        pub s_other: Tensor,
    }

    /// Per-row results of margin_finish.
    pub struct RowLoss {
        pub lse: Tensor,
        pub loss: Tensor,
        pub py: Tensor,
        pub st: Tensor,
        pub dl_da: Tensor,
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

    pub fn target(
        ctx: &Arc<CudaContext>,
        cy: &Tensor,
        m2_row: Option<&Tensor>,
        m3_row: Option<&Tensor>,
        hp: &HeadParams,
    ) -> Result<TargetTerms> {
        let b = cy.numel();
        rows(cy, b, DType::F32, "c_y")?;
        for t in [m2_row, m3_row].into_iter().flatten() {
            rows(t, b, DType::F32, "per-sample margin")?;
        }
        let mut out: Vec<CudaStorage> =
            (0..4).map(|_| ctx.alloc_storage(DType::F32, b)).collect::<Result<_>>()?;
        {
            let f = ctx.kernels.get("margin_head", "margin_target")?;
            let cv = ctx.storage(cy)?.bytes();
            let m2 = m2_row.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()?;
            let m3 = m3_row.map(|t| ctx.storage(t).map(|s| s.bytes())).transpose()?;
            let [a, bb, c, d] = &mut out[..] else { unreachable!() };
            let (mut a, mut bb, mut c, mut d) = (a.bytes_mut(), bb.bytes_mut(), c.bytes_mut(), d.bytes_mut());
            let b32 = b as i32;
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&b32).arg(&cv);
            match &m2 {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
            match &m3 {
                Some(v) => l.arg(v),
                None => l.arg(&NULL),
            };
            l.arg(hp).arg(&mut a).arg(&mut bb).arg(&mut c).arg(&mut d);
            unsafe { l.launch(per_row(b)) }.map_err(driver_err("margin_target"))?;
        }
        let mut it = out.into_iter();
        let mut next = || wrap(b, it.next().expect("four outputs"));
        Ok(TargetTerms { zy: next()?, zpy: next()?, tau: next()?, dzy_dm: next()? })
    }

    /// c_y = xhat_i . what_{y_i} for the rows whose label falls in this class block (rows j0..j0+nb of
    /// the normalized weights `what`); the other rows keep their value from `cy`.
    pub fn gather_cy(
        ctx: &Arc<CudaContext>,
        xhat: &Tensor,
        what: &Tensor,
        j0: usize,
        labels: &Tensor,
        cy: &Tensor,
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
        rows(cy, b, DType::F32, "c_y")?;
        let name = match xhat.dtype() {
            DType::F32 => "margin_gather_cy_f32",
            DType::BF16 => "margin_gather_cy_bf16",
            DType::F16 => "margin_gather_cy_f16",
            other => return Err(Error::Unsupported(format!("gather_cy on {other}"))),
        };
        let mut out = ctx.storage(cy)?.try_clone()?;
        {
            let f = ctx.kernels.get("margin_head", name)?;
            let (xv, wv, lv) =
                (ctx.storage(xhat)?.bytes(), ctx.storage(what)?.bytes(), ctx.storage(labels)?.bytes());
            let mut ov = out.bytes_mut();
            let (b32, d32, j64, nb64) = (b as i32, d as i32, j0 as i64, nb as i64);
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&b32).arg(&d32).arg(&j64).arg(&nb64).arg(&xv).arg(&wv).arg(&lv).arg(&mut ov);
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

    /// M = -inf, S = S_other = 0 for `b` rows.
    pub fn lse_init(ctx: &Arc<CudaContext>, b: usize) -> Result<LseState> {
        use crate::backend::Backend;
        let mut m = ctx.alloc_storage(DType::F32, b)?;
        {
            let f = ctx.kernels.get("elementwise", "fill_f32")?;
            let mut mv = m.bytes_mut();
            let (n64, v) = (b as i64, f32::NEG_INFINITY);
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&n64).arg(&v).arg(&mut mv);
            unsafe { l.launch(ctx.kernels.elementwise(b)) }.map_err(driver_err("fill_f32"))?;
        }
        Ok(LseState {
            m: wrap(b, m)?,
            s: ctx.zeros(&[b].into(), DType::F32)?,
            s_other: ctx.zeros(&[b].into(), DType::F32)?,
        })
    }

    /// Merges one class block (columns j0..j0+nb of the classifier, cosines `[B, nb]`) into the state.
    pub fn forward_block(
        ctx: &Arc<CudaContext>,
        cos: &Tensor,
        j0: usize,
        labels: &Tensor,
        t: &TargetTerms,
        hp: &HeadParams,
        state: &LseState,
    ) -> Result<LseState> {
        let (b, nb, suf) = cos_geometry(cos)?;
        rows(labels, b, DType::I64, "labels")?;
        let name = match suf {
            "f32" => "margin_fwd_block_f32",
            "bf16" => "margin_fwd_block_bf16",
            _ => "margin_fwd_block_f16",
        };
        let mut m = ctx.storage(&state.m)?.try_clone()?;
        let mut s = ctx.storage(&state.s)?.try_clone()?;
        let mut so = ctx.storage(&state.s_other)?.try_clone()?;
        {
            let f = ctx.kernels.get("margin_head", name)?;
            let (cv, lv) = (ctx.storage(cos)?.bytes(), ctx.storage(labels)?.bytes());
            let (tv, zv) = (ctx.storage(&t.tau)?.bytes(), ctx.storage(&t.zy)?.bytes());
            let (mut mv, mut sv, mut sov) = (m.bytes_mut(), s.bytes_mut(), so.bytes_mut());
            let (b32, nb32, j64, ldc) = (b as i32, nb as i32, j0 as i64, nb as i64);
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&b32).arg(&nb32).arg(&j64).arg(&ldc).arg(&cv).arg(&lv).arg(&tv).arg(&zv).arg(hp);
            l.arg(&mut mv).arg(&mut sv).arg(&mut sov);
            unsafe { l.launch(Kernels::per_row(b, 256)) }.map_err(driver_err(name))?;
        }
        Ok(LseState { m: wrap(b, m)?, s: wrap(b, s)?, s_other: wrap(b, so)? })
    }

    pub fn finish(
        ctx: &Arc<CudaContext>,
        labels: &Tensor,
        state: &LseState,
        t: &TargetTerms,
        mag_k: f32,
        hp: &HeadParams,
    ) -> Result<RowLoss> {
        let b = labels.numel();
        rows(labels, b, DType::I64, "labels")?;
        let mut out: Vec<CudaStorage> =
            (0..5).map(|_| ctx.alloc_storage(DType::F32, b)).collect::<Result<_>>()?;
        {
            let f = ctx.kernels.get("margin_head", "margin_finish")?;
            let lv = ctx.storage(labels)?.bytes();
            let (mv, sv) = (ctx.storage(&state.m)?.bytes(), ctx.storage(&state.s)?.bytes());
            let (zv, dv) = (ctx.storage(&t.zy)?.bytes(), ctx.storage(&t.dzy_dm)?.bytes());
            let [a, bb, c, d, e] = &mut out[..] else { unreachable!() };
            let (mut a, mut bb, mut c, mut d, mut e) =
                (a.bytes_mut(), bb.bytes_mut(), c.bytes_mut(), d.bytes_mut(), e.bytes_mut());
            let b32 = b as i32;
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&b32).arg(&lv).arg(&mv).arg(&sv).arg(&zv).arg(&dv).arg(&mag_k).arg(hp);
            l.arg(&mut a).arg(&mut bb).arg(&mut c).arg(&mut d).arg(&mut e);
            unsafe { l.launch(per_row(b)) }.map_err(driver_err("margin_finish"))?;
        }
        let mut it = out.into_iter();
        let mut next = || wrap(b, it.next().expect("five outputs"));
        Ok(RowLoss { lse: next()?, loss: next()?, py: next()?, st: next()?, dl_da: next()? })
    }

    /// G = dL/dcos for one class block, in the cosines' dtype.
    pub fn backward_block(
        ctx: &Arc<CudaContext>,
        cos: &Tensor,
        j0: usize,
        labels: &Tensor,
        t: &TargetTerms,
        r: &RowLoss,
        hp: &HeadParams,
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
            let (lsev, stv) = (ctx.storage(&r.lse)?.bytes(), ctx.storage(&r.st)?.bytes());
            let mut gv = g.bytes_mut();
            let (b32, nb32, j64, ld) = (b as i32, nb as i32, j0 as i64, nb as i64);
            let mut l = ctx.compute.launch_builder(&f);
            l.arg(&b32).arg(&nb32).arg(&j64).arg(&ld).arg(&cv).arg(&lv).arg(&tv).arg(&zv).arg(&zpv);
            l.arg(&lsev).arg(&stv).arg(hp).arg(&ld).arg(&mut gv);
            let cfg = LaunchConfig {
                grid_dim: (nb.div_ceil(256).max(1) as u32, b.max(1) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            unsafe { l.launch(cfg) }.map_err(driver_err(name))?;
        }
        Tensor::from_storage([b, nb], Storage::Cuda(g))
    }
}
