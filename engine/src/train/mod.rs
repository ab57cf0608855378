//! Training: the step, checkpoints, resume, the metrics log and presets.

pub mod checkpoint;
pub mod metrics;
pub mod presets;
