//! End to end: `engine-train head` reads a batch, writes the loss and gradients the library computes,
//! moves the running state with --steps, and rejects bad input with a sentence naming the problem.

use engine::heads::{self, HeadParams, RunOptions};
use engine::io::safetensors::{self, SafeTensors};
use engine::rng::Rng;
use engine::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("engine-train-head-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_input(path: &Path, x: Tensor, w: Tensor, labels: Tensor) {
    let mut st = SafeTensors::default();
    st.push("embeddings", x);
    st.push("weight", w);
    st.push("labels", labels);
    safetensors::write(path, &st).unwrap();
}

fn batch(b: usize, c: usize, d: usize) -> (Vec<f32>, Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(11);
    let x = (0..b * d).map(|_| (rng.normal() * 8.0) as f32).collect();
    let w = (0..c * d).map(|_| rng.normal() as f32).collect();
    let y = (0..b).map(|_| rng.below(c as u64) as i64).collect();
    (x, w, y)
}

fn engine_train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A random batch of `b` rows of dimension `d` over `c` classes, written as the command's input in `dir`.
fn input_batch(dir: &Path, b: usize, c: usize, d: usize) -> (PathBuf, Vec<f32>, Vec<f32>, Vec<i64>) {
    let (x, w, y) = batch(b, c, d);
    let input = dir.join("in.safetensors");
    write_input(
        &input,
        Tensor::from_vec(x.clone(), [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [c, d]).unwrap(),
        Tensor::from_vec(y.clone(), [b]).unwrap(),
    );
    (input, x, w, y)
}

/// `steps` library steps of head `name` on the batch: the head after them and the last step's results.
fn library_steps(
    name: &str,
    params: &HeadParams,
    steps: usize,
    (x, w, y, d): (&[f32], &[f32], &[i64], usize),
) -> (Box<dyn heads::Head>, heads::Output<f32>) {
    let mut head = heads::from_name(name, params).unwrap();
    let mut last = None;
    for _ in 0..steps {
        last = Some(heads::run(x, w, y, d, head.as_mut(), &RunOptions::default()).unwrap());
    }
    (head, last.unwrap())
}

/// The command's output holds the library's loss (a scalar) and both gradients, bit for bit.
fn assert_library_results(output: &Path, expect: &heads::Output<f32>, what: &str) -> SafeTensors {
    let out = safetensors::read(output).unwrap();
    let loss = out.require("loss", output).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize], "{what}");
    assert_eq!(loss.as_slice::<f32>().unwrap()[0], expect.loss as f32, "{what}");
    let gx = out.require("grad_embeddings", output).unwrap();
    assert_eq!(gx.as_slice::<f32>().unwrap(), &expect.grad_x[..], "{what}");
    let gw = out.require("grad_weight", output).unwrap();
    assert_eq!(gw.as_slice::<f32>().unwrap(), &expect.grad_w[..], "{what}");
    out
}

#[test]
fn head_command_writes_the_library_results() {
    let dir = tmp_dir("ok");
    let (b, c, d) = (5, 7, 6);
    let (input, x, w, y) = input_batch(&dir, b, c, d);
    let output = dir.join("out.safetensors");
    let (ok, err) = engine_train(&[
        "head",
        "--head",
        "adaface",
        "--m",
        "0.3",
        "--steps",
        "3",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let params = HeadParams { m: Some(0.3), ..Default::default() };
    let (head, expect) = library_steps("adaface", &params, 3, (&x, &w, &y, d));
    let out = assert_library_results(&output, &expect, "adaface");
    let mu = out.require("state.mu", &output).unwrap().scalar_value().unwrap();
    assert_eq!(mu, head.state().get("mu").unwrap());
    assert!(mu != 20.0, "three steps move the running mean");
    std::fs::remove_dir_all(dir).ok();
}

/// The heads of issue 18's missing variants through the command: loss, gradients and every running
/// state value (QCFace-Cur's t beside its phase) as the library gives them, flags passed on.
#[test]
fn head_command_runs_the_mining_and_qcface_variants() {
    let dir = tmp_dir("variants");
    let (b, c, d) = (6, 9, 5);
    let (input, x, w, y) = input_batch(&dir, b, c, d);
    let cases: [(&str, &[&str], HeadParams); 5] = [
        ("nsm-cosface-star", &["--alpha", "-3"], HeadParams { alpha: Some(-3.0), ..Default::default() }),
        ("hm-adaface", &["--s", "8"], HeadParams { s: Some(8.0), ..Default::default() }),
        ("focal-adaface", &["--gamma", "1"], HeadParams { gamma: Some(1.0), ..Default::default() }),
        ("qcface-cur", &["--k", "5"], HeadParams { k: Some(5.0), ..Default::default() }),
        ("qcface-mvs", &["--t", "0.1"], HeadParams { t: Some(0.1), ..Default::default() }),
    ];
    for (name, flags, params) in cases {
        let output = dir.join(format!("{name}.safetensors"));
        let mut args = vec!["head", "--head", name, "--steps", "2"];
        args.extend_from_slice(flags);
        args.extend(["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
        let (ok, err) = engine_train(&args);
        assert!(ok, "{name}: {err}");
        let (head, expect) = library_steps(name, &params, 2, (&x, &w, &y, d));
        let out = assert_library_results(&output, &expect, name);
        let state = head.state();
        assert!(!state.values.is_empty(), "{name} has running state");
        for (n, v) in &state.values {
            let got = out.require(&format!("state.{n}"), &output).unwrap().scalar_value().unwrap();
            assert_eq!(got, *v, "{name}: state {n}");
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn head_command_errors_are_sentences() {
    let dir = tmp_dir("err");
    let (b, c, d) = (3, 4, 2);
    let (x, w, y) = batch(b, c, d);
    let out = dir.join("out.safetensors");
    let run = |input: &Path, head: &str| {
        engine_train(&[
            "head",
            "--head",
            head,
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let good = dir.join("good.safetensors");
    write_input(
        &good,
        Tensor::from_vec(x.clone(), [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [c, d]).unwrap(),
        Tensor::from_vec(y.clone(), [b]).unwrap(),
    );
    let (ok, err) = run(&good, "arcfacee");
    assert!(!ok && err.contains("unknown head 'arcfacee'") && err.contains("arcface"), "{err}");

    let wrong_dim = dir.join("dim.safetensors");
    write_input(
        &wrong_dim,
        Tensor::from_vec(x.clone(), [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [d, c]).unwrap(),
        Tensor::from_vec(y.clone(), [b]).unwrap(),
    );
    let (ok, err) = run(&wrong_dim, "arcface");
    assert!(!ok && err.contains("dim.safetensors") && err.contains("weight must be [C, 2]"), "{err}");

    let wrong_dtype = dir.join("dtype.safetensors");
    let yf: Vec<f32> = y.iter().map(|&v| v as f32).collect();
    write_input(
        &wrong_dtype,
        Tensor::from_vec(x.clone(), [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [c, d]).unwrap(),
        Tensor::from_vec(yf, [b]).unwrap(),
    );
    let (ok, err) = run(&wrong_dtype, "arcface");
    assert!(!ok && err.contains("labels must be I64, got F32"), "{err}");

    let mut xn = x.clone();
    xn[3] = f32::NAN;
    let nan = dir.join("nan.safetensors");
    write_input(
        &nan,
        Tensor::from_vec(xn, [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [c, d]).unwrap(),
        Tensor::from_vec(y.clone(), [b]).unwrap(),
    );
    let (ok, err) = run(&nan, "arcface");
    assert!(!ok && err.contains("embeddings[1, 1] is not finite"), "{err}");

    let bad_label = dir.join("label.safetensors");
    write_input(
        &bad_label,
        Tensor::from_vec(x, [b, d]).unwrap(),
        Tensor::from_vec(w, [c, d]).unwrap(),
        Tensor::from_vec(vec![0i64, 4, 1], [b]).unwrap(),
    );
    let (ok, err) = run(&bad_label, "arcface");
    assert!(!ok && err.contains("labels[1] = 4 is outside 0..4"), "{err}");
    assert!(!out.exists(), "no output is written on error");
    std::fs::remove_dir_all(dir).ok();
}

/// Finite embeddings of norm ~1e20 square to infinity in f32: the loss was NaN and the gradients zero
/// (exit 0). The norm is now measured without overflow: the loss equals that of the same directions at
/// norm ~8, and the gradient scales down with the norm (the loss depends on x only through x/|x|).
#[test]
fn huge_finite_embeddings_give_the_loss_of_their_directions() {
    let dir = tmp_dir("huge");
    let (b, c, d) = (4, 5, 8);
    let (x, w, y) = batch(b, c, d);
    let k = 1e19f32;
    let huge: Vec<f32> = x.iter().map(|v| v * k).collect();
    let run = |x: Vec<f32>, tag: &str| {
        let input = dir.join(format!("{tag}.safetensors"));
        write_input(
            &input,
            Tensor::from_vec(x, [b, d]).unwrap(),
            Tensor::from_vec(w.clone(), [c, d]).unwrap(),
            Tensor::from_vec(y.clone(), [b]).unwrap(),
        );
        let output = dir.join(format!("{tag}-out.safetensors"));
        let (ok, err) = engine_train(&[
            "head",
            "--head",
            "arcface",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let out = safetensors::read(&output).unwrap();
        let loss = out.require("loss", &output).unwrap().scalar_value().unwrap();
        let g = out.require("grad_embeddings", &output).unwrap().to_f64_vec().unwrap();
        (loss, g)
    };
    let (loss, g) = run(x.clone(), "plain");
    let (big_loss, big_g) = run(huge, "huge");
    assert!(big_loss.is_finite() && (big_loss - loss).abs() <= 1e-4 * loss, "{big_loss} vs {loss}");
    let num: f64 = g.iter().zip(&big_g).map(|(a, b)| (a - b * k as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = g.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(den > 0.0 && num <= 1e-4 * den, "gradient at norm 1e20 is not the scaled one: {num} / {den}");
    std::fs::remove_dir_all(&dir).unwrap();
}
