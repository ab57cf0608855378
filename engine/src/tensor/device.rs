//! Where a tensor lives. `Device::parse` is what the `--device` flag calls: `cuda` on a machine without a
//! GPU or without the CUDA libraries is an error with a sentence, never a panic.

use crate::backend::cuda::CudaContext;
use crate::Result;
use std::sync::Arc;

#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(Arc<CudaContext>),
}

impl Device {
    /// `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when one can be opened, else the CPU).
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(CudaContext::open(0).map(Device::Cuda).unwrap_or(Device::Cpu)),
            "cuda" => CudaContext::open(0).map(Device::Cuda),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => CudaContext::open(n).map(Device::Cuda),
                _ => Err(crate::Error::Device(format!(
                    "unknown device '{s}': expected cpu, cuda, cuda:N or auto"
                ))),
            },
        }
    }

    /// GPU `ordinal`, or a sentence saying why it cannot be opened.
    pub fn gpu(ordinal: usize) -> Result<Device> {
        CudaContext::open(ordinal).map(Device::Cuda)
    }

    /// Whether a GPU driver library can be loaded at all (false on machines without one).
    pub fn gpu_driver_present() -> bool {
        crate::backend::cuda::driver_present()
    }

    /// The device for people, as its backend describes it: "cpu", "cuda:0 (NVIDIA H100, sm_90)".
    pub fn describe(&self) -> String {
        crate::backend::for_device(self).describe()
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.ordinal() == b.ordinal(),
            _ => false,
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(c) => write!(f, "cuda:{}", c.ordinal()),
        }
    }
}
