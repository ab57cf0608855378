//! Weights for checks that compare two implementations of the same network (our ONNX export against
//! ONNX Runtime, imports against PyTorch): every parameter and running statistic away from its initial
//! value, so a mixed-up tensor shows, and activations of order one through any depth, so the
//! comparison measures the implementations rather than an overflow.

use super::config::IResNetConfig;
use super::init::init_params;
use super::params::{ParamKind, ParamStore};
use crate::rng::Rng;
use crate::tensor::{DType, Tensor};
use crate::Result;

/// Random f32 weights of `cfg` from `seed`.
pub fn random_weights(cfg: &IResNetConfig, seed: u64) -> Result<ParamStore> {
    let mut rng = Rng::new(seed);
    let mut store = init_params(cfg, &mut rng, DType::F32)?;
    for e in store.entries_mut() {
        let dims = e.value.dims().to_vec();
        let n = e.value.numel();
        if !e.value.dtype().is_float() {
            continue;
        }
        let field = e.name.rsplit('.').next().unwrap_or("");
        let v: Vec<f32> = match (dims.len(), field) {
            // Conv OHWI: fan-in k*k*cin; half the variance-preserving scale keeps the residual sum bounded.
            (4, _) => {
                let s = 0.5 / ((dims[1] * dims[2] * dims[3]) as f64).sqrt();
                (0..n).map(|_| (s * rng.normal()) as f32).collect()
            }
            (2, _) => {
                let s = 1.0 / (dims[1] as f64).sqrt();
                (0..n).map(|_| (s * rng.normal()) as f32).collect()
            }
            (_, "running_var") => (0..n).map(|_| (0.5 + rng.uniform()) as f32).collect(),
            (_, "running_mean") | (_, "bias") if e.kind != ParamKind::Frozen => {
                (0..n).map(|_| (0.1 * rng.normal()) as f32).collect()
            }
            (_, "weight") if e.name.contains("prelu") => {
                (0..n).map(|_| (0.1 + 0.3 * rng.uniform()) as f32).collect()
            }
            (_, "weight") if e.kind != ParamKind::Frozen => {
                (0..n).map(|_| (0.5 + rng.uniform()) as f32).collect()
            }
            _ => continue,
        };
        e.value = Tensor::from_vec(v, dims)?;
    }
    Ok(store)
}

/// `n` NHWC images of `cfg`'s size, as the feed gives them: (x - 127.5) / 127.5 of whole pixel values.
pub fn random_images(cfg: &IResNetConfig, n: usize, seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let (h, w) = cfg.input_hw;
    let v: Vec<f32> = (0..n * h * w * 3).map(|_| ((rng.below(256) as f32) / 255.0 - 0.5) / 0.5).collect();
    Tensor::from_vec(v, [n, h, w, 3])
}
