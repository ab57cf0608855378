//! `engine-train eval`: verification on `.bin` sets with insightface's protocol (10-fold accuracy,
//! flip-summed embeddings), plus ROC AUC, TAR at FAR, the best threshold, cosine or the QMagFace
//! quality-aware score; identification (rank-1/5) on a gallery and probe list; quality plots.

use super::CmdResult;
use crate::backbone_io::ModelSource;
use engine::embed::{embed_pixels, load_normalized, read_list, PairEval};
use engine::eval::identification::identify;
use engine::eval::plots::{erc_plot, magnitude_histogram_plot, roc_plot};
use engine::eval::qmagface::{pair_min, QualityWeight};
use engine::eval::quality::{error_versus_reject, histogram, reject_fractions};
use engine::eval::svg::write_svg;
use engine::eval::verification::{pair_cosines, verify_scores};
use engine::train::metrics::write_summary;
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
    let (model, params) = a.model.load()?;
    let mut params = params.to_device(&a.device.choose("evaluating")?)?;
    if a.bins.is_empty() && a.gallery.is_none() {
        return Err(
            Error::Invalid("nothing to evaluate: give --bin SET and/or --gallery/--probes".into()).into()
        );
    }
    let weight = match a.score.as_str() {
        "cosine" => None,
        "qmagface" => {
            let d = QualityWeight::MAGFACE_IR100;
            Some(QualityWeight {
                alpha: a.qmag_alpha.unwrap_or(d.alpha),
                beta: a.qmag_beta.unwrap_or(d.beta),
            })
        }
        s => return Err(Error::Invalid(format!("--score {s}: expected cosine or qmagface")).into()),
    };
    if let Some(out) = &a.output {
        std::fs::create_dir_all(out)
            .map_err(|e| Error::Io(format!("{}: cannot create: {e}", out.display())))?;
    }
    let mut report = serde_json::Map::new();
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
            let erc = error_versus_reject(&scores, &qmin, &set.same, 1e-2, &reject_fractions(0.05, 0.5))?;
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
    if let Some(out) = &a.output {
        let fields: Vec<(&str, serde_json::Value)> =
            report.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        write_summary(&out.join("report.json"), &fields)?;
    }
    Ok(())
}
