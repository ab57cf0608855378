//! Parameters of an IResNet in insightface's state-dict order, initialized as `iresnet.py` does: convs
//! N(0, 0.1), batch norms weight 1 / bias 0, PReLU 0.25, `fc` with torch's Linear default
//! (uniform in +-1/sqrt(fan_in) for weight and bias), `features.weight` fixed at 1. The AdaFace and
//! MagFace variants (`config::Shortcut`, `config::FeaturesNorm`) differ only in which entries exist
//! and which are trained.

use super::config::{FeaturesNorm, IResNetConfig};
use super::params::{ParamKind, ParamStore};
use crate::rng::Rng;
use crate::tensor::{CpuStorage, DType, Tensor};
use crate::Result;

/// `(stage, block)` name prefix, e.g. `layer2.0`.
pub fn block_prefix(stage: usize, block: usize) -> String {
    format!("layer{}.{block}", stage + 1)
}

/// Whether block `block` of a stage halves the resolution (the first block of every stage: stride 2).
pub fn has_downsample(block: usize) -> bool {
    block == 0
}

struct Builder<'a> {
    store: ParamStore,
    rng: &'a mut Rng,
    dtype: DType,
}

impl Builder<'_> {
    fn tensor(&self, v: Vec<f64>, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::from_cpu(shape, CpuStorage::F64(v).cast(self.dtype))
    }

    fn filled(&mut self, name: String, shape: Vec<usize>, v: f64, kind: ParamKind) -> Result<()> {
        let n = shape.iter().product();
        let t = self.tensor(vec![v; n], shape)?;
        self.store.insert(name, t, kind)
    }

    /// OHWI weight drawn from N(0, 0.1).
    fn conv(&mut self, name: String, cout: usize, k: usize, cin: usize) -> Result<()> {
        let n = cout * k * k * cin;
        let v: Vec<f64> = (0..n).map(|_| 0.1 * self.rng.normal()).collect();
        let t = self.tensor(v, vec![cout, k, k, cin])?;
        self.store.insert(name, t, ParamKind::Trainable)
    }

    fn batch_norm(&mut self, prefix: &str, c: usize, weight: f64, weight_kind: ParamKind) -> Result<()> {
        self.filled(format!("{prefix}.weight"), vec![c], weight, weight_kind)?;
        self.filled(format!("{prefix}.bias"), vec![c], 0.0, ParamKind::Trainable)?;
        self.filled(format!("{prefix}.running_mean"), vec![c], 0.0, ParamKind::Buffer)?;
        self.filled(format!("{prefix}.running_var"), vec![c], 1.0, ParamKind::Buffer)?;
        let nbt = Tensor::from_vec(vec![0i64], Vec::<usize>::new())?;
        self.store.insert(format!("{prefix}.num_batches_tracked"), nbt, ParamKind::Buffer)
    }

    fn prelu(&mut self, name: String, c: usize) -> Result<()> {
        self.filled(name, vec![c], 0.25, ParamKind::Trainable)
    }

    fn uniform(&mut self, name: String, shape: Vec<usize>, bound: f64) -> Result<()> {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| (2.0 * self.rng.uniform() - 1.0) * bound).collect();
        let t = self.tensor(v, shape)?;
        self.store.insert(name, t, ParamKind::Trainable)
    }
}

/// A freshly initialized parameter store for `cfg` in `dtype` (f32 for training, f64 for checks).
pub fn init_params(cfg: &IResNetConfig, rng: &mut Rng, dtype: DType) -> Result<ParamStore> {
    cfg.validate()?;
    let mut b = Builder { store: ParamStore::new(), rng, dtype };
    let w0 = cfg.widths[0];
    b.conv("conv1.weight".into(), w0, 3, cfg.in_channels)?;
    b.batch_norm("bn1", w0, 1.0, ParamKind::Trainable)?;
    b.prelu("prelu.weight".into(), w0)?;
    let mut cin = w0;
    for (s, (&blocks, &c)) in cfg.layers.iter().zip(&cfg.widths).enumerate() {
        for k in 0..blocks {
            let p = block_prefix(s, k);
            b.batch_norm(&format!("{p}.bn1"), cin, 1.0, ParamKind::Trainable)?;
            b.conv(format!("{p}.conv1.weight"), c, 3, cin)?;
            let bn2_weight = if cfg.zero_init_residual { 0.0 } else { 1.0 };
            b.batch_norm(&format!("{p}.bn2"), c, bn2_weight, ParamKind::Trainable)?;
            b.prelu(format!("{p}.prelu.weight"), c)?;
            b.conv(format!("{p}.conv2.weight"), c, 3, c)?;
            b.batch_norm(&format!("{p}.bn3"), c, 1.0, ParamKind::Trainable)?;
            if has_downsample(k) && cfg.has_projection(s, cin) {
                b.conv(format!("{p}.downsample.0.weight"), c, 1, cin)?;
                b.batch_norm(&format!("{p}.downsample.1"), c, 1.0, ParamKind::Trainable)?;
            }
            cin = c;
        }
    }
    b.batch_norm("bn2", cin, 1.0, ParamKind::Trainable)?;
    let fan_in = cfg.fc_in();
    let bound = 1.0 / (fan_in as f64).sqrt();
    b.uniform("fc.weight".into(), vec![cfg.embedding_size, fan_in], bound)?;
    b.uniform("fc.bias".into(), vec![cfg.embedding_size], bound)?;
    let (weight, bias) = match cfg.features {
        FeaturesNorm::FixedScale => (ParamKind::Frozen, ParamKind::Trainable),
        FeaturesNorm::Affine => (ParamKind::Trainable, ParamKind::Trainable),
        FeaturesNorm::NoAffine => (ParamKind::Frozen, ParamKind::Frozen),
    };
    b.batch_norm("features", cfg.embedding_size, 1.0, weight)?;
    if bias == ParamKind::Frozen {
        b.store.entries_mut().iter_mut().find(|e| e.name == "features.bias").expect("just added").kind = bias;
    }
    Ok(b.store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_counts_and_kinds_follow_insightface() {
        let s = init_params(&IResNetConfig::r50(), &mut Rng::new(0), DType::F32).unwrap();
        // torchvision-style count for insightface r50 with a 512-d embedding.
        assert_eq!(s.parameter_count(), 43_590_848);
        let names: Vec<&str> = s.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            &names[..7],
            &[
                "conv1.weight",
                "bn1.weight",
                "bn1.bias",
                "bn1.running_mean",
                "bn1.running_var",
                "bn1.num_batches_tracked",
                "prelu.weight"
            ]
        );
        assert_eq!(names[7], "layer1.0.bn1.weight");
        assert!(names.contains(&"layer4.0.downsample.0.weight"));
        assert!(!names.contains(&"layer4.1.downsample.0.weight"));
        assert_eq!(*names.last().unwrap(), "features.num_batches_tracked");
        assert_eq!(s.kind("features.weight"), Some(ParamKind::Frozen));
        assert_eq!(s.kind("features.bias"), Some(ParamKind::Trainable));
        assert_eq!(s.get("layer2.0.conv2.weight").unwrap().dims(), &[128, 3, 3, 128]);
        assert_eq!(s.get("layer2.0.downsample.0.weight").unwrap().dims(), &[128, 1, 1, 64]);
        assert_eq!(s.get("fc.weight").unwrap().dims(), &[512, 25088]);
        assert_eq!(s.get("bn1.num_batches_tracked").unwrap().dtype(), DType::I64);
    }

    #[test]
    fn variants_change_which_entries_exist_and_train() {
        use crate::model::config::Shortcut;
        let ada = IResNetConfig {
            shortcut: Shortcut::SubsampleWhenSameWidth,
            features: FeaturesNorm::NoAffine,
            ..IResNetConfig::r18()
        };
        let s = init_params(&ada, &mut Rng::new(0), DType::F32).unwrap();
        // Stage 1 keeps 64 channels: no projection (AdaFace's MaxPool2d(1, 2)); the others have one.
        assert!(s.kind("layer1.0.downsample.0.weight").is_none());
        assert!(s.kind("layer2.0.downsample.0.weight").is_some());
        assert_eq!(s.kind("features.bias"), Some(ParamKind::Frozen));
        let mag = IResNetConfig { features: FeaturesNorm::Affine, ..IResNetConfig::r18() };
        let s = init_params(&mag, &mut Rng::new(0), DType::F32).unwrap();
        assert_eq!(s.kind("features.weight"), Some(ParamKind::Trainable));
        assert!(s.kind("layer1.0.downsample.0.weight").is_some());
    }

    #[test]
    fn conv_init_has_std_0_1_and_seed_decides_everything() {
        let a = init_params(&IResNetConfig::small(), &mut Rng::new(5), DType::F64).unwrap();
        let b = init_params(&IResNetConfig::small(), &mut Rng::new(5), DType::F64).unwrap();
        let c = init_params(&IResNetConfig::small(), &mut Rng::new(6), DType::F64).unwrap();
        let w = a.get("layer3.0.conv2.weight").unwrap().to_f64_vec().unwrap();
        let std = (w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std - 0.1).abs() < 0.005, "std {std}");
        for (ea, eb) in a.entries().iter().zip(b.entries()) {
            assert_eq!(ea.value.to_f64_vec().unwrap(), eb.value.to_f64_vec().unwrap(), "{}", ea.name);
        }
        assert_ne!(
            a.get("conv1.weight").unwrap().to_f64_vec().unwrap(),
            c.get("conv1.weight").unwrap().to_f64_vec().unwrap()
        );
        let fc = a.get("fc.weight").unwrap().to_f64_vec().unwrap();
        let bound = 1.0 / (IResNetConfig::small().fc_in() as f64).sqrt();
        assert!(fc.iter().all(|x| x.abs() <= bound));
    }
}
