//! End to end: `engine-train head --plot DIR` draws a head's curves and maps, and the numbers it drew
//! (its CSV files and the SVGs' own polylines and cells) are the head's functions at those points.

use engine::heads::probe::{probe, Others};
use engine::heads::{self, HeadParams, HeadState, RunOptions};
use engine::io::safetensors::{self, SafeTensors};
use engine::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-train-head-plots-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn engine_train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A CSV file as rows of column name -> text.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let names: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines.map(|l| names.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

fn num(row: &HashMap<String, String>, k: &str) -> f64 {
    row[k].parse().unwrap_or_else(|_| panic!("{k} = {:?}", row[k]))
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

#[test]
fn magface_curves_and_maps_are_the_heads_functions() {
    let dir = tmp_dir("magface");
    let d = dir.to_str().unwrap();
    let (ok, err) = engine_train(&[
        "head",
        "--head",
        "magface",
        "--plot",
        d,
        "--compare",
        "arcface",
        "--classes",
        "50",
        "--other-cos",
        "0.1",
    ]);
    assert!(ok, "{err}");
    for f in ["target_logit.svg", "target_gradient.svg", "map_p_y.svg", "map_scaling.svg", "map_d_norm.svg"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    // MagFace keeps no quality weight or p_d, so those maps are not drawn.
    assert!(!dir.join("map_weight.svg").exists() && !dir.join("map_p_d.svg").exists());

    // Curves: MagFace at norms 10, 60, 110 (margins l_m 0.45 to u_m 0.8), ArcFace (m 0.5) once.
    let curves = csv(&dir.join("head_curves.csv"));
    assert_eq!(curves.len(), 4 * 180);
    let at = |head: &str, norm: f64, theta: f64| {
        curves
            .iter()
            .find(|r| r["head"] == head && num(r, "norm") == norm && num(r, "theta_deg") == theta)
            .unwrap_or_else(|| panic!("{head} {norm} {theta}"))
    };
    for (norm, m) in [(10.0, 0.45), (60.0, 0.625), (110.0, 0.8)] {
        let t = 60.5f64.to_radians();
        let r = at("magface", norm, 60.5);
        close(num(r, "z_y") / 64.0, (t + m).cos(), "magface z_y");
        close(num(r, "dz_dtheta") / 64.0, -(t + m).sin(), "magface dz/dθ");
    }
    // Easy margin: beyond 90° MagFace's target logit is s·cos θ.
    close(num(at("magface", 110.0, 120.5), "z_y"), 64.0 * 120.5f64.to_radians().cos(), "easy margin");
    let r = at("arcface", 60.0, 30.5);
    close(num(r, "z_y"), 64.0 * (30.5f64.to_radians() + 0.5).cos(), "arcface z_y");

    // The logit figure draws those numbers: its first polyline is MagFace at norm 10, z_y / s per point.
    let svg = std::fs::read_to_string(dir.join("target_logit.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 5, "3 MagFace norms, ArcFace, the non-target reference");
    for label in ["magface ‖x‖ 10", "magface ‖x‖ 110", "arcface", "non-target, same θ"] {
        assert!(svg.contains(&format!(">{label}</text>")), "legend {label}");
    }
    let first = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
    let ys: Vec<f64> = first.split(' ').map(|p| p.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(ys.len(), 180);
    // Screen y is an affine, decreasing function of z_y / s (to the 0.01 px the SVG is written at).
    let zs: Vec<f64> = (0..180).map(|k| num(at("magface", 10.0, k as f64 + 0.5), "z_y") / 64.0).collect();
    let (lo, hi) = (0, 120);
    let slope = (ys[hi] - ys[lo]) / (zs[hi] - zs[lo]);
    assert!(slope < 0.0);
    for (y, z) in ys.iter().zip(&zs) {
        assert!((y - (ys[lo] + slope * (z - zs[lo]))).abs() < 0.02, "{y} for z_y/s {z}");
    }
    // The easy margin's jump at 90°: z_y / s goes from cos(90° + 0.45) up to about cos 90° = 0.
    assert!(zs[90] - zs[89] > 0.4);

    // Maps: every cell against the probe of the same head at the cell's point.
    let maps = csv(&dir.join("head_maps.csv"));
    assert_eq!(maps.len(), 80 * 50);
    let head = heads::from_name("magface", &HeadParams::default()).unwrap();
    let others = Others { classes: 50, cos: 0.1 };
    for (k, r) in maps.iter().enumerate().step_by(397) {
        let (row, col) = (k / 80, k % 80);
        let (c, a) = (-1.0 + (col as f64 + 0.5) / 40.0, 10.0 + (row as f64 + 0.5) * 2.0);
        close(num(r, "norm"), a, "cell norm");
        let p = probe(head.as_ref(), a, c, others);
        close(num(r, "p_y"), p.p_y(), "p_y");
        close(num(r, "d_cos"), p.d_c, "dL/dcos");
        close(num(r, "d_norm"), p.d_norm, "dL/da");
    }
    // The regularizer pulls small norms up: dL/da < 0 at the bottom of the map whatever the angle.
    assert!(maps[..80].iter().all(|r| num(r, "d_norm") < 0.0));
    let svg = std::fs::read_to_string(dir.join("map_d_norm.svg")).unwrap();
    assert_eq!(svg.matches("crispEdges").count(), 80 * 50, "one cell per grid point");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smaface_maps_show_its_weight_and_adaface_state_spans_the_norms() {
    let dir = tmp_dir("smaface");
    let d = dir.to_str().unwrap();
    let (ok, err) =
        engine_train(&["head", "--head", "smaface", "--alpha", "2", "--plot", d, "--norm-range", "5,65"]);
    assert!(ok, "{err}");
    assert!(dir.join("map_weight.svg").exists() && dir.join("map_st.svg").exists());
    let maps = csv(&dir.join("head_maps.csv"));
    let params = HeadParams { alpha: Some(2.0), ..Default::default() };
    let mut head = heads::from_name("smaface", &params).unwrap();
    head.set_training(false);
    // μ = 35 (the middle of 5..65), σ = 10 (a sixth of its width).
    head.load_state(&HeadState::new(&[("mu", 35.0), ("sigma", 10.0)])).unwrap();
    for r in maps.iter().step_by(311) {
        let p = probe(head.as_ref(), num(r, "norm"), num(r, "cos"), Others { classes: 1000, cos: 0.0 });
        close(num(r, "quality"), p.quality, "ẑ");
        close(num(r, "weight"), p.weight, "I(p)");
        close(num(r, "st"), p.st, "st");
        let w = head.weight(p.log_p);
        close(num(r, "weight"), w.value, "I from the head's weight");
    }
    // ẑ runs from -1 at the bottom row to 1 at the top (h 0.333 over μ ± 3σ).
    let q: Vec<f64> = maps.iter().map(|r| num(r, "quality")).collect();
    assert!(q[0] < -0.95 && q[q.len() - 1] > 0.95, "{} {}", q[0], q[q.len() - 1]);
    // SMAFace weighs hard samples (small p_y) above easy ones.
    let hard = maps.iter().find(|r| num(r, "p_y") < 0.05).unwrap();
    let easy = maps.iter().find(|r| num(r, "p_y") > 0.95).unwrap();
    assert!(num(hard, "weight") > 1.0 && num(easy, "weight") < 1.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plot_flags_are_checked() {
    let dir = tmp_dir("flags");
    let d = dir.to_str().unwrap();
    let (ok, err) = engine_train(&["head", "--head", "arcface", "--plot", d, "--norm-range", "50,10"]);
    assert!(!ok && err.contains("--norm-range"), "{err}");
    let (ok, err) = engine_train(&["head", "--head", "arcface", "--plot", d, "--other-cos", "1.5"]);
    assert!(!ok && err.contains("--other-cos"), "{err}");
    let (ok, err) = engine_train(&["head", "--head", "arcface", "--plot", d, "--compare", "nosuchhead"]);
    assert!(!ok && err.contains("nosuchhead"), "{err}");
    let (ok, _) = engine_train(&["head", "--head", "arcface", "--plot", d, "--input", "x.safetensors"]);
    assert!(!ok, "--plot and --input exclude each other");
    let (ok, err) = engine_train(&["head", "--head", "arcface"]);
    assert!(!ok && err.contains("--input"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_batch_with_plot_writes_its_rows_as_the_classifier_reports_them() {
    let dir = tmp_dir("rows");
    std::fs::create_dir_all(&dir).unwrap();
    let (b, c, d) = (40, 7, 5);
    let x: Vec<f32> = (0..b * d).map(|k| ((k * 37 % 101) as f32 / 10.0) - 5.0).collect();
    let w: Vec<f32> = (0..c * d).map(|k| ((k * 53 % 89) as f32 / 44.0) - 1.0).collect();
    let y: Vec<i64> = (0..b).map(|i| (i % c) as i64).collect();
    let mut st = SafeTensors::default();
    st.push("embeddings", Tensor::from_vec(x.clone(), [b, d]).unwrap());
    st.push("weight", Tensor::from_vec(w.clone(), [c, d]).unwrap());
    st.push("labels", Tensor::from_vec(y.clone(), [b]).unwrap());
    let input = dir.join("in.safetensors");
    safetensors::write(&input, &st).unwrap();
    let plots = dir.join("plots");
    let (ok, err) = engine_train(&[
        "head",
        "--head",
        "smaface",
        "--input",
        input.to_str().unwrap(),
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    for f in
        ["rows_norm.svg", "rows_p_y.svg", "rows_quality.svg", "rows_weight.svg", "rows_st.svg", "map_st.svg"]
    {
        assert!(plots.join(f).exists(), "{f}");
    }
    assert!(!plots.join("rows_p_d.svg").exists(), "smaface has no p_d");
    let mut head = heads::from_name("smaface", &HeadParams::default()).unwrap();
    let o = heads::run::<f32>(&x, &w, &y, d, head.as_mut(), &RunOptions::default()).unwrap();
    let rows = csv(&plots.join("rows.csv"));
    assert_eq!(rows.len(), b);
    for (r, want) in rows.iter().zip(&o.rows) {
        close(num(r, "norm"), want.norm, "norm");
        close(num(r, "p_y"), want.log_p.exp(), "p_y");
        close(num(r, "quality"), want.quality, "quality");
        close(num(r, "weight"), want.weight, "I");
        close(num(r, "st"), want.st, "st");
    }
    let svg = std::fs::read_to_string(plots.join("rows_st.svg")).unwrap();
    assert!(svg.contains("gradient factor st over the batch (40 samples)"));
    // With --input, --output is optional; without --input it is refused.
    let (ok, _) =
        engine_train(&["head", "--head", "arcface", "--plot", plots.to_str().unwrap(), "--output", "o.st"]);
    assert!(!ok);
    std::fs::remove_dir_all(&dir).unwrap();
}
