//! Loading a backbone for evaluation, embedding and export: from a training checkpoint (its metadata
//! names the backbone, its structure and input convention) or from any model file `engine::model::import`
//! reads (PyTorch `.pth`/`.pt`, Lightning `.ckpt`, safetensors exports, ONNX), where the file itself
//! says what network it holds.

use engine::model::convention::{ChannelOrder, InputConvention};
use engine::model::export::mismatches;
use engine::model::import::{import_model, ImportOptions, Imported};
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

/// The backbone and weights of a training checkpoint.
pub fn from_checkpoint(path: &Path) -> Result<(IResNet, ParamStore)> {
    let c = checkpoint::load(path)?;
    let origin = path.display().to_string();
    // Older engines could save NaN or infinite weights; evaluating them only gives NaN scores.
    if let Some(what) = c.first_nonfinite()? {
        return Err(Error::Io(format!("{origin}: '{what}' holds NaN or infinite values")));
    }
    let name = c
        .extra
        .get("backbone")
        .ok_or_else(|| Error::Io(format!("{origin}: checkpoint metadata does not name its backbone")))?;
    // A named depth, refined by the recorded structure and convention (checkpoints of imported
    // models record their layers and widths; older checkpoints record none and read as insightface's).
    let base = match IResNetConfig::by_name(name) {
        Ok(c) => c,
        // A network of no standard depth (an imported one): its recorded layers and widths say which.
        Err(_) if c.extra.contains_key("layers") => IResNetConfig::r50(),
        Err(e) => return Err(e),
    };
    let model = IResNet::new(base.with_metadata(&c.extra, &origin)?)?;
    let mut store = model.init(&mut Rng::new(0), DType::F32)?;
    let found = c.model.iter().map(|(n, t)| (n.as_str(), t));
    let problems = mismatches(&store, found, |_, t| t.dims().to_vec());
    if !problems.is_empty() {
        return Err(Error::Io(format!("{origin}: weights do not match {name}: {}", problems.join("; "))));
    }
    for (n, t) in &c.model {
        store.set(n, t.clone())?;
    }
    Ok((model, store))
}

/// Whether `path` is a training checkpoint rather than a model file: a safetensors header (read alone,
/// not the weights) whose metadata says so.
pub fn is_checkpoint(path: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(len);
    let mut header = vec![0u8; n.min(1 << 26) as usize];
    if n > 1 << 26 || f.read_exact(&mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header).ok().is_some_and(|h| {
        h["__metadata__"]["format"].as_str().is_some_and(|f| f.starts_with("facetrain-checkpoint"))
    })
}

/// A model file of any kind we read, with what we learnt about it said on stderr.
pub fn from_model_file(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let im = if is_checkpoint(path) {
        let (model, params) = from_checkpoint(path)?;
        let mut config = model.config;
        if let Some(c) = &opts.convention {
            config.input = c.clone();
        }
        Imported { config, params, source: "training checkpoint".into(), notes: Vec::new() }
    } else {
        import_model(path, opts)?
    };
    let c = &im.config;
    eprintln!(
        "{}: {}; IResNet layers {:?} widths {:?}, {}-d embedding, input {}x{} {}",
        path.display(),
        im.source,
        c.layers,
        c.widths,
        c.embedding_size,
        c.input_hw.0,
        c.input_hw.1,
        c.input.describe()
    );
    for n in &im.notes {
        eprintln!("note: {n}");
    }
    Ok(im)
}

/// `--backbone NAME` given with a model file: the file must hold that depth.
pub fn check_backbone(requested: &str, cfg: &IResNetConfig, path: &Path) -> Result<()> {
    let want = IResNetConfig::by_name(requested)?;
    if (want.layers, want.widths) != (cfg.layers, cfg.widths) {
        return Err(Error::Invalid(format!(
            "{} holds IResNet layers {:?} widths {:?}, not {requested} ({:?}, {:?})",
            path.display(),
            cfg.layers,
            cfg.widths,
            want.layers,
            want.widths
        )));
    }
    Ok(())
}

/// `train --init-weights`: the file's network replaces the recipe's backbone (a `--backbone` given must
/// agree), its input size must be the data's, and its weights are returned for the new trainer.
pub fn for_training(
    path: &Path,
    requested: Option<&str>,
    cfg: &mut engine::train::trainer::TrainerConfig,
) -> Result<ParamStore> {
    let data_hw = cfg.backbone.input_hw;
    let mut im = from_model_file(path, &ImportOptions::default())?;
    if im.config.input_hw != data_hw {
        let c = &im.config;
        let fc_in = c.widths[3] * (data_hw.0 / 16) * (data_hw.1 / 16);
        if !data_hw.0.is_multiple_of(16) || !data_hw.1.is_multiple_of(16) || fc_in != c.fc_in() {
            return Err(Error::Invalid(format!(
                "{} holds a network for {}x{} input; the training images are {}x{}",
                path.display(),
                c.input_hw.0,
                c.input_hw.1,
                data_hw.0,
                data_hw.1
            )));
        }
        // Same number of fc inputs on a non-square map: the data says which.
        im = import_model(path, &ImportOptions { input_hw: Some(data_hw), convention: None })?;
    }
    if let Some(b) = requested {
        check_backbone(b, &im.config, path)?;
    }
    let dropout = cfg.backbone.dropout;
    cfg.backbone = IResNetConfig { dropout, ..im.config };
    cfg.backbone_name = cfg.backbone.standard_name().unwrap_or("custom").to_string();
    Ok(im.params)
}

/// The input convention flags shared by every command that imports a model file.
#[derive(clap::Args, Clone, Default)]
pub struct ConventionFlags {
    /// Channel order the model was trained on, rgb or bgr (default: from the file, else its project's:
    /// insightface RGB, AdaFace and MagFace BGR).
    #[arg(long)]
    pub input_channels: Option<String>,
    /// Per-channel mean subtracted from 0..255 pixels, one value or three (default: from the file or
    /// project: 127.5, MagFace 0).
    #[arg(long, value_delimiter = ',')]
    pub input_mean: Option<Vec<f64>>,
    /// Per-channel divisor after the mean, one value or three (default: 127.5, MagFace 255).
    #[arg(long, value_delimiter = ',')]
    pub input_std: Option<Vec<f64>>,
}

impl ConventionFlags {
    /// Import options: the input size and, where any flag is given, the convention (flags over the
    /// insightface default for the ones not given).
    pub fn options(&self, input: Option<(usize, usize)>) -> Result<ImportOptions> {
        let triple = |v: &Option<Vec<f64>>, what: &str, default: f64| -> Result<[f64; 3]> {
            match v.as_deref() {
                None => Ok([default; 3]),
                Some([a]) => Ok([*a; 3]),
                Some([a, b, c]) => Ok([*a, *b, *c]),
                Some(v) => {
                    Err(Error::Invalid(format!("--input-{what}: one or three values, got {}", v.len())))
                }
            }
        };
        let any = self.input_channels.is_some() || self.input_mean.is_some() || self.input_std.is_some();
        let convention = if any {
            let order = match self.input_channels.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("rgb") => ChannelOrder::Rgb,
                Some("bgr") => ChannelOrder::Bgr,
                Some(o) => return Err(Error::Invalid(format!("--input-channels {o}: expected rgb or bgr"))),
            };
            let c = InputConvention {
                order,
                mean: triple(&self.input_mean, "mean", 127.5)?,
                std: triple(&self.input_std, "std", 127.5)?,
            };
            if c.std.contains(&0.0) {
                return Err(Error::Invalid("--input-std: a divisor of 0".into()));
            }
            Some(c)
        } else {
            None
        };
        Ok(ImportOptions { input_hw: input, convention })
    }
}

/// Where `eval` and `embed` take the model from.
#[derive(clap::Args)]
pub struct ModelSource {
    /// A training checkpoint (checkpoint.safetensors).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A model file instead of --checkpoint: PyTorch .pth/.pt (insightface, MagFace), Lightning .ckpt
    /// (AdaFace), ONNX (insightface's model zoo), or what `export` writes. The file says which network
    /// it holds and how it takes its input.
    #[arg(long)]
    init_weights: Option<PathBuf>,
    /// With --init-weights: check that the file holds this depth (r18, r34, r50, r100, r200).
    #[arg(long)]
    backbone: Option<String>,
    /// Input size of --init-weights, HxW, where the file leaves it open (default: from the file, square).
    #[arg(long)]
    input: Option<String>,
    #[command(flatten)]
    convention: ConventionFlags,
}

impl ModelSource {
    /// `--checkpoint` or `--init-weights`, exactly one of them.
    pub fn load(&self) -> Result<(IResNet, ParamStore)> {
        let input = self.input.as_deref().map(parse_hw).transpose()?;
        match (&self.checkpoint, &self.init_weights) {
            (Some(c), None) => from_checkpoint(c),
            (None, Some(w)) => {
                let im = from_model_file(w, &self.convention.options(input)?)?;
                if let Some(b) = &self.backbone {
                    check_backbone(b, &im.config, w)?;
                }
                Ok((IResNet::new(im.config)?, im.params))
            }
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

    #[test]
    fn convention_flags_fill_in_what_is_not_given() {
        let f = ConventionFlags {
            input_channels: Some("BGR".into()),
            input_std: Some(vec![255.0]),
            ..Default::default()
        };
        let c = f.options(None).unwrap().convention.unwrap();
        assert_eq!(c, InputConvention { order: ChannelOrder::Bgr, mean: [127.5; 3], std: [255.0; 3] });
        assert!(ConventionFlags::default().options(None).unwrap().convention.is_none());
        let bad = ConventionFlags { input_mean: Some(vec![1.0, 2.0]), ..Default::default() };
        assert!(bad.options(None).unwrap_err().to_string().contains("one or three"));
    }
}
