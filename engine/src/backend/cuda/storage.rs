//! Device memory of one tensor: a pooled buffer plus its element type and count. Typed views are
//! reinterpretations of the bytes (16-bit floats are viewed as u16, as the kernels take them).

use super::alloc::DeviceBuffer;
use super::CudaContext;
use crate::tensor::DType;
use crate::{Error, Result};
use cudarc::driver::{CudaView, CudaViewMut};
use std::sync::Arc;

pub struct CudaStorage {
    pub(super) context: Arc<CudaContext>,
    pub(super) dtype: DType,
    pub(super) len: usize,
    pub(super) buf: DeviceBuffer,
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

    /// The elements viewed as `T`, which must have the dtype's size.
    pub fn view<T>(&self) -> Result<CudaView<'_, T>> {
        self.check_elem::<T>()?;
        // SAFETY: the buffer holds at least len * size_of::<T>() bytes (checked at allocation).
        unsafe { self.buf.slice().transmute::<T>(self.len) }
            .ok_or_else(|| Error::Device("device buffer smaller than its tensor".into()))
    }

    pub fn view_mut<T>(&mut self) -> Result<CudaViewMut<'_, T>> {
        self.check_elem::<T>()?;
        let len = self.len;
        // SAFETY: as in `view`.
        unsafe { self.buf.slice_mut().transmute_mut::<T>(len) }
            .ok_or_else(|| Error::Device("device buffer smaller than its tensor".into()))
    }

    /// The tensor's bytes, for kernels that take the element type from their name.
    pub fn bytes(&self) -> CudaView<'_, u8> {
        self.buf.slice().slice(..self.len * self.dtype.size_in_bytes())
    }

    pub fn bytes_mut(&mut self) -> CudaViewMut<'_, u8> {
        let n = self.len * self.dtype.size_in_bytes();
        self.buf.slice_mut().slice_mut(..n)
    }

    fn check_elem<T>(&self) -> Result<()> {
        if std::mem::size_of::<T>() != self.dtype.size_in_bytes() {
            return Err(Error::DType(format!(
                "{} tensor viewed with an element of {} bytes",
                self.dtype,
                std::mem::size_of::<T>()
            )));
        }
        Ok(())
    }

    /// A device-side copy (on the compute stream).
    pub fn try_clone(&self) -> Result<CudaStorage> {
        let mut out = self.context.alloc_storage(self.dtype, self.len)?;
        let bytes = self.len * self.dtype.size_in_bytes();
        let src = self.buf.slice().slice(..bytes);
        let mut dst = out.buf.slice_mut().slice_mut(..bytes);
        self.context.compute.memcpy_dtod(&src, &mut dst).map_err(super::driver_err("device copy"))?;
        Ok(out)
    }
}
