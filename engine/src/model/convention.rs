//! What a backbone takes as input: channel order and per-channel mean and scale, in pixel units.
//! insightface's models take RGB as (x - 127.5) / 127.5, i.e. (x/255 - 0.5)/0.5; AdaFace's `net.py`
//! models were trained on BGR with the same formula (`inference.py`: `np_img[:,:,::-1]`), MagFace's on
//! BGR scaled to [0, 1] (`cv2.imread`, `ToTensor`, `Normalize(0, 1)`).
//!
//! The engine feeds every model the same tensor, RGB in insightface's normalization (the loader, the GPU
//! feed, `eval` and `embed` all produce it); a model with another convention converts that tensor to
//! its own in front of `conv1` (`IResNet::forward`), so it sees exactly what it was trained on, zero
//! padding of `conv1` included. The convention travels with the model: in checkpoints and exports
//! (metadata `input_channels`, `input_mean`, `input_std`) and in ONNX files (`metadata_props`).

use crate::{Error, Result};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputConvention {
    pub order: ChannelOrder,
    /// Subtracted from each channel's 0..255 value, in the model's channel order.
    pub mean: [f64; 3],
    /// Then divided by, in the model's channel order.
    pub std: [f64; 3],
}

impl Default for InputConvention {
    fn default() -> Self {
        Self::insightface()
    }
}

/// The feed's normalization: (x - 127.5) / 127.5 on RGB.
const FEED_MEAN: f64 = 127.5;
const FEED_STD: f64 = 127.5;

impl InputConvention {
    /// RGB, (x - 127.5) / 127.5: insightface, and what the engine feeds.
    pub fn insightface() -> Self {
        InputConvention { order: ChannelOrder::Rgb, mean: [FEED_MEAN; 3], std: [FEED_STD; 3] }
    }

    /// BGR, (x - 127.5) / 127.5 (AdaFace).
    pub fn adaface() -> Self {
        InputConvention { order: ChannelOrder::Bgr, ..Self::insightface() }
    }

    /// BGR, x / 255 (MagFace).
    pub fn magface() -> Self {
        InputConvention { order: ChannelOrder::Bgr, mean: [0.0; 3], std: [255.0; 3] }
    }

    /// Whether the model takes exactly what the engine feeds.
    pub fn is_feed(&self) -> bool {
        *self == Self::insightface()
    }

    /// For each model input channel c: (feed channel, a, b) with model[c] = a * feed[src] + b, where
    /// feed = (x - 127.5) / 127.5 of the RGB image.
    pub fn from_feed(&self) -> [(usize, f64, f64); 3] {
        std::array::from_fn(|c| {
            let src = match self.order {
                ChannelOrder::Rgb => c,
                ChannelOrder::Bgr => 2 - c,
            };
            // x = FEED_STD * feed + FEED_MEAN, model = (x - mean) / std.
            (src, FEED_STD / self.std[c], (FEED_MEAN - self.mean[c]) / self.std[c])
        })
    }

    /// Mean and std by RGB channel (the model's values reordered when it takes BGR).
    pub fn rgb_mean_std(&self) -> ([f64; 3], [f64; 3]) {
        match self.order {
            ChannelOrder::Rgb => (self.mean, self.std),
            ChannelOrder::Bgr => {
                let r = |v: [f64; 3]| [v[2], v[1], v[0]];
                (r(self.mean), r(self.std))
            }
        }
    }

    /// "RGB, (x - 127.5) / 127.5" or per channel.
    pub fn describe(&self) -> String {
        let order = match self.order {
            ChannelOrder::Rgb => "RGB",
            ChannelOrder::Bgr => "BGR",
        };
        let same = |v: &[f64; 3]| v.iter().all(|&x| x == v[0]);
        if same(&self.mean) && same(&self.std) {
            format!("{order}, (x - {}) / {}", self.mean[0], self.std[0])
        } else {
            format!("{order}, (x - {:?}) / {:?}", self.mean, self.std)
        }
    }

    pub fn to_metadata(&self, m: &mut BTreeMap<String, String>) {
        let list = |v: &[f64; 3]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        let order = match self.order {
            ChannelOrder::Rgb => "RGB",
            ChannelOrder::Bgr => "BGR",
        };
        m.insert("input_channels".into(), order.into());
        m.insert("input_mean".into(), list(&self.mean));
        m.insert("input_std".into(), list(&self.std));
    }

    /// The convention in `m`, or `None` when `m` records none (files from before conventions were
    /// recorded: insightface's). `origin` names the file in errors.
    pub fn from_metadata(m: &BTreeMap<String, String>, origin: &str) -> Result<Option<InputConvention>> {
        let Some(order) = m.get("input_channels") else { return Ok(None) };
        let bad = |k: &str, v: &str, want: &str| {
            Error::Io(format!("{origin}: metadata '{k}' = '{v}': expected {want}"))
        };
        let order = match order.to_ascii_uppercase().as_str() {
            "RGB" => ChannelOrder::Rgb,
            "BGR" => ChannelOrder::Bgr,
            _ => return Err(bad("input_channels", order, "RGB or BGR")),
        };
        let triple = |k: &str, default: f64| -> Result<[f64; 3]> {
            let Some(v) = m.get(k) else { return Ok([default; 3]) };
            let parts: Vec<f64> = v
                .split(',')
                .map(|p| p.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(k, v, "three numbers separated by commas"))?;
            match parts.as_slice() {
                [a] => Ok([*a; 3]),
                [a, b, c] => Ok([*a, *b, *c]),
                _ => Err(bad(k, v, "one or three numbers")),
            }
        };
        let c = InputConvention {
            order,
            mean: triple("input_mean", FEED_MEAN)?,
            std: triple("input_std", FEED_STD)?,
        };
        if c.std.iter().any(|&s| !(s.is_finite() && s != 0.0)) || c.mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("input_std", &format!("{:?}", c.std), "finite, non-zero values"));
        }
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_from_the_feed_reproduces_each_projects_formula() {
        for v in [0u8, 1, 77, 128, 254, 255] {
            let x = v as f64;
            let feed = (x / 255.0 - 0.5) / 0.5;
            for (c, want) in [
                (InputConvention::insightface(), (x / 255.0 - 0.5) / 0.5),
                (InputConvention::adaface(), (x / 255.0 - 0.5) / 0.5),
                (InputConvention::magface(), x / 255.0),
            ] {
                for (_, a, b) in c.from_feed() {
                    assert!((a * feed + b - want).abs() < 1e-12, "{c:?} {v}");
                }
            }
        }
        assert_eq!(InputConvention::adaface().from_feed().map(|t| t.0), [2, 1, 0]);
        assert!(InputConvention::insightface().is_feed() && !InputConvention::adaface().is_feed());
    }

    #[test]
    fn metadata_round_trip_and_errors() {
        let mut m = BTreeMap::new();
        let c = InputConvention { mean: [1.0, 2.0, 3.5], ..InputConvention::magface() };
        c.to_metadata(&mut m);
        assert_eq!(InputConvention::from_metadata(&m, "f").unwrap(), Some(c));
        assert_eq!(InputConvention::from_metadata(&BTreeMap::new(), "f").unwrap(), None);
        m.insert("input_channels".into(), "YUV".into());
        let e = InputConvention::from_metadata(&m, "f.safetensors").unwrap_err().to_string();
        assert!(e.contains("f.safetensors") && e.contains("input_channels"), "{e}");
        m.insert("input_channels".into(), "bgr".into());
        m.insert("input_std".into(), "1,0,1".into());
        assert!(InputConvention::from_metadata(&m, "f").is_err());
    }
}
