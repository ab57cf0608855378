//! The safetensors format (as written by the `safetensors` Python package and read by PyTorch users):
//! an 8-byte little-endian header length, a JSON header mapping each name to dtype, shape and byte range,
//! then the raw little-endian data. Used for checkpoints, exported weights and test fixtures.

use super::atomic::write_atomic;
use crate::tensor::{CpuStorage, DType, Device, Tensor};
use crate::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The named tensors of one file, in file order, and its string metadata.
#[derive(Default)]
pub struct SafeTensors {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The tensor `name`, or an error naming the file and what it does hold.
    pub fn require(&self, name: &str, file: &Path) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
            Error::Io(format!("{}: no tensor named '{name}' (found: {})", file.display(), names.join(", ")))
        })
    }

    pub fn push(&mut self, name: impl Into<String>, t: Tensor) {
        self.tensors.push((name.into(), t));
    }
}

/// Serializes to bytes (device tensors are copied to the host).
pub fn to_bytes(st: &SafeTensors) -> Result<Vec<u8>> {
    let mut header = Map::new();
    if !st.metadata.is_empty() {
        let m: Map<String, Value> = st.metadata.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut data = Vec::new();
    for (name, t) in &st.tensors {
        if name == "__metadata__" || header.contains_key(name) {
            return Err(Error::Invalid(format!("safetensors: duplicate or reserved tensor name '{name}'")));
        }
        let host = t.to_device(&Device::Cpu)?;
        let bytes = host.cpu_storage()?.to_le_bytes();
        let begin = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            name.clone(),
            json!({"dtype": t.dtype().safetensors_name(), "shape": t.dims(), "data_offsets": [begin, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers");
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes atomically (temporary name, then rename).
pub fn write(path: &Path, st: &SafeTensors) -> Result<()> {
    write_atomic(path, &to_bytes(st)?)
}

pub fn read(path: &Path) -> Result<SafeTensors> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io(format!("{}: cannot read: {e}", path.display())))?;
    from_bytes(&bytes, &path.display().to_string())
}

/// Parses a file's bytes; `origin` names the file in errors.
pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<SafeTensors> {
    let bad = |msg: String| Error::Io(format!("{origin}: not a valid safetensors file: {msg}"));
    if bytes.len() < 8 {
        return Err(bad(format!("{} bytes, shorter than the 8-byte header length", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if n > bytes.len() - 8 {
        return Err(bad(format!("header length {n} runs past the end of the file ({} bytes)", bytes.len())));
    }
    let header: Value =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let Value::Object(map) = header else { return Err(bad("header is not a JSON object".into())) };
    let data = &bytes[8 + n..];
    let mut st = SafeTensors::default();
    let mut entries = Vec::new();
    for (name, info) in map {
        if name == "__metadata__" {
            if let Value::Object(m) = info {
                for (k, v) in m {
                    st.metadata.insert(k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                }
            }
            continue;
        }
        let field = |k: &str| info.get(k).ok_or_else(|| bad(format!("tensor '{name}' has no '{k}'")));
        let dt = field("dtype")?.as_str().unwrap_or("");
        let dtype = DType::from_safetensors_name(dt)
            .ok_or_else(|| bad(format!("tensor '{name}' has unsupported dtype '{dt}'")))?;
        let dims = |k: &str| -> Result<Vec<usize>> {
            field(k)?
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|v| v as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad(format!("tensor '{name}': '{k}' is not a list of integers")))
        };
        let shape = dims("shape")?;
        let off = dims("data_offsets")?;
        if off.len() != 2 || off[0] > off[1] || off[1] > data.len() {
            return Err(bad(format!(
                "tensor '{name}': data_offsets {off:?} outside the {} data bytes",
                data.len()
            )));
        }
        let want = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if off[1] - off[0] != want {
            return Err(bad(format!(
                "tensor '{name}': {} bytes for shape {shape:?} {dtype} (needs {want})",
                off[1] - off[0]
            )));
        }
        let storage = CpuStorage::from_le_bytes(dtype, &data[off[0]..off[1]]).expect("length checked");
        entries.push((off[0], name, Tensor::from_cpu(shape, storage)?));
    }
    // serde_json's map is sorted by key; file order is data order.
    entries.sort_by_key(|(o, n, _)| (*o, n.clone()));
    st.tensors = entries.into_iter().map(|(_, n, t)| (n, t)).collect();
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_names_shapes_dtypes_values_and_metadata() {
        let mut st = SafeTensors::default();
        st.push("w", Tensor::from_vec(vec![1.0f32, -2.5, 3.25, 0.0, 5.0, 6.0], [2, 3]).unwrap());
        st.push("labels", Tensor::from_vec(vec![3i64, -1], [2]).unwrap());
        st.push("scalar", Tensor::scalar(0.125f64));
        st.metadata.insert("step".into(), "42".into());
        let back = from_bytes(&to_bytes(&st).unwrap(), "mem").unwrap();
        assert_eq!(back.metadata.get("step").map(String::as_str), Some("42"));
        assert_eq!(back.tensors.len(), 3);
        for (name, t) in &st.tensors {
            let b = back.get(name).unwrap();
            assert_eq!(b.dims(), t.dims());
            assert_eq!(b.dtype(), t.dtype());
            assert_eq!(b.to_f64_vec().unwrap(), t.to_f64_vec().unwrap());
        }
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let mut st = SafeTensors::default();
        st.push("w", Tensor::from_vec(vec![1.0f32; 4], [4]).unwrap());
        let good = to_bytes(&st).unwrap();
        let truncated = &good[..good.len() - 3];
        let e = from_bytes(truncated, "ckpt.safetensors").err().unwrap().to_string();
        assert!(e.contains("ckpt.safetensors") && e.contains("data_offsets"), "{e}");
        assert!(from_bytes(&good[..5], "x").is_err());
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(from_bytes(&huge, "x").err().unwrap().to_string().contains("runs past"));
        assert!(read(Path::new("/nonexistent/a.safetensors"))
            .err()
            .unwrap()
            .to_string()
            .contains("/nonexistent"));
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("st-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.safetensors");
        let mut st = SafeTensors::default();
        st.push("x", Tensor::from_vec(vec![1.0f64], [1]).unwrap());
        write(&p, &st).unwrap();
        st.tensors[0].1 = Tensor::from_vec(vec![2.0f64], [1]).unwrap();
        write(&p, &st).unwrap();
        assert_eq!(read(&p).unwrap().get("x").unwrap().to_f64_vec().unwrap(), vec![2.0]);
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
