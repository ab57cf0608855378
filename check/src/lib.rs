//! The parity checks and throughput benchmarks of the engine: test harness, kept out of the product.
//!
//! - `compare`: the one comparison (norm-wise relative error against a threshold; NaN never passes).
//! - `device_parity`: a device against the CPU backend (ops, every head, optimizers, whole steps).
//! - `torch_fixtures`: PyTorch's fixtures (tests/parity/*.py) replayed on any device.
//! - `step_parity`: one whole training step written out for bench/step_parity.py.
//! - `gpu_check`: `engine-train check`, every device op against the CPU or an f64 formula, as a report.
//! - `bench`: `engine-train bench`, training-step, head and demo throughput on a device.
//!
//! Everything here reaches the device through the engine's `Backend` trait, like the product does.

pub mod bench;
pub mod compare;
pub mod device_parity;
pub mod gpu_check;
mod report;
pub mod step_parity;
pub mod torch_fixtures;

/// The error of the harness's commands: a sentence for the user.
pub type CmdResult = Result<(), Box<dyn std::error::Error>>;
