//! SGD with momentum, exactly as torch.optim.SGD (dampening 0, nesterov optional): weight decay is added
//! to the gradient, the momentum buffer starts as a copy of the first (decayed) gradient, then
//! buf = momentum * buf + (1 - dampening) * d_p, and p -= lr * buf (or the nesterov combination). The
//! update itself is the parameter's backend's (`Backend::sgd_step`); this keeps the buffers by name.

use super::update::{check_state_shape, owned_grads};
use super::{Optimizer, ParamGroups};
use crate::backend::SgdStep;
use crate::model::ParamStore;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// insightface's setting (weight decay comes from the groups).
    fn default() -> Self {
        SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: false }
    }
}

pub struct Sgd {
    pub config: SgdConfig,
    pub groups: ParamGroups,
    buffers: BTreeMap<String, Tensor>,
}

const BUF_SUFFIX: &str = ".momentum_buffer";

impl Sgd {
    pub fn new(config: SgdConfig, groups: ParamGroups) -> Self {
        Sgd { config, groups, buffers: BTreeMap::new() }
    }

    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, store: &mut ParamStore, grads: &[(String, Tensor)], lr: f64) -> Result<()> {
        for (name, g) in owned_grads(store, grads)? {
            let opts = self.groups.options_for(name);
            let h = SgdStep {
                lr: lr * opts.lr_scale,
                momentum: self.config.momentum,
                dampening: self.config.dampening,
                weight_decay: opts.weight_decay,
                nesterov: self.config.nesterov,
                grad_scale: 1.0,
                bf16_copy: false,
            };
            let mut buf = self.buffers.remove(name);
            g.backend().sgd_step(store.get_mut(name)?, g, &mut buf, &h)?;
            if let Some(b) = buf {
                self.buffers.insert(name.to_string(), b);
            }
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.buffers.iter().map(|(n, t)| (format!("{n}{BUF_SUFFIX}"), t.clone())).collect()
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (key, t) in state {
            let name = key.strip_suffix(BUF_SUFFIX).ok_or_else(|| {
                Error::Invalid(format!("sgd state: unexpected entry '{key}' (expected <param>{BUF_SUFFIX})"))
            })?;
            buffers.insert(name.to_string(), t.clone());
        }
        self.buffers = buffers;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "sgd"
    }
}

impl Sgd {
    /// Checks restored buffers against the parameters they belong to.
    pub fn validate_state(&self, store: &ParamStore) -> Result<()> {
        for (name, b) in &self.buffers {
            if let Ok(p) = store.get(name) {
                check_state_shape(&format!("{name}{BUF_SUFFIX}"), b, p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamKind;

    fn store(p: &[f64]) -> ParamStore {
        let mut s = ParamStore::new();
        s.insert("w", Tensor::from_vec(p.to_vec(), [p.len()]).unwrap(), ParamKind::Trainable).unwrap();
        s.insert("bn.weight", Tensor::from_vec(vec![1.0f64], [1]).unwrap(), ParamKind::Frozen).unwrap();
        s
    }

    #[test]
    fn matches_hand_computed_torch_steps() {
        // p=1, g=0.5, lr=0.1, wd=0.01, momentum 0.9:
        // step 1: d = 0.5 + 0.01*1 = 0.51, buf = 0.51, p = 1 - 0.051 = 0.949
        // step 2: d = 0.5 + 0.00949 = 0.50949, buf = 0.9*0.51 + 0.50949 = 0.96849, p = 0.949 - 0.096849
        let mut s = store(&[1.0]);
        let mut opt = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.01));
        let g = vec![("w".to_string(), Tensor::from_vec(vec![0.5f64], [1]).unwrap())];
        opt.step(&mut s, &g, 0.1).unwrap();
        assert!((s.get("w").unwrap().to_f64_vec().unwrap()[0] - 0.949).abs() < 1e-15);
        opt.step(&mut s, &g, 0.1).unwrap();
        let p = s.get("w").unwrap().to_f64_vec().unwrap()[0];
        assert!((p - (0.949 - 0.096849)).abs() < 1e-14, "{p}");
        let buf = opt.momentum_buffer("w").unwrap().to_f64_vec().unwrap()[0];
        assert!((buf - 0.96849).abs() < 1e-14);
    }

    #[test]
    fn state_round_trips_and_frozen_grads_are_rejected() {
        let mut s = store(&[1.0, 2.0]);
        let mut opt = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.0));
        let g = vec![
            ("w".to_string(), Tensor::from_vec(vec![0.5f64, -1.0], [2]).unwrap()),
            ("head.weight".to_string(), Tensor::from_vec(vec![3.0f64], [1]).unwrap()),
        ];
        opt.step(&mut s, &g, 0.1).unwrap();
        let st = opt.state();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].0, "w.momentum_buffer");
        let mut other = Sgd::new(SgdConfig::default(), ParamGroups::uniform(0.0));
        other.load_state(&st).unwrap();
        other.validate_state(&s).unwrap();
        let mut s2 = s.clone();
        opt.step(&mut s, &g, 0.1).unwrap();
        other.step(&mut s2, &g, 0.1).unwrap();
        assert_eq!(s.get("w").unwrap().to_f64_vec().unwrap(), s2.get("w").unwrap().to_f64_vec().unwrap());
        assert!(other.load_state(&[("w.exp_avg".into(), st[0].1.clone())]).is_err());
        let frozen = vec![("bn.weight".to_string(), Tensor::from_vec(vec![1.0f64], [1]).unwrap())];
        assert!(opt.step(&mut s, &frozen, 0.1).is_err());
    }
}
