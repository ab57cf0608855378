//! Named parameters and buffers of a model, in registration order. Names follow insightface's `iresnet.py`
//! state dict, so a PyTorch checkpoint maps one to one (layouts differ: see `crate::model` export).

use crate::tape::{Tape, Var};
use crate::tensor::{DType, Device, Tensor};
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
    /// The 16-bit type a training forward reads this parameter in (a weight of an autocast GEMM), once
    /// one has: the optimizer then writes `half` with each update.
    read_in: Option<DType>,
    /// `value` as that GEMM reads it, made by the optimizer with the value; dropped whenever the value
    /// is reached mutably, so it never outlives the value it copies.
    half: Option<(DType, Tensor)>,
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
        self.entries.push(ParamEntry { name, value, kind, read_in: None, half: None });
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
            Some(&i) => {
                let e = &mut self.entries[i];
                e.half = None;
                Ok(&mut e.value)
            }
            None => Err(Error::Invalid(format!("no parameter named '{name}'"))),
        }
    }

    /// The values of `names` (distinct), mutably and at once, in that order.
    pub fn values_mut(&mut self, names: &[&str]) -> Result<Vec<&mut Tensor>> {
        let mut slots: Vec<Option<&mut ParamEntry>> = self.entries.iter_mut().map(Some).collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let i = *self
                .index
                .get(*name)
                .ok_or_else(|| Error::Invalid(format!("no parameter named '{name}'")))?;
            let e =
                slots[i].take().ok_or_else(|| Error::Invalid(format!("parameter '{name}' named twice")))?;
            e.half = None;
            out.push(&mut e.value);
        }
        Ok(out)
    }

    /// The 16-bit type training forwards read `name` in, if they do (see `note_half_reads`).
    pub fn half_read_type(&self, name: &str) -> Option<DType> {
        self.index.get(name).and_then(|&i| self.entries[i].read_in)
    }

    /// Records the parameters a forward read as 16-bit GEMM operands (`Tape::half_reads`).
    pub fn note_half_reads<'a>(&mut self, reads: impl IntoIterator<Item = (&'a str, DType)>) {
        for (name, d) in reads {
            if let Some(&i) = self.index.get(name) {
                self.entries[i].read_in = Some(d);
            }
        }
    }

    /// Keeps `half`, the 16-bit copy of `name`'s current value (as `Backend::half_operand` makes it: the
    /// 16-bit type on a GPU, rounded f32 values on the CPU), for the next forward to read.
    pub fn set_half_copy(&mut self, name: &str, dtype: DType, half: Tensor) -> Result<()> {
        let i =
            *self.index.get(name).ok_or_else(|| Error::Invalid(format!("no parameter named '{name}'")))?;
        let e = &mut self.entries[i];
        if half.dims() != e.value.dims() {
            return Err(Error::Shape(format!(
                "'{name}': a 16-bit copy must have the value's shape {}, got {}",
                e.value.shape(),
                half.shape()
            )));
        }
        e.half = Some((dtype, half));
        Ok(())
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
        for e in &mut self.entries {
            e.half = None;
        }
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
        let v = tape.param(&e.name, e.value.clone(), e.kind == ParamKind::Trainable);
        if let Some((d, h)) = &e.half {
            tape.set_half_operand(v, *d, h.clone())?;
        }
        Ok(v)
    }

    /// A copy on `device`. Integer buffers (`num_batches_tracked`) stay on the host: they are counters no
    /// kernel reads, and bumping them there costs no device round trip per batch norm per step.
    pub fn to_device(&self, device: &Device) -> Result<ParamStore> {
        let mut out = self.clone();
        for e in &mut out.entries {
            e.half = None;
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
