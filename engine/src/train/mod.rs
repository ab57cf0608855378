//! Training: the step, checkpoints, resume, the metrics log, presets, precision and loss scaling.

pub mod checkpoint;
pub mod gpu_parity;
pub mod loss_scale;
pub mod metrics;
pub mod precision;
pub mod presets;
pub mod torch_fixtures;
pub mod trainer;
