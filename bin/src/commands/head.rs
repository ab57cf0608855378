//! `engine-train head`: one training step (or `--steps N`) of a margin-softmax head on a batch from a
//! safetensors file, writing the loss and both gradients, so users can compare our heads with their code.
//!
//! Input: `embeddings` [B, D], `weight` [C, D] (both f32, or both f64), `labels` [B] i64 in 0..C.
//! Output: `loss` (scalar), `grad_embeddings` [B, D], `grad_weight` [C, D] in the input's float type,
//! plus the head's running state as `state.<name>` f64 scalars after the last step.
//!
//! With `--plot DIR` it draws the head's figures (`head_plots.rs`); with `--input` too, also histograms of
//! the last step's per-row terms over the batch (`--output` is then optional).

use super::head_flags::HeadFlags;
use super::head_plots::{parse_norm_range, write_head_plots, write_row_histograms, PlotSpec};
use super::CmdResult;
use engine::heads::probe::Others;
use engine::heads::{self, RunOptions};
use engine::io::safetensors::{self, SafeTensors};
use engine::tensor::Float;
use engine::{DType, Error, Tensor};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Head name: softmax, sphereface, cosface, arcface, combined, curricularface, mv-am, mv-arc, magface,
    /// adaface, qamface, sm-cosface, nsm-cosface-star, smaface, smaface-star, nsmaface-star, hm-softmax,
    /// focal, hm-adaface, focal-adaface, qcface, qcface-cur, qcface-mvs.
    #[arg(long)]
    head: String,
    /// Input safetensors with embeddings [B, D], weight [C, D] and labels [B] (i64).
    #[arg(long, required_unless_present = "plot")]
    input: Option<PathBuf>,
    /// Output safetensors (written to a temporary name, then renamed).
    #[arg(long, required_unless_present = "plot", requires = "input")]
    output: Option<PathBuf>,
    /// Steps on the same batch; the head's running state moves each step, the inputs do not.
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Draw the head's figures into this folder (no batch needed): target logit and its slope against
    /// θ, heat maps over (cos θ_y, norm) of p_y, the gradient scaling term and the head's own terms
    /// (I, st, p_d, dL/d‖x‖), with their data as CSV; with --input also histograms of the last step's
    /// per-row terms over the batch (rows_*.svg, rows.csv, rows_histograms.csv).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Another head, with its default hyper-parameters, drawn beside --head in the curves (repeatable).
    #[arg(long, requires = "plot")]
    compare: Vec<String>,
    /// Classes in the figures' softmax: the target and classes - 1 others.
    #[arg(long, default_value_t = 1000, requires = "plot")]
    classes: usize,
    /// Cosine of every other class to the sample in the figures.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true, requires = "plot")]
    other_cos: f64,
    /// The figures' norms LO,HI: the maps' norm axis; norm-dependent curves at LO, the middle and HI;
    /// AdaFace-style running statistics set to span it (μ its middle, σ a sixth of its width).
    #[arg(long, default_value = "10,110", requires = "plot")]
    norm_range: String,
    #[command(flatten)]
    flags: HeadFlags,
}

/// The three inputs, checked: shapes, dtypes and label range, each error naming the file.
fn load(path: &Path) -> Result<(Tensor, Tensor, Vec<i64>), Error> {
    let file = path.display();
    let st = safetensors::read(path)?;
    let x = st.require("embeddings", path)?.clone();
    let w = st.require("weight", path)?.clone();
    let y = st.require("labels", path)?.clone();
    if x.dims().len() != 2 || x.dims()[0] == 0 || x.dims()[1] == 0 {
        return Err(Error::Shape(format!(
            "{file}: embeddings must be [B, D] with B, D > 0, got {}",
            x.shape()
        )));
    }
    let (b, d) = (x.dims()[0], x.dims()[1]);
    if w.dims().len() != 2 || w.dims()[1] != d || w.dims()[0] == 0 {
        return Err(Error::Shape(format!(
            "{file}: weight must be [C, {d}] to match embeddings [{b}, {d}], got {}",
            w.shape()
        )));
    }
    if y.dims() != [b] {
        return Err(Error::Shape(format!(
            "{file}: labels must be [{b}] to match embeddings, got {}",
            y.shape()
        )));
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) || w.dtype() != x.dtype() {
        return Err(Error::DType(format!(
            "{file}: embeddings and weight must both be F32 (or both F64), got {} and {}",
            x.dtype().safetensors_name(),
            w.dtype().safetensors_name()
        )));
    }
    if y.dtype() != DType::I64 {
        return Err(Error::DType(format!(
            "{file}: labels must be I64, got {}",
            y.dtype().safetensors_name()
        )));
    }
    for (name, t) in [("embeddings", &x), ("weight", &w)] {
        if let Some(k) = t.to_f64_vec()?.iter().position(|v| !v.is_finite()) {
            let cols = t.dims()[1];
            return Err(Error::Invalid(format!("{file}: {name}[{}, {}] is not finite", k / cols, k % cols)));
        }
    }
    let labels = y.to_vec::<i64>()?;
    let c = w.dims()[0];
    if let Some((i, v)) = labels.iter().enumerate().find(|(_, &v)| v < 0 || v as usize >= c) {
        return Err(Error::Invalid(format!(
            "{file}: labels[{i}] = {v} is outside 0..{c} (weight has {c} classes)"
        )));
    }
    Ok((x, w, labels))
}

fn steps<T: Float + engine::tensor::Element>(
    x: &Tensor,
    w: &Tensor,
    labels: &[i64],
    head: &mut dyn heads::Head,
    n: usize,
) -> Result<(f64, Tensor, Tensor, Vec<heads::RowReport>), Error> {
    let d = x.dims()[1];
    let mut last = None;
    for _ in 0..n {
        last = Some(heads::run::<T>(x.as_slice()?, w.as_slice()?, labels, d, head, &RunOptions::default())?);
    }
    let o = last.expect("at least one step");
    Ok((
        o.loss,
        Tensor::from_vec(o.grad_x, x.shape().clone())?,
        Tensor::from_vec(o.grad_w, w.shape().clone())?,
        o.rows,
    ))
}

pub fn run(a: Args) -> CmdResult {
    if a.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    let mut head = heads::from_name(&a.head, &a.flags.to_params()?)?;
    for w in head.warnings() {
        eprintln!("engine-train: warning: {w}");
    }
    let Some(input) = a.input.as_deref() else {
        return plot(&a, a.plot.as_deref().expect("clap: --plot without --input"));
    };
    let (x, w, labels) = load(input)?;
    let (loss, gx, gw, rows) = match x.dtype() {
        DType::F32 => steps::<f32>(&x, &w, &labels, head.as_mut(), a.steps)?,
        _ => steps::<f64>(&x, &w, &labels, head.as_mut(), a.steps)?,
    };
    let mut out = SafeTensors::default();
    out.push("loss", Tensor::scalar(loss).to_dtype(x.dtype())?);
    out.push("grad_embeddings", gx);
    out.push("grad_weight", gw);
    for (n, t) in head.state().to_tensors() {
        out.push(format!("state.{n}"), t);
    }
    out.metadata.insert("head".into(), a.head.clone());
    out.metadata.insert("steps".into(), a.steps.to_string());
    if let Some(dir) = &a.plot {
        plot(&a, dir)?;
        for path in write_row_histograms(dir, &rows, head.needs())? {
            println!("{}", path.display());
        }
    }
    let Some(output) = a.output.as_deref() else { return Ok(()) };
    safetensors::write(output, &out)?;
    println!(
        "{}: loss {loss:.6} (B {}, C {}, D {}, {} step{}) -> {}",
        a.head,
        x.dims()[0],
        w.dims()[0],
        x.dims()[1],
        a.steps,
        if a.steps == 1 { "" } else { "s" },
        output.display()
    );
    Ok(())
}

fn plot(a: &Args, dir: &Path) -> CmdResult {
    if a.classes == 0 {
        return Err("--classes must be at least 1".into());
    }
    if !(-1.0..=1.0).contains(&a.other_cos) {
        return Err(format!("--other-cos {} must lie in [-1, 1]", a.other_cos).into());
    }
    let spec = PlotSpec {
        dir: dir.to_path_buf(),
        compare: a.compare.clone(),
        others: Others { classes: a.classes, cos: a.other_cos },
        norm_range: parse_norm_range(&a.norm_range)?,
    };
    for path in write_head_plots(&a.head, &a.flags.to_params()?, &spec)? {
        println!("{}", path.display());
    }
    Ok(())
}
