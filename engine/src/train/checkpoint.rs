//! Checkpoints: one safetensors file holding the model (insightface names, our NHWC/OHWI layout), the
//! optimizer state (`optim.` prefix), the head's state (`head.` prefix), named RNG states (`rng.` prefix,
//! four u64 words stored as I64 bits), and step, epoch and optimizer kind in the metadata. Written to a
//! temporary name then renamed; loading checks every name, shape and dtype and reports all mismatches.
//!
//! Versions (metadata `format`): v1 had no batch size and could record, at an epoch's end, the step
//! after the epoch with the epoch before it (the epoch counter moved after the save); v2 records
//! `batch_size` and `steps_per_epoch`, and its step and epoch always agree. Both are read; `version`
//! says which one a file is, so that resume can repair v1's end-of-epoch case.

use crate::io::safetensors::{self, SafeTensors};
use crate::model::export::mismatches;
use crate::model::ParamStore;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

const FORMAT_PREFIX: &str = "facetrain-checkpoint-v";
/// The version `save` writes.
pub const VERSION: u32 = 2;
const OPTIM: &str = "optim.";
const HEAD: &str = "head.";
const RNG: &str = "rng.";

/// Everything a resumed run needs, as read from a file (nothing applied yet).
pub struct Checkpoint {
    /// The format version of the file (1 or 2).
    pub version: u32,
    pub step: u64,
    pub epoch: u64,
    pub optimizer_kind: String,
    pub model: Vec<(String, Tensor)>,
    pub optimizer: Vec<(String, Tensor)>,
    pub head: Vec<(String, Tensor)>,
    pub rngs: BTreeMap<String, Rng>,
    /// Free-form metadata of the run (config, backbone name); our own keys excluded.
    pub extra: BTreeMap<String, String>,
    origin: String,
}

/// What `save` writes.
pub struct CheckpointRef<'a> {
    pub step: u64,
    pub epoch: u64,
    pub model: &'a ParamStore,
    pub optimizer: &'a dyn Optimizer,
    /// Written instead of `optimizer.state()` when given (a sharded head's state gathered from its ranks).
    pub optimizer_state: Option<&'a [(String, Tensor)]>,
    pub head: &'a [(String, Tensor)],
    pub rngs: &'a [(&'a str, &'a Rng)],
    pub extra: &'a BTreeMap<String, String>,
}

fn rng_tensor(r: &Rng) -> Tensor {
    let words: Vec<i64> = r.state().iter().map(|&w| w as i64).collect();
    Tensor::from_vec(words, [4]).expect("four words")
}

pub fn save(path: &Path, c: &CheckpointRef) -> Result<()> {
    let mut st = SafeTensors::default();
    for e in c.model.entries() {
        st.push(e.name.clone(), e.value.clone());
    }
    let state = match c.optimizer_state {
        Some(s) => s.to_vec(),
        None => c.optimizer.state(),
    };
    for (n, t) in state {
        st.push(format!("{OPTIM}{n}"), t);
    }
    for (n, t) in c.head {
        st.push(format!("{HEAD}{n}"), t.clone());
    }
    for (n, r) in c.rngs {
        st.push(format!("{RNG}{n}"), rng_tensor(r));
    }
    for (k, v) in c.extra {
        st.metadata.insert(k.clone(), v.clone());
    }
    st.metadata.insert("format".into(), format!("{FORMAT_PREFIX}{VERSION}"));
    st.metadata.insert("step".into(), c.step.to_string());
    st.metadata.insert("epoch".into(), c.epoch.to_string());
    st.metadata.insert("optimizer".into(), c.optimizer.kind().into());
    safetensors::write(path, &st)
}

pub fn load(path: &Path) -> Result<Checkpoint> {
    let origin = path.display().to_string();
    let st = safetensors::read(path)?;
    let bad = |m: String| Error::Io(format!("{origin}: not a usable checkpoint: {m}"));
    let format = st.metadata.get("format");
    let version = format
        .and_then(|f| f.strip_prefix(FORMAT_PREFIX))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| (1..=VERSION).contains(v))
        .ok_or_else(|| {
            bad(format!(
                "metadata 'format' is {format:?}, expected '{FORMAT_PREFIX}1' to '{FORMAT_PREFIX}{VERSION}'"
            ))
        })?;
    let number = |k: &str| -> Result<u64> {
        let v = st.metadata.get(k).ok_or_else(|| bad(format!("metadata has no '{k}'")))?;
        v.parse().map_err(|_| bad(format!("metadata '{k}' = '{v}' is not a whole number")))
    };
    let (step, epoch) = (number("step")?, number("epoch")?);
    let optimizer_kind =
        st.metadata.get("optimizer").cloned().ok_or_else(|| bad("metadata has no 'optimizer'".into()))?;
    let mut c = Checkpoint {
        version,
        step,
        epoch,
        optimizer_kind,
        model: Vec::new(),
        optimizer: Vec::new(),
        head: Vec::new(),
        rngs: BTreeMap::new(),
        extra: st.metadata.clone(),
        origin: origin.clone(),
    };
    for k in ["format", "step", "epoch", "optimizer"] {
        c.extra.remove(k);
    }
    for (n, t) in st.tensors {
        if let Some(rest) = n.strip_prefix(OPTIM) {
            c.optimizer.push((rest.to_string(), t));
        } else if let Some(rest) = n.strip_prefix(HEAD) {
            c.head.push((rest.to_string(), t));
        } else if let Some(rest) = n.strip_prefix(RNG) {
            let words = t.as_slice::<i64>().ok().filter(|w| w.len() == 4).ok_or_else(|| {
                bad(format!("'{n}' must be four i64 words, found {} {}", t.shape(), t.dtype()))
            })?;
            let s = [words[0] as u64, words[1] as u64, words[2] as u64, words[3] as u64];
            c.rngs.insert(rest.to_string(), Rng::from_state(s));
        } else {
            c.model.push((n, t));
        }
    }
    Ok(c)
}

impl Checkpoint {
    /// The first tensor holding a NaN or an infinity, named as in the file: a checkpoint written before
    /// the trainer checked what it saves can hold such values, and nothing resumed or evaluated from
    /// it means anything.
    pub fn first_nonfinite(&self) -> Result<Option<String>> {
        let named = (self.model.iter().map(|(n, t)| (n.clone(), t)))
            .chain(self.optimizer.iter().map(|(n, t)| (format!("{OPTIM}{n}"), t)))
            .chain(self.head.iter().map(|(n, t)| (format!("{HEAD}{n}"), t)));
        for (n, t) in named {
            if t.dtype().is_float() && t.to_f64_vec()?.iter().any(|v| !v.is_finite()) {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// The file this checkpoint came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Puts the weights and optimizer state into a model built from the same config; names, shapes and
    /// dtypes must all match, and every difference is listed in the error.
    pub fn restore(&self, model: &mut ParamStore, optimizer: &mut dyn Optimizer) -> Result<()> {
        let found = self.model.iter().map(|(n, t)| (n.as_str(), t));
        let problems = mismatches(model, found, |_, t| t.dims().to_vec());
        if !problems.is_empty() {
            return Err(Error::Io(format!(
                "{}: weights do not match the model: {}",
                self.origin,
                problems.join("; ")
            )));
        }
        if self.optimizer_kind != optimizer.kind() {
            return Err(Error::Io(format!(
                "{}: holds {} optimizer state but the run uses {}",
                self.origin,
                self.optimizer_kind,
                optimizer.kind()
            )));
        }
        let mut problems = Vec::new();
        for (n, t) in &self.optimizer {
            // Optimizer state names are `<param>.<field>`; each must match its parameter's shape.
            let Some((param, field)) = n.rsplit_once('.') else { continue };
            if field == "step" {
                continue;
            }
            if let Ok(p) = model.get(param) {
                if p.dims() != t.dims() || p.dtype() != t.dtype() {
                    problems.push(format!(
                        "'{OPTIM}{n}': {} {}, parameter is {} {}",
                        t.shape(),
                        t.dtype(),
                        p.shape(),
                        p.dtype()
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::Io(format!(
                "{}: optimizer state does not match: {}",
                self.origin,
                problems.join("; ")
            )));
        }
        optimizer.load_state(&self.optimizer).map_err(|e| Error::Io(format!("{}: {e}", self.origin)))?;
        for (n, t) in &self.model {
            let dev = model.get(n)?.device();
            model.set(n, t.to_device(&dev)?)?;
        }
        Ok(())
    }

    /// The saved generator `name`, or an error naming the ones present.
    pub fn rng(&self, name: &str) -> Result<Rng> {
        self.rngs.get(name).cloned().ok_or_else(|| {
            let have: Vec<&str> = self.rngs.keys().map(String::as_str).collect();
            Error::Io(format!("{}: no RNG state '{name}' (found: {})", self.origin, have.join(", ")))
        })
    }

    /// Head state with the expected names, shapes and dtypes of `expected`; lists every mismatch.
    pub fn head_checked(&self, expected: &[(String, Tensor)]) -> Result<&[(String, Tensor)]> {
        let mut problems = Vec::new();
        for (n, want) in expected {
            match self.head.iter().find(|(m, _)| m == n) {
                None => problems.push(format!("missing '{HEAD}{n}'")),
                Some((_, t)) if t.dims() != want.dims() || t.dtype() != want.dtype() => {
                    problems.push(format!(
                        "'{HEAD}{n}': {} {}, expected {} {}",
                        t.shape(),
                        t.dtype(),
                        want.shape(),
                        want.dtype()
                    ))
                }
                _ => {}
            }
        }
        for (n, _) in &self.head {
            if !expected.iter().any(|(m, _)| m == n) {
                problems.push(format!("unexpected '{HEAD}{n}'"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::Io(format!(
                "{}: head state does not match: {}",
                self.origin,
                problems.join("; ")
            )));
        }
        Ok(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{init_params, IResNetConfig};
    use crate::optim::{AdamW, AdamWConfig, ParamGroups, Sgd, SgdConfig};
    use crate::tensor::DType;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ckpt-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("c.safetensors")
    }

    fn fake_grads(store: &ParamStore, scale: f64) -> Vec<(String, Tensor)> {
        store
            .entries()
            .iter()
            .filter(|e| e.kind == crate::model::ParamKind::Trainable)
            .map(|e| (e.name.clone(), e.value.backend().affine(&e.value, scale, 0.01).unwrap()))
            .collect()
    }

    #[test]
    fn save_load_restore_round_trip() {
        let cfg = IResNetConfig { layers: [1, 1, 1, 1], input_hw: (16, 16), ..IResNetConfig::small() };
        let mut model = init_params(&cfg, &mut Rng::new(1), DType::F32).unwrap();
        let mut opt = Sgd::new(SgdConfig::default(), ParamGroups::uniform(5e-4));
        let g = fake_grads(&model, 0.5);
        opt.step(&mut model, &g, 0.1).unwrap();
        let head = vec![("weight".to_string(), Tensor::from_vec(vec![1.5f32; 6], [2, 3]).unwrap())];
        let mut rng = Rng::new(9);
        rng.next_u64();
        let mut extra = BTreeMap::new();
        extra.insert("backbone".to_string(), "small".to_string());
        let path = tmp("rt");
        save(
            &path,
            &CheckpointRef {
                step: 17,
                epoch: 2,
                model: &model,
                optimizer: &opt,
                optimizer_state: None,
                head: &head,
                rngs: &[("data", &rng)],
                extra: &extra,
            },
        )
        .unwrap();

        let c = load(&path).unwrap();
        assert_eq!((c.step, c.epoch, c.optimizer_kind.as_str()), (17, 2, "sgd"));
        assert_eq!(c.extra.get("backbone").map(String::as_str), Some("small"));
        assert_eq!(c.rng("data").unwrap(), rng);
        assert!(c.rng("augment").unwrap_err().to_string().contains("data"));
        assert_eq!(c.head_checked(&head).unwrap()[0].1.to_f64_vec().unwrap(), vec![1.5; 6]);

        let mut model2 = init_params(&cfg, &mut Rng::new(2), DType::F32).unwrap();
        let mut opt2 = Sgd::new(SgdConfig::default(), ParamGroups::uniform(5e-4));
        c.restore(&mut model2, &mut opt2).unwrap();
        // One more identical step on both must give bit-identical weights.
        let g = fake_grads(&model, 0.5);
        opt.step(&mut model, &g, 0.1).unwrap();
        let g2 = fake_grads(&model2, 0.5);
        opt2.step(&mut model2, &g2, 0.1).unwrap();
        for e in model.entries() {
            assert_eq!(
                model2.get(&e.name).unwrap().to_f64_vec().unwrap(),
                e.value.to_f64_vec().unwrap(),
                "{}",
                e.name
            );
        }
        let mut adam = AdamW::new(AdamWConfig::default(), ParamGroups::uniform(0.0));
        assert!(c.restore(&mut model2, &mut adam).unwrap_err().to_string().contains("sgd"));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn mismatches_are_all_reported() {
        let cfg = IResNetConfig { input_hw: (16, 16), ..IResNetConfig::small() };
        let model = init_params(&cfg, &mut Rng::new(1), DType::F32).unwrap();
        let opt = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.0));
        let path = tmp("mm");
        save(
            &path,
            &CheckpointRef {
                step: 1,
                epoch: 0,
                model: &model,
                optimizer: &opt,
                optimizer_state: None,
                head: &[],
                rngs: &[],
                extra: &BTreeMap::new(),
            },
        )
        .unwrap();
        let c = load(&path).unwrap();
        let wider = IResNetConfig { widths: [16, 32, 64, 256], ..cfg.clone() };
        let mut other = init_params(&wider, &mut Rng::new(1), DType::F32).unwrap();
        let mut opt2 = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.0));
        let e = c.restore(&mut other, &mut opt2).unwrap_err().to_string();
        assert!(e.contains("'bn2.weight': shape [128], expected [256]"), "{e}");
        assert!(e.contains("'fc.weight': shape [128, 128], expected [128, 256]"), "{e}");
        let mut f64_model = init_params(&cfg, &mut Rng::new(1), DType::F64).unwrap();
        let e = c.restore(&mut f64_model, &mut opt2).unwrap_err().to_string();
        assert!(e.contains("dtype f32, expected f64"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn truncated_and_foreign_files_are_clear_errors() {
        let cfg = IResNetConfig { input_hw: (16, 16), ..IResNetConfig::small() };
        let model = init_params(&cfg, &mut Rng::new(1), DType::F32).unwrap();
        let opt = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.0));
        let path = tmp("tr");
        save(
            &path,
            &CheckpointRef {
                step: 1,
                epoch: 0,
                model: &model,
                optimizer: &opt,
                optimizer_state: None,
                head: &[],
                rngs: &[],
                extra: &BTreeMap::new(),
            },
        )
        .unwrap();
        // v1 files are read (and say so); a version from the future is not.
        let mut st = safetensors::read(&path).unwrap();
        assert_eq!(load(&path).unwrap().version, VERSION);
        for (format, ok) in [("facetrain-checkpoint-v1", true), ("facetrain-checkpoint-v3", false)] {
            st.metadata.insert("format".into(), format.into());
            safetensors::write(&path, &st).unwrap();
            match load(&path) {
                Ok(c) => assert!(ok && c.version == 1, "{format}"),
                Err(e) => assert!(!ok && e.to_string().contains("facetrain-checkpoint-v2"), "{e}"),
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&path).err().unwrap().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("not a valid safetensors"), "{e}");
        // A model-only export is not a checkpoint.
        crate::model::export::export_pytorch(&path, &cfg, &model).unwrap();
        let e = load(&path).err().unwrap().to_string();
        assert!(e.contains("not a usable checkpoint") && e.contains("format"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
