//! Backbones (IResNet and its small variant) and their named parameters.

pub mod params;

pub use params::{ParamKind, ParamStore};
