//! Backbones (IResNet and its small variant) and their named parameters; model files in and out
//! (`export`: PyTorch-layout safetensors, `onnx_export`; `import`: PyTorch, Lightning, safetensors, ONNX).

pub mod config;
pub mod convention;
pub mod export;
pub mod import;
pub mod init;
pub mod iresnet;
pub mod layouts;
pub mod onnx_export;
pub mod onnx_import;
pub mod params;
#[doc(hidden)]
pub mod testing;

pub use config::{FeaturesNorm, IResNetConfig, Shortcut};
pub use convention::{ChannelOrder, InputConvention};
pub use init::init_params;
pub use iresnet::IResNet;
pub use params::{ParamKind, ParamStore};

/// True for the weight and bias of a batch-norm layer in insightface's naming (bn1/bn2/bn3, the
/// downsample's BN `downsample.1`, the output `features`): the parameters AdaFace trains without decay.
pub fn is_batchnorm_param(name: &str) -> bool {
    let Some((module, field)) = name.rsplit_once('.') else { return false };
    if field != "weight" && field != "bias" {
        return false;
    }
    let last = module.rsplit('.').next().unwrap_or(module);
    module.ends_with("downsample.1")
        || module == "features"
        || (last.starts_with("bn") && last[2..].parse::<u32>().is_ok())
}

#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod onnx_tests;
