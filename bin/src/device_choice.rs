//! `--device auto|cpu|cuda[:N]` for every command that runs a model (`engine::train::startup`): prints
//! the engine's note when `auto` chose the CPU although a GPU driver was there.

use engine::train::precision::Precision;
use engine::train::startup::choose_device;
use engine::{Device, Result};

/// `--device` for commands that run a model in f32 (eval, embed).
#[derive(clap::Args)]
pub struct DeviceFlag {
    /// auto, cpu, cuda or cuda:N. auto takes GPU 0 when it opens and a tiny training step on it
    /// reproduces the CPU's (checked at start, about a second), else the CPU.
    #[arg(long, default_value = "auto")]
    device: String,
}

impl DeviceFlag {
    pub fn choose(&self, what: &str) -> Result<Device> {
        choose(&self.device, Precision::F32, what)
    }
}

/// The device for `what` ("training", "evaluating", ...).
pub fn choose(name: &str, precision: Precision, what: &str) -> Result<Device> {
    let (device, note) = choose_device(name, precision)?;
    if let Some(note) = note {
        eprintln!("note: {note} for {what}");
    }
    Ok(device)
}
