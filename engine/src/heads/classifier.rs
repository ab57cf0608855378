//! The CPU reference of the classifier shared by every head: forward (cosines, logits, LSE, weighted CE,
//! extra term) and analytic backward, on plain row-major slices in f32 or f64.
//!
//! It is written as the sharded computation (partial FC): each shard holds some class rows and local
//! labels (-1 where another shard owns the class); the per-row target cosine is gathered first, the
//! per-shard (max, sum) pairs are merged, and each shard's gradient uses the merged LSE. `run` is the
//! one-shard case; `run_sharded_over` does the same with shards on several ranks, the merges being the
//! communicator's all-reduces (`heads::sharded`).

use super::maps::{non_target_logit, target_logit, TargetMap};
use super::{BatchView, Head, RowInput, RowPlan};
use crate::backend::cpu::gemm::gemm;
use crate::dist::{reduce_in_order, Communicator, ReduceOp, Single};
use crate::tensor::{Element, Float, Shape, Tensor};
use crate::{Error, Result};
use rayon::prelude::*;

/// insightface clamps p_y >= 1e-30 in the loss value only: CE <= -ln(1e-30). The gradient is unclamped.
pub const CE_MAX: f64 = 69.077_552_789_821_37;

/// Denominator floor of the L2 normalizations (torch's F.normalize), as `ops::normalize`.
pub const NORM_FLOOR: f64 = crate::ops::NORMALIZE_EPS;

/// Detached per-sample values to hold fixed instead of computing them (finite-difference checks of the
/// gradient, which by definition does not flow through detached values).
#[derive(Debug, Clone, Default)]
pub struct Frozen {
    pub quality: Vec<f64>,
    pub p_d: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Compute gradients (false: loss and row reports only).
    pub compute_grad: bool,
    pub frozen: Option<Frozen>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { compute_grad: true, frozen: None }
    }
}

/// Per-sample quantities of one step (tests, diagnostics, the parity fixtures).
#[derive(Debug, Clone, Copy, Default)]
pub struct RowReport {
    pub norm: f64,
    /// Target cosine after the clamp.
    pub c_y: f64,
    pub quality: f64,
    pub z_y: f64,
    pub lse: f64,
    pub log_p: f64,
    /// The sample's CE before weighting (unclamped).
    pub ce: f64,
    /// I(p) and st(p).
    pub weight: f64,
    pub st: f64,
    /// Margin-free target probability (QCFace), NaN when the head does not need it.
    pub p_d: f64,
    /// The extra term's value.
    pub extra: f64,
    /// dL/da_i.
    pub d_norm: f64,
}

#[derive(Debug)]
pub struct Output<T> {
    /// Batch mean of I·min(CE, CE_MAX) plus the mean extra term.
    pub loss: f64,
    /// dL/dx [B, D] (empty when gradients were not requested).
    pub grad_x: Vec<T>,
    /// dL/dW: the shards' rows concatenated in shard order [C, D].
    pub grad_w: Vec<T>,
    pub rows: Vec<RowReport>,
}

impl<T: Float + Element> Output<T> {
    /// The loss as a scalar tensor and, with `grad` (they were computed), dL/dx and dL/dW shaped as the
    /// embeddings `x` and the weight `w` they belong to: what a head's tape node hands on.
    pub fn into_tensors(
        self,
        x: &Shape,
        w: &Shape,
        grad: bool,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let grads = if grad {
            Some((Tensor::from_vec(self.grad_x, x.clone())?, Tensor::from_vec(self.grad_w, w.clone())?))
        } else {
            None
        };
        Ok((Tensor::scalar(T::from_f64(self.loss)), grads))
    }
}

/// One shard of the class rows: weight [C_k, D] and labels local to it (-1: owned by another shard).
pub struct Shard<'a, T> {
    pub weight: &'a [T],
    pub labels: &'a [i64],
}

/// One step on the whole class matrix: embeddings [B, D], weight [C, D], labels [B] in 0..C.
pub fn run<T: Float>(
    x: &[T],
    weight: &[T],
    labels: &[i64],
    dim: usize,
    head: &mut dyn Head,
    opts: &RunOptions,
) -> Result<Output<T>> {
    if dim == 0 || !weight.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!("weight holds {} values, not rows of {dim}", weight.len())));
    }
    let classes = weight.len() / dim;
    for (i, &y) in labels.iter().enumerate() {
        if y < 0 || y as usize >= classes {
            return Err(Error::Invalid(format!(
                "label {y} of sample {i} is outside 0..{classes}; -1 (class on another shard) needs run_sharded"
            )));
        }
    }
    run_sharded(x, dim, &[Shard { weight, labels }], head, opts)
}

/// ‖row‖ in the row's type without overflow: finite f32 embeddings beyond ~1.8e19 square to infinity,
/// which made the loss NaN and the gradients zero. Such a row is measured again scaled by its largest
/// magnitude; every other row takes the plain sum, so ordinary results are unchanged bit for bit.
pub fn robust_norm<T: Float>(row: &[T]) -> T {
    let n = row.iter().map(|&v| v * v).sum::<T>().sqrt();
    if n.is_finite() || n.to_f64().is_nan() {
        return n;
    }
    let m = row.iter().fold(T::ZERO, |m, &v| m.max(v.abs()));
    if !m.is_finite() {
        return m;
    }
    m * row.iter().map(|&v| (v / m) * (v / m)).sum::<T>().sqrt()
}

fn normalize_rows<T: Float>(m: &[T], dim: usize) -> (Vec<T>, Vec<T>) {
    let mut unit = m.to_vec();
    let mut norms = vec![T::ZERO; m.len() / dim];
    unit.par_chunks_mut(dim).zip(norms.par_iter_mut()).for_each(|(row, n)| {
        *n = robust_norm(row);
        let inv = T::ONE / n.max(T::from_f64(NORM_FLOOR));
        row.iter_mut().for_each(|v| *v *= inv);
    });
    (unit, norms)
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).map(|(&p, &q)| p * q).sum()
}

/// g ← (g - (g·u)·u) / n + extra·u: the gradient through u = v/‖v‖ onto v, plus a radial term.
fn project_rows<T: Float>(g: &mut [T], unit: &[T], norms: &[T], radial: Option<&[T]>, dim: usize) {
    g.par_chunks_mut(dim).enumerate().for_each(|(i, gi)| {
        let u = &unit[i * dim..(i + 1) * dim];
        let along = dot(gi, u);
        let inv = T::ONE / norms[i].max(T::from_f64(NORM_FLOOR));
        let r = radial.map_or(T::ZERO, |r| r[i]);
        for (gv, &uv) in gi.iter_mut().zip(u) {
            *gv = (*gv - along * uv) * inv + r * uv;
        }
    });
}

/// Per-row target values, computed once from the gathered c_y (the shard owning y uses them).
#[derive(Clone, Copy)]
struct Target<T> {
    z: T,
    /// z' times the clamp mask.
    dz: T,
    dz_dm: T,
}

/// Per-row results of the forward merge: the log-sum-exp of the head's logits as (max, sum), and that of
/// the margin-free non-target logits s·c_j, j ≠ y (QCFace's p_d; (-inf, 0) when the head does not need it).
#[derive(Clone, Copy)]
struct Merged<T> {
    max: T,
    sum: T,
    max_d: T,
    sum_d: T,
}

/// Adds e^(z - m) to a running (m, sum), moving m up when z exceeds it.
#[inline]
fn lse_push<T: Float>(z: T, m: &mut T, sum: &mut T) {
    if z > *m {
        *sum = *sum * (*m - z).exp() + T::ONE;
        *m = z;
    } else {
        *sum += (z - *m).exp();
    }
}

/// Two running (max, sum) pairs as one: the larger max, both sums rescaled to it. An empty pair
/// (-inf, 0) leaves the other unchanged.
fn lse_merge<T: Float>(a: (T, T), b: (T, T)) -> (T, T) {
    let max = a.0.max(b.0);
    let part = |(m, s): (T, T)| if s == T::ZERO { T::ZERO } else { s * (m - max).exp() };
    (max, part(a) + part(b))
}

/// p_d = softmax(s·c)_y from the margin-free target logit s·c_y and the margin-free non-target sum
/// (max_d, sum_d): log p_d = s·c_y - LSE2(max_d + log sum_d, s·c_y).
pub(crate) fn margin_free_p<T: Float>(zd: T, max_d: T, sum_d: T) -> f64 {
    if sum_d == T::ZERO {
        return 1.0;
    }
    let other = max_d + sum_d.ln();
    let top = zd.max(other);
    let lse2 = top + ((zd - top).exp() + (other - top).exp()).ln();
    (zd - lse2).exp().to_f64()
}

/// The sharded step, every shard in this process: the merges (gathered c_y, max/sum, summed embedding
/// gradients) happen in memory.
pub fn run_sharded<T: Float>(
    x: &[T],
    dim: usize,
    shards: &[Shard<T>],
    head: &mut dyn Head,
    opts: &RunOptions,
) -> Result<Output<T>> {
    run_sharded_over(x, dim, shards, head, opts, &Single)
}

/// What a rank gives the merge of the target cosines: each row's c_y where one of its shards holds
/// the row's class (0 elsewhere), then whether it holds it (1 or 0).
pub(crate) fn targets_part<T: Float>(raw_cy: &[T], owned: &[bool]) -> Vec<f64> {
    raw_cy.iter().map(|c| c.to_f64()).chain(owned.iter().map(|&o| f64::from(u8::from(o)))).collect()
}

/// The ranks' `targets_part`s of `b` rows (gathered, in rank order) merged: each row's c_y, summed in
/// rank order as an all-reduce would (one rank gives it, the others zero). An error unless exactly one
/// shard of one rank holds each row's class. The CPU's `run_sharded_over` and the CUDA head's per-row
/// plans both merge through it, whichever collective gathered the parts.
pub(crate) fn merge_targets<T: Float>(parts: &[Vec<f64>], b: usize) -> Result<Vec<T>> {
    check_parts(parts, 2 * b, "target cosines")?;
    let all = reduce_in_order(parts, ReduceOp::Sum);
    let (cy, owners) = all.split_at(b);
    if let Some(i) = owners.iter().position(|&n| n == 0.0) {
        return Err(Error::Invalid(format!("sample {i} has label -1 on every shard")));
    }
    if let Some(i) = owners.iter().position(|&n| n > 1.0) {
        return Err(Error::Invalid(format!("sample {i} has its label on two ranks")));
    }
    Ok(cy.iter().map(|&c| T::from_f64(c)).collect())
}

/// What a rank gives the merge of the log-sum-exp pairs: its rows' (max, sum) of the head's logits and
/// (max_d, sum_d) of the margin-free non-target ones, one after the other.
pub(crate) fn lse_part<T: Float>(max: &[T], sum: &[T], max_d: &[T], sum_d: &[T]) -> Vec<f64> {
    [max, sum, max_d, sum_d].iter().flat_map(|v| v.iter().map(|x| x.to_f64())).collect()
}

/// The ranks' `lse_part`s of `b` rows (gathered, in rank order) merged, the same on every rank: per
/// row, the largest max over the ranks and the sums rescaled to it, added in rank order (a rank whose
/// pair is empty, sum 0, adds zero). Returns [max, sum, max_d, sum_d].
pub(crate) fn merge_lse<T: Float>(parts: &[Vec<f64>], b: usize) -> Result<[Vec<T>; 4]> {
    check_parts(parts, 4 * b, "log-sum-exp pairs")?;
    let rescale = |m: f64, s: f64, top: f64| if s == 0.0 { 0.0 } else { s * (m - top).exp() };
    let mut out: [Vec<T>; 4] = Default::default();
    // The pair (max, sum) is out[k], out[k + 1], held at parts' k·b and (k + 1)·b.
    for k in [0, 2] {
        for i in 0..b {
            let (m_at, s_at) = (k * b + i, (k + 1) * b + i);
            let top = parts[1..].iter().fold(parts[0][m_at], |t, p| t.max(p[m_at]));
            let sum = parts[1..].iter().fold(rescale(parts[0][m_at], parts[0][s_at], top), |a, p| {
                a + rescale(p[m_at], p[s_at], top)
            });
            out[k].push(T::from_f64(top));
            out[k + 1].push(T::from_f64(sum));
        }
    }
    Ok(out)
}

/// Every rank gave `len` values.
fn check_parts(parts: &[Vec<f64>], len: usize, what: &str) -> Result<()> {
    match parts.iter().position(|p| p.len() != len) {
        _ if parts.is_empty() => Err(Error::Shape(format!("merge of {what}: no ranks"))),
        Some(r) => {
            Err(Error::Shape(format!("merge of {what}: rank {r} gave {} values, not {len}", parts[r].len())))
        }
        None => Ok(()),
    }
}

/// `x` as f64, all-reduced by `op` over `comm`'s ranks, back in T (the identity on one rank).
pub(crate) fn all_reduce_as<T: Float>(comm: &dyn Communicator, x: &mut [T], op: ReduceOp) -> Result<()> {
    if comm.world() == 1 {
        return Ok(());
    }
    let mut v: Vec<f64> = x.iter().map(|t| t.to_f64()).collect();
    comm.all_reduce(&mut v, op)?;
    for (t, v) in x.iter_mut().zip(v) {
        *t = T::from_f64(v);
    }
    Ok(())
}

/// The sharded step with this rank's `shards` of the classes, on the batch every rank holds (`x`, the
/// labels local to each shard). With one rank it is `run_sharded`, bit for bit; with several, each rank
/// returns the same loss, rows and dL/dx (the whole batch's), and dL/dW of its own shards. Every rank
/// must call it with the same batch and its own classes, each class on exactly one rank.
pub fn run_sharded_over<T: Float>(
    x: &[T],
    dim: usize,
    shards: &[Shard<T>],
    head: &mut dyn Head,
    opts: &RunOptions,
    comm: &dyn Communicator,
) -> Result<Output<T>> {
    if dim == 0 || x.is_empty() || !x.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!("embeddings hold {} values, not a non-empty [B, {dim}]", x.len())));
    }
    let b = x.len() / dim;
    let mut owner: Vec<Option<(usize, usize)>> = vec![None; b];
    for (k, sh) in shards.iter().enumerate() {
        if !sh.weight.len().is_multiple_of(dim) || sh.weight.is_empty() {
            return Err(Error::Shape(format!(
                "shard {k}: weight holds {} values, not [C, {dim}]",
                sh.weight.len()
            )));
        }
        if sh.labels.len() != b {
            return Err(Error::Shape(format!("shard {k}: {} labels for {b} embeddings", sh.labels.len())));
        }
        let c = sh.weight.len() / dim;
        for (i, &y) in sh.labels.iter().enumerate() {
            if y == -1 {
                continue;
            }
            if y < 0 || y as usize >= c {
                return Err(Error::Invalid(format!("shard {k}: label {y} of sample {i} is outside 0..{c}")));
            }
            if owner[i].replace((k, y as usize)).is_some() {
                return Err(Error::Invalid(format!("sample {i} has its label on two shards")));
            }
        }
    }
    let needs = head.needs();
    let f = T::from_f64;
    let s = f(head.scale());
    let eps = head.clamp_eps();
    let (lo, hi) = (f(-1.0 + eps), f(1.0 - eps));
    let clamp = |c: T| c.max(lo).min(hi);
    let inside = |c: T| c > lo && c < hi;

    let (xh, a) = normalize_rows(x, dim);
    let normed: Vec<(Vec<T>, Vec<T>)> = shards.iter().map(|sh| normalize_rows(sh.weight, dim)).collect();

    // Gather-dot of the target cosine (before the main pass, as a sharded run must): the rank owning the
    // class computes it, the others add zero.
    // One gather carries them with each rank's owner flags, which the merge checks.
    let own_cy: Vec<T> = (0..b)
        .map(|i| match owner[i] {
            Some((k, y)) => dot(&xh[i * dim..(i + 1) * dim], &normed[k].0[y * dim..(y + 1) * dim]),
            None => T::ZERO,
        })
        .collect();
    let owned: Vec<bool> = owner.iter().map(Option::is_some).collect();
    let raw_cy: Vec<T> = merge_targets(&comm.all_gather(&targets_part(&own_cy, &owned))?, b)?;
    let c_y: Vec<f64> = raw_cy.iter().map(|&c| clamp(c).to_f64()).collect();
    let norms: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
    let view = BatchView { c_y: &c_y, norms: &norms };
    head.observe(&view)?;
    let frozen = opts.frozen.as_ref();
    let quality = match frozen {
        Some(fr) if !fr.quality.is_empty() => fr.quality.clone(),
        _ => head.quality(&view),
    };
    let quality = if quality.is_empty() { vec![0.0; b] } else { quality };
    if quality.len() != b {
        return Err(Error::Invalid(format!(
            "{}: {} quality values for {b} samples",
            head.name(),
            quality.len()
        )));
    }
    let plans: Vec<RowPlan> =
        (0..b).map(|i| head.row(&RowInput { c_y: c_y[i], norm: norms[i], quality: quality[i] })).collect();
    let targets: Vec<Target<T>> = (0..b)
        .map(|i| {
            let (z, dz, dz_dm) = target_logit(&plans[i].target, s, clamp(raw_cy[i]));
            Target { z, dz: if inside(raw_cy[i]) { dz } else { T::ZERO }, dz_dm }
        })
        .collect();
    let non_target = head.non_target();

    // Forward per shard: logits and z' (masked) per element, then the row's (max, sum) and, for p_d, the
    // (max, sum) of the margin-free non-target logits.
    let mut logits: Vec<Vec<T>> = Vec::with_capacity(shards.len());
    let mut slopes: Vec<Vec<T>> = Vec::with_capacity(shards.len());
    let mut merged: Vec<Option<Merged<T>>> = vec![None; b];
    for (k, sh) in shards.iter().enumerate() {
        let c = sh.weight.len() / dim;
        let mut z = vec![T::ZERO; b * c];
        gemm(b, dim, c, &xh, false, &normed[k].0, true, &mut z, false);
        // The slope pass needs the raw cosines again: keep a copy instead of a second GEMM.
        let mut dz = if opts.compute_grad { z.clone() } else { Vec::new() };
        let stats: Vec<Merged<T>> = z
            .par_chunks_mut(c)
            .enumerate()
            .map(|(i, zi)| {
                let y = sh.labels[i];
                let tau = f(plans[i].tau);
                let (mut max_d, mut sum_d) = (f(f64::NEG_INFINITY), T::ZERO);
                for (j, zij) in zi.iter_mut().enumerate() {
                    if j as i64 == y {
                        *zij = targets[i].z;
                    } else {
                        let c = clamp(*zij);
                        if needs.p_d {
                            lse_push(s * c, &mut max_d, &mut sum_d);
                        }
                        *zij = non_target_logit(&non_target, s, c, tau).0;
                    }
                }
                let max = zi.iter().copied().fold(f(f64::NEG_INFINITY), T::max);
                let sum = zi.iter().map(|&zij| (zij - max).exp()).sum();
                Merged { max, sum, max_d, sum_d }
            })
            .collect();
        if opts.compute_grad {
            dz.par_chunks_mut(c).enumerate().for_each(|(i, di)| {
                let y = sh.labels[i];
                let tau = f(plans[i].tau);
                for (j, d) in di.iter_mut().enumerate() {
                    *d = if j as i64 == y {
                        targets[i].dz
                    } else if inside(*d) {
                        non_target_logit(&non_target, s, clamp(*d), tau).1
                    } else {
                        T::ZERO
                    };
                }
            });
        }
        for (m, st) in merged.iter_mut().zip(stats) {
            *m = Some(match *m {
                None => st,
                Some(prev) => {
                    let (max, sum) = lse_merge((prev.max, prev.sum), (st.max, st.sum));
                    let (max_d, sum_d) = lse_merge((prev.max_d, prev.sum_d), (st.max_d, st.sum_d));
                    Merged { max, sum, max_d, sum_d }
                }
            });
        }
        logits.push(z);
        slopes.push(dz);
    }

    // The ranks' (max, sum) pairs merged.
    if comm.world() > 1 {
        let m: Vec<Merged<T>> = merged.iter().map(|m| m.expect("at least one shard")).collect();
        let col = |f: fn(&Merged<T>) -> T| m.iter().map(f).collect::<Vec<T>>();
        let part = lse_part(&col(|m| m.max), &col(|m| m.sum), &col(|m| m.max_d), &col(|m| m.sum_d));
        let [max, sum, max_d, sum_d] = merge_lse::<T>(&comm.all_gather(&part)?, b)?;
        for (i, m) in merged.iter_mut().enumerate() {
            *m = Some(Merged { max: max[i], sum: sum[i], max_d: max_d[i], sum_d: sum_d[i] });
        }
    }

    // Per-row loss, weights, p_d and the extra term.
    let inv_b = 1.0 / b as f64;
    let mut rows = Vec::with_capacity(b);
    let mut lse_t = Vec::with_capacity(b);
    let mut loss = 0.0;
    for i in 0..b {
        let m = merged[i].expect("at least one shard");
        let lse = m.max + m.sum.ln();
        let log_p_t = targets[i].z - lse;
        let log_p = log_p_t.to_f64();
        let ce = -log_p;
        let w = head.weight(log_p);
        let p_d = if needs.p_d {
            match frozen {
                Some(fr) if !fr.p_d.is_empty() => fr.p_d[i],
                _ => margin_free_p(s * f(c_y[i]), m.max_d, m.sum_d),
            }
        } else {
            f64::NAN
        };
        let (extra, d_extra) = head.extra(norms[i], p_d);
        let p_y = log_p_t.exp().to_f64();
        let d_norm = inv_b * (w.st * (p_y - 1.0) * targets[i].dz_dm.to_f64() * plans[i].margin_da + d_extra);
        loss += w.value * ce.min(CE_MAX) + extra;
        lse_t.push(lse);
        rows.push(RowReport {
            norm: norms[i],
            c_y: c_y[i],
            quality: quality[i],
            z_y: targets[i].z.to_f64(),
            lse: lse.to_f64(),
            log_p,
            ce,
            weight: w.value,
            st: w.st,
            p_d,
            extra,
            d_norm,
        });
    }
    loss *= inv_b;
    // The cosine clamps and the CE cap would turn a NaN/inf embedding into a finite loss; a broken input
    // must show as a non-finite loss instead, which the trainer refuses (or skips under fp16).
    if norms.iter().any(|n| !n.is_finite()) {
        loss = f64::NAN;
    }
    if !opts.compute_grad {
        return Ok(Output { loss, grad_x: Vec::new(), grad_w: Vec::new(), rows });
    }

    // Backward: G = (1/B)·st·(P - δ)·z', then gx̂ = Σ_shards G·Ŵ and gŴ = Gᵀ·x̂ per shard.
    let scale: Vec<T> = rows.iter().map(|r| f(inv_b * r.st)).collect();
    let mut gxh = vec![T::ZERO; b * dim];
    let mut grad_w = Vec::new();
    for (k, sh) in shards.iter().enumerate() {
        let c = sh.weight.len() / dim;
        let mut g = std::mem::take(&mut logits[k]);
        let dz = &slopes[k];
        g.par_chunks_mut(c).enumerate().for_each(|(i, gi)| {
            let y = sh.labels[i];
            for (j, v) in gi.iter_mut().enumerate() {
                let p = (*v - lse_t[i]).exp();
                let delta = if j as i64 == y { T::ONE } else { T::ZERO };
                let d = dz[i * c + j];
                *v = if d == T::ZERO { T::ZERO } else { scale[i] * (p - delta) * d };
            }
        });
        gemm(b, c, dim, &g, false, &normed[k].0, false, &mut gxh, true);
        let mut gw = vec![T::ZERO; c * dim];
        gemm(c, b, dim, &g, true, &xh, false, &mut gw, false);
        project_rows(&mut gw, &normed[k].0, &normed[k].1, None, dim);
        grad_w.extend_from_slice(&gw);
    }
    // Every rank's classes contribute to every row's gradient.
    all_reduce_as(comm, &mut gxh, ReduceOp::Sum)?;
    let radial: Vec<T> = rows.iter().map(|r| f(r.d_norm)).collect();
    project_rows(&mut gxh, &xh, &a, Some(&radial), dim);
    Ok(Output { loss, grad_x: gxh, grad_w, rows })
}

/// Used by heads whose target cosine chooses between maps (easy margin, fallback).
pub(crate) fn arc_target(c_y: f64, m: f64, easy_margin: bool, fallback: bool) -> TargetMap {
    if easy_margin && c_y <= 0.0 {
        TargetMap::Shift { m: 0.0 }
    } else if fallback && !easy_margin && c_y <= (std::f64::consts::PI - m).cos() {
        TargetMap::Fallback { m }
    } else {
        TargetMap::Angular { m1: 1.0, m2: m, m3: 0.0 }
    }
}
