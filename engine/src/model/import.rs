//! A backbone from a model file of any kind we read: PyTorch `.pth`/`.pt` (zip or legacy) and
//! Lightning `.ckpt` (`io::torch`), safetensors in PyTorch layout (what `export` writes, or a
//! converted file), and ONNX (`model::onnx_import`). The file decides the network: blocks per stage,
//! widths, embedding and input size, the project's variant (`layouts`) and input convention; metadata
//! the file carries (our exports) takes precedence over the layout's defaults.

use super::config::IResNetConfig;
use super::convention::InputConvention;
use super::export::{from_pytorch_layout, mismatches, to_pytorch_layout};
use super::init::init_params;
use super::layouts::{infer_config, map_state_dict, Layout, Mapped};
use super::params::ParamStore;
use crate::io::{safetensors, torch};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What the caller knows better than the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The input size, where `fc`'s inputs leave it open (non-square maps).
    pub input_hw: Option<(usize, usize)>,
    /// Overrides the convention the layout or the file's metadata gives.
    pub convention: Option<InputConvention>,
}

/// An imported backbone.
pub struct Imported {
    pub config: IResNetConfig,
    pub params: ParamStore,
    /// e.g. "AdaFace net.py layout, prefix 'model.' (under 'state_dict')".
    pub source: String,
    /// Things the user should know: skipped tensors, widened dtypes, folded batch norms.
    pub notes: Vec<String>,
}

/// The kinds of file we tell apart by their first bytes.
enum Container {
    Torch,
    SafeTensors,
    Onnx,
}

fn container(path: &Path, head: &[u8]) -> Container {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(&[0x80, 0x02, 0x8a]) {
        return Container::Torch;
    }
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if head.len() > 8 && head[8] == b'{' {
        return Container::SafeTensors;
    }
    let onnx_name = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    // An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08.
    if onnx_name || head.first() == Some(&0x08) {
        return Container::Onnx;
    }
    Container::Torch
}

/// Reads `path` and builds the backbone it holds.
pub fn import_model(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let origin = path.display().to_string();
    let mut head = [0u8; 16];
    let n = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).map_err(|e| Error::Io(format!("{origin}: cannot read: {e}")))?;
        f.read(&mut head).map_err(|e| Error::Io(format!("{origin}: cannot read: {e}")))?
    };
    let mut imported = match container(path, &head[..n]) {
        Container::Onnx => super::onnx_import::import_onnx(path)?,
        Container::Torch => {
            let sd = torch::read_state_dict(path)?;
            let at =
                if sd.found_at.is_empty() { String::new() } else { format!(" (under '{}')", sd.found_at) };
            from_state_dict(sd.tensors, &BTreeMap::new(), opts, &origin, &at)?
        }
        Container::SafeTensors => {
            let st = safetensors::read(path)?;
            if st.metadata.get("format").is_some_and(|f| f.starts_with("facetrain-checkpoint")) {
                return Err(Error::Io(format!(
                    "{origin}: a training checkpoint, not a model file: use it with --checkpoint (or `export \
                     --checkpoint`)"
                )));
            }
            from_state_dict(st.tensors, &st.metadata, opts, &origin, "")?
        }
    };
    if let Some(c) = &opts.convention {
        imported.config.input = c.clone();
    }
    Ok(imported)
}

/// A state dict in PyTorch layout (any known naming) as an engine backbone. `metadata` (safetensors
/// exports) rebuilds the variant and convention; `at` says where the dict was found.
pub fn from_state_dict(
    tensors: Vec<(String, Tensor)>,
    metadata: &BTreeMap<String, String>,
    opts: &ImportOptions,
    origin: &str,
    at: &str,
) -> Result<Imported> {
    let mapped = map_state_dict(tensors, origin)?;
    // The input size: given, else recorded by our export, else read from fc's inputs.
    let recorded = metadata
        .get("input")
        .and_then(|v| v.split_once('x'))
        .and_then(|(h, w)| h.parse().ok().zip(w.parse().ok()));
    let mut config = infer_config(&mapped, opts.input_hw.or(recorded), origin)?;
    // Our own exports say what they are; other files get the layout's defaults.
    config = config.with_metadata(metadata, origin)?;
    if let Some(hw) = opts.input_hw {
        config.input_hw = hw;
    }
    let mut notes = Vec::new();
    if !mapped.ignored.is_empty() {
        notes.push(format!(
            "{} tensors outside the backbone not read: {}",
            mapped.ignored.len(),
            list(&mapped.ignored)
        ));
    }
    let params = build_store(&config, &mapped, origin, &mut notes)?;
    let prefix =
        if mapped.prefix.is_empty() { String::new() } else { format!(", prefix '{}'", mapped.prefix) };
    Ok(Imported { config, params, source: format!("{} layout{prefix}{at}", mapped.layout.describe()), notes })
}

fn list(names: &[String]) -> String {
    let mut s = names.iter().take(6).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 6 {
        s.push_str(&format!(", ... ({} more)", names.len() - 6));
    }
    s
}

/// An initialized store of `cfg` with every value replaced by the file's; every missing, unexpected or
/// misshapen tensor is listed under the file's own name. Floating tensors of another precision are
/// widened (or narrowed) to f32 and said so; `num_batches_tracked` may be absent (torch before 0.4.1).
pub(super) fn build_store(
    cfg: &IResNetConfig,
    mapped: &Mapped,
    origin: &str,
    notes: &mut Vec<String>,
) -> Result<ParamStore> {
    let mut store = init_params(cfg, &mut Rng::new(0), DType::F32)?;
    let optional = |n: &str| {
        n.ends_with(".num_batches_tracked")
            || (mapped.layout == Layout::AdaFace && (n == "features.weight" || n == "features.bias"))
    };
    let mut converted = BTreeMap::new();
    let mut found: Vec<(String, Tensor)> = Vec::new();
    for (ours, _, t) in &mapped.tensors {
        let want = store.get(ours).map(|e| e.dtype()).unwrap_or(t.dtype());
        let t = if t.dtype() != want && t.dtype().is_float() && want.is_float() {
            *converted.entry(t.dtype().to_string()).or_insert(0usize) += 1;
            t.to_dtype(want)?
        } else {
            t.clone()
        };
        found.push((ours.clone(), t));
    }
    let file_name = |ours: &str| {
        mapped
            .tensors
            .iter()
            .find(|(o, _, _)| o == ours)
            .map(|(_, f, _)| f.as_str())
            .unwrap_or(ours)
            .to_string()
    };
    let problems: Vec<String> = mismatches(&store, found.iter().map(|(n, t)| (n.as_str(), t)), |n, t| {
        to_pytorch_layout(cfg, n, t).map(|p| p.dims().to_vec()).unwrap_or_else(|_| t.dims().to_vec())
    })
    .into_iter()
    .filter(|p| !(p.starts_with("missing '") && optional(p.split('\'').nth(1).unwrap_or(""))))
    .map(|p| {
        // Name the file's tensor where it differs from ours.
        let ours = p.split('\'').nth(1).unwrap_or("").to_string();
        let theirs = file_name(&ours);
        if theirs != ours && !p.starts_with("missing") {
            p.replacen(&format!("'{ours}'"), &format!("'{theirs}' (our '{ours}')"), 1)
        } else {
            p
        }
    })
    .collect();
    if !problems.is_empty() {
        return Err(Error::Io(format!(
            "{origin}: {} layout does not fit IResNet layers {:?} widths {:?} input {}x{}: {}",
            mapped.layout.describe(),
            cfg.layers,
            cfg.widths,
            cfg.input_hw.0,
            cfg.input_hw.1,
            problems.into_iter().take(12).collect::<Vec<_>>().join("; ")
        )));
    }
    for (name, t) in &found {
        store.set(name, from_pytorch_layout(cfg, name, t)?)?;
    }
    for (from, n) in converted {
        notes.push(format!("{n} tensors stored as {from} converted to f32"));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::export::to_pytorch_tensors;
    use crate::model::{FeaturesNorm, Shortcut};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("import-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_export_rebuilds_its_variant_and_convention() {
        let cfg = IResNetConfig {
            layers: [1, 2, 1, 1],
            widths: [8, 16, 16, 32],
            input_hw: (32, 48),
            embedding_size: 24,
            bn_eps: 2e-5,
            shortcut: Shortcut::SubsampleWhenSameWidth,
            features: FeaturesNorm::Affine,
            input: InputConvention::magface(),
            ..IResNetConfig::small()
        };
        let store = init_params(&cfg, &mut Rng::new(3), DType::F32).unwrap();
        let st = to_pytorch_tensors(&cfg, &store).unwrap();
        let d = tmp("rt");
        let p = d.join("m.safetensors");
        safetensors::write(&p, &st).unwrap();
        let im = import_model(&p, &ImportOptions::default()).unwrap();
        assert_eq!(im.config, cfg);
        for e in store.entries() {
            assert_eq!(im.params.get(&e.name).unwrap().to_f64_vec().unwrap(), e.value.to_f64_vec().unwrap());
        }
        // Half-precision weights are widened, and said so.
        let mut half = to_pytorch_tensors(&cfg, &store).unwrap();
        for (_, t) in half.tensors.iter_mut().filter(|(_, t)| t.dtype() == DType::F32) {
            *t = t.to_dtype(DType::F16).unwrap();
        }
        safetensors::write(&p, &half).unwrap();
        let im = import_model(&p, &ImportOptions::default()).unwrap();
        assert!(im.notes.iter().any(|n| n.contains("as f16 converted to f32")), "{:?}", im.notes);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_misshapen_tensor_is_named_as_the_file_names_it() {
        let cfg = IResNetConfig { input_hw: (32, 32), ..IResNetConfig::small() };
        let store = init_params(&cfg, &mut Rng::new(3), DType::F32).unwrap();
        let mut st = to_pytorch_tensors(&cfg, &store).unwrap();
        st.metadata.clear();
        for (n, t) in st.tensors.iter_mut() {
            if n == "layer2.0.conv1.weight" {
                *t = Tensor::from_vec(vec![0f32; 32 * 16 * 3], [32, 16, 3, 1]).unwrap();
            }
            *n = format!("module.{n}");
        }
        let e = from_state_dict(st.tensors, &BTreeMap::new(), &ImportOptions::default(), "w.pth", "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("w.pth") && e.contains("'module.layer2.0.conv1.weight' (our 'layer2.0.conv1.weight'): shape [32, 16, 3, 1], expected [32, 16, 3, 3]"), "{e}");
    }
}
