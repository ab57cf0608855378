//! Weights in PyTorch's layout, for insightface's `iresnet.py` with `load_state_dict(strict=True)`:
//! conv weights OIHW instead of our OHWI, and the columns of `fc.weight` in NCHW flatten order (c, h, w)
//! instead of our NHWC order (h, w, c). Every other tensor is stored as is, `num_batches_tracked` as I64.

use super::config::IResNetConfig;
use super::params::ParamStore;
use crate::io::safetensors::{self, SafeTensors};
use crate::tensor::{CpuStorage, Device, Tensor};
use crate::{Error, Result};
use std::path::Path;

/// Permutes a contiguous tensor of dims `dims` so that output axis i is input axis `perm[i]`.
pub fn permute(t: &Tensor, dims: &[usize], perm: &[usize]) -> Result<Tensor> {
    let host = t.to_device(&Device::Cpu)?.reshape(dims.to_vec())?;
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let mut in_strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * dims[i + 1];
    }
    let n = t.numel();
    let mut src = vec![0usize; n];
    let mut idx = vec![0usize; dims.len()];
    for s in src.iter_mut() {
        *s = idx.iter().zip(perm).map(|(&i, &p)| i * in_strides[p]).sum();
        for ax in (0..idx.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < out_dims[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    fn gather<T: Copy>(v: &[T], src: &[usize]) -> Vec<T> {
        src.iter().map(|&i| v[i]).collect()
    }
    let storage = match host.cpu_storage()? {
        CpuStorage::F32(v) => CpuStorage::F32(gather(v, &src)),
        CpuStorage::F64(v) => CpuStorage::F64(gather(v, &src)),
        CpuStorage::F16(v) => CpuStorage::F16(gather(v, &src)),
        CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, &src)),
        CpuStorage::I64(v) => CpuStorage::I64(gather(v, &src)),
    };
    Tensor::from_cpu(out_dims, storage)
}

fn is_conv(name: &str, t: &Tensor) -> bool {
    name.ends_with(".weight") && t.dims().len() == 4
}

/// One tensor of ours in PyTorch's layout (conv OHWI -> OIHW, fc columns HWC -> CHW).
pub fn to_pytorch_layout(cfg: &IResNetConfig, name: &str, t: &Tensor) -> Result<Tensor> {
    if is_conv(name, t) {
        return permute(t, t.dims(), &[0, 3, 1, 2]);
    }
    if name == "fc.weight" {
        let (h, w) = cfg.final_hw();
        let dims = [cfg.embedding_size, h, w, cfg.widths[3]];
        return permute(t, &dims, &[0, 3, 1, 2])?.reshape([cfg.embedding_size, cfg.fc_in()]);
    }
    Ok(t.clone())
}

/// The inverse of `to_pytorch_layout`.
pub fn from_pytorch_layout(cfg: &IResNetConfig, name: &str, t: &Tensor) -> Result<Tensor> {
    if is_conv(name, t) {
        return permute(t, t.dims(), &[0, 2, 3, 1]);
    }
    if name == "fc.weight" {
        let (h, w) = cfg.final_hw();
        let dims = [cfg.embedding_size, cfg.widths[3], h, w];
        return permute(t, &dims, &[0, 2, 3, 1])?.reshape([cfg.embedding_size, cfg.fc_in()]);
    }
    Ok(t.clone())
}

/// Every entry of `store` (parameters and buffers) in PyTorch layout, in state-dict order.
pub fn to_pytorch_tensors(cfg: &IResNetConfig, store: &ParamStore) -> Result<SafeTensors> {
    let mut st = SafeTensors::default();
    for e in store.entries() {
        st.push(e.name.clone(), to_pytorch_layout(cfg, &e.name, &e.value)?);
    }
    // The structure and input convention, so that the file alone rebuilds the network (`model::import`).
    st.metadata.extend(cfg.to_metadata());
    st.metadata.insert("format".into(), "pt".into());
    st.metadata.insert("layout".into(), "pytorch: NCHW activations, OIHW conv weights".into());
    Ok(st)
}

/// Writes a model-only safetensors file that insightface's IResNet loads with strict=True.
pub fn export_pytorch(path: &Path, cfg: &IResNetConfig, store: &ParamStore) -> Result<()> {
    safetensors::write(path, &to_pytorch_tensors(cfg, store)?)
}

/// Every difference between `found` (name -> tensor) and what `expected` holds: missing and unexpected
/// names, shape and dtype mismatches. `shape_of` maps our tensor to the shape the file should have.
pub fn mismatches<'a>(
    expected: &ParamStore,
    found: impl Iterator<Item = (&'a str, &'a Tensor)> + Clone,
    shape_of: impl Fn(&str, &Tensor) -> Vec<usize>,
) -> Vec<String> {
    let mut out = Vec::new();
    for e in expected.entries() {
        match found.clone().find(|(n, _)| *n == e.name) {
            None => out.push(format!(
                "missing '{}' ({:?} {})",
                e.name,
                shape_of(&e.name, &e.value),
                e.value.dtype()
            )),
            Some((_, t)) => {
                let want = shape_of(&e.name, &e.value);
                if t.dims() != want.as_slice() {
                    out.push(format!("'{}': shape {:?}, expected {want:?}", e.name, t.dims()));
                }
                if t.dtype() != e.value.dtype() {
                    out.push(format!("'{}': dtype {}, expected {}", e.name, t.dtype(), e.value.dtype()));
                }
            }
        }
    }
    for (n, t) in found {
        if expected.kind(n).is_none() {
            out.push(format!("unexpected '{n}' ({} {})", t.shape(), t.dtype()));
        }
    }
    out
}

/// Replaces the values of `store` (an initialized model of `cfg`) with the tensors of `st` given in
/// PyTorch layout; reports every mismatch at once, naming `origin`.
pub fn load_pytorch_tensors(
    cfg: &IResNetConfig,
    store: &mut ParamStore,
    st: &SafeTensors,
    origin: &str,
) -> Result<()> {
    let found = st.tensors.iter().map(|(n, t)| (n.as_str(), t));
    let problems = mismatches(store, found, |name, t| match to_pytorch_layout(cfg, name, t) {
        Ok(p) => p.dims().to_vec(),
        Err(_) => t.dims().to_vec(),
    });
    if !problems.is_empty() {
        return Err(Error::Io(format!(
            "{origin}: does not match IResNet {:?} widths {:?}: {}",
            cfg.layers,
            cfg.widths,
            problems.join("; ")
        )));
    }
    for (name, t) in &st.tensors {
        let ours = from_pytorch_layout(cfg, name, t)?;
        let dev = store.get(name)?.device();
        store.set(name, ours.to_device(&dev)?)?;
    }
    Ok(())
}

/// Loads an exported (or PyTorch-saved) model file into `store`. Dtypes must match the store's: no
/// silent precision change.
pub fn import_pytorch(path: &Path, cfg: &IResNetConfig, store: &mut ParamStore) -> Result<()> {
    let st = safetensors::read(path)?;
    load_pytorch_tensors(cfg, store, &st, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::init_params;
    use crate::rng::Rng;
    use crate::tensor::DType;

    #[test]
    fn layout_round_trip_and_conv_transpose() {
        let cfg = IResNetConfig { input_hw: (32, 48), ..IResNetConfig::small() };
        let s = init_params(&cfg, &mut Rng::new(1), DType::F32).unwrap();
        for e in s.entries() {
            let pt = to_pytorch_layout(&cfg, &e.name, &e.value).unwrap();
            let back = from_pytorch_layout(&cfg, &e.name, &pt).unwrap();
            assert_eq!(back.dims(), e.value.dims());
            assert_eq!(back.to_f64_vec().unwrap(), e.value.to_f64_vec().unwrap(), "{}", e.name);
        }
        // conv: ours [o, kh, kw, i] -> torch [o, i, kh, kw]
        let w = s.get("layer1.0.conv1.weight").unwrap();
        let (o, k, i) = (16, 3, 16);
        let pt = to_pytorch_layout(&cfg, "layer1.0.conv1.weight", w).unwrap();
        assert_eq!(pt.dims(), &[o, i, k, k]);
        let (a, b) = (w.to_f64_vec().unwrap(), pt.to_f64_vec().unwrap());
        // element (o=2, kh=1, kw=0, i=5)
        assert_eq!(a[((2 * k + 1) * k) * i + 5], b[((2 * i + 5) * k + 1) * k]);
        // fc: ours column (h, w, c) is torch column (c, h, w); final map is 2x3 with 128 channels.
        let fc = s.get("fc.weight").unwrap();
        let pt = to_pytorch_layout(&cfg, "fc.weight", fc).unwrap();
        let (a, b) = (fc.to_f64_vec().unwrap(), pt.to_f64_vec().unwrap());
        let cols = cfg.fc_in();
        let (h, w_, c) = (1, 2, 77);
        assert_eq!(a[3 * cols + (h * 3 + w_) * 128 + c], b[3 * cols + (c * 2 + h) * 3 + w_]);
    }

    #[test]
    fn import_reports_every_mismatch() {
        let cfg = IResNetConfig::small();
        let s = init_params(&cfg, &mut Rng::new(1), DType::F32).unwrap();
        let mut st = to_pytorch_tensors(&cfg, &s).unwrap();
        st.tensors.retain(|(n, _)| n != "bn2.running_var");
        st.push("extra.weight", Tensor::from_vec(vec![1.0f32], [1]).unwrap());
        for (n, t) in st.tensors.iter_mut() {
            if n == "prelu.weight" {
                *t = Tensor::from_vec(vec![0.25f32; 3], [3]).unwrap();
            }
            if n == "fc.bias" {
                *t = t.to_dtype(DType::F64).unwrap();
            }
        }
        let mut target = init_params(&cfg, &mut Rng::new(2), DType::F32).unwrap();
        let e = load_pytorch_tensors(&cfg, &mut target, &st, "m.safetensors").unwrap_err().to_string();
        for want in [
            "m.safetensors",
            "missing 'bn2.running_var'",
            "unexpected 'extra.weight'",
            "'prelu.weight': shape [3], expected [16]",
            "'fc.bias': dtype f64, expected f32",
        ] {
            assert!(e.contains(want), "{want} not in: {e}");
        }
    }

    #[test]
    fn export_then_import_restores_every_value() {
        let cfg = IResNetConfig::small();
        let s = init_params(&cfg, &mut Rng::new(3), DType::F32).unwrap();
        let dir = std::env::temp_dir().join(format!("export-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        export_pytorch(&p, &cfg, &s).unwrap();
        let mut t = init_params(&cfg, &mut Rng::new(4), DType::F32).unwrap();
        import_pytorch(&p, &cfg, &mut t).unwrap();
        for e in s.entries() {
            assert_eq!(t.get(&e.name).unwrap().to_f64_vec().unwrap(), e.value.to_f64_vec().unwrap());
        }
        let raw = safetensors::read(&p).unwrap();
        assert_eq!(raw.get("bn1.num_batches_tracked").unwrap().dtype(), DType::I64);
        assert_eq!(raw.get("conv1.weight").unwrap().dims(), &[16, 3, 3, 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
