//! Loading a backbone for evaluation, embedding and export: from a training checkpoint (its metadata
//! names the backbone and input size) or from a model file in PyTorch layout (`--init-weights`).

use engine::model::export::{import_pytorch, mismatches};
use engine::model::{IResNet, IResNetConfig, ParamStore};
use engine::rng::Rng;
use engine::train::checkpoint;
use engine::{DType, Error, Result};
use std::path::{Path, PathBuf};

/// "64x64" -> (64, 64).
pub fn parse_hw(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::Invalid(format!("input size '{s}': expected HxW, e.g. 112x112"));
    let (h, w) = s.split_once('x').ok_or_else(bad)?;
    Ok((h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?))
}

fn model_for(name: &str, input: Option<(usize, usize)>) -> Result<IResNet> {
    let mut cfg = IResNetConfig::by_name(name)?;
    if let Some(hw) = input {
        cfg.input_hw = hw;
    }
    IResNet::new(cfg)
}

/// The backbone and weights of a training checkpoint.
pub fn from_checkpoint(path: &Path) -> Result<(IResNet, ParamStore)> {
    let c = checkpoint::load(path)?;
    // Older engines could save NaN or infinite weights; evaluating them only gives NaN scores.
    if let Some(what) = c.first_nonfinite()? {
        return Err(Error::Io(format!("{}: '{what}' holds NaN or infinite values", path.display())));
    }
    let name = c.extra.get("backbone").ok_or_else(|| {
        Error::Io(format!("{}: checkpoint metadata does not name its backbone", path.display()))
    })?;
    let input = c.extra.get("input").map(|s| parse_hw(s)).transpose()?;
    let model = model_for(name, input)?;
    let mut store = model.init(&mut Rng::new(0), DType::F32)?;
    let found = c.model.iter().map(|(n, t)| (n.as_str(), t));
    let problems = mismatches(&store, found, |_, t| t.dims().to_vec());
    if !problems.is_empty() {
        return Err(Error::Io(format!(
            "{}: weights do not match {name}: {}",
            path.display(),
            problems.join("; ")
        )));
    }
    for (n, t) in &c.model {
        store.set(n, t.clone())?;
    }
    Ok((model, store))
}

/// A model file in PyTorch layout with insightface names (what `export` writes).
pub fn from_pytorch(
    path: &Path,
    backbone: &str,
    input: Option<(usize, usize)>,
) -> Result<(IResNet, ParamStore)> {
    let model = model_for(backbone, input)?;
    let mut store = model.init(&mut Rng::new(0), DType::F32)?;
    import_pytorch(path, &model.config, &mut store)?;
    Ok((model, store))
}

/// Where `eval` and `embed` take the model from.
#[derive(clap::Args)]
pub struct ModelSource {
    /// A training checkpoint (checkpoint.safetensors).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A model file in PyTorch layout with insightface names (what `export` writes), instead of --checkpoint.
    #[arg(long)]
    init_weights: Option<PathBuf>,
    /// Backbone of --init-weights: r18, r34, r50, r100, r200 or small.
    #[arg(long)]
    backbone: Option<String>,
    /// Input size of --init-weights, HxW (default: the backbone's).
    #[arg(long)]
    input: Option<String>,
}

impl ModelSource {
    /// `--checkpoint` or `--init-weights` (with `--backbone`), exactly one of them.
    pub fn load(&self) -> Result<(IResNet, ParamStore)> {
        let input = self.input.as_deref().map(parse_hw).transpose()?;
        match (&self.checkpoint, &self.init_weights) {
            (Some(c), None) => from_checkpoint(c),
            (None, Some(w)) => from_pytorch(w, self.backbone.as_deref().unwrap_or("r50"), input),
            _ => Err(Error::Invalid("give exactly one of --checkpoint and --init-weights".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_parse_or_explain() {
        assert_eq!(parse_hw("112x96").unwrap(), (112, 96));
        assert!(parse_hw("112").unwrap_err().to_string().contains("HxW"));
    }
}
