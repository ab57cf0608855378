//! Training: the step, checkpoints, resume, the metrics log and presets.

pub mod metrics;
pub mod presets;
