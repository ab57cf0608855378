//! The state-dict layouts of the three projects whose IResNets we read, mapped onto the engine's names
//! (insightface's `iresnet.py`). Key names are taken from each project's public model code:
//!
//! - insightface `recognition/arcface_torch/backbones/iresnet.py`: `conv1`, `bn1`, `prelu`,
//!   `layer{1..4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}`, `bn2`, `fc`, `features`.
//!   Released as a plain state dict (`torch.save(backbone.state_dict())`); a `module.` prefix when saved
//!   from DataParallel.
//! - AdaFace `net.py` (`Backbone`, IR-18/34/50/100 = "IR-101"): `input_layer.{0: conv, 1: BN, 2: PReLU}`,
//!   `body.{k}.res_layer.{0: BN, 1: conv, 2: BN, 3: PReLU, 4: conv, 5: BN}`,
//!   `body.{k}.shortcut_layer.{0: conv, 1: BN}` (only where a block changes width; otherwise
//!   `MaxPool2d(1, stride)`, no parameters), `output_layer.{0: BN2d, 1: Dropout, 2: Flatten, 3: Linear,
//!   4: BatchNorm1d(affine=False)}`. Released as PyTorch Lightning checkpoints: `state_dict` with a
//!   `model.` prefix, beside the head's `head.kernel` (and AdaFace's `head.t`, `head.batch_mean`,
//!   `head.batch_std`). Batch-norm eps torch's default, 1e-5. Trained on BGR.
//! - MagFace `models/iresnet.py` (insightface's names, eps 2e-5, a trained `features` affine), wrapped by
//!   its training code as `features.module.` (distributed) or `module.features.` (DataParallel), the
//!   classifier `fc.weight` beside it (`inference/network_inf.py` strips exactly these). Trained on BGR
//!   scaled to [0, 1].

use super::config::{FeaturesNorm, IResNetConfig, Shortcut};
use super::convention::InputConvention;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Insightface,
    AdaFace,
    MagFace,
}

impl Layout {
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Insightface => "insightface iresnet",
            Layout::AdaFace => "AdaFace net.py",
            Layout::MagFace => "MagFace iresnet",
        }
    }

    /// Prefixes the backbone's names carry in released files, most specific first, and the name that
    /// identifies the layout under its prefix (the stem convolution).
    fn candidates(self) -> (&'static [&'static str], &'static str) {
        match self {
            Layout::AdaFace => (&["model.", "module.model.", "module.", ""], "input_layer.0.weight"),
            Layout::MagFace => (&["features.module.", "module.features.", "features."], "conv1.weight"),
            Layout::Insightface => {
                (&["", "module.", "backbone.", "model.", "_orig_mod."], "layer1.0.conv1.weight")
            }
        }
    }

    /// The project's architecture details and input convention applied to `cfg`.
    pub fn apply(self, cfg: &mut IResNetConfig) {
        match self {
            Layout::Insightface => {}
            Layout::AdaFace => {
                cfg.shortcut = Shortcut::SubsampleWhenSameWidth;
                cfg.features = FeaturesNorm::NoAffine;
                cfg.input = InputConvention::adaface();
            }
            Layout::MagFace => {
                cfg.bn_eps = 2e-5;
                cfg.features = FeaturesNorm::Affine;
                cfg.input = InputConvention::magface();
            }
        }
    }
}

/// A state dict's tensors under the engine's names (still in PyTorch's layout).
pub struct Mapped {
    pub layout: Layout,
    pub prefix: String,
    /// (our name, the file's name, tensor).
    pub tensors: Vec<(String, String, Tensor)>,
    /// Names outside the backbone's prefix (a classifier, a head's state): not read.
    pub ignored: Vec<String>,
}

/// Finds the layout of `tensors` and renames them; refuses names it cannot place, listing the first.
pub fn map_state_dict(tensors: Vec<(String, Tensor)>, origin: &str) -> Result<Mapped> {
    let has = |n: &str| tensors.iter().any(|(m, _)| m == n);
    let found = [Layout::AdaFace, Layout::MagFace, Layout::Insightface].into_iter().find_map(|layout| {
        let (prefixes, marker) = layout.candidates();
        let p = prefixes.iter().find(|p| has(&format!("{p}{marker}")))?;
        // insightface under a prefix also needs its stem, so a MagFace-like wrapper is not taken for it.
        (layout != Layout::Insightface || has(&format!("{p}conv1.weight"))).then(|| (layout, p.to_string()))
    });
    let Some((layout, prefix)) = found else {
        let first: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).take(8).collect();
        return Err(Error::Io(format!(
            "{origin}: the tensor names match no layout we read (insightface iresnet: 'conv1.weight', \
             'layer1.0.conv1.weight'; AdaFace net.py: 'model.input_layer.0.weight'; MagFace: \
             'features.module.conv1.weight'); first names: {first:?}"
        )));
    };
    let stages = if layout == Layout::AdaFace { adaface_stages(&tensors, &prefix) } else { Vec::new() };
    let mut out = Mapped { layout, prefix: prefix.clone(), tensors: Vec::new(), ignored: Vec::new() };
    let mut unmatched = Vec::new();
    for (name, t) in tensors {
        let Some(rest) = name.strip_prefix(&prefix) else {
            out.ignored.push(name);
            continue;
        };
        let ours = match layout {
            Layout::AdaFace => adaface_name(rest, &stages),
            _ => Some(rest.to_string()),
        };
        match ours {
            Some(o) => out.tensors.push((o, name, t)),
            None => unmatched.push(name),
        }
    }
    if !unmatched.is_empty() {
        return Err(Error::Io(format!(
            "{origin}: {} layout (prefix '{prefix}'): {} names it does not know, first: {:?}",
            layout.describe(),
            unmatched.len(),
            &unmatched[..unmatched.len().min(8)]
        )));
    }
    Ok(out)
}

/// (stage, block within the stage) of each `body.{k}`: a stage starts at k = 0 and wherever a block's
/// width (its `res_layer.4` convolution's output channels) changes. Where two stages share a width (not
/// in AdaFace's released IR-18..101, whose widths double) the weights cannot tell where the strided
/// block is, and net.py's blocks per stage for that many blocks decide.
fn adaface_stages(tensors: &[(String, Tensor)], prefix: &str) -> Vec<(usize, usize)> {
    let mut widths = Vec::new();
    while let Some((_, t)) =
        tensors.iter().find(|(n, _)| *n == format!("{prefix}body.{}.res_layer.4.weight", widths.len()))
    {
        widths.push(t.dims().first().copied().unwrap_or(0));
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (k, w) in widths.iter().enumerate() {
        out.push(match out.last() {
            Some(&(s, b)) if widths[k - 1] == *w => (s, b + 1),
            Some(&(s, _)) => (s + 1, 0),
            None => (0, 0),
        });
    }
    let stages = out.last().map_or(0, |l| l.0 + 1);
    // net.py's get_blocks for 18, 34, 50 and 100 layers.
    let table: Option<[usize; 4]> = match widths.len() {
        8 => Some([2, 2, 2, 2]),
        16 => Some([3, 4, 6, 3]),
        24 => Some([3, 4, 14, 3]),
        49 => Some([3, 13, 30, 3]),
        _ => None,
    };
    if let (true, Some(t)) = (stages < 4, table) {
        return t.iter().enumerate().flat_map(|(s, &n)| (0..n).map(move |b| (s, b))).collect();
    }
    out
}

/// The engine's name of an AdaFace `net.py` parameter (without the `model.` prefix).
fn adaface_name(rest: &str, stages: &[(usize, usize)]) -> Option<String> {
    const BN: &[&str] = &["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];
    let split = |s: &str| s.split_once('.').map(|(a, b)| (a.to_string(), b.to_string()));
    let (module, field) = rest.rsplit_once('.')?;
    let bn_field = BN.contains(&field);
    let ours = match module {
        "input_layer.0" if field == "weight" => "conv1".to_string(),
        "input_layer.1" if bn_field => "bn1".to_string(),
        "input_layer.2" if field == "weight" => "prelu".to_string(),
        "output_layer.0" if bn_field => "bn2".to_string(),
        "output_layer.3" if field == "weight" || field == "bias" => "fc".to_string(),
        // BatchNorm1d(affine=False): statistics only.
        "output_layer.4" if bn_field && field != "weight" && field != "bias" => "features".to_string(),
        _ => {
            let body = module.strip_prefix("body.")?;
            let (k, part) = split(body)?;
            let &(s, b) = stages.get(k.parse::<usize>().ok()?)?;
            let block = format!("layer{}.{b}", s + 1);
            let sub = match (part.as_str(), bn_field, field) {
                ("res_layer.0", true, _) => "bn1",
                ("res_layer.1", _, "weight") => "conv1",
                ("res_layer.2", true, _) => "bn2",
                ("res_layer.3", _, "weight") => "prelu",
                ("res_layer.4", _, "weight") => "conv2",
                ("res_layer.5", true, _) => "bn3",
                ("shortcut_layer.0", _, "weight") => "downsample.0",
                ("shortcut_layer.1", true, _) => "downsample.1",
                _ => return None,
            };
            format!("{block}.{sub}")
        }
    };
    Some(format!("{ours}.{field}"))
}

/// The network the (renamed, PyTorch-layout) tensors describe: blocks per stage, widths, embedding
/// size, and the input size from `fc`'s inputs (square unless `input_hw` is given).
pub fn infer_config(
    mapped: &Mapped,
    input_hw: Option<(usize, usize)>,
    origin: &str,
) -> Result<IResNetConfig> {
    let get = |n: &str| mapped.tensors.iter().find(|(o, _, _)| o == n).map(|(_, _, t)| t.dims().to_vec());
    let need = |n: &str| {
        get(n).ok_or_else(|| {
            Error::Io(format!("{origin}: {} layout: no tensor for '{n}'", mapped.layout.describe()))
        })
    };
    let mut cfg = IResNetConfig::r50();
    let stem = need("conv1.weight")?;
    cfg.in_channels = *stem.get(1).unwrap_or(&0);
    for s in 0..4 {
        cfg.layers[s] =
            (0..).take_while(|b| get(&format!("layer{}.{b}.conv1.weight", s + 1)).is_some()).count();
        cfg.widths[s] = *need(&format!("layer{}.0.conv2.weight", s + 1))?.first().unwrap_or(&0);
    }
    let fc = need("fc.weight")?;
    let [emb, fc_in] = fc[..] else {
        return Err(Error::Io(format!("{origin}: fc.weight has shape {fc:?}, expected [embedding, inputs]")));
    };
    cfg.embedding_size = emb;
    let cells = fc_in / cfg.widths[3].max(1);
    cfg.input_hw = match input_hw {
        Some(hw) => hw,
        None => {
            let side = (cells as f64).sqrt().round() as usize;
            if side * side * cfg.widths[3] != fc_in {
                return Err(Error::Io(format!(
                    "{origin}: fc takes {fc_in} inputs, not {} channels on a square map: give the input size (--input HxW)",
                    cfg.widths[3]
                )));
            }
            (side * 16, side * 16)
        }
    };
    mapped.layout.apply(&mut cfg);
    if stem.first() != Some(&cfg.widths[0]) {
        return Err(Error::Io(format!(
            "{origin}: the stem has {:?} channels but the first stage {}: not an IResNet",
            stem.first(),
            cfg.widths[0]
        )));
    }
    cfg.validate().map_err(|e| Error::Io(format!("{origin}: {e}")))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dims: &[usize]) -> Tensor {
        Tensor::from_vec(vec![0f32; dims.iter().product()], dims).unwrap()
    }

    #[test]
    fn adaface_blocks_fall_into_stages_by_width() {
        // IR-18 body: widths 64 x2, 128 x2, 256 x2, 512 x2.
        let mut ts = Vec::new();
        for (k, w) in [64, 64, 128, 128, 256, 256, 512, 512].iter().enumerate() {
            ts.push((format!("model.body.{k}.res_layer.4.weight"), t(&[*w, *w, 3, 3])));
        }
        let st = adaface_stages(&ts, "model.");
        assert_eq!(st, vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]);
        // Two stages of one width: net.py's IR-18 table places the strided blocks.
        let same: Vec<_> = [4, 4, 8, 8, 8, 8, 16, 16]
            .iter()
            .enumerate()
            .map(|(k, w)| (format!("body.{k}.res_layer.4.weight"), t(&[*w, *w, 3, 3])))
            .collect();
        assert_eq!(adaface_stages(&same, ""), st);
        assert_eq!(adaface_name("body.3.res_layer.3.weight", &st).unwrap(), "layer2.1.prelu.weight");
        assert_eq!(
            adaface_name("body.2.shortcut_layer.1.running_var", &st).unwrap(),
            "layer2.0.downsample.1.running_var"
        );
        assert_eq!(adaface_name("output_layer.4.running_mean", &st).unwrap(), "features.running_mean");
        assert_eq!(adaface_name("output_layer.3.bias", &st).unwrap(), "fc.bias");
        assert_eq!(adaface_name("input_layer.2.weight", &st).unwrap(), "prelu.weight");
        assert!(adaface_name("output_layer.4.weight", &st).is_none());
        assert!(adaface_name("body.9.res_layer.0.weight", &st).is_none());
        assert!(adaface_name("body.0.res_layer.6.weight", &st).is_none());
    }

    #[test]
    fn layouts_are_told_apart_and_strangers_refused() {
        let names = |v: &[&str]| v.iter().map(|n| (n.to_string(), t(&[1]))).collect::<Vec<_>>();
        let m = map_state_dict(
            names(&["features.module.conv1.weight", "features.module.layer1.0.conv1.weight", "fc.weight"]),
            "m.pth",
        )
        .unwrap();
        assert_eq!(
            (m.layout, m.prefix.as_str(), m.ignored.clone()),
            (Layout::MagFace, "features.module.", vec!["fc.weight".to_string()])
        );
        let m =
            map_state_dict(names(&["module.features.conv1.weight", "module.fc.weight"]), "m.pth").unwrap();
        assert_eq!(m.layout, Layout::MagFace);
        let m = map_state_dict(names(&["conv1.weight", "layer1.0.conv1.weight", "features.weight"]), "i.pth")
            .unwrap();
        assert_eq!((m.layout, m.prefix.as_str()), (Layout::Insightface, ""));
        let m = map_state_dict(names(&["model.input_layer.0.weight", "head.kernel"]), "a.ckpt").unwrap();
        assert_eq!((m.layout, m.ignored.clone()), (Layout::AdaFace, vec!["head.kernel".to_string()]));
        let e = map_state_dict(names(&["encoder.stem.weight", "encoder.blocks.0.weight"]), "x.pth")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("x.pth") && e.contains("encoder.stem.weight") && e.contains("no layout"), "{e}");
        let e = map_state_dict(
            names(&["model.input_layer.0.weight", "model.body.0.res_layer.se_block.fc1.weight"]),
            "se.ckpt",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("se.ckpt") && e.contains("model.body.0.res_layer.se_block.fc1.weight"), "{e}");
    }
}
