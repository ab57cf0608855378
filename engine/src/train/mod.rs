//! Training: the step, checkpoints, resume.

pub mod checkpoint;
