//! IResNet configurations: insightface's depths (18/34/50/100/200) and a small variant for the CPU demo
//! and tests, plus the analytic size of each (parameters, multiply-adds). The same network as released
//! by AdaFace (`net.py` IR-18..101) and MagFace (`models/iresnet.py`) differs in three details, each a
//! field here (see `model::import` for how files of those projects are mapped): batch-norm epsilon, the
//! first stage's shortcut, and the affine parameters of the final `features` batch norm; plus the input
//! convention each was trained with.

use super::convention::InputConvention;
use crate::{Error, Result};
use std::collections::BTreeMap;

/// How the first block of a stage (stride 2) carries its input to the sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// insightface and MagFace: a 1x1 stride-2 convolution and batch norm (`downsample.0`, `.1`) in every
    /// stage.
    Projection,
    /// AdaFace's `BasicBlockIR`: where the block keeps its channel count (the first stage) the shortcut
    /// is `MaxPool2d(1, 2)`, i.e. every other pixel, with no parameters; elsewhere the projection.
    SubsampleWhenSameWidth,
}

/// The affine parameters of the `features` BatchNorm1d after `fc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturesNorm {
    /// insightface: weight fixed at 1 (not trained), bias trained.
    FixedScale,
    /// MagFace: weight and bias both trained (torch's default BatchNorm1d).
    Affine,
    /// AdaFace: `affine=False`; stored here as a weight of 1 and a bias of 0, both fixed.
    NoAffine,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IResNetConfig {
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Channels per stage; the stem has `widths[0]` channels (insightface: 64, 128, 256, 512).
    pub widths: [usize; 4],
    /// Input height and width, each divisible by 16 (four stride-2 stages).
    pub input_hw: (usize, usize),
    pub in_channels: usize,
    pub embedding_size: usize,
    /// Dropout before `fc` (insightface's default 0: skipped).
    pub dropout: f64,
    /// insightface's zero_init_residual: zeroes each block's `bn2.weight` (sic, as upstream).
    pub zero_init_residual: bool,
    /// Every batch norm's epsilon (insightface and AdaFace 1e-5, MagFace 2e-5).
    pub bn_eps: f64,
    pub shortcut: Shortcut,
    pub features: FeaturesNorm,
    /// The channel order and normalization the weights were trained with.
    pub input: InputConvention,
}

impl IResNetConfig {
    fn insightface(layers: [usize; 4]) -> Self {
        IResNetConfig {
            layers,
            widths: [64, 128, 256, 512],
            input_hw: (112, 112),
            in_channels: 3,
            embedding_size: 512,
            dropout: 0.0,
            zero_init_residual: false,
            bn_eps: 1e-5,
            shortcut: Shortcut::Projection,
            features: FeaturesNorm::FixedScale,
            input: InputConvention::insightface(),
        }
    }
    pub fn r18() -> Self {
        Self::insightface([2, 2, 2, 2])
    }
    pub fn r34() -> Self {
        Self::insightface([3, 4, 6, 3])
    }
    pub fn r50() -> Self {
        Self::insightface([3, 4, 14, 3])
    }
    pub fn r100() -> Self {
        Self::insightface([3, 13, 30, 3])
    }
    pub fn r200() -> Self {
        Self::insightface([6, 26, 60, 6])
    }

    /// The demo/test variant: widths 16/32/64/128, one block per stage, 112x112 input, 128-d embedding.
    pub fn small() -> Self {
        IResNetConfig {
            layers: [1, 1, 1, 1],
            widths: [16, 32, 64, 128],
            embedding_size: 128,
            ..Self::insightface([1, 1, 1, 1])
        }
    }

    /// `r18`, `r34`, `r50`, `r100`, `r200` or `small` (also with an `iresnet` prefix).
    pub fn by_name(name: &str) -> Result<Self> {
        let n = name.trim_start_matches("iresnet").trim_start_matches('r');
        Ok(match n {
            "18" => Self::r18(),
            "34" => Self::r34(),
            "50" => Self::r50(),
            "100" => Self::r100(),
            "200" => Self::r200(),
            "small" | "mall" => Self::small(),
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown backbone '{name}': expected r18, r34, r50, r100, r200 or small"
                )))
            }
        })
    }

    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.input_hw;
        if h == 0 || w == 0 || h % 16 != 0 || w % 16 != 0 {
            return Err(Error::Invalid(format!(
                "IResNet input {h}x{w}: both sides must be positive multiples of 16"
            )));
        }
        if self.layers.contains(&0) || self.widths.contains(&0) {
            return Err(Error::Invalid(format!(
                "IResNet needs at least one block and channel per stage: {self:?}"
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!("dropout {} must be in [0, 1)", self.dropout)));
        }
        if !(self.bn_eps > 0.0 && self.bn_eps < 1.0) {
            return Err(Error::Invalid(format!("batch-norm epsilon {} must be in (0, 1)", self.bn_eps)));
        }
        Ok(())
    }

    /// Whether the first block of stage `stage` (input `cin` channels) has a `downsample` projection.
    pub fn has_projection(&self, stage: usize, cin: usize) -> bool {
        match self.shortcut {
            Shortcut::Projection => true,
            Shortcut::SubsampleWhenSameWidth => cin != self.widths[stage],
        }
    }

    /// The insightface depth whose blocks and widths these are (`r50`, ...), if any.
    pub fn standard_name(&self) -> Option<&'static str> {
        ["r18", "r34", "r50", "r100", "r200"].into_iter().find(|n| {
            let s = Self::by_name(n).expect("known name");
            s.layers == self.layers && s.widths == self.widths && s.embedding_size == self.embedding_size
        })
    }

    /// The structure and input convention as string metadata (checkpoints, exports), so that a file
    /// alone rebuilds the network it holds: `layers`, `widths`, `embedding_size`, `input`, `bn_eps`,
    /// `shortcut`, `features_norm`, `input_channels`, `input_mean`, `input_std`.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let list = |v: &[usize; 4]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        let mut m = BTreeMap::new();
        m.insert("layers".into(), list(&self.layers));
        m.insert("widths".into(), list(&self.widths));
        m.insert("embedding_size".into(), self.embedding_size.to_string());
        m.insert("input".into(), format!("{}x{}", self.input_hw.0, self.input_hw.1));
        m.insert("bn_eps".into(), self.bn_eps.to_string());
        let shortcut = match self.shortcut {
            Shortcut::Projection => "projection",
            Shortcut::SubsampleWhenSameWidth => "subsample-when-same-width",
        };
        m.insert("shortcut".into(), shortcut.into());
        let features = match self.features {
            FeaturesNorm::FixedScale => "fixed-scale",
            FeaturesNorm::Affine => "affine",
            FeaturesNorm::NoAffine => "no-affine",
        };
        m.insert("features_norm".into(), features.into());
        self.input.to_metadata(&mut m);
        m
    }

    /// `self` with every field `m` records replaced (fields it lacks keep their value: files written
    /// before a field existed read as insightface's). `origin` names the file in errors.
    pub fn with_metadata(mut self, m: &BTreeMap<String, String>, origin: &str) -> Result<Self> {
        let bad = |k: &str, v: &str| Error::Io(format!("{origin}: metadata '{k}' = '{v}' is not valid"));
        let four = |k: &str, v: &str| -> Result<[usize; 4]> {
            let p: Vec<usize> = v
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad(k, v))?;
            p.try_into().map_err(|_| bad(k, v))
        };
        for (k, v) in m {
            match k.as_str() {
                "layers" => self.layers = four(k, v)?,
                "widths" => self.widths = four(k, v)?,
                "embedding_size" => self.embedding_size = v.parse().map_err(|_| bad(k, v))?,
                "input" => {
                    let (h, w) = v.split_once('x').ok_or_else(|| bad(k, v))?;
                    self.input_hw = (h.parse().map_err(|_| bad(k, v))?, w.parse().map_err(|_| bad(k, v))?);
                }
                "bn_eps" => self.bn_eps = v.parse().map_err(|_| bad(k, v))?,
                "shortcut" => {
                    self.shortcut = match v.as_str() {
                        "projection" => Shortcut::Projection,
                        "subsample-when-same-width" => Shortcut::SubsampleWhenSameWidth,
                        _ => return Err(bad(k, v)),
                    }
                }
                "features_norm" => {
                    self.features = match v.as_str() {
                        "fixed-scale" => FeaturesNorm::FixedScale,
                        "affine" => FeaturesNorm::Affine,
                        "no-affine" => FeaturesNorm::NoAffine,
                        _ => return Err(bad(k, v)),
                    }
                }
                _ => {}
            }
        }
        if let Some(c) = InputConvention::from_metadata(m, origin)? {
            self.input = c;
        }
        self.validate().map_err(|e| Error::Io(format!("{origin}: {e}")))?;
        Ok(self)
    }

    /// Spatial size after the four stages.
    pub fn final_hw(&self) -> (usize, usize) {
        (self.input_hw.0 / 16, self.input_hw.1 / 16)
    }

    /// Input features of `fc`: last width x final H x final W (insightface: 512 * 7 * 7).
    pub fn fc_in(&self) -> usize {
        let (h, w) = self.final_hw();
        self.widths[3] * h * w
    }

    /// Multiply-adds of one forward pass for one image: convolutions and `fc` (batch norm, PReLU and the
    /// residual adds are elementwise and left out, as the usual counts do).
    pub fn forward_macs(&self) -> u64 {
        let (mut h, mut w) = self.input_hw;
        let conv =
            |h: usize, w: usize, cin: usize, cout: usize, k: usize| (h * w * cin * cout * k * k) as u64;
        let mut macs = conv(h, w, self.in_channels, self.widths[0], 3);
        let mut cin = self.widths[0];
        for (stage, (&blocks, &c)) in self.layers.iter().zip(&self.widths).enumerate() {
            let _ = stage;
            for b in 0..blocks {
                // conv1 runs at the input resolution, conv2 (stride 2 in the first block) at the output's.
                macs += conv(h, w, cin, c, 3);
                if b == 0 {
                    let (ho, wo) = (h / 2, w / 2);
                    macs += conv(ho, wo, c, c, 3) + conv(ho, wo, cin, c, 1);
                    h = ho;
                    w = wo;
                } else {
                    macs += conv(h, w, c, c, 3);
                }
                cin = c;
            }
        }
        macs + (self.fc_in() * self.embedding_size) as u64
    }

    /// Forward GFLOPs per image (2 FLOPs per multiply-add).
    pub fn forward_gflops(&self) -> f64 {
        2.0 * self.forward_macs() as f64 / 1e9
    }

    /// One line for logs: depth, parameter count, forward cost.
    pub fn describe(&self, parameter_count: usize) -> String {
        format!(
            "IResNet layers {:?} widths {:?} input {}x{}: {:.2} M parameters, {:.2} G multiply-adds ({:.2} GFLOPs) per image forward",
            self.layers,
            self.widths,
            self.input_hw.0,
            self.input_hw.1,
            parameter_count as f64 / 1e6,
            self.forward_macs() as f64 / 1e9,
            self.forward_gflops()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_match_published_sizes() {
        // insightface lists r50 at about 6.3 G and r100 at about 12.1 G multiply-adds per 112x112 image.
        let r50 = IResNetConfig::r50().forward_macs() as f64 / 1e9;
        let r100 = IResNetConfig::r100().forward_macs() as f64 / 1e9;
        assert!((r50 - 6.3).abs() < 0.1, "r50 {r50} G MACs");
        assert!((r100 - 12.1).abs() < 0.15, "r100 {r100} G MACs");
        assert_eq!(IResNetConfig::r18().fc_in(), 512 * 7 * 7);
    }

    #[test]
    fn names_and_validation() {
        assert_eq!(IResNetConfig::by_name("r34").unwrap().layers, [3, 4, 6, 3]);
        assert_eq!(IResNetConfig::by_name("iresnet100").unwrap().layers, [3, 13, 30, 3]);
        assert!(IResNetConfig::by_name("r42").is_err());
        let mut c = IResNetConfig::small();
        c.input_hw = (40, 40);
        assert!(c.validate().is_err());
        c.input_hw = (32, 48);
        c.validate().unwrap();
        assert_eq!(c.fc_in(), 128 * 2 * 3);
    }

    #[test]
    fn metadata_rebuilds_the_structure() {
        let c = IResNetConfig {
            widths: [8, 16, 32, 64],
            input_hw: (64, 48),
            bn_eps: 2e-5,
            shortcut: Shortcut::SubsampleWhenSameWidth,
            features: FeaturesNorm::NoAffine,
            input: InputConvention::magface(),
            ..IResNetConfig::r34()
        };
        let back = IResNetConfig::r50().with_metadata(&c.to_metadata(), "f").unwrap();
        assert_eq!(back, c);
        assert_eq!(back.standard_name(), None);
        assert_eq!(IResNetConfig::r50().with_metadata(&BTreeMap::new(), "f").unwrap(), IResNetConfig::r50());
        assert_eq!(IResNetConfig::r100().standard_name(), Some("r100"));
        let mut m = c.to_metadata();
        m.insert("shortcut".into(), "maxpool".into());
        let e = IResNetConfig::r50().with_metadata(&m, "x.safetensors").unwrap_err().to_string();
        assert!(e.contains("x.safetensors") && e.contains("'shortcut' = 'maxpool'"), "{e}");
        assert!(c.has_projection(1, 8) && !c.has_projection(0, 8));
    }
}
