//! `engine-train eval`: verification on `.bin` sets with insightface's protocol (10-fold accuracy,
//! flip-summed embeddings), plus ROC AUC, TAR at FAR, the best threshold, cosine or the QMagFace
//! quality-aware score; identification (rank-1/5) on a gallery and probe list; quality plots. The papers'
//! benchmarks (IJB-B/C, TinyFace), QMagFace fitting and the summary table live in the `eval_*` modules.

use super::CmdResult;
use crate::backbone_io::ModelSource;
use engine::embed::{embed_pixels, load_normalized, read_list, PairEval};
use engine::eval::identification::identify;
use engine::eval::plots::{erc_plot, magnitude_histogram_plot, roc_plot};
use engine::eval::qmagface::pair_min;
use engine::eval::quality::{error_versus_reject, histogram, reject_fractions};
use engine::eval::svg::write_svg;
use engine::eval::verification::{pair_cosines, verify_scores};
use engine::Error;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The model: --checkpoint, or --init-weights with --backbone.
    #[command(flatten)]
    model: ModelSource,
    #[command(flatten)]
    device: crate::device_choice::DeviceFlag,
    /// Verification sets: insightface `.bin` files or text pair lists (repeat the flag).
    #[arg(long = "bin")]
    bins: Vec<PathBuf>,
    /// cosine, or qmagface (score = cos + min(0, beta*cos - alpha) * min(|x1|, |x2|)).
    #[arg(long, default_value = "cosine")]
    score: String,
    /// QMagFace alpha (default: QMagFace's MagFace IR-100 value; fit your own model's).
    #[arg(long)]
    qmag_alpha: Option<f64>,
    /// QMagFace beta.
    #[arg(long)]
    qmag_beta: Option<f64>,
    /// Identification gallery: a list of `image-path identity` lines.
    #[arg(long)]
    gallery: Option<PathBuf>,
    /// Identification probes, same format.
    #[arg(long)]
    probes: Option<PathBuf>,
    /// Folder for report.json and the SVG plots (ROC, magnitude histogram, error-versus-reject).
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    bench: super::eval_flags::BenchmarkFlags,
}

fn embed_list(
    list: &Path,
    model: &engine::model::IResNet,
    params: &mut engine::model::ParamStore,
) -> Result<(Vec<f64>, Vec<u64>, usize), Error> {
    let items = read_list(list)?;
    let mut px = Vec::new();
    for (p, _) in &items {
        px.extend(load_normalized(p, model.config.input_hw)?);
    }
    let (e, dim) = embed_pixels(model, params, &px)?;
    Ok((e.iter().map(|&v| v as f64).collect(), items.iter().map(|i| i.1).collect(), dim))
}

pub fn run(a: Args) -> CmdResult {
    a.bench.check()?;
    if let Some(out) = &a.output {
        std::fs::create_dir_all(out)
            .map_err(|e| Error::Io(format!("{}: cannot create: {e}", out.display())))?;
    }
    let mut report = serde_json::Map::new();
    if a.bins.is_empty() && a.gallery.is_none() && !a.bench.needs_model() {
        // Only --features runs and/or --summarize: no model.
        if !a.bench.any() && a.bench.summarize.is_empty() {
            return Err(Error::Invalid(
                "nothing to evaluate: give --bin SET, --gallery/--probes, --ijb DIR, --tinyface DIR or --summarize"
                    .into(),
            )
            .into());
        }
        super::eval_protocols::run(&a.bench, None, a.output.as_deref(), &mut report)?;
        return Ok(super::eval_summary::finish(&a.bench, report, a.output.as_deref())?);
    }
    let (model, params) = a.model.load()?;
    let mut params = params.to_device(&a.device.choose("evaluating")?)?;
    let fitted = super::eval_quality::fit_if_asked(&a.bench, &model, &mut params, &mut report)?;
    let weight = match a.score.as_str() {
        "cosine" => None,
        "qmagface" => Some(super::eval_quality::qmag_weight(fitted, a.qmag_alpha, a.qmag_beta)?),
        s => return Err(Error::Invalid(format!("--score {s}: expected cosine or qmagface")).into()),
    };
    for path in &a.bins {
        let set = PairEval::load(path, model.config.input_hw)?;
        let r = set.run(&model, &mut params)?;
        let cos = pair_cosines(&r.embeddings, r.dim)?;
        let qmin = pair_min(&r.norms)?;
        let rep = match &weight {
            None => r.report,
            Some(w) => verify_scores(&w.scores(&cos, &qmin)?, &set.same)?,
        };
        println!("{}", rep.summary(&set.name));
        let tar: serde_json::Map<_, _> =
            rep.tar_at_far.iter().filter_map(|t| t.tar.map(|v| (format!("{:e}", t.far), json!(v)))).collect();
        report.insert(
            set.name.clone(),
            json!({
                "score": a.score, "pairs": rep.n_pairs, "accuracy": rep.accuracy_mean, "accuracy_std": rep.accuracy_std,
                "best_threshold": rep.best_threshold, "best_accuracy": rep.best_accuracy, "auc": rep.auc, "tar_at_far": tar,
                "mean_norm": r.norms.iter().sum::<f64>() / r.norms.len() as f64,
            }),
        );
        if let Some(out) = &a.output {
            let roc = roc_plot(&format!("ROC: {}", set.name), &[(a.score.as_str(), &rep.roc)]);
            write_svg(&out.join(format!("{}-roc.svg", set.name)), &roc.to_svg()?)?;
            let h = histogram(&r.norms, 40)?;
            let hist = magnitude_histogram_plot(&format!("feature magnitude: {}", set.name), &h);
            write_svg(&out.join(format!("{}-magnitude.svg", set.name)), &hist.to_svg()?)?;
            let scores = match &weight {
                None => cos.clone(),
                Some(w) => w.scores(&cos, &qmin)?,
            };
            let fractions = reject_fractions(a.bench.erc_step, a.bench.erc_max_reject);
            let erc = error_versus_reject(&scores, &qmin, &set.same, a.bench.erc_fmr, &fractions)?;
            let plot = erc_plot(&format!("error versus reject: {}", set.name), &[("magnitude", &erc)]);
            write_svg(&out.join(format!("{}-erc.svg", set.name)), &plot.to_svg()?)?;
        }
    }
    if let Some(g) = &a.gallery {
        let p = a.probes.as_ref().ok_or_else(|| Error::Invalid("--gallery needs --probes".into()))?;
        let (ge, gid, dim) = embed_list(g, &model, &mut params)?;
        let (pe, pid, _) = embed_list(p, &model, &mut params)?;
        let r = identify(&ge, &gid, &pe, &pid, dim)?;
        println!(
            "[identification] {} probes, {} identities: rank-1 {:.5} rank-5 {:.5}",
            r.n_probes, r.n_identities, r.rank1, r.rank5
        );
        report.insert(
            "identification".into(),
            json!({"probes": r.n_probes, "rank1": r.rank1, "rank5": r.rank5}),
        );
    }
    super::eval_protocols::run(&a.bench, Some((&model, &mut params)), a.output.as_deref(), &mut report)?;
    Ok(super::eval_summary::finish(&a.bench, report, a.output.as_deref())?)
}
