//! IResNet configurations: insightface's depths (18/34/50/100/200) and a small variant for the CPU demo
//! and tests, plus the analytic size of each (parameters, multiply-adds).

use crate::{Error, Result};

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
            input_hw: (112, 112),
            in_channels: 3,
            embedding_size: 128,
            dropout: 0.0,
            zero_init_residual: false,
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
        Ok(())
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
}
