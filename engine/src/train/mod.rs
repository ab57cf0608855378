//! Training: the step, checkpoints, resume, the metrics log and presets.

pub mod checkpoint;
pub mod gpu_parity;
pub mod metrics;
pub mod presets;
pub mod trainer;
