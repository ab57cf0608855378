//! Dynamic loss scaling for fp16 training, with the semantics and defaults of torch.cuda.amp.GradScaler:
//! the loss gradient is multiplied by the scale so small gradients survive fp16; gradients are divided by
//! it again before clipping and the update; a step whose gradients hold an inf or NaN is skipped and the
//! scale multiplied by the backoff factor; after `growth_interval` finite steps in a row the scale is
//! multiplied by the growth factor (kept only if finite). The scale is an f32, as torch keeps it.
//!
//! Beyond torch: training stops when the scale falls below `min_scale` or `max_consecutive_skips` steps
//! in a row were skipped, since fp16 then cannot represent this run's values at all.

use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct LossScaleConfig {
    pub init_scale: f32,
    pub growth_factor: f32,
    pub backoff_factor: f32,
    pub growth_interval: u32,
    pub min_scale: f32,
    pub max_consecutive_skips: u32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            min_scale: 2f32.powi(-24),
            max_consecutive_skips: 50,
        }
    }
}

impl LossScaleConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(format!("loss scaling: {m}")));
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad(&format!("initial scale {} must be positive and finite", self.init_scale));
        }
        if !(self.growth_factor > 1.0 && self.growth_factor.is_finite()) {
            return bad(&format!("growth factor {} must be above 1", self.growth_factor));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(&format!("backoff factor {} must be in (0, 1)", self.backoff_factor));
        }
        if self.growth_interval == 0 || self.max_consecutive_skips == 0 {
            return bad("growth interval and the consecutive-skip limit must be at least 1");
        }
        Ok(())
    }
}

/// The scaler's state; everything in it is saved in checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    config: LossScaleConfig,
    scale: f32,
    /// Finite steps since the last growth or backoff.
    growth_tracker: u32,
    consecutive_skips: u32,
    skipped_steps: u64,
}

/// Checkpoint metadata keys.
const KEY_SCALE: &str = "loss_scale";
const KEY_TRACKER: &str = "loss_scale_growth_tracker";
const KEY_CONSECUTIVE: &str = "loss_scale_consecutive_skips";
const KEY_SKIPPED: &str = "loss_scale_skipped_steps";

impl LossScaler {
    pub fn new(config: LossScaleConfig) -> Result<LossScaler> {
        config.validate()?;
        let scale = config.init_scale;
        Ok(LossScaler { config, scale, growth_tracker: 0, consecutive_skips: 0, skipped_steps: 0 })
    }

    /// The factor the loss gradient is multiplied by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    pub fn consecutive_skips(&self) -> u32 {
        self.consecutive_skips
    }

    /// Steps skipped over the whole run.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Divides every gradient by the scale (multiplying by its f32 reciprocal, as torch does) and returns
    /// the name of the first gradient holding an inf or NaN, if any; all are unscaled either way.
    pub fn unscale(&self, grads: &mut [(String, Tensor)]) -> Result<Option<String>> {
        let inv = (1.0 / self.scale as f64) as f32;
        let Some(dev) = grads.first().map(|(_, g)| g.device()) else { return Ok(None) };
        let mut all: Vec<&mut Tensor> = grads.iter_mut().map(|(_, g)| g).collect();
        let found = crate::backend::for_device(&dev).scale_and_check(&mut all, inv)?;
        Ok(found.map(|i| grads[i].0.clone()))
    }

    /// Moves the scale after a step: `found_inf` means the step was skipped.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.config.backoff_factor;
            self.growth_tracker = 0;
            self.consecutive_skips += 1;
            self.skipped_steps += 1;
            return;
        }
        self.consecutive_skips = 0;
        self.growth_tracker += 1;
        if self.growth_tracker == self.config.growth_interval {
            let grown = self.scale * self.config.growth_factor;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    /// Why training cannot go on in fp16, once that is so.
    pub fn exhausted(&self) -> Option<String> {
        if self.scale < self.config.min_scale {
            Some(format!("the loss scale fell to {:e}, below {:e}", self.scale, self.config.min_scale))
        } else if self.consecutive_skips >= self.config.max_consecutive_skips {
            Some(format!("{} steps in a row overflowed", self.consecutive_skips))
        } else {
            None
        }
    }

    /// The state as checkpoint metadata (exact: f32 and integers print in forms that parse back equal).
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(KEY_SCALE.into(), self.scale.to_string());
        m.insert(KEY_TRACKER.into(), self.growth_tracker.to_string());
        m.insert(KEY_CONSECUTIVE.into(), self.consecutive_skips.to_string());
        m.insert(KEY_SKIPPED.into(), self.skipped_steps.to_string());
        m
    }

    /// Restores the state `to_metadata` wrote; `Ok(false)` when the metadata holds none (a checkpoint of
    /// an f32 or bf16 run), which leaves the scaler as it is. `origin` names the file in errors.
    pub fn load_metadata(&mut self, m: &BTreeMap<String, String>, origin: &str) -> Result<bool> {
        let Some(scale) = m.get(KEY_SCALE) else { return Ok(false) };
        let field = |k: &str| -> Result<&String> {
            m.get(k).ok_or_else(|| Error::Io(format!("{origin}: metadata has '{KEY_SCALE}' but no '{k}'")))
        };
        let bad = |k: &str, v: &str| Error::Io(format!("{origin}: metadata '{k}' = '{v}' is not valid"));
        let scale: f32 = scale
            .parse()
            .ok()
            .filter(|s: &f32| s.is_finite() && *s > 0.0)
            .ok_or_else(|| bad(KEY_SCALE, scale))?;
        let tracker = field(KEY_TRACKER)?;
        let tracker: u32 = tracker.parse().map_err(|_| bad(KEY_TRACKER, tracker))?;
        let consecutive = field(KEY_CONSECUTIVE)?;
        let consecutive: u32 = consecutive.parse().map_err(|_| bad(KEY_CONSECUTIVE, consecutive))?;
        let skipped = field(KEY_SKIPPED)?;
        let skipped: u64 = skipped.parse().map_err(|_| bad(KEY_SKIPPED, skipped))?;
        self.scale = scale;
        self.growth_tracker = tracker;
        self.consecutive_skips = consecutive;
        self.skipped_steps = skipped;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(interval: u32) -> LossScaler {
        LossScaler::new(LossScaleConfig { growth_interval: interval, ..LossScaleConfig::default() }).unwrap()
    }

    #[test]
    fn defaults_are_torch_grad_scaler_defaults() {
        let c = LossScaleConfig::default();
        assert_eq!(
            (c.init_scale, c.growth_factor, c.backoff_factor, c.growth_interval),
            (65536.0, 2.0, 0.5, 2000)
        );
        assert_eq!(LossScaler::new(c).unwrap().scale(), 65536.0);
    }

    #[test]
    fn finite_steps_grow_the_scale_once_per_interval() {
        let mut s = scaler(3);
        s.update(false);
        s.update(false);
        assert_eq!((s.scale(), s.growth_tracker()), (65536.0, 2));
        s.update(false);
        assert_eq!((s.scale(), s.growth_tracker()), (131072.0, 0));
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!(s.scale(), 262144.0);
        // The default interval: 1999 finite steps leave the scale alone, the 2000th doubles it.
        let mut d = scaler(2000);
        for _ in 0..1999 {
            d.update(false);
        }
        assert_eq!(d.scale(), 65536.0);
        d.update(false);
        assert_eq!((d.scale(), d.growth_tracker()), (131072.0, 0));
    }

    #[test]
    fn an_overflow_halves_the_scale_and_restarts_the_growth_count() {
        let mut s = scaler(3);
        s.update(false);
        s.update(false);
        s.update(true);
        assert_eq!(
            (s.scale(), s.growth_tracker(), s.consecutive_skips(), s.skipped_steps()),
            (32768.0, 0, 1, 1)
        );
        s.update(true);
        assert_eq!((s.scale(), s.consecutive_skips(), s.skipped_steps()), (16384.0, 2, 2));
        // Two finite steps do not grow it (the count restarted), and end the run of skips.
        s.update(false);
        s.update(false);
        assert_eq!(
            (s.scale(), s.growth_tracker(), s.consecutive_skips(), s.skipped_steps()),
            (16384.0, 2, 0, 2)
        );
        s.update(false);
        assert_eq!(s.scale(), 32768.0);
    }

    #[test]
    fn growth_that_would_overflow_f32_keeps_the_scale() {
        let mut s = LossScaler::new(LossScaleConfig {
            init_scale: f32::MAX,
            growth_interval: 1,
            ..Default::default()
        })
        .unwrap();
        s.update(false);
        assert_eq!((s.scale(), s.growth_tracker()), (f32::MAX, 0));
    }

    #[test]
    fn the_scaler_gives_up_below_the_minimum_scale_or_after_too_many_skips() {
        let mut s = scaler(2000);
        // 2^16 halved 40 times is 2^-24, still allowed; the 41st skip goes below.
        for _ in 0..40 {
            s.update(true);
            assert!(s.exhausted().is_none(), "gave up at scale {}", s.scale());
        }
        s.update(true);
        assert!(s.exhausted().unwrap().contains("below"), "{:?}", s.exhausted());
        let mut c =
            LossScaler::new(LossScaleConfig { max_consecutive_skips: 3, ..Default::default() }).unwrap();
        c.update(true);
        c.update(true);
        c.update(false);
        c.update(true);
        c.update(true);
        assert!(c.exhausted().is_none());
        c.update(true);
        assert!(c.exhausted().unwrap().contains("3 steps in a row"));
    }

    #[test]
    fn unscaling_divides_by_the_scale_and_names_the_first_non_finite_gradient() {
        let s = scaler(2000);
        let mut g = vec![
            ("a".to_string(), Tensor::from_vec(vec![65536.0f32, -3.0 * 65536.0], [2]).unwrap()),
            ("b".to_string(), Tensor::from_vec(vec![1.0f32, f32::INFINITY], [2]).unwrap()),
            ("c".to_string(), Tensor::from_vec(vec![f32::NAN], [1]).unwrap()),
        ];
        assert_eq!(s.unscale(&mut g).unwrap().as_deref(), Some("b"));
        assert_eq!(g[0].1.to_vec::<f32>().unwrap(), vec![1.0, -3.0]);
        assert_eq!(g[1].1.to_vec::<f32>().unwrap()[0], 1.0 / 65536.0);
        let mut ok = vec![("a".to_string(), Tensor::from_vec(vec![2.0f32], [1]).unwrap())];
        assert_eq!(s.unscale(&mut ok).unwrap(), None);
    }

    #[test]
    fn state_survives_a_metadata_round_trip_exactly() {
        let mut s =
            LossScaler::new(LossScaleConfig { init_scale: 3.0e7, growth_interval: 5, ..Default::default() })
                .unwrap();
        s.update(true);
        s.update(false);
        s.update(false);
        let m = s.to_metadata();
        let mut r =
            LossScaler::new(LossScaleConfig { init_scale: 3.0e7, growth_interval: 5, ..Default::default() })
                .unwrap();
        assert!(r.load_metadata(&m, "ckpt").unwrap());
        assert_eq!(r, s);
        assert_eq!(r.scale().to_bits(), (3.0e7f32 * 0.5).to_bits());
        // No scaler state (an f32 run's checkpoint): nothing changes.
        let mut fresh = scaler(5);
        assert!(!fresh.load_metadata(&BTreeMap::new(), "ckpt").unwrap());
        assert_eq!(fresh.scale(), 65536.0);
        let mut broken = m.clone();
        broken.insert(KEY_TRACKER.into(), "x".into());
        let e = fresh.load_metadata(&broken, "ckpt.safetensors").unwrap_err().to_string();
        assert!(e.contains("ckpt.safetensors") && e.contains(KEY_TRACKER), "{e}");
        broken.remove(KEY_TRACKER);
        assert!(fresh
            .load_metadata(&broken, "c")
            .unwrap_err()
            .to_string()
            .contains("no 'loss_scale_growth_tracker'"));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for c in [
            LossScaleConfig { init_scale: 0.0, ..Default::default() },
            LossScaleConfig { growth_factor: 1.0, ..Default::default() },
            LossScaleConfig { backoff_factor: 1.0, ..Default::default() },
            LossScaleConfig { growth_interval: 0, ..Default::default() },
        ] {
            assert!(LossScaler::new(c).is_err());
        }
    }
}
