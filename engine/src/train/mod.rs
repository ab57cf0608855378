//! Training: the step, checkpoints, resume, the metrics log, presets, precision and loss scaling.

pub mod checkpoint;
pub mod demo;
pub mod feed;
pub mod loss_scale;
pub mod metrics;
pub mod precision;
pub mod presets;
pub mod recipe;
pub mod startup;
pub mod trainer;
