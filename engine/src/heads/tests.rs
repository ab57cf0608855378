//! Finite-difference gradient checks of every head (f64), the spec §14 edge cases, and each head's
//! distinguishing behaviour.

use super::*;
use crate::rng::Rng;
use crate::tape::gradcheck::rel_error;

pub(crate) struct Case {
    pub x: Vec<f64>,
    pub w: Vec<f64>,
    pub labels: Vec<i64>,
    pub dim: usize,
}

/// Random embeddings with norms in [lo, hi], random class rows, random labels.
pub(crate) fn random_case(seed: u64, b: usize, c: usize, dim: usize, lo: f64, hi: f64) -> Case {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(b * dim);
    for _ in 0..b {
        let v: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
        let n = v.iter().map(|e| e * e).sum::<f64>().sqrt();
        let a = lo + (hi - lo) * rng.uniform();
        x.extend(v.iter().map(|e| e / n * a));
    }
    let w = (0..c * dim).map(|_| rng.normal()).collect();
    let labels = (0..b).map(|_| rng.below(c as u64) as i64).collect();
    Case { x, w, labels, dim }
}

/// One sample per given target cosine: W_y = e0, x = a·(c·e0 + √(1-c²)·e1); other classes random.
fn case_with_target_cos(cos: &[f64], a: f64, classes: usize, dim: usize, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let mut w: Vec<f64> = (0..classes * dim).map(|_| rng.normal()).collect();
    w[..dim].iter_mut().enumerate().for_each(|(k, v)| *v = if k == 0 { 1.0 } else { 0.0 });
    let mut x = Vec::new();
    for &c in cos {
        let mut row = vec![0.0; dim];
        row[0] = a * c;
        row[1] = a * (1.0 - c * c).max(0.0).sqrt();
        x.extend(row);
    }
    Case { x, w, labels: vec![0; cos.len()], dim }
}

fn head(name: &str, p: &HeadParams) -> Box<dyn Head> {
    from_name(name, p).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A sharded rank's group on the host alone, its head's state moved by the job's whole batch.
fn group(comm: &dyn crate::dist::Communicator) -> RankGroup<'_> {
    RankGroup { comm, gpus: None, running_state: None }
}

fn eval_opts(frozen: Option<Frozen>) -> RunOptions {
    RunOptions { compute_grad: true, frozen }
}

/// Central differences of the loss against the analytic gradients, with the detached per-sample values
/// (quality, p_d) and the running state held fixed. Returns (error on x, error on W).
pub(crate) fn fd_errors(h: &mut dyn Head, case: &Case) -> (f64, f64) {
    // One training step so the state is not at its initial value, then freeze it.
    h.set_training(true);
    run(&case.x, &case.w, &case.labels, case.dim, h, &RunOptions::default()).unwrap();
    h.set_training(false);
    let base = run(&case.x, &case.w, &case.labels, case.dim, h, &eval_opts(None)).unwrap();
    assert!(base.loss.is_finite());
    let frozen = Frozen {
        quality: base.rows.iter().map(|r| r.quality).collect(),
        p_d: if h.needs().p_d { base.rows.iter().map(|r| r.p_d).collect() } else { Vec::new() },
    };
    let opts = RunOptions { compute_grad: false, frozen: Some(frozen) };
    let step = 1e-6;
    let mut numeric = |which: usize| -> Vec<f64> {
        let n = if which == 0 { case.x.len() } else { case.w.len() };
        (0..n)
            .map(|k| {
                let mut eval = |delta: f64| {
                    let (mut x, mut w) = (case.x.clone(), case.w.clone());
                    if which == 0 {
                        x[k] += delta;
                    } else {
                        w[k] += delta;
                    }
                    run(&x, &w, &case.labels, case.dim, h, &opts).unwrap().loss
                };
                (eval(step) - eval(-step)) / (2.0 * step)
            })
            .collect()
    };
    let (nx, nw) = (numeric(0), numeric(1));
    (rel_error(&base.grad_x, &nx), rel_error(&base.grad_w, &nw))
}

/// Every head with default and non-default settings, with norms where their terms are active.
fn gradcheck_configs() -> Vec<(&'static str, HeadParams, f64, f64)> {
    // s is kept small enough that no CE reaches the value clamp CE_MAX (which has no gradient).
    let d = || HeadParams { s: Some(8.0), ..Default::default() };
    vec![
        ("softmax", d(), 1.0, 5.0),
        ("sphereface", d(), 1.0, 5.0),
        ("cosface", d(), 1.0, 5.0),
        ("arcface", d(), 1.0, 5.0),
        ("arcface", HeadParams { easy_margin: Some(true), ..d() }, 1.0, 5.0),
        ("arcface", HeadParams { m: Some(1.4), ..d() }, 1.0, 5.0),
        ("combined", d(), 1.0, 5.0),
        ("combined", HeadParams { m1: Some(1.3), ..d() }, 1.0, 5.0),
        ("curricularface", d(), 1.0, 5.0),
        ("mv-am", d(), 1.0, 5.0),
        ("mv-arc", d(), 1.0, 5.0),
        ("mv-arc", HeadParams { easy_margin: Some(false), ..d() }, 1.0, 5.0),
        ("magface", d(), 5.0, 120.0),
        ("magface", HeadParams { easy_margin: Some(false), m: None, ..d() }, 5.0, 120.0),
        ("adaface", HeadParams { h: Some(1.0), ..d() }, 1.0, 60.0),
        ("qamface", HeadParams { s: Some(1.0), ..Default::default() }, 1.0, 5.0),
        ("sm-cosface", d(), 1.0, 60.0),
        ("nsm-cosface-star", d(), 1.0, 60.0),
        ("nsm-cosface-star", HeadParams { variant: Some(Variant::Weak), ..d() }, 1.0, 60.0),
        ("smaface", d(), 1.0, 60.0),
        ("smaface-star", d(), 1.0, 60.0),
        ("nsmaface-star", d(), 1.0, 60.0),
        ("smaface", HeadParams { variant: Some(Variant::Weak), ..d() }, 1.0, 60.0),
        ("smaface", HeadParams { variant: Some(Variant::Strong), ..d() }, 1.0, 60.0),
        ("smaface", HeadParams { variant: Some(Variant::Beta), ..d() }, 1.0, 60.0),
        ("hm-softmax", HeadParams { s: Some(4.0), ..Default::default() }, 1.0, 5.0),
        ("focal", d(), 1.0, 5.0),
        ("hm-adaface", HeadParams { s: Some(4.0), ..Default::default() }, 1.0, 60.0),
        ("focal-adaface", d(), 1.0, 60.0),
        ("focal-adaface", HeadParams { gamma: Some(0.5), ..d() }, 1.0, 60.0),
        ("qcface", d(), 2.0, 40.0),
        ("qcface", HeadParams { phase: Some(Phase::Warmup), ..d() }, 2.0, 40.0),
        ("qcface-cur", d(), 2.0, 40.0),
        ("qcface-cur", HeadParams { phase: Some(Phase::Warmup), ..d() }, 2.0, 40.0),
        ("qcface-mvs", d(), 2.0, 40.0),
        ("qcface-mvs", HeadParams { easy_margin: Some(false), ..d() }, 2.0, 40.0),
    ]
}

#[test]
fn every_head_matches_finite_differences() {
    let mut failures = Vec::new();
    for (k, (name, p, lo, hi)) in gradcheck_configs().into_iter().enumerate() {
        for seed in 0..2u64 {
            let case = random_case(100 + 7 * k as u64 + seed, 5, 6, 4, lo, hi);
            let mut h = head(name, &p);
            let (ex, ew) = fd_errors(h.as_mut(), &case);
            if !(ex < 1e-6 && ew < 1e-6) {
                failures.push(format!("{name} {p:?} seed {seed}: x {ex:e}, W {ew:e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_name_builds_and_unknown_names_fail() {
    for n in names() {
        let h = head(n, &HeadParams::default());
        assert_eq!(h.name(), n);
    }
    let e = from_name("arcfase", &HeadParams::default()).unwrap_err().to_string();
    assert!(e.contains("unknown head 'arcfase'") && e.contains("arcface"), "{e}");
    assert!(from_name("qqcface", &HeadParams::default()).unwrap_err().to_string().contains("evaluation"));
    let e = from_name("cosface", &HeadParams { alpha: Some(1.0), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("--alpha"), "{e}");
}

#[test]
fn tape_node_gives_the_classifier_gradients_and_scales_them() {
    use crate::ops;
    use crate::tape::gradcheck;
    use crate::tensor::Tensor;
    let case = random_case(5, 4, 5, 3, 1.0, 5.0);
    let (x, w) = (
        Tensor::from_vec(case.x.clone(), [4, 3]).unwrap(),
        Tensor::from_vec(case.w.clone(), [5, 3]).unwrap(),
    );
    let labels = case.labels.clone();
    let state = {
        let mut h = head("curricularface", &HeadParams::default());
        run(&case.x, &case.w, &labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
        h.state()
    };
    let errs = gradcheck::check(
        &[x, w],
        |t, v| {
            let mut h = head("curricularface", &HeadParams { s: Some(8.0), ..Default::default() });
            h.set_training(false);
            h.load_state(&state)?;
            let l = loss(t, v[0], v[1], &labels, h.as_mut())?;
            let three = t.constant(Tensor::scalar(3.0f64));
            ops::mul(t, l, three)
        },
        1e-6,
    )
    .unwrap();
    assert!(errs.iter().all(|&e| e < 1e-6), "{errs:?}");
}

#[test]
fn f32_agrees_with_f64() {
    for name in ["arcface", "qamface", "adaface", "magface", "smaface-star", "curricularface", "qcface-cur"] {
        let case = random_case(9, 8, 50, 16, 5.0, 60.0);
        let x32: Vec<f32> = case.x.iter().map(|&v| v as f32).collect();
        let w32: Vec<f32> = case.w.iter().map(|&v| v as f32).collect();
        let xs: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
        let ws: Vec<f64> = w32.iter().map(|&v| v as f64).collect();
        let o64 = run(
            &xs,
            &ws,
            &case.labels,
            16,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        let o32 = run(
            &x32,
            &w32,
            &case.labels,
            16,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        let up = |v: &[f32]| v.iter().map(|&e| e as f64).collect::<Vec<_>>();
        assert!((o32.loss - o64.loss).abs() <= 1e-5 * o64.loss.abs(), "{name}: {} vs {}", o32.loss, o64.loss);
        assert!(rel_error(&up(&o32.grad_x), &o64.grad_x) < 1e-4, "{name} grad x");
        assert!(rel_error(&up(&o32.grad_w), &o64.grad_w) < 1e-4, "{name} grad w");
    }
}

// ---- §14 edge cases ----

#[test]
fn cos_at_plus_and_minus_one_stays_finite_and_clamped_entries_get_no_gradient() {
    for name in names() {
        for &c in &[1.0, 1.0 - 1e-7, -1.0, -1.0 + 1e-7] {
            let mut case = case_with_target_cos(&[c, 0.3], 30.0, 4, 3, 1);
            // A non-target at exactly the target's direction (c_j = c) and one opposite.
            case.w[3..6].copy_from_slice(&case.x[..3]);
            case.w[6..9].iter_mut().zip(&case.x[..3]).for_each(|(v, &e)| *v = -e);
            let out = run(
                &case.x,
                &case.w,
                &case.labels,
                3,
                head(name, &HeadParams::default()).as_mut(),
                &RunOptions::default(),
            )
            .unwrap();
            assert!(out.loss.is_finite(), "{name} c {c}: loss {}", out.loss);
            assert!(
                out.grad_x.iter().chain(&out.grad_w).all(|v| v.is_finite()),
                "{name} c {c}: non-finite gradient"
            );
        }
    }
    // c = 1 exactly: at the clamp bound for every ε, so the target column passes no gradient to W_y
    // beyond the softmax through other columns (arcface: G_iy = 0).
    let case = case_with_target_cos(&[1.0], 10.0, 3, 3, 2);
    let out = run(
        &case.x,
        &case.w,
        &case.labels,
        3,
        head("arcface", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(out.grad_w[..3].iter().all(|&v| v == 0.0), "{:?}", &out.grad_w[..3]);
}

#[test]
fn arcface_fallback_jumps_down_by_the_spec_amount() {
    let (s, m) = (64.0, 0.5);
    let th = (std::f64::consts::PI - m).cos();
    let z = |c: f64| {
        let case = case_with_target_cos(&[c], 10.0, 3, 3, 4);
        let out = run(
            &case.x,
            &case.w,
            &case.labels,
            3,
            head("arcface", &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        out.rows[0].z_y
    };
    let jump = z(th + 1e-6) - z(th - 1e-6);
    let expect = s * (m.cos() + m * m.sin() - 1.0);
    assert!((jump - expect).abs() < 1e-3, "jump {jump}, expected {expect}");
    assert!((expect / s - 0.117).abs() < 1e-3);
    // STE mode has no fallback: continuous there.
    let ste = HeadParams { grad_mode: Some(GradMode::Ste), ..Default::default() };
    let zs = |c: f64| {
        let case = case_with_target_cos(&[c], 10.0, 3, 3, 4);
        run(&case.x, &case.w, &case.labels, 3, head("arcface", &ste).as_mut(), &RunOptions::default())
            .unwrap()
            .rows[0]
            .z_y
    };
    assert!((zs(th + 1e-6) - zs(th - 1e-6)).abs() < 1e-3);
}

#[test]
fn adaface_clip_at_pi_zeroes_the_target_slope() {
    // ẑ = -1 (small norm, large h): g_angle = +m, so θ + m past π - ε clips.
    let p = HeadParams { h: Some(100.0), ..Default::default() };
    let m = 0.4;
    let c = (std::f64::consts::PI - m + 0.01).cos();
    let case = case_with_target_cos(&[c, 0.5], 1.0, 3, 3, 6);
    let mut h = head("adaface", &p);
    let out = run(&case.x, &case.w, &case.labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
    assert_eq!(out.rows[0].quality, -1.0);
    // z_y = s·(cos(π - ε) - 0) since g_add = m + m·(-1) = 0.
    assert!((out.rows[0].z_y - 64.0 * (std::f64::consts::PI - 1e-3).cos()).abs() < 1e-9);
    // Sample 0's x gradient comes only from the non-target columns now; compare with a run where the
    // target column's slope is known zero: the gradient wrt W_0 from sample 0 is zero.
    let only0 = Case { x: case.x[..3].to_vec(), w: case.w.clone(), labels: vec![0], dim: 3 };
    let mut h1 = head("adaface", &p);
    h1.set_training(false);
    h1.load_state(&h.state()).unwrap();
    let o1 = run(
        &only0.x,
        &only0.w,
        &only0.labels,
        3,
        h1.as_mut(),
        &eval_opts(Some(Frozen { quality: vec![-1.0], p_d: vec![] })),
    )
    .unwrap();
    assert!(o1.grad_w[..3].iter().all(|&v| v == 0.0));
}

#[test]
fn curricularface_tau_wraps_past_pi_and_never_modulates_the_target() {
    let m = 0.5;
    let th = (std::f64::consts::PI - m).cos();
    let mut h = head("curricularface", &HeadParams::default());
    // Just below the threshold τ = cos(θ + m) wraps above -1 again: cos(π + δ) = -cos δ.
    let rows = |c: f64, h: &dyn Head| h.row(&RowInput { c_y: c, norm: 1.0, quality: 0.0 });
    let above = rows(th + 1e-6, h.as_ref());
    let below = rows(th - 1e-6, h.as_ref());
    assert!(
        matches!(above.target, TargetMap::Angular { .. })
            && matches!(below.target, TargetMap::Fallback { .. })
    );
    assert!((above.tau + 1.0).abs() < 1e-5 && (below.tau + 1.0).abs() < 1e-5);
    // Target column value equals the ArcFace target whatever t is.
    h.load_state(&HeadState::new(&[("t", 0.7)])).unwrap();
    h.set_training(false);
    let case = case_with_target_cos(&[0.4, 0.2], 3.0, 5, 3, 8);
    let cur = run(&case.x, &case.w, &case.labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
    let arc = run(
        &case.x,
        &case.w,
        &case.labels,
        3,
        head("arcface", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    )
    .unwrap();
    for i in 0..2 {
        assert!((cur.rows[i].z_y - arc.rows[i].z_y).abs() < 1e-12);
    }
}

#[test]
fn hard_negative_boundary_of_curricular_and_mv() {
    let s = 2.0;
    for (nt, tau) in [(NonTarget::Curricular { t: 0.3 }, 0.8), (NonTarget::MvAdaptive { t: 0.2 }, 0.2)] {
        let just_below = maps::non_target_logit(&nt, s, tau - 1e-6, tau);
        let just_above = maps::non_target_logit(&nt, s, tau + 1e-6, tau);
        assert_eq!(just_below.0, s * (tau - 1e-6));
        assert!(just_above.0 > s * (tau + 1e-6), "{nt:?}: hard negatives are raised");
    }
}

#[test]
fn curricularface_t_follows_its_ema() {
    let mut h = head("curricularface", &HeadParams::default());
    let mut t = 0.0;
    for step in 0..5u64 {
        let case = random_case(40 + step, 6, 7, 5, 1.0, 3.0);
        let out = run(&case.x, &case.w, &case.labels, 5, h.as_mut(), &RunOptions::default()).unwrap();
        let mean = out.rows.iter().map(|r| r.c_y).sum::<f64>() / 6.0;
        t = 0.01 * mean + 0.99 * t;
        assert!((h.state().get("t").unwrap() - t).abs() < 1e-15);
    }
    assert!(t != 0.0);
}

#[test]
fn large_scale_many_classes_lse_matches_f64() {
    // s = 1e3 and 1e6 columns in f32 against the same inputs in f64.
    let (b, c, dim) = (1, 1_000_000, 2);
    let case = random_case(77, b, c, dim, 1.0, 2.0);
    let p = HeadParams { s: Some(1e3), ..Default::default() };
    let w32: Vec<f32> = case.w.iter().map(|&v| v as f32).collect();
    let x32: Vec<f32> = case.x.iter().map(|&v| v as f32).collect();
    let opts = RunOptions { compute_grad: false, frozen: None };
    let o32 = run(&x32, &w32, &case.labels, dim, head("cosface", &p).as_mut(), &opts).unwrap();
    let xs: Vec<f64> = x32.iter().map(|&v| v as f64).collect();
    let ws: Vec<f64> = w32.iter().map(|&v| v as f64).collect();
    let o64 = run(&xs, &ws, &case.labels, dim, head("cosface", &p).as_mut(), &opts).unwrap();
    assert!(
        (o32.rows[0].lse - o64.rows[0].lse).abs() < 1e-5 * o64.rows[0].lse.abs(),
        "{} {}",
        o32.rows[0].lse,
        o64.rows[0].lse
    );
}

#[test]
fn qamface_logits_near_237_do_not_overflow_f32() {
    // Non-target at θ = 0 (c = 1): z = 6·(2π)² ≈ 236.9.
    let mut case = case_with_target_cos(&[0.2], 5.0, 3, 3, 3);
    case.w[3..6].copy_from_slice(&case.x[..3]);
    let x32: Vec<f32> = case.x.iter().map(|&v| v as f32).collect();
    let w32: Vec<f32> = case.w.iter().map(|&v| v as f32).collect();
    let out = run(
        &x32,
        &w32,
        &case.labels,
        3,
        head("qamface", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(out.rows[0].lse > 236.0 && out.rows[0].lse < 238.0 && out.loss.is_finite(), "{:?}", out.rows[0]);
    assert!(out.grad_x.iter().all(|v| v.is_finite()));
}

#[test]
fn loss_value_is_clamped_like_insightface_but_gradient_is_not() {
    // A sample with p_y ≈ e^-130: CE clamps at 69.08 in the value.
    let case = case_with_target_cos(&[-0.99], 3.0, 2, 3, 1);
    let mut w = case.w.clone();
    w[3..6].copy_from_slice(&case.x[..3]);
    let out = run(
        &case.x,
        &w,
        &case.labels,
        3,
        head("softmax", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(out.rows[0].ce > 100.0);
    assert!((out.loss - CE_MAX).abs() < 1e-9);
    assert!(out.grad_x.iter().any(|&v| v != 0.0));
}

#[test]
fn sharded_classes_with_minus_one_labels_equal_unsharded() {
    // A split at 1 leaves shard 0 a single class: for the rows it owns, no non-target column there.
    for (name, split) in [
        ("arcface", 4),
        ("curricularface", 4),
        ("qcface", 4),
        ("qcface-cur", 4),
        ("qcface-cur", 1),
        ("qcface-mvs", 1),
        ("smaface", 4),
        ("qamface", 4),
        ("magface", 4),
    ] {
        let case = random_case(21, 6, 9, 4, 5.0, 50.0);
        let full = run(
            &case.x,
            &case.w,
            &case.labels,
            4,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        let local = |lo: i64, hi: i64| -> Vec<i64> {
            case.labels.iter().map(|&y| if y >= lo && y < hi { y - lo } else { -1 }).collect()
        };
        let (l0, l1) = (local(0, split), local(split, 9));
        let shards = [
            Shard { weight: &case.w[..split as usize * 4], labels: &l0 },
            Shard { weight: &case.w[split as usize * 4..], labels: &l1 },
        ];
        let sh = run_sharded(
            &case.x,
            4,
            &shards,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        assert!((sh.loss - full.loss).abs() < 1e-12 * full.loss.abs(), "{name} split {split}");
        assert!(rel_error(&sh.grad_x, &full.grad_x) < 1e-12, "{name} split {split}");
        assert!(rel_error(&sh.grad_w, &full.grad_w) < 1e-12, "{name} split {split}");
        let p_d = |o: &Output<f64>| o.rows.iter().map(|r| r.p_d).collect::<Vec<_>>();
        if name.starts_with("qcface") {
            assert!(rel_error(&p_d(&sh), &p_d(&full)) < 1e-12, "{name} split {split}: p_d");
        }
    }
    // -1 everywhere is an error; so is -1 in the unsharded call.
    let case = random_case(1, 2, 3, 2, 1.0, 2.0);
    let bad = [-1i64, 0];
    let e = run(
        &case.x,
        &case.w,
        &bad,
        2,
        head("softmax", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    );
    assert!(e.unwrap_err().to_string().contains("run_sharded"));
}

// ---- distinguishing behaviour ----

#[test]
fn adaface_is_arcface_at_minus_one_and_cosface_at_zero() {
    let case = random_case(31, 6, 7, 5, 1.0, 3.0);
    let ada = |quality: f64| {
        let mut h = head("adaface", &HeadParams::default());
        h.set_training(false);
        let fr = Frozen { quality: vec![quality; 6], p_d: vec![] };
        run(&case.x, &case.w, &case.labels, 5, h.as_mut(), &eval_opts(Some(fr))).unwrap()
    };
    let other = |name: &str| {
        let p = HeadParams { m: Some(0.4), ..Default::default() };
        run(&case.x, &case.w, &case.labels, 5, head(name, &p).as_mut(), &RunOptions::default()).unwrap()
    };
    for (q, name) in [(-1.0, "arcface"), (0.0, "cosface")] {
        let (a, b) = (ada(q), other(name));
        assert!((a.loss - b.loss).abs() < 1e-10 * b.loss, "{name}: {} vs {}", a.loss, b.loss);
        assert!(rel_error(&a.grad_x, &b.grad_x) < 1e-8 && rel_error(&a.grad_w, &b.grad_w) < 1e-8, "{name}");
    }
    // The indicator itself: h = 0 gives ẑ = 0 on any batch.
    let mut h = head("adaface", &HeadParams { h: Some(0.0), ..Default::default() });
    let out = run(&case.x, &case.w, &case.labels, 5, h.as_mut(), &RunOptions::default()).unwrap();
    assert!(out.rows.iter().all(|r| r.quality == 0.0));
    // B = 1 is rejected in training.
    let one = random_case(1, 1, 3, 2, 1.0, 2.0);
    let e = run(
        &one.x,
        &one.w,
        &one.labels,
        2,
        head("adaface", &HeadParams::default()).as_mut(),
        &RunOptions::default(),
    );
    assert!(e.unwrap_err().to_string().contains("at least 2"));
}

#[test]
fn magface_optimal_norm_rises_as_the_loss_falls() {
    // One sample; scan a over (l_a, u_a) for an easy and a hard direction; easy reaches its optimum later.
    let argmin = |c: f64| {
        let mut best = (f64::INFINITY, 0.0);
        for k in 0..=2000 {
            let a = 10.0 + 100.0 * k as f64 / 2000.0;
            let case = case_with_target_cos(&[c], a, 50, 4, 12);
            let opts = RunOptions { compute_grad: false, frozen: None };
            let l = run(
                &case.x,
                &case.w,
                &case.labels,
                4,
                head("magface", &HeadParams::default()).as_mut(),
                &opts,
            )
            .unwrap()
            .loss;
            if l < best.0 {
                best = (l, a);
            }
        }
        best.1
    };
    let (hard, easy) = (argmin(0.55), argmin(0.9));
    assert!(easy > hard + 1.0, "easy {easy}, hard {hard}");
    // The regulariser's gradient is zero outside (l_a, u_a) and at the bounds.
    let h = head("magface", &HeadParams::default());
    for a in [5.0, 10.0, 110.0, 200.0] {
        assert_eq!(h.extra(a, f64::NAN).1, 0.0, "a = {a}");
        assert_eq!(h.row(&RowInput { c_y: 0.5, norm: a, quality: 0.0 }).margin_da, 0.0);
    }
    assert!(h.extra(50.0, f64::NAN).1 != 0.0);
    let low = from_name("magface", &HeadParams { lambda_g: Some(20.0), ..Default::default() }).unwrap();
    assert!(low.warnings()[0].contains("22.59"), "{:?}", low.warnings());
    assert!(h.warnings().is_empty());
}

#[test]
fn qcface_optimal_norm_rises_with_p_d() {
    for k in [0.5, 1.0, 5.0, 50.0] {
        let q =
            qcface::QcFace::new(&HeadParams { k: Some(k), ..Default::default() }, qcface::SoftmaxPart::Arc)
                .unwrap();
        let mut prev = 0.0;
        for g in 0..=100 {
            let p = g as f64 / 100.0;
            let a = q.optimal_norm(p);
            assert!(a > prev, "k {k}: a*({p}) = {a} not above {prev}");
            prev = a;
            assert!(q.regularizer(a, p).1.abs() < 1e-12, "R'(a*) at p {p}");
        }
        assert!((q.optimal_norm(0.0) - 10.0).abs() < 1e-9 && (q.optimal_norm(1.0) - 110.0).abs() < 1e-9);
    }
    let q1 = qcface::QcFace::new(&HeadParams::default(), qcface::SoftmaxPart::Arc).unwrap();
    assert!((q1.optimal_norm(0.5) - 14.1).abs() < 0.05 && (q1.optimal_norm(0.99) - 74.2).abs() < 0.05);
    // a → 0 guard.
    let (r, d) = q1.regularizer(0.0, 0.5);
    assert!(r.is_finite() && d == 0.0);
}

/// p_d of each softmax part against softmax(s·c)_y computed directly (no margin, no modulation of the
/// hard negatives), and the warm-up phase equal to the softmax part's own head.
#[test]
fn qcface_p_d_matches_a_direct_softmax_and_warmup_is_the_softmax_part() {
    let case = random_case(51, 5, 8, 4, 5.0, 40.0);
    for (name, part, s) in
        [("qcface", "arcface", 8.0), ("qcface-cur", "curricularface", 8.0), ("qcface-mvs", "mv-arc", 6.0)]
    {
        let p = HeadParams { s: Some(s), ..Default::default() };
        let mut h = head(name, &p);
        let out = run(&case.x, &case.w, &case.labels, 4, h.as_mut(), &RunOptions::default()).unwrap();
        for (i, r) in out.rows.iter().enumerate() {
            let xi = &case.x[i * 4..(i + 1) * 4];
            let a: f64 = xi.iter().map(|v| v * v).sum::<f64>().sqrt();
            let logits: Vec<f64> = (0..8)
                .map(|j| {
                    let wj = &case.w[j * 4..(j + 1) * 4];
                    let n: f64 = wj.iter().map(|v| v * v).sum::<f64>().sqrt();
                    s * xi.iter().zip(wj).map(|(p, q)| p * q).sum::<f64>() / (a * n)
                })
                .collect();
            let denom: f64 = logits.iter().map(|z| z.exp()).sum();
            let direct = logits[case.labels[i] as usize].exp() / denom;
            assert!((r.p_d - direct).abs() < 1e-12, "{name} row {i}: {} vs {direct}", r.p_d);
        }
        assert!(out.rows.iter().any(|r| r.d_norm != 0.0), "{name}");
        let warm = HeadParams { phase: Some(Phase::Warmup), ..p.clone() };
        let mut wh = head(name, &warm);
        let wo = run(&case.x, &case.w, &case.labels, 4, wh.as_mut(), &RunOptions::default()).unwrap();
        assert!(wo.rows.iter().all(|r| r.d_norm == 0.0 && r.extra == 0.0), "{name}");
        let mut plain = head(part, &p);
        let po = run(&case.x, &case.w, &case.labels, 4, plain.as_mut(), &RunOptions::default()).unwrap();
        assert_eq!(wo.loss, po.loss, "{name} warm-up vs {part}");
        assert_eq!((wo.grad_x, wo.grad_w), (po.grad_x, po.grad_w), "{name} warm-up vs {part}");
        // The same running state as the part's, with the phase.
        let mut want = HeadState::new(&[("phase", 0.0)]);
        want.values.extend(plain.state().values);
        assert_eq!(wh.state(), want, "{name}");
        // Planning adds λ·R: a larger loss than the part's, and the same per-row CE.
        assert!(out.loss > po.loss, "{name}");
        for (q, r) in out.rows.iter().zip(&po.rows) {
            assert_eq!(q.ce, r.ce, "{name}");
        }
    }
}

/// QCFace-Cur keeps CurricularFace's t: it moves by its EMA, checkpoints with the phase and loads back.
#[test]
fn qcface_cur_carries_the_curricular_t() {
    let mut h = head("qcface-cur", &HeadParams::default());
    let mut cur = head("curricularface", &HeadParams::default());
    for step in 0..3u64 {
        let case = random_case(60 + step, 6, 7, 5, 5.0, 30.0);
        run(&case.x, &case.w, &case.labels, 5, h.as_mut(), &RunOptions::default()).unwrap();
        run(&case.x, &case.w, &case.labels, 5, cur.as_mut(), &RunOptions::default()).unwrap();
    }
    let t = cur.state().get("t").unwrap();
    assert!(t != 0.0);
    assert_eq!(h.state(), HeadState::new(&[("phase", 1.0), ("t", t)]));
    assert_eq!(h.non_target(), NonTarget::Curricular { t });
    let mut g = head("qcface-cur", &HeadParams { phase: Some(Phase::Warmup), ..Default::default() });
    g.load_state(&h.state()).unwrap();
    assert_eq!(g.state(), h.state());
    let e = g.load_state(&HeadState::new(&[("phase", 1.0)])).unwrap_err().to_string();
    assert!(e.contains("qcface-cur") && e.contains("'t'"), "{e}");
    // Flags of the softmax part are the head's flags; foreign ones are refused, naming the head.
    let mvs = HeadParams { t: Some(0.3), easy_margin: Some(false), ..Default::default() };
    assert!(from_name("qcface-mvs", &mvs).is_ok());
    let e = from_name("qcface-cur", &mvs).unwrap_err().to_string();
    assert!(e.contains("qcface-cur") && e.contains("--t"), "{e}");
    assert!(from_name("qcface", &HeadParams { t: Some(0.3), ..Default::default() }).is_err());
}

#[test]
fn smaface_weighs_hard_samples_up_and_easy_down() {
    // Hard: c_y = -0.5; easy: c_y = 0.95, with 3 random classes.
    let case = case_with_target_cos(&[-0.5, 0.95], 10.0, 4, 3, 13);
    let mut h = head("smaface", &HeadParams::default());
    let out = run(&case.x, &case.w, &case.labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
    assert!(out.rows[0].weight > 1.0 && out.rows[1].weight < 1.0, "{:?}", out.rows);
    let mut n = head("nsmaface-star", &HeadParams::default());
    let out = run(&case.x, &case.w, &case.labels, 3, n.as_mut(), &RunOptions::default()).unwrap();
    assert!(out.rows[0].weight < out.rows[1].weight);
    assert!(from_name("smaface", &HeadParams { alpha: Some(-7.0), ..Default::default() }).is_err());
    for a in [-6.9, 10.2] {
        let h = from_name("smaface", &HeadParams { alpha: Some(a), ..Default::default() }).unwrap();
        assert!(!h.warnings().is_empty(), "alpha {a} should warn");
    }
    assert!(from_name("smaface", &HeadParams { alpha: Some(2.0), ..Default::default() })
        .unwrap()
        .warnings()
        .is_empty());
}

/// NSM-CosFace*: the SM-CosFace margin with NSMAFace*'s weight. At ẑ = 0 both margins are CosFace(m),
/// so it equals nsmaface-star there; at ẑ = -1 its target has no margin at all (s·c_y) while
/// nsmaface-star's is ArcFace(m). Its weight is c_α·I with α = -2: easy samples up, hard ones down.
#[test]
fn nsm_cosface_star_is_the_cosface_margin_with_the_negative_starred_weight() {
    let case = random_case(71, 6, 7, 5, 1.0, 3.0);
    let frozen = |name: &str, q: f64| {
        let mut h = head(name, &HeadParams::default());
        h.set_training(false);
        let fr = Frozen { quality: vec![q; 6], p_d: vec![] };
        run(&case.x, &case.w, &case.labels, 5, h.as_mut(), &eval_opts(Some(fr))).unwrap()
    };
    let (a, b) = (frozen("nsm-cosface-star", 0.0), frozen("nsmaface-star", 0.0));
    assert!((a.loss - b.loss).abs() < 1e-10 * b.loss, "{} vs {}", a.loss, b.loss);
    assert!(rel_error(&a.grad_x, &b.grad_x) < 1e-8 && rel_error(&a.grad_w, &b.grad_w) < 1e-8);
    let low = frozen("nsm-cosface-star", -1.0);
    for r in &low.rows {
        assert!((r.z_y - 64.0 * r.c_y).abs() < 1e-9, "{r:?}");
    }
    assert!((frozen("nsmaface-star", -1.0).loss - low.loss).abs() > 1e-3);
    // The weight: I* = |7/5|·(1 - 2·(σ(0.6 - p) - ½)) of each row's own p.
    for r in &low.rows {
        let sg = 1.0 / (1.0 + (-(0.6 - r.log_p.exp())).exp());
        assert!((r.weight - 1.4 * (1.0 - 2.0 * (sg - 0.5))).abs() < 1e-12, "{r:?}");
    }
    let pair = case_with_target_cos(&[-0.5, 0.95], 10.0, 4, 3, 13);
    let mut h = head("nsm-cosface-star", &HeadParams::default());
    let out = run(&pair.x, &pair.w, &pair.labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
    assert!(out.rows[0].weight < out.rows[1].weight, "{:?}", out.rows);
    // sm-cosface has c_α = 1: the same α gives a weight 7/5 times smaller.
    let p = HeadParams { alpha: Some(-2.0), ..Default::default() };
    let mut plain = head("sm-cosface", &p);
    let po = run(&pair.x, &pair.w, &pair.labels, 3, plain.as_mut(), &RunOptions::default()).unwrap();
    for (a, b) in out.rows.iter().zip(&po.rows) {
        assert!((a.weight - 1.4 * b.weight).abs() < 1e-12, "{} vs {}", a.weight, b.weight);
    }
    assert!(from_name("nsm-cosface-star", &HeadParams { alpha: Some(-7.0), ..Default::default() }).is_err());
    assert!(!head("nsm-cosface-star", &HeadParams { alpha: Some(-6.9), ..Default::default() })
        .warnings()
        .is_empty());
}

/// The appendix-G baselines on AdaFace's margin: with m = 0 they are the plain-logit heads (the clamp
/// ε aside, which no random cosine reaches); with the margin each row's weight is HM's or F's of the
/// row's own margin probability, and the target logit is AdaFace's.
#[test]
fn mining_baselines_with_the_adaface_margin() {
    let case = random_case(73, 8, 9, 6, 1.0, 60.0);
    for (name, plain, s) in [("hm-adaface", "hm-softmax", 4.0), ("focal-adaface", "focal", 8.0)] {
        let no_margin = HeadParams { s: Some(s), m: Some(0.0), ..Default::default() };
        let a =
            run(&case.x, &case.w, &case.labels, 6, head(name, &no_margin).as_mut(), &RunOptions::default())
                .unwrap();
        let p = HeadParams { s: Some(s), ..Default::default() };
        let b =
            run(&case.x, &case.w, &case.labels, 6, head(plain, &p).as_mut(), &RunOptions::default()).unwrap();
        assert!((a.loss - b.loss).abs() < 1e-12 * b.loss.abs().max(1.0), "{name}: {} vs {}", a.loss, b.loss);
        assert!(rel_error(&a.grad_x, &b.grad_x) < 1e-10 && rel_error(&a.grad_w, &b.grad_w) < 1e-10, "{name}");
        // With the margin: AdaFace's target logit, and the weight of the margin logits' p.
        let mut h = head(name, &p);
        let mut ada = head("adaface", &p);
        let out = run(&case.x, &case.w, &case.labels, 6, h.as_mut(), &RunOptions::default()).unwrap();
        let ao = run(&case.x, &case.w, &case.labels, 6, ada.as_mut(), &RunOptions::default()).unwrap();
        assert_eq!(h.state(), ada.state(), "{name}: the same running statistics");
        for (r, q) in out.rows.iter().zip(&ao.rows) {
            assert_eq!((r.z_y, r.ce), (q.z_y, q.ce), "{name}");
            let pr = r.log_p.exp();
            let want = if name == "hm-adaface" { f64::from(u8::from(pr < 0.5)) } else { (1.0 - pr).powi(2) };
            assert!((r.weight - want).abs() < 1e-12, "{name}: weight {} at p {pr}", r.weight);
        }
        assert!(out.rows.iter().any(|r| r.quality != 0.0), "{name}: the margin is adaptive");
        // SMAFace's flags are not theirs.
        let e =
            from_name(name, &HeadParams { alpha: Some(1.0), ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("--alpha"), "{e}");
    }
    let g = head("focal-adaface", &HeadParams { gamma: Some(0.0), ..Default::default() });
    assert_eq!(g.weight(0.3f64.ln()), SampleWeight::ONE);
    assert!(from_name("hm-adaface", &HeadParams { gamma: Some(2.0), ..Default::default() }).is_err());
}

#[test]
fn sphereface_and_combined_are_non_monotone_past_pi_over_m1() {
    let p = HeadParams { m1: Some(1.5), ..Default::default() };
    let h = head("sphereface", &p);
    let z = |theta: f64| {
        let plan = h.row(&RowInput { c_y: theta.cos(), norm: 1.0, quality: 0.0 });
        maps::target_logit(&plan.target, 1.0, theta.cos()).0
    };
    let pi = std::f64::consts::PI;
    // cos(1.5θ) falls until θ = π/1.5, then rises.
    assert!(z(pi / 1.5 + 0.2) > z(pi / 1.5));
    assert!(z(pi / 1.5 - 0.2) > z(pi / 1.5));
}

#[test]
fn state_round_trips_and_bad_state_is_rejected() {
    let mut h = head("adaface", &HeadParams::default());
    let case = random_case(3, 4, 5, 3, 1.0, 40.0);
    run(&case.x, &case.w, &case.labels, 3, h.as_mut(), &RunOptions::default()).unwrap();
    let st = h.state();
    let mut g = head("adaface", &HeadParams::default());
    g.load_state(&HeadState::from_tensors(&st.to_tensors()).unwrap()).unwrap();
    assert_eq!(g.state(), st);
    assert!(g.load_state(&HeadState::new(&[("t", 1.0)])).is_err());
    assert!(head("arcface", &HeadParams::default()).load_state(&st).is_err());
    let mut q = head("qcface", &HeadParams::default());
    q.load_state(&HeadState::new(&[("phase", 0.0)])).unwrap();
    assert!(!q.needs().p_d);
    assert!(q.load_state(&HeadState::new(&[("phase", 0.5)])).is_err());
}

#[test]
fn declared_needs_follow_the_spec_table() {
    let n = |name: &str| head(name, &HeadParams::default()).needs();
    assert_eq!(n("arcface"), Needs::default());
    assert!(n("curricularface").modulates_non_target && n("curricularface").running_state);
    assert!(n("mv-arc").modulates_non_target && !n("mv-arc").running_state);
    let mag = n("magface");
    assert!(mag.norm_with_grad && mag.extra_term && !mag.running_state);
    let ada = n("adaface");
    assert!(ada.norm_detached && ada.running_state && !ada.p_y_before_weighting);
    assert!(n("qamface").modulates_non_target);
    let sma = n("smaface-star");
    assert!(sma.norm_detached && sma.p_y_before_weighting && sma.running_state);
    assert!(n("focal").p_y_before_weighting && n("hm-softmax").p_y_before_weighting);
    let qc = n("qcface");
    assert!(qc.p_d && qc.extra_term && qc.norm_with_grad && qc.running_state);
    assert!(!qc.modulates_non_target);
    for name in ["qcface-cur", "qcface-mvs"] {
        let q = n(name);
        assert!(
            q.p_d && q.extra_term && q.norm_with_grad && q.running_state && q.modulates_non_target,
            "{name}"
        );
    }
    for name in ["nsm-cosface-star", "hm-adaface", "focal-adaface"] {
        assert_eq!(n(name), sma, "{name}");
    }
}

#[test]
fn half_precision_gemm_inputs_keep_the_loss_but_half_logits_break_qamface() {
    use half::f16;
    // Unit rows rounded to f16 (what a half GEMM reads); margins, LSE and gradients stay in f32.
    let case = random_case(61, 16, 200, 128, 5.0, 50.0);
    let unit_half = |m: &[f64], dim: usize| -> Vec<f32> {
        m.chunks(dim)
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                r.iter().map(move |v| f16::from_f64(v / n).to_f32()).collect::<Vec<_>>()
            })
            .collect()
    };
    for name in ["arcface", "cosface", "qamface", "curricularface"] {
        let exact = run(
            &case.x,
            &case.w,
            &case.labels,
            128,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        let (xh, wh) = (unit_half(&case.x, 128), unit_half(&case.w, 128));
        let half = run(
            &xh,
            &wh,
            &case.labels,
            128,
            head(name, &HeadParams::default()).as_mut(),
            &RunOptions::default(),
        )
        .unwrap();
        let err = (half.loss - exact.loss).abs() / exact.loss.abs();
        assert!(err < 1e-3, "{name}: loss {} vs {} ({err:e})", half.loss, exact.loss);
    }
    // QAMFace logits near 237 rounded to f16 (ulp 0.125): the CE moves by far more than 1e-3.
    let s = 6.0f64;
    let cos = [0.999f64, 0.95, 0.3, -0.2, 0.9];
    let logits: Vec<f64> = cos
        .iter()
        .enumerate()
        .map(|(j, &c)| {
            if j == 0 {
                maps::target_logit(&TargetMap::Quadratic { m: 0.5 }, s, c).0
            } else {
                maps::non_target_logit(&NonTarget::Quadratic, s, c, 0.0).0
            }
        })
        .collect();
    let ce = |z: &[f64]| {
        let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() - z[0]
    };
    let rounded: Vec<f64> = logits.iter().map(|&z| f16::from_f64(z).to_f64()).collect();
    let (a, b) = (ce(&logits), ce(&rounded));
    assert!((a - b).abs() / a > 1e-3, "f16 logits: CE {b} vs {a}");
}

/// A NaN or infinite embedding must give a non-finite loss for every head (the cosine clamps and the CE
/// cap would otherwise hide it), so the trainer never steps on it.
#[test]
fn a_non_finite_embedding_gives_a_non_finite_loss_for_every_head() {
    for bad in [f64::NAN, f64::INFINITY] {
        for name in names() {
            let mut case = random_case(3, 4, 6, 8, 5.0, 30.0);
            case.x[9] = bad;
            let mut h = head(name, &HeadParams::default());
            h.set_training(true);
            let r =
                run(&case.x, &case.w, &case.labels, case.dim, h.as_mut(), &RunOptions::default()).unwrap();
            assert!(!r.loss.is_finite(), "{name} with {bad} in an embedding: loss {}", r.loss);
            // A fresh head: the broken batch may have moved running state (the trainer undoes that).
            let clean = random_case(3, 4, 6, 8, 5.0, 30.0);
            let mut h = head(name, &HeadParams::default());
            h.set_training(true);
            let r = run(&clean.x, &clean.w, &clean.labels, clean.dim, h.as_mut(), &RunOptions::default())
                .unwrap();
            assert!(r.loss.is_finite(), "{name}: clean loss {}", r.loss);
        }
    }
}

#[test]
fn the_classifier_norm_does_not_overflow_and_keeps_ordinary_rows_bit_identical() {
    assert!((classifier::robust_norm(&[3e20f32, 4e20]) / 5e20 - 1.0).abs() < 1e-6);
    let plain = [0.3f32, -1.7, 2.5];
    let direct = plain.iter().map(|&v| v * v).sum::<f32>().sqrt();
    assert_eq!(classifier::robust_norm(&plain).to_bits(), direct.to_bits());
    assert!(classifier::robust_norm(&[f32::INFINITY, 1.0]).is_infinite());
    assert!(classifier::robust_norm(&[f32::NAN, 1e30]).is_nan());
}

/// `n` items over `world` ranks, the first ranks one more when it does not divide: (start, len) each.
fn split(n: usize, world: usize) -> Vec<(usize, usize)> {
    let mut at = 0;
    (0..world)
        .map(|r| {
            let len = n / world + usize::from(r < n % world);
            at += len;
            (at - len, len)
        })
        .collect()
}

#[test]
fn every_head_sharded_over_ranks_equals_one_rank_step_after_step() {
    use crate::dist::{Communicator, InProcess};
    use std::time::Duration;
    let (b, c, dim, steps) = (13usize, 11usize, 6usize, 3u64);
    let cases: Vec<Case> = (0..steps).map(|k| random_case(90 + k, b, c, dim, 5.0, 50.0)).collect();
    for name in registry::names() {
        let mut reference = head(name, &HeadParams::default());
        reference.set_training(true);
        let want: Vec<Output<f64>> = cases
            .iter()
            .map(|k| run(&k.x, &k.w, &k.labels, dim, reference.as_mut(), &RunOptions::default()).unwrap())
            .collect();
        for world in [1usize, 2, 4] {
            let (rows, classes) = (split(b, world), split(c, world));
            let group = InProcess::group(world, Duration::from_secs(30)).unwrap();
            let got: Vec<Vec<Output<f64>>> = std::thread::scope(|sc| {
                let handles: Vec<_> = group
                    .into_iter()
                    .map(|comm| {
                        let (cases, rows, classes) = (&cases, &rows, &classes);
                        sc.spawn(move || {
                            let mut h = head(name, &HeadParams::default());
                            h.set_training(true);
                            let ((r0, nr), (c0, nc)) = (rows[comm.rank()], classes[comm.rank()]);
                            cases
                                .iter()
                                .map(|k| {
                                    let x = &k.x[r0 * dim..(r0 + nr) * dim];
                                    let w = &k.w[c0 * dim..(c0 + nc) * dim];
                                    let y = &k.labels[r0..r0 + nr];
                                    run_rank(
                                        &comm,
                                        x,
                                        y,
                                        w,
                                        c0,
                                        dim,
                                        h.as_mut(),
                                        &RunOptions::default(),
                                        None,
                                        None,
                                    )
                                })
                                .collect::<Result<Vec<_>>>()
                                .unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (step, want) in want.iter().enumerate() {
                let tag = format!("{name}, {world} ranks, step {step}");
                for out in &got {
                    let l = out[step].loss;
                    assert!(
                        (l - want.loss).abs() <= 1e-12 * want.loss.abs().max(1.0),
                        "{tag}: {l} vs {}",
                        want.loss
                    );
                }
                let gx: Vec<f64> = got.iter().flat_map(|o| o[step].grad_x.clone()).collect();
                let gw: Vec<f64> = got.iter().flat_map(|o| o[step].grad_w.clone()).collect();
                assert!(
                    rel_error(&gx, &want.grad_x) < 1e-12,
                    "{tag}: dL/dx {}",
                    rel_error(&gx, &want.grad_x)
                );
                assert!(
                    rel_error(&gw, &want.grad_w) < 1e-12,
                    "{tag}: dL/dW {}",
                    rel_error(&gw, &want.grad_w)
                );
                let ce: Vec<f64> = got.iter().flat_map(|o| o[step].rows.iter().map(|r| r.ce)).collect();
                let want_ce: Vec<f64> = want.rows.iter().map(|r| r.ce).collect();
                assert!(rel_error(&ce, &want_ce) < 1e-12, "{tag}: per-row CE");
            }
        }
    }
}

#[test]
fn a_sample_whose_class_no_rank_holds_is_an_error_on_every_rank() {
    use crate::dist::{Communicator, InProcess};
    use std::time::Duration;
    let case = random_case(5, 4, 6, 3, 1.0, 2.0);
    let group = InProcess::group(2, Duration::from_secs(30)).unwrap();
    let errors: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|comm| {
                let case = &case;
                sc.spawn(move || {
                    // Rank 0 holds classes 0..2, rank 1 classes 2..4: classes 4 and 5 are nowhere.
                    let (c0, w) = (2 * comm.rank(), &case.w[2 * comm.rank() * 3..(2 * comm.rank() + 2) * 3]);
                    let labels = [0i64, 5, 1, 3];
                    let mut h = head("arcface", &HeadParams::default());
                    let r = comm.rank();
                    let x = &case.x[r * 2 * 3..(r + 1) * 2 * 3];
                    let y = &labels[r * 2..(r + 1) * 2];
                    run_rank(&comm, x, y, w, c0, 3, h.as_mut(), &RunOptions::default(), None, None)
                        .unwrap_err()
                        .to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errors {
        assert!(e.contains("sample 1 has label -1 on every shard"), "{e}");
    }
}

#[test]
fn partial_fc_keeps_every_positive_and_draws_the_rest_at_random() {
    // Shard of classes 10..30; labels 12, 12, 29 are its positives, 3 and 40 are other shards'.
    let labels = [12i64, 3, 29, 12, 40];
    let rows = partial_fc_rows(&labels, 10, 20, 0.5, &mut Rng::new(1));
    assert_eq!(rows.len(), 10);
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "{rows:?}");
    assert!(rows.contains(&2) && rows.contains(&19), "{rows:?}");
    assert_eq!(
        rows,
        partial_fc_rows(&labels, 10, 20, 0.5, &mut Rng::new(1)),
        "the same draw from the same seed"
    );
    assert_ne!(rows, partial_fc_rows(&labels, 10, 20, 0.5, &mut Rng::new(2)), "another seed, another draw");
    assert_eq!(partial_fc_rows(&labels, 10, 20, 1.0, &mut Rng::new(1)), (0..20).collect::<Vec<_>>());
    // Fewer draws than positives: the positives alone.
    assert_eq!(partial_fc_rows(&labels, 10, 20, 0.05, &mut Rng::new(1)), vec![2, 19]);
    // A larger shard: the rows with the top scores, as a full sort of the same draw ranks them.
    let (first, count, rate) = (1000usize, 5000usize, 0.3);
    let labels: Vec<i64> = (0..512).map(|i| (first + (i * 37) % count) as i64).collect();
    let rows = partial_fc_rows(&labels, first, count, rate, &mut Rng::new(5));
    let mut rng = Rng::new(5);
    let mut score: Vec<(f64, usize)> = (0..count).map(|i| (rng.uniform(), i)).collect();
    for &y in &labels {
        score[y as usize - first].0 = 2.0;
    }
    score.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut want: Vec<usize> = score[..(rate * count as f64) as usize].iter().map(|&(_, i)| i).collect();
    want.sort_unstable();
    assert_eq!(rows, want);
}

#[test]
fn a_partial_fc_step_over_ranks_equals_the_head_on_the_chosen_classes() {
    use crate::dist::{Communicator, InProcess};
    use std::time::Duration;
    let (b, c, dim) = (8usize, 14usize, 5usize);
    let case = random_case(77, b, c, dim, 5.0, 50.0);
    let (rows, classes) = (split(b, 2), split(c, 2));
    let pick_of = |rank: usize, all: &[i64]| {
        let (c0, nc) = classes[rank];
        partial_fc_rows(all, c0, nc, 0.5, &mut Rng::derive(&[9, rank as u64]))
    };
    for name in ["arcface", "adaface", "curricularface"] {
        // The reference: one head on the union of the chosen classes, labels renumbered into it.
        let chosen: Vec<usize> = (0..2)
            .flat_map(|r| {
                let c0 = classes[r].0;
                pick_of(r, &case.labels).into_iter().map(move |i| c0 + i)
            })
            .collect();
        assert!(chosen.len() < c, "some classes must be left out for the test to mean anything");
        let w: Vec<f64> = chosen.iter().flat_map(|&k| case.w[k * dim..(k + 1) * dim].to_vec()).collect();
        let y: Vec<i64> =
            case.labels.iter().map(|&l| chosen.iter().position(|&k| k as i64 == l).unwrap() as i64).collect();
        let mut reference = head(name, &HeadParams::default());
        reference.set_training(true);
        let want = run(&case.x, &w, &y, dim, reference.as_mut(), &RunOptions::default()).unwrap();
        let group = InProcess::group(2, Duration::from_secs(30)).unwrap();
        let got: Vec<Output<f64>> = std::thread::scope(|sc| {
            let hs: Vec<_> = group
                .into_iter()
                .map(|comm| {
                    let (case, rows, classes, pick_of) = (&case, &rows, &classes, &pick_of);
                    sc.spawn(move || {
                        let r = comm.rank();
                        let ((r0, nr), (c0, nc)) = (rows[r], classes[r]);
                        let mut h = head(name, &HeadParams::default());
                        h.set_training(true);
                        let pick = |all: &[i64]| pick_of(r, all);
                        let x = &case.x[r0 * dim..(r0 + nr) * dim];
                        let wr = &case.w[c0 * dim..(c0 + nc) * dim];
                        let opts = RunOptions::default();
                        let l = &case.labels[r0..r0 + nr];
                        run_rank(&comm, x, l, wr, c0, dim, h.as_mut(), &opts, Some(&pick), None).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in &got {
            assert!(
                (o.loss - want.loss).abs() <= 1e-12 * want.loss.abs(),
                "{name}: {} vs {}",
                o.loss,
                want.loss
            );
        }
        let gx: Vec<f64> = got.iter().flat_map(|o| o.grad_x.clone()).collect();
        assert!(rel_error(&gx, &want.grad_x) < 1e-12, "{name}: dL/dx");
        // dL/dW: the chosen rows are the reference's, the others zero.
        let gw: Vec<f64> = got.iter().flat_map(|o| o.grad_w.clone()).collect();
        assert_eq!(gw.len(), c * dim);
        let mut expect = vec![0.0; c * dim];
        for (i, &k) in chosen.iter().enumerate() {
            expect[k * dim..(k + 1) * dim].copy_from_slice(&want.grad_w[i * dim..(i + 1) * dim]);
        }
        assert!(rel_error(&gw, &expect) < 1e-12, "{name}: dL/dW");
        assert!((0..c)
            .filter(|k| !chosen.contains(k))
            .all(|k| gw[k * dim..(k + 1) * dim].iter().all(|&v| v == 0.0)));
    }
}

/// `f` on each of `world` ranks, threads joined by an `InProcess` group: the ranks' results in order.
fn on_ranks<R: Send>(world: usize, f: impl Fn(&dyn crate::dist::Communicator) -> R + Sync) -> Vec<R> {
    let group = crate::dist::InProcess::group(world, std::time::Duration::from_secs(120)).unwrap();
    std::thread::scope(|sc| {
        let f = &f;
        let hs: Vec<_> = group.into_iter().map(|comm| sc.spawn(move || f(&comm))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// One step's result as plain values: the loss, dL/dx and dL/dW.
type Step = (f64, Vec<f64>, Vec<f64>);

/// The sharded head over two ranks on CUDA (each thread opening device 0 for itself, as a rank's process
/// would) against the CPU's sharded path over two ranks (f64) and the whole head on one CUDA rank, step
/// after step so that running state moves alike, for every head: the fixed-parameter heads go through
/// the per-row plans when sharded, the others merge their plans' values over the ranks. With Partial FC
/// (a pick on each rank), against the CPU's sharded path with the same pick.
#[test]
#[ignore = "needs a CUDA GPU (or tests/cuda_emu); run with --ignored"]
fn gpu_the_sharded_head_on_cuda_equals_the_cpu_sharded_path_and_one_rank() {
    use crate::backend::MarginHeadCall;
    use crate::tensor::{DType, Device, Tensor};
    let (b, c, dim, steps, world) = (12usize, 10usize, 16usize, 2u64, 2usize);
    // f32 values, so that the CPU's f64 run sees the inputs the GPU sees.
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let cases: Vec<Case> = (0..steps)
        .map(|k| {
            let mut k = random_case(300 + k, b, c, dim, 5.0, 50.0);
            k.x = f32s(&k.x).iter().map(|&v| v as f64).collect();
            k.w = f32s(&k.w).iter().map(|&v| v as f64).collect();
            k
        })
        .collect();
    let (rows, classes) = (split(b, world), split(c, world));
    let pick_of = |rank: usize, step: usize, all: &[i64]| {
        let (c0, nc) = classes[rank];
        partial_fc_rows(all, c0, nc, 0.6, &mut Rng::derive(&[11, step as u64, rank as u64]))
    };
    let fresh = |name: &str| {
        let mut h = head(name, &HeadParams::default());
        h.set_training(true);
        h
    };
    // Every step of one rank, sharded, on the CPU (f64) or on CUDA (f32).
    let rank_steps = |comm: &dyn crate::dist::Communicator,
                      name: &str,
                      cuda: bool,
                      sampled: bool,
                      ac: Option<DType>,
                      state: Option<RunningState>| {
        let r = comm.rank();
        let ((r0, nr), (c0, nc)) = (rows[r], classes[r]);
        let dev = cuda.then(|| Device::parse("cuda").expect("this test needs a GPU"));
        let mut h = fresh(name);
        let mut out: Vec<Step> = Vec::new();
        for (step, k) in cases.iter().enumerate() {
            let (x, w, y) =
                (&k.x[r0 * dim..(r0 + nr) * dim], &k.w[c0 * dim..(c0 + nc) * dim], &k.labels[r0..r0 + nr]);
            let pick = |all: &[i64]| pick_of(r, step, all);
            let pick: Option<Pick<'_>> = sampled.then_some(&pick);
            out.push(match &dev {
                None => {
                    let o = run_rank(comm, x, y, w, c0, dim, h.as_mut(), &RunOptions::default(), pick, state)
                        .unwrap();
                    (o.loss, o.grad_x, o.grad_w)
                }
                Some(dev) => {
                    let up = |v: &[f64], n: usize| {
                        Tensor::from_vec(f32s(v), [n, dim]).unwrap().to_device(dev).unwrap()
                    };
                    let (xt, wt) = (up(x, nr), up(w, nc));
                    let (loss, g) = sharded::run_rank_cuda(
                        RankGroup { comm, gpus: None, running_state: state },
                        &xt,
                        y,
                        &wt,
                        c0,
                        h.as_mut(),
                        true,
                        ac,
                        pick,
                    )
                    .unwrap();
                    let (gx, gw) = g.expect("gradients were asked for");
                    (loss.to_f64_vec().unwrap()[0], gx.to_f64_vec().unwrap(), gw.to_f64_vec().unwrap())
                }
            });
        }
        out
    };
    // The ranks' steps as the job's: one loss (every rank's must agree), dL/dx and dL/dW in rank order.
    let job = |ranks: Vec<Vec<Step>>, tag: &str| -> Vec<Step> {
        (0..steps as usize)
            .map(|s| {
                let loss = ranks[0][s].0;
                for r in &ranks {
                    assert_eq!(r[s].0.to_bits(), loss.to_bits(), "{tag}, step {s}: the ranks' losses differ");
                }
                let cat = |f: fn(&Step) -> &Vec<f64>| ranks.iter().flat_map(|r| f(&r[s]).clone()).collect();
                (loss, cat(|o| &o.1), cat(|o| &o.2))
            })
            .collect()
    };
    let close = |got: &[Step], want: &[Step], tag: &str| {
        for (s, (g, w)) in got.iter().zip(want).enumerate() {
            let tag = format!("{tag}, step {s}");
            assert!((g.0 - w.0).abs() <= 1e-5 * w.0.abs().max(1.0), "{tag}: loss {} vs {}", g.0, w.0);
            assert_eq!((g.1.len(), g.2.len()), (w.1.len(), w.2.len()), "{tag}: gradient sizes");
            let (ex, ew) = (rel_error(&g.1, &w.1), rel_error(&g.2, &w.2));
            assert!(ex < 1e-4 && ew < 1e-4, "{tag}: dL/dx off by {ex:e}, dL/dW by {ew:e}");
        }
    };
    // The whole head on one CUDA rank, on the job's batch.
    let one_rank = |name: &str, ac: Option<DType>, block: usize| -> Vec<Step> {
        let dev = Device::parse("cuda").unwrap();
        let mut h = fresh(name);
        cases
            .iter()
            .map(|k| {
                let x = Tensor::from_vec(f32s(&k.x), [b, dim]).unwrap().to_device(&dev).unwrap();
                let w = Tensor::from_vec(f32s(&k.w), [c, dim]).unwrap().to_device(&dev).unwrap();
                let out = crate::backend::for_device(&dev)
                    .margin_head(MarginHeadCall {
                        x: &x,
                        w: &w,
                        labels: &k.labels,
                        head: h.as_mut(),
                        grad: true,
                        autocast: ac,
                        max_block_elems: block,
                    })
                    .unwrap();
                let (gx, gw) = out.grads.unwrap();
                (out.loss.to_f64_vec().unwrap()[0], gx.to_f64_vec().unwrap(), gw.to_f64_vec().unwrap())
            })
            .collect()
    };
    for name in names() {
        let cpu = job(on_ranks(world, |comm| rank_steps(comm, name, false, false, None, None)), name);
        let gpu = job(on_ranks(world, |comm| rank_steps(comm, name, true, false, None, None)), name);
        close(&gpu, &cpu, &format!("{name}: CUDA sharded vs CPU sharded"));
        close(
            &gpu,
            &one_rank(name, None, MarginHeadCall::DEFAULT_BLOCK_ELEMS),
            &format!("{name}: CUDA sharded vs one CUDA rank"),
        );
    }
    // Under autocast the sharded ranks' cosine GEMMs run in bf16 as the whole head's. Each rank's part
    // of dL/dx leaves its GEMM in bf16 before the ranks' parts are summed, as each class block's does
    // in the whole head: against the whole head in blocks of the ranks' classes (c / 2 per block).
    for name in ["cosface", "curricularface"] {
        let gpu =
            job(on_ranks(world, |comm| rank_steps(comm, name, true, false, Some(DType::BF16), None)), name);
        let one = one_rank(name, Some(DType::BF16), b * c / world);
        close(&gpu, &one, &format!("{name} in bf16: CUDA sharded vs one CUDA rank"));
        let exact = one_rank(name, None, MarginHeadCall::DEFAULT_BLOCK_ELEMS);
        let e = rel_error(&one[0].1, &exact[0].1);
        assert!(e > 1e-4, "{name}: the bf16 GEMMs must show in dL/dx for the check to mean anything ({e:e})");
    }
    // The running state moved as under data parallelism (rank 0's rows, or each rank's and the mean)
    // alike on both devices, and not as from the job's whole batch.
    for name in ["adaface", "curricularface"] {
        let whole_batch = job(on_ranks(world, |comm| rank_steps(comm, name, false, false, None, None)), name);
        for state in [RunningState::Broadcast, RunningState::Reduce] {
            let steps = |cuda| {
                job(on_ranks(world, |comm| rank_steps(comm, name, cuda, false, None, Some(state))), name)
            };
            let (cpu, gpu) = (steps(false), steps(true));
            close(&gpu, &cpu, &format!("{name}, running state {state:?}: CUDA sharded vs CPU sharded"));
            // (Under Reduce CurricularFace's mean of the ranks' moves is the whole batch's, to rounding.)
            if state == RunningState::Broadcast {
                assert_ne!(cpu[1].0, whole_batch[1].0, "{name}: the state moved from the whole batch");
            }
        }
    }
    for name in ["arcface", "adaface", "curricularface"] {
        let cpu = job(on_ranks(world, |comm| rank_steps(comm, name, false, true, None, None)), name);
        let gpu = job(on_ranks(world, |comm| rank_steps(comm, name, true, true, None, None)), name);
        close(&gpu, &cpu, &format!("{name} with Partial FC: CUDA sharded vs CPU sharded"));
        // Some classes were left out: their rows' gradient is exactly zero.
        assert!(
            gpu.iter().all(|s| s.2.chunks(dim).any(|r| r.iter().all(|&v| v == 0.0))),
            "{name}: no row left out"
        );
    }
}

/// A device the sharded head has no classifier for (the shapes-only meta device) is a clear error, and
/// so are embeddings and weight on two devices.
#[test]
fn the_sharded_head_refuses_a_device_it_does_not_run_on() {
    use crate::dist::Single;
    use crate::tape::Tape;
    use crate::tensor::{Device, Tensor};
    let meta = Device::meta();
    let t = |n: usize| Tensor::from_vec(vec![0.5f32; n * 4], [n, 4]).unwrap();
    let mut h = head("arcface", &HeadParams::default());
    let mut tape = Tape::new();
    let (x, w) = (tape.leaf(t(2).to_device(&meta).unwrap()), tape.leaf(t(3).to_device(&meta).unwrap()));
    let e =
        sharded_loss(&mut tape, x, w, &[0, 1], 0, group(&Single), h.as_mut(), None).unwrap_err().to_string();
    assert!(e.contains("does not run on meta"), "{e}");
    let w = tape.leaf(t(3));
    let e =
        sharded_loss(&mut tape, x, w, &[0, 1], 0, group(&Single), h.as_mut(), None).unwrap_err().to_string();
    assert!(e.contains("embeddings on meta but weight on cpu"), "{e}");
}
