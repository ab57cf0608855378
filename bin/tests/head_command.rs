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

#[test]
fn head_command_writes_the_library_results() {
    let dir = tmp_dir("ok");
    let (b, c, d) = (5, 7, 6);
    let (x, w, y) = batch(b, c, d);
    let input = dir.join("in.safetensors");
    write_input(
        &input,
        Tensor::from_vec(x.clone(), [b, d]).unwrap(),
        Tensor::from_vec(w.clone(), [c, d]).unwrap(),
        Tensor::from_vec(y.clone(), [b]).unwrap(),
    );
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
    let out = safetensors::read(&output).unwrap();
    let mut head = heads::from_name("adaface", &HeadParams { m: Some(0.3), ..Default::default() }).unwrap();
    let mut expect = None;
    for _ in 0..3 {
        expect = Some(heads::run(&x, &w, &y, d, head.as_mut(), &RunOptions::default()).unwrap());
    }
    let expect = expect.unwrap();
    let loss = out.require("loss", &output).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize]);
    assert_eq!(loss.as_slice::<f32>().unwrap()[0], expect.loss as f32);
    assert_eq!(
        out.require("grad_embeddings", &output).unwrap().as_slice::<f32>().unwrap(),
        &expect.grad_x[..]
    );
    assert_eq!(out.require("grad_weight", &output).unwrap().as_slice::<f32>().unwrap(), &expect.grad_w[..]);
    let mu = out.require("state.mu", &output).unwrap().scalar_value().unwrap();
    assert_eq!(mu, head.state().get("mu").unwrap());
    assert!(mu != 20.0, "three steps move the running mean");
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
