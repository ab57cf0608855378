//! `--device auto|cpu|cuda[:N]` for every command that runs a model: `cuda[:N]` opens that GPU or says
//! why it cannot (never a panic); `auto` takes GPU 0 only when it opens and a tiny training step on it
//! reproduces the CPU's (about a second), and otherwise runs on the CPU, saying why when a CUDA driver
//! was there to be used.

use engine::backend::cuda::{self, CudaContext};
use engine::train::gpu_parity;
use engine::train::precision::Precision;
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

pub fn choose(name: &str, precision: Precision, what: &str) -> Result<Device> {
    if name != "auto" {
        return Device::parse(name);
    }
    match CudaContext::open(0) {
        Ok(ctx) => {
            let gpu = Device::Cuda(ctx);
            match gpu_parity::startup_check(&gpu, precision) {
                Ok(()) => Ok(gpu),
                Err(why) => {
                    eprintln!("note: GPU 0 failed the start-up check against the CPU ({why}); {what} on the CPU (--device cuda insists on the GPU)");
                    Ok(Device::Cpu)
                }
            }
        }
        Err(e) => {
            if cuda::driver_present() {
                eprintln!("note: a CUDA driver is present but no GPU could be used ({e}); {what} on the CPU");
            }
            Ok(Device::Cpu)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_taken_as_named_and_auto_falls_back_without_a_gpu() {
        assert!(choose("cpu", Precision::F32, "testing").unwrap().is_cpu());
        // This machine (and CI) has no GPU: auto must land on the CPU, never panic.
        if !cuda::driver_present() {
            assert!(choose("auto", Precision::Bf16, "testing").unwrap().is_cpu());
            let err = choose("cuda:0", Precision::F32, "testing").unwrap_err().to_string();
            assert!(err.to_lowercase().contains("cuda"), "{err}");
        }
        assert!(choose("tpu", Precision::F32, "testing").is_err());
    }
}
