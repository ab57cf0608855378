//! The host half of the chunked margin classifier (kernels/cuda/margin_head.cu): how a head's maps are
//! encoded as the kernels' parameters, and the per-row scalars a head computes with its own code between
//! the kernels. The block loop that launches them lives in the CUDA backend (`backend/cuda/head/`);
//! what is planned here is tested on the CPU against the reference classifier for every head.
//!
//! Two ways through the kernels:
//! - fixed parameters (`kernel_params`): heads whose every row uses one logit map chosen from c_y alone
//!   and that need nothing else from the batch (softmax, cosface, arcface exact / easy margin / STE,
//!   combined, sphereface). Which heads qualify is not a list of names: `kernel_params` reads the head's
//!   own `row()` on a grid of cosines and accepts the encoding only when it reproduces every map.
//! - per-row plans (`plan_rows`, `finish_rows`): every other head. The head's own code runs on the host
//!   on the per-row scalars, exactly as in the CPU classifier (observe, quality, row plans, target
//!   logits, sample weights, extra terms, MagFace's dm/da); the non-target maps run in the kernels
//!   (`NonTarget` -> NT_* codes), and so does the margin-free non-target sum of QCFace's p_d
//!   (`F_PLAIN_SUM`), whatever the head's non-target map.

use super::classifier::margin_free_p;
use super::maps::{target_logit, NonTarget, TargetMap};
use super::{BatchView, Head, Needs, RowInput, SampleWeight, CE_MAX};
use crate::{Error, Result};
use std::f64::consts::PI;

/// Target flags of margin_head.cu's `margin_target`.
pub const F_FALLBACK: i32 = 1;
pub const F_EASY: i32 = 2;
pub const F_STE: i32 = 4;
/// Also keep the log-sum-exp of the margin-free non-target logits s·c_j (QCFace's p_d).
pub const F_PLAIN_SUM: i32 = 8;
/// Non-target kinds (margin_head.cu's `nontarget`).
pub const NT_PLAIN: i32 = 0;
pub const NT_CURRICULAR: i32 = 1;
pub const NT_MV_ADAPTIVE: i32 = 2;
pub const NT_MV_FIXED: i32 = 3;
pub const NT_QAM: i32 = 4;

/// The parameters of margin_head.cu, laid out as its `MarginParams` struct (all fields 4 bytes, so the
/// C and Rust layouts agree without padding).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarginParams {
    pub s: f32,
    pub m1: f32,
    pub m2: f32,
    pub m3: f32,
    /// Cosines are clamped to [-1 + eps, 1 - eps]; gradient only strictly inside.
    pub eps: f32,
    /// CurricularFace's or MV-Softmax's t.
    pub t: f32,
    /// 1 / B of the batch mean.
    pub inv_batch: f32,
    pub flags: i32,
    pub nontarget_kind: i32,
}

impl MarginParams {
    /// NormFace-like defaults (s·c everywhere, unit weights) for a batch of `batch` rows.
    pub fn plain(s: f32, batch: usize) -> MarginParams {
        MarginParams {
            s,
            m1: 1.0,
            m2: 0.0,
            m3: 0.0,
            eps: 0.0,
            t: 0.0,
            inv_batch: 1.0 / batch.max(1) as f32,
            flags: 0,
            nontarget_kind: NT_PLAIN,
        }
    }

    /// The target map `margin_target` applies at cosine `c` under these parameters: the definition of
    /// the fixed-parameter encoding, which the kernel implements (its logits are `maps::target_logit` of
    /// this map).
    pub fn target_map(&self, c: f64) -> TargetMap {
        let (m1, m2, m3) = (self.m1 as f64, self.m2 as f64, self.m3 as f64);
        if self.flags & F_EASY != 0 && c <= 0.0 {
            TargetMap::Shift { m: 0.0 }
        } else if self.flags & F_STE != 0 {
            TargetMap::Straight { m: m2 }
        } else if self.flags & F_FALLBACK != 0 && m1 * c.acos() + m2 >= PI {
            TargetMap::Fallback { m: m2 }
        } else {
            TargetMap::Angular { m1, m2, m3 }
        }
    }
}

/// Whether the CPU map `cpu` and the kernel's map `gpu` give the same logit function (f32 parameters).
fn same_map(cpu: &TargetMap, gpu: &TargetMap) -> bool {
    let eq = |a: f64, b: f64| (a as f32) == (b as f32);
    match (*cpu, *gpu) {
        // s·(c - m) is the angular map with m1 = 1, m2 = 0, m3 = m.
        (TargetMap::Shift { m }, TargetMap::Angular { m1, m2, m3 }) => {
            eq(m1, 1.0) && eq(m2, 0.0) && eq(m, m3)
        }
        (TargetMap::Shift { m }, TargetMap::Shift { m: g }) => eq(m, g),
        (TargetMap::Angular { m1, m2, m3 }, TargetMap::Angular { m1: a, m2: b, m3: c }) => {
            eq(m1, a) && eq(m2, b) && eq(m3, c)
        }
        (TargetMap::Fallback { m }, TargetMap::Fallback { m: g }) => eq(m, g),
        (TargetMap::Straight { m }, TargetMap::Straight { m: g }) => eq(m, g),
        _ => false,
    }
}

/// The fixed kernel parameters that reproduce `head` for a batch of `batch` rows, or `None` when the head
/// needs more than margin_head.cu's fixed-parameter path gives (it then runs on the host).
pub fn kernel_params(head: &dyn Head, batch: usize) -> Option<MarginParams> {
    if head.needs() != Needs::default() || !matches!(head.non_target(), NonTarget::Plain) {
        return None;
    }
    if [-20.0, -1.0, -0.1, 0.0].iter().any(|&lp| head.weight(lp) != SampleWeight::ONE) {
        return None;
    }
    let (s, eps) = (head.scale(), head.clamp_eps());
    let row = |c: f64| head.row(&RowInput { c_y: c, norm: 1.0, quality: 0.0 });
    let mut hp = MarginParams { eps: eps as f32, ..MarginParams::plain(s as f32, batch) };
    match row(0.5).target {
        TargetMap::Shift { m } => hp.m3 = m as f32,
        TargetMap::Angular { m1, m2, m3 } => {
            (hp.m1, hp.m2, hp.m3) = (m1 as f32, m2 as f32, m3 as f32);
            if m3 == 0.0 && matches!(row(-1.0 + eps).target, TargetMap::Fallback { .. }) {
                hp.flags |= F_FALLBACK;
            }
        }
        TargetMap::Straight { m } => {
            hp.m2 = m as f32;
            hp.flags |= F_STE;
        }
        _ => return None,
    }
    if matches!(row(-0.5).target, TargetMap::Shift { m } if m == 0.0)
        && !matches!(row(0.5).target, TargetMap::Shift { .. })
    {
        hp.flags |= F_EASY;
    }
    // Accept only when the encoding picks the head's own map everywhere in [-1+eps, 1-eps].
    let n = 2000;
    let ok = (0..=n).all(|k| {
        let c = (-1.0 + eps) + (2.0 - 2.0 * eps) * k as f64 / n as f64;
        let plan = row(c);
        plan.margin_da == 0.0 && same_map(&plan.target, &hp.target_map(c))
    });
    ok.then_some(hp)
}

/// The kernel's code and parameter for a non-target map.
fn non_target_code(nt: &NonTarget) -> (i32, f32) {
    match *nt {
        NonTarget::Plain => (NT_PLAIN, 0.0),
        NonTarget::Curricular { t } => (NT_CURRICULAR, t as f32),
        NonTarget::MvAdaptive { t } => (NT_MV_ADAPTIVE, t as f32),
        NonTarget::MvFixed { t } => (NT_MV_FIXED, t as f32),
        NonTarget::Quadratic => (NT_QAM, 0.0),
    }
}

/// The host half of the row-plan path before the logits: from the raw target cosines and norms, the
/// head's observe / quality / row plans, and the per-row target terms the kernels read.
pub struct RowPlans {
    pub hp: MarginParams,
    /// Clamped c_y and raw norms in f64, as the head saw them.
    pub c_y: Vec<f64>,
    pub norms: Vec<f64>,
    pub zy: Vec<f32>,
    /// z'_y, zero where c_y was clamped.
    pub zpy: Vec<f32>,
    pub tau: Vec<f32>,
    pub dz_dm: Vec<f32>,
    pub margin_da: Vec<f64>,
    pub non_target: NonTarget,
}

/// Runs the head's per-row code as the CPU classifier does (`run_sharded`, f32): moves running state.
pub fn plan_rows(head: &mut dyn Head, raw_cy: &[f32], norms_f32: &[f32]) -> Result<RowPlans> {
    let b = raw_cy.len();
    if norms_f32.len() != b {
        return Err(Error::Shape(format!("head rows: {b} cosines but {} norms", norms_f32.len())));
    }
    let s = head.scale() as f32;
    let eps = head.clamp_eps();
    let (lo, hi) = ((-1.0 + eps) as f32, (1.0 - eps) as f32);
    let clamp = |c: f32| c.max(lo).min(hi);
    let c_y: Vec<f64> = raw_cy.iter().map(|&c| clamp(c) as f64).collect();
    let norms: Vec<f64> = norms_f32.iter().map(|&v| v as f64).collect();
    let view = BatchView { c_y: &c_y, norms: &norms };
    head.observe(&view)?;
    let quality = head.quality(&view);
    let quality = if quality.is_empty() { vec![0.0; b] } else { quality };
    if quality.len() != b {
        return Err(Error::Invalid(format!(
            "{}: {} quality values for {b} samples",
            head.name(),
            quality.len()
        )));
    }
    let plans: Vec<_> =
        (0..b).map(|i| head.row(&RowInput { c_y: c_y[i], norm: norms[i], quality: quality[i] })).collect();
    let (mut zy, mut zpy, mut dz_dm) = (Vec::with_capacity(b), Vec::with_capacity(b), Vec::with_capacity(b));
    for i in 0..b {
        let (z, dz, dm) = target_logit(&plans[i].target, s, clamp(raw_cy[i]));
        zy.push(z);
        zpy.push(if raw_cy[i] > lo && raw_cy[i] < hi { dz } else { 0.0 });
        dz_dm.push(dm);
    }
    let non_target = head.non_target();
    let (nontarget_kind, t) = non_target_code(&non_target);
    let flags = if head.needs().p_d { F_PLAIN_SUM } else { 0 };
    Ok(RowPlans {
        hp: MarginParams { eps: eps as f32, t, flags, nontarget_kind, ..MarginParams::plain(s, b) },
        c_y,
        norms,
        zy,
        zpy,
        tau: plans.iter().map(|p| p.tau as f32).collect(),
        dz_dm,
        margin_da: plans.iter().map(|p| p.margin_da).collect(),
        non_target,
    })
}

/// The host half after the logits: per-row results from the merged (max, sum, sum without target).
pub struct RowResults {
    /// Batch mean of I·min(CE, CE_MAX) plus the mean extra term.
    pub loss: f64,
    pub lse: Vec<f32>,
    /// st_i, the factor of row i's gradient.
    pub st: Vec<f32>,
    /// dL/da_i (margin that moves with the norm, extra term).
    pub d_norm: Vec<f32>,
}

/// The merged forward of every row, as the kernels leave it: the (max, sum) of the head's logits, and
/// the (max, sum) of the margin-free non-target logits (-inf and 0 without `F_PLAIN_SUM`).
pub struct MergedRows<'a> {
    pub max: &'a [f32],
    pub sum: &'a [f32],
    pub max_d: &'a [f32],
    pub sum_d: &'a [f32],
}

/// Loss, weights, p_d, the extra term and dL/da per row, as the CPU classifier computes them.
pub fn finish_rows(head: &dyn Head, r: &RowPlans, m: &MergedRows) -> Result<RowResults> {
    let b = r.zy.len();
    let (mx, sum) = (m.max, m.sum);
    let lens = [mx.len(), sum.len(), m.max_d.len(), m.sum_d.len()];
    if lens.iter().any(|&n| n != b) {
        return Err(Error::Shape(format!("head rows: {b} rows but {lens:?} merged values")));
    }
    let needs = head.needs();
    let s = head.scale() as f32;
    let inv_b = 1.0 / b as f64;
    let mut out = RowResults {
        loss: 0.0,
        lse: Vec::with_capacity(b),
        st: Vec::with_capacity(b),
        d_norm: Vec::with_capacity(b),
    };
    for i in 0..b {
        let l = mx[i] + sum[i].ln();
        let log_p_t = r.zy[i] - l;
        let log_p = log_p_t as f64;
        let wgt = head.weight(log_p);
        let p_d =
            if needs.p_d { margin_free_p(s * r.c_y[i] as f32, m.max_d[i], m.sum_d[i]) } else { f64::NAN };
        let (extra, d_extra) = head.extra(r.norms[i], p_d);
        let p_y = log_p_t.exp() as f64;
        out.d_norm
            .push((inv_b * (wgt.st * (p_y - 1.0) * r.dz_dm[i] as f64 * r.margin_da[i] + d_extra)) as f32);
        out.loss += wgt.value * (-log_p).min(CE_MAX) + extra;
        out.lse.push(l);
        out.st.push(wgt.st as f32);
    }
    out.loss *= inv_b;
    // As the CPU classifier: a NaN/inf embedding shows as a non-finite loss, not as a clamped one.
    if r.norms.iter().any(|n| !n.is_finite()) {
        out.loss = f64::NAN;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::{from_name, has_phases, run, HeadParams, Phase, RunOptions};

    fn params(name: &str) -> Option<MarginParams> {
        let p = HeadParams::default();
        let h = from_name(name, &p).unwrap();
        kernel_params(h.as_ref(), 8)
    }

    #[test]
    fn stateless_single_map_heads_are_encoded_and_the_rest_fall_back() {
        for name in ["softmax", "cosface", "arcface", "combined", "sphereface"] {
            assert!(params(name).is_some(), "{name} should run in margin_head.cu");
        }
        for name in [
            "curricularface",
            "mv-am",
            "mv-arc",
            "magface",
            "adaface",
            "qamface",
            "sm-cosface",
            "smaface",
            "smaface-star",
            "nsmaface-star",
            "hm-softmax",
            "focal",
        ] {
            assert!(params(name).is_none(), "{name} must take the row-plan path");
        }
        let qc = HeadParams { phase: Some(Phase::Planning), ..HeadParams::default() };
        assert!(kernel_params(from_name("qcface", &qc).unwrap().as_ref(), 8).is_none());
    }

    #[test]
    fn encodings_carry_the_head_parameters() {
        let cos = params("cosface").unwrap();
        assert_eq!((cos.s, cos.m1, cos.m2, cos.m3, cos.flags, cos.eps), (64.0, 1.0, 0.0, 0.35, 0, 0.0));
        let arc = params("arcface").unwrap();
        assert_eq!((arc.m1, arc.m2, arc.m3, arc.flags), (1.0, 0.5, 0.0, F_FALLBACK));
        assert_eq!(arc.eps, 1e-6);
        assert_eq!(arc.inv_batch, 1.0 / 8.0);
        let easy = HeadParams { easy_margin: Some(true), ..HeadParams::default() };
        let e = kernel_params(from_name("arcface", &easy).unwrap().as_ref(), 8).unwrap();
        assert_eq!(e.flags, F_EASY);
        let ste = HeadParams { grad_mode: Some(crate::heads::GradMode::Ste), ..HeadParams::default() };
        let s = kernel_params(from_name("arcface", &ste).unwrap().as_ref(), 8).unwrap();
        assert_eq!((s.flags, s.m2), (F_STE, 0.5));
    }

    #[test]
    fn the_kernel_branch_mirror_agrees_with_the_cpu_maps_on_logits() {
        // For every encoded head, the logit and slope of the mirrored kernel branch equal the CPU map's
        // at f64 (the kernel computes the same expressions in f32).
        use crate::heads::maps::target_logit;
        for name in ["softmax", "cosface", "arcface", "combined", "sphereface"] {
            let h = from_name(name, &HeadParams::default()).unwrap();
            let hp = kernel_params(h.as_ref(), 4).unwrap();
            for k in 0..=200 {
                let c = -0.999 + 1.998 * k as f64 / 200.0;
                let cpu = target_logit(&h.row(&RowInput { c_y: c, norm: 1.0, quality: 0.0 }).target, 30.0, c);
                let gpu = target_logit(&hp.target_map(c), 30.0, c);
                // cos(acos(c)) loses a few digits near c = -1 (the kernel writes s·(c - m) that way too).
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (30.0 + b.abs());
                assert!(close(gpu.0, cpu.0) && close(gpu.1, cpu.1), "{name} at {c}: {cpu:?} {gpu:?}");
            }
        }
    }

    /// CPU mirror of margin_fwd_block over all classes: per row the (max, sum) of the logits and, with
    /// `F_PLAIN_SUM`, of the margin-free non-target logits s·c_j.
    fn merged_rows(xh: &[f32], wh: &[f32], labels: &[i64], d: usize, r: &RowPlans, s: f32) -> [Vec<f32>; 4] {
        let (b, c) = (labels.len(), wh.len() / d);
        let (lo, hi) = (-1.0 + r.hp.eps, 1.0 - r.hp.eps);
        let lse = |z: &[f32]| {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (m, z.iter().map(|v| (v - m).exp()).sum::<f32>())
        };
        let mut out: [Vec<f32>; 4] = Default::default();
        for i in 0..b {
            let (mut z, mut plain) = (Vec::new(), Vec::new());
            for j in 0..c {
                if j as i64 == labels[i] {
                    z.push(r.zy[i]);
                    continue;
                }
                let cos: f32 = (0..d).map(|k| xh[i * d + k] * wh[j * d + k]).sum();
                let cos = cos.max(lo).min(hi);
                z.push(crate::heads::maps::non_target_logit(&r.non_target, s, cos, r.tau[i]).0);
                plain.push(s * cos);
            }
            let ((m, sm), (md, sd)) = (lse(&z), lse(&plain));
            let pd = r.hp.flags & F_PLAIN_SUM != 0;
            for (v, x) in out.iter_mut().zip([
                m,
                sm,
                if pd { md } else { f32::NEG_INFINITY },
                if pd { sd } else { 0.0 },
            ]) {
                v.push(x);
            }
        }
        out
    }

    fn unit_rows(m: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
        let mut u = m.to_vec();
        let mut n = Vec::new();
        for row in u.chunks_mut(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let inv = 1.0 / norm.max(1e-12);
            row.iter_mut().for_each(|v| *v *= inv);
            n.push(norm);
        }
        (u, n)
    }

    /// The row-plan path's host half (what the GPU path runs between its kernels) against the CPU
    /// classifier, for every head: loss, z_y, LSE, weight factors, dL/da, and the running state after.
    #[test]
    fn row_plans_reproduce_the_cpu_classifier_for_every_head() {
        let (b, d, c) = (12, 16, 9);
        let case = crate::heads::tests::random_case(5, b, c, d, 8.0, 60.0);
        let x: Vec<f32> = case.x.iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = case.w.iter().map(|&v| v as f32).collect();
        let close = |a: f64, r: f64| (a - r).abs() <= 1e-5 * (1.0 + r.abs());
        for name in crate::heads::names() {
            let p =
                HeadParams { phase: has_phases(name).then_some(Phase::Planning), ..HeadParams::default() };
            let (mut cpu, mut gpu) = (from_name(name, &p).unwrap(), from_name(name, &p).unwrap());
            cpu.set_training(true);
            gpu.set_training(true);
            let want = run::<f32>(&x, &w, &case.labels, d, cpu.as_mut(), &RunOptions::default()).unwrap();
            let (xh, norms) = unit_rows(&x, d);
            let (wh, _) = unit_rows(&w, d);
            let raw_cy: Vec<f32> = (0..b)
                .map(|i| {
                    let y = case.labels[i] as usize;
                    (0..d).map(|k| xh[i * d + k] * wh[y * d + k]).sum()
                })
                .collect();
            let plans = plan_rows(gpu.as_mut(), &raw_cy, &norms).unwrap();
            let [max, sum, max_d, sum_d] = merged_rows(&xh, &wh, &case.labels, d, &plans, gpu.scale() as f32);
            let merged = MergedRows { max: &max, sum: &sum, max_d: &max_d, sum_d: &sum_d };
            let got = finish_rows(gpu.as_ref(), &plans, &merged).unwrap();
            assert!(close(got.loss, want.loss), "{name}: loss {} vs {}", got.loss, want.loss);
            for (i, row) in want.rows.iter().enumerate() {
                assert!(
                    close(plans.zy[i] as f64, row.z_y),
                    "{name} row {i}: z_y {} vs {}",
                    plans.zy[i],
                    row.z_y
                );
                assert!(
                    close(got.lse[i] as f64, row.lse),
                    "{name} row {i}: lse {} vs {}",
                    got.lse[i],
                    row.lse
                );
                assert!(close(got.st[i] as f64, row.st), "{name} row {i}: st {} vs {}", got.st[i], row.st);
                let dn = got.d_norm[i] as f64;
                assert!(
                    (dn - row.d_norm).abs() <= 1e-5 * (1e-3 + row.d_norm.abs()),
                    "{name} row {i}: dL/da {dn} vs {}",
                    row.d_norm
                );
            }
            assert_eq!(gpu.state(), cpu.state(), "{name}: running state");
            // The kernel's non-target code carries the head's map.
            let want_kind = match plans.non_target {
                NonTarget::Plain => NT_PLAIN,
                NonTarget::Curricular { .. } => NT_CURRICULAR,
                NonTarget::MvAdaptive { .. } => NT_MV_ADAPTIVE,
                NonTarget::MvFixed { .. } => NT_MV_FIXED,
                NonTarget::Quadratic => NT_QAM,
            };
            assert_eq!(plans.hp.nontarget_kind, want_kind, "{name}");
            // The margin-free sum is kept exactly when the head needs p_d.
            assert_eq!(plans.hp.flags & F_PLAIN_SUM != 0, gpu.needs().p_d, "{name}: F_PLAIN_SUM");
            if name.starts_with("mv-") {
                assert!(plans.hp.t != 0.0, "{name}: t {}", plans.hp.t);
            }
        }
    }

    #[test]
    fn layout_matches_the_cuda_struct() {
        // 7 floats then 2 ints, no padding: the order must follow margin_head.cu.
        assert_eq!(std::mem::size_of::<MarginParams>(), 9 * 4);
        let src = kernels::MARGIN_HEAD.source;
        let start = src.find("struct MarginParams {").expect("struct in margin_head.cu");
        let body = &src[start..start + src[start..].find("};").unwrap()];
        let fields: Vec<&str> = body
            .lines()
            .skip(1)
            .flat_map(|l| l.split("//").next().unwrap().split([',', ';']))
            .map(|f| f.trim().trim_start_matches("float ").trim_start_matches("int ").trim())
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(fields, ["s", "m1", "m2", "m3", "eps", "t", "inv_batch", "flags", "nontarget_kind"]);
        // And the codes the kernel switches on.
        for (name, v) in [
            ("F_FALLBACK", F_FALLBACK),
            ("F_EASY", F_EASY),
            ("F_STE", F_STE),
            ("F_PLAIN_SUM", F_PLAIN_SUM),
            ("NT_PLAIN", NT_PLAIN),
            ("NT_CURRICULAR", NT_CURRICULAR),
            ("NT_MV_ADAPTIVE", NT_MV_ADAPTIVE),
            ("NT_MV_FIXED", NT_MV_FIXED),
            ("NT_QAM", NT_QAM),
        ] {
            assert!(src.contains(&format!("#define {name} {v}")), "{name} is not {v} in margin_head.cu");
        }
    }
}
