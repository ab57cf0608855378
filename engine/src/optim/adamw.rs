//! AdamW as torch.optim.AdamW (amsgrad off): decoupled decay p *= 1 - lr*wd, then Adam with bias
//! correction: m = m + (1-b1)(g-m), v = b2 v + (1-b2) g^2, p -= (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
//! The step count t is kept per parameter, as torch does.

use super::update::{check_state_shape, owned_grads};
use super::{Optimizer, ParamGroups};
use crate::backend::AdamWStep;
use crate::model::ParamStore;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

struct Moments {
    step: i64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    pub groups: ParamGroups,
    moments: BTreeMap<String, Moments>,
}

const SUFFIXES: [&str; 3] = [".exp_avg", ".exp_avg_sq", ".step"];

impl AdamW {
    pub fn new(config: AdamWConfig, groups: ParamGroups) -> Self {
        AdamW { config, groups, moments: BTreeMap::new() }
    }

    /// Checks restored moments against the parameters they belong to.
    pub fn validate_state(&self, store: &ParamStore) -> Result<()> {
        for (name, m) in &self.moments {
            if let Ok(p) = store.get(name) {
                check_state_shape(&format!("{name}.exp_avg"), &m.exp_avg, p)?;
                check_state_shape(&format!("{name}.exp_avg_sq"), &m.exp_avg_sq, p)?;
            }
        }
        Ok(())
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, store: &mut ParamStore, grads: &[(String, Tensor)], lr: f64) -> Result<()> {
        for (name, g) in owned_grads(store, grads)? {
            let opts = self.groups.options_for(name);
            let m = match self.moments.get_mut(name) {
                Some(m) => m,
                None => {
                    let z = Tensor::zeros(g.shape().clone(), g.dtype(), &g.device())?;
                    self.moments.entry(name.to_string()).or_insert(Moments {
                        step: 0,
                        exp_avg: z.clone(),
                        exp_avg_sq: z,
                    })
                }
            };
            m.step += 1;
            let c = self.config;
            let step = u32::try_from(m.step)
                .map_err(|_| Error::Invalid(format!("adamw: step {} of '{name}'", m.step)))?;
            let h = AdamWStep {
                lr: lr * opts.lr_scale,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: opts.weight_decay,
                step,
                grad_scale: 1.0,
                bf16_copy: false,
            };
            g.backend().adamw_step(store.get_mut(name)?, g, &mut m.exp_avg, &mut m.exp_avg_sq, &h)?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (n, m) in &self.moments {
            out.push((format!("{n}.exp_avg"), m.exp_avg.clone()));
            out.push((format!("{n}.exp_avg_sq"), m.exp_avg_sq.clone()));
            out.push((format!("{n}.step"), Tensor::scalar(m.step)));
        }
        out
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut parts: BTreeMap<String, [Option<&Tensor>; 3]> = BTreeMap::new();
        for (key, t) in state {
            let (name, k) = SUFFIXES
                .iter()
                .enumerate()
                .find_map(|(k, s)| key.strip_suffix(s).map(|n| (n, k)))
                .ok_or_else(|| Error::Invalid(format!("adamw state: unexpected entry '{key}'")))?;
            parts.entry(name.to_string()).or_default()[k] = Some(t);
        }
        let mut moments = BTreeMap::new();
        for (name, p) in parts {
            let [Some(ea), Some(ev), Some(st)] = p else {
                return Err(Error::Invalid(format!(
                    "adamw state for '{name}' is incomplete: needs exp_avg, exp_avg_sq and step"
                )));
            };
            check_state_shape(&format!("{name}.exp_avg_sq"), ev, ea)?;
            let step = st.as_slice::<i64>().ok().filter(|s| s.len() == 1).ok_or_else(|| {
                Error::Invalid(format!(
                    "adamw state '{name}.step' must be one i64, got {} {}",
                    st.shape(),
                    st.dtype()
                ))
            })?[0];
            moments.insert(name, Moments { step, exp_avg: ea.clone(), exp_avg_sq: ev.clone() });
        }
        self.moments = moments;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "adamw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamKind;

    #[test]
    fn first_steps_match_hand_computed_values() {
        // p=1, g=0.5, lr=0.1, wd=0.01. Step 1: p=0.999, m=0.05, v=0.00025, m_hat/sqrt(v_hat) = 0.5/0.5 = 1
        // (up to eps), so p = 0.999 - 0.1 * 1 = 0.899.
        let mut s = ParamStore::new();
        s.insert("w", Tensor::from_vec(vec![1.0f64], [1]).unwrap(), ParamKind::Trainable).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), ParamGroups::uniform(0.01));
        let g = vec![("w".to_string(), Tensor::from_vec(vec![0.5f64], [1]).unwrap())];
        opt.step(&mut s, &g, 0.1).unwrap();
        let p = s.get("w").unwrap().to_f64_vec().unwrap()[0];
        let expect = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((p - expect).abs() < 1e-15, "{p} vs {expect}");
        // Step 2 with the same gradient: m_hat = v_hat ratio stays 1.
        opt.step(&mut s, &g, 0.1).unwrap();
        let p2 = s.get("w").unwrap().to_f64_vec().unwrap()[0];
        let expect2 = expect * 0.999 - 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((p2 - expect2).abs() < 1e-14, "{p2} vs {expect2}");

        let st = opt.state();
        let mut other = AdamW::new(AdamWConfig::default(), ParamGroups::uniform(0.01));
        other.load_state(&st).unwrap();
        other.validate_state(&s).unwrap();
        let mut s2 = s.clone();
        opt.step(&mut s, &g, 0.1).unwrap();
        other.step(&mut s2, &g, 0.1).unwrap();
        assert_eq!(s.get("w").unwrap().to_f64_vec().unwrap(), s2.get("w").unwrap().to_f64_vec().unwrap());
        assert!(other.load_state(&st[..2]).unwrap_err().to_string().contains("incomplete"));
    }
}
