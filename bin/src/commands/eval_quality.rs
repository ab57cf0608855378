//! `eval --fit-qmagface SET`: QMagFace's alpha and beta fitted on a verification set with the model being
//! evaluated (engine::eval::qmagface::fit, QMagFace's procedure), so that `--score qmagface` never runs on
//! another model's constants.

use super::eval_flags::BenchmarkFlags;
use engine::embed::PairEval;
use engine::eval::qmagface::{fit, pair_min, FitOptions, QualityWeight};
use engine::eval::verification::pair_cosines;
use engine::model::{IResNet, ParamStore};
use engine::{Error, Result};
use serde_json::{json, Value};

/// Fits on `--fit-qmagface` when given, reporting `"qmagface_fit"`.
pub fn fit_if_asked(
    f: &BenchmarkFlags,
    model: &IResNet,
    params: &mut ParamStore,
    report: &mut serde_json::Map<String, Value>,
) -> Result<Option<QualityWeight>> {
    let Some(path) = &f.fit_qmagface else { return Ok(None) };
    let set = PairEval::load(path, model.config.input_hw)?;
    let r = set.run(model, params)?;
    let cos = pair_cosines(&r.embeddings, r.dim)?;
    let qmin = pair_min(&r.norms)?;
    let got = fit(&cos, &qmin, &set.same, &FitOptions::default())
        .map_err(|e| Error::Invalid(format!("--fit-qmagface {}: {e}", path.display())))?;
    let w = got.weight;
    println!(
        "[{}] QMagFace fit: alpha {:.6} beta {:.6} ({} FMRs usable of {} pairs)",
        set.name,
        w.alpha,
        w.beta,
        got.points.len(),
        set.same.len()
    );
    report.insert(
        "qmagface_fit".into(),
        json!({"set": set.name, "alpha": w.alpha, "beta": w.beta, "fmrs": got.points.len(), "pairs": set.same.len()}),
    );
    Ok(Some(w))
}

/// The weight for `--score qmagface`: fitted, or both constants given; never a default.
pub fn qmag_weight(
    fitted: Option<QualityWeight>,
    alpha: Option<f64>,
    beta: Option<f64>,
) -> Result<QualityWeight> {
    match (fitted, alpha, beta) {
        (Some(w), None, None) => Ok(w),
        (None, Some(alpha), Some(beta)) => Ok(QualityWeight { alpha, beta }),
        (Some(_), _, _) => Err(Error::Invalid("give either --fit-qmagface or --qmag-alpha/--qmag-beta, not both".into())),
        (None, _, _) => Err(Error::Invalid(
            "--score qmagface: alpha and beta depend on the model; fit them with --fit-qmagface SET or give both \
             --qmag-alpha and --qmag-beta"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmagface_needs_this_models_constants() {
        assert!(qmag_weight(None, None, None).unwrap_err().to_string().contains("--fit-qmagface"));
        assert!(qmag_weight(None, Some(0.1), None).is_err());
        let w = QualityWeight { alpha: 0.2, beta: 0.3 };
        assert_eq!(qmag_weight(Some(w), None, None).unwrap(), w);
        assert!(qmag_weight(Some(w), Some(0.1), Some(0.1)).is_err());
        assert_eq!(qmag_weight(None, Some(0.1), Some(0.4)).unwrap(), QualityWeight { alpha: 0.1, beta: 0.4 });
    }
}
