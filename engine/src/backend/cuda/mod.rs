//! The CUDA backend, through cudarc with dynamic loading: nothing CUDA is needed to build or to run on the
//! CPU. Opening a device checks that libcuda can be loaded first, because cudarc panics when it cannot.

pub mod compile;
pub mod libs;

use super::Backend;
use crate::tensor::{DType, Shape, Tensor};
use crate::{Error, Result};
use std::sync::Arc;

/// One GPU: its cudarc context and stream (kernels, cuBLAS and cuDNN handles are added here).
pub struct CudaContext {
    ordinal: usize,
    #[allow(dead_code)]
    ctx: Arc<cudarc::driver::CudaContext>,
}

impl CudaContext {
    /// Opens GPU `ordinal`, or explains why it cannot.
    pub fn open(ordinal: usize) -> Result<Arc<CudaContext>> {
        // SAFETY: only tries to dlopen libcuda; no symbol is called.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Device(
                "no CUDA driver found (libcuda.so could not be loaded): this machine has no usable GPU; \
                 use --device cpu"
                    .into(),
            ));
        }
        let ctx = std::panic::catch_unwind(|| cudarc::driver::CudaContext::new(ordinal))
            .map_err(|_| Error::Device("the CUDA driver library is present but could not be used".into()))?
            .map_err(|e| Error::Device(format!("cannot open CUDA device {ordinal}: {e}")))?;
        Ok(Arc::new(CudaContext { ordinal, ctx }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Copies a CPU tensor onto this device.
    pub fn upload(self: &Arc<Self>, t: &Tensor) -> Result<Tensor> {
        let _ = t;
        Err(Error::Unsupported("host-to-device copies are not implemented yet".into()))
    }

    /// Copies a tensor of this device to the CPU.
    pub fn download(&self, t: &Tensor) -> Result<Tensor> {
        let _ = t;
        Err(Error::Unsupported("device-to-host copies are not implemented yet".into()))
    }
}

impl Backend for CudaContext {
    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor> {
        let _ = (shape, dtype);
        Err(Error::Unsupported("CUDA allocation is not implemented yet".into()))
    }
}

/// Device memory of one tensor.
pub struct CudaStorage {
    context: Arc<CudaContext>,
    dtype: DType,
    len: usize,
}

impl CudaStorage {
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A device-side copy.
    pub fn try_clone(&self) -> Result<CudaStorage> {
        Err(Error::Unsupported("device copies are not implemented yet".into()))
    }
}
