//! Named parameters and buffers of a model, in registration order. Names follow insightface's `iresnet.py`
//! state dict, so a PyTorch checkpoint maps one to one (layouts differ: see `crate::model` export).

use crate::tape::{Tape, Var};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Updated by the optimizer.
    Trainable,
    /// A parameter held fixed (insightface's `features.weight`, fixed at 1).
    Frozen,
    /// Not a parameter: batch-norm running statistics and `num_batches_tracked`.
    Buffer,
}

#[derive(Clone)]
pub struct ParamEntry {
    pub name: String,
    pub value: Tensor,
    pub kind: ParamKind,
}

#[derive(Clone, Default)]
pub struct ParamStore {
    entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a new entry; registering a name twice is a bug in the model code.
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor, kind: ParamKind) -> Result<()> {
        let name = name.into();
        if self.index.contains_key(&name) {
            return Err(Error::Invalid(format!("parameter '{name}' registered twice")));
        }
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push(ParamEntry { name, value, kind });
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.index
            .get(name)
            .map(|&i| &self.entries[i].value)
            .ok_or_else(|| Error::Invalid(format!("no parameter named '{name}'")))
    }

    pub fn get_mut(&mut self, name: &str) -> Result<&mut Tensor> {
        match self.index.get(name) {
            Some(&i) => Ok(&mut self.entries[i].value),
            None => Err(Error::Invalid(format!("no parameter named '{name}'"))),
        }
    }

    /// Replaces a value, checking shape and dtype.
    pub fn set(&mut self, name: &str, value: Tensor) -> Result<()> {
        let cur = self.get_mut(name)?;
        if cur.dims() != value.dims() || cur.dtype() != value.dtype() {
            return Err(Error::Shape(format!(
                "'{name}': expected {} {}, got {} {}",
                cur.shape(),
                cur.dtype(),
                value.shape(),
                value.dtype()
            )));
        }
        *cur = value;
        Ok(())
    }

    pub fn kind(&self, name: &str) -> Option<ParamKind> {
        self.index.get(name).map(|&i| self.entries[i].kind)
    }

    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    pub fn entries_mut(&mut self) -> &mut [ParamEntry] {
        &mut self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of elements of trainable and frozen parameters (buffers excluded), as PyTorch counts them.
    pub fn parameter_count(&self) -> usize {
        self.entries.iter().filter(|e| e.kind != ParamKind::Buffer).map(|e| e.value.numel()).sum()
    }

    /// Puts parameter `name` on the tape (a leaf that gets a gradient when trainable).
    pub fn var(&self, tape: &mut Tape, name: &str) -> Result<Var> {
        let i =
            *self.index.get(name).ok_or_else(|| Error::Invalid(format!("no parameter named '{name}'")))?;
        let e = &self.entries[i];
        Ok(tape.param(&e.name, e.value.clone(), e.kind == ParamKind::Trainable))
    }

    /// A copy on `device`. Integer buffers (`num_batches_tracked`) stay on the host: they are counters no
    /// kernel reads, and bumping them there costs no device round trip per batch norm per step.
    pub fn to_device(&self, device: &Device) -> Result<ParamStore> {
        let mut out = self.clone();
        for e in &mut out.entries {
            if e.value.dtype().is_float() {
                e.value = e.value.to_device(device)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lookup_and_set_check_shapes() {
        let mut s = ParamStore::new();
        s.insert("a.weight", Tensor::from_vec(vec![1.0f32; 6], [2, 3]).unwrap(), ParamKind::Trainable)
            .unwrap();
        s.insert("a.running_mean", Tensor::from_vec(vec![0.0f32; 3], [3]).unwrap(), ParamKind::Buffer)
            .unwrap();
        assert!(s.insert("a.weight", Tensor::scalar(1.0f32), ParamKind::Frozen).is_err());
        assert_eq!(s.parameter_count(), 6);
        assert!(s.set("a.weight", Tensor::from_vec(vec![1.0f32; 6], [3, 2]).unwrap()).is_err());
        assert!(s.get("missing").unwrap_err().to_string().contains("missing"));
        let mut tape = Tape::new();
        let v = s.var(&mut tape, "a.weight").unwrap();
        assert!(tape.requires_grad(v));
        let b = s.var(&mut tape, "a.running_mean").unwrap();
        assert!(!tape.requires_grad(b));
    }
}
