//! The tensor type: a shape plus a shared, immutable-by-default storage on some device. No math lives here;
//! ops are in `crate::ops` and dispatch to the tensor's backend.

mod device;
mod dtype;
pub mod half_round;
mod shape;
mod storage;

pub use device::Device;
pub use dtype::{f32_to_bf16, f32_to_f16, DType, Float};
pub use shape::Shape;
pub use storage::{CpuStorage, Element, Storage};

use crate::backend::{self, Backend};
use crate::{Error, Result};
use std::sync::Arc;

/// Cloning a tensor is cheap (the storage is shared); `make_mut_*` copies on write when it is shared.
#[derive(Clone)]
pub struct Tensor {
    shape: Shape,
    storage: Arc<Storage>,
}

impl Tensor {
    pub fn from_storage(shape: impl Into<Shape>, storage: Storage) -> Result<Tensor> {
        let shape = shape.into();
        let len = match &storage {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
            Storage::Meta(s) => s.len(),
        };
        if len != shape.numel() {
            return Err(Error::Shape(format!(
                "storage holds {len} elements but shape {shape} needs {}",
                shape.numel()
            )));
        }
        Ok(Tensor { shape, storage: Arc::new(storage) })
    }

    pub fn from_cpu(shape: impl Into<Shape>, s: CpuStorage) -> Result<Tensor> {
        Tensor::from_storage(shape, Storage::Cpu(s))
    }

    /// A CPU tensor from a vector of elements.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_cpu(shape, T::wrap(data))
    }

    /// A CPU scalar (rank 0).
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_vec(vec![v], Shape(vec![])).expect("one element fits rank 0")
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        match device {
            Device::Cpu => Tensor::from_cpu(shape.clone(), CpuStorage::zeros(dtype, shape.numel())),
            Device::Cuda(_) | Device::Meta(_) => backend::for_device(device).zeros(&shape, dtype),
        }
    }

    pub fn full(shape: impl Into<Shape>, v: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let cpu = CpuStorage::F64(vec![v; shape.numel()]).cast(dtype);
        Tensor::from_cpu(shape, cpu)?.to_device(device)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn dtype(&self) -> DType {
        match &*self.storage {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
            Storage::Meta(s) => s.dtype(),
        }
    }
    pub fn device(&self) -> Device {
        match &*self.storage {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.context().clone()),
            Storage::Meta(s) => Device::Meta(s.context().clone()),
        }
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// The backend that runs ops on this tensor.
    pub fn backend(&self) -> &dyn Backend {
        match &*self.storage {
            Storage::Cpu(_) => &backend::cpu::CpuBackend,
            Storage::Cuda(s) => s.context().as_ref(),
            Storage::Meta(s) => s.context().as_ref(),
        }
    }

    /// The CPU storage, or an error naming `op` when the tensor is elsewhere.
    pub fn cpu_storage(&self) -> Result<&CpuStorage> {
        match &*self.storage {
            Storage::Cpu(s) => Ok(s),
            _ => Err(Error::Device(format!("expected a CPU tensor, found one on {:?}", self.device()))),
        }
    }

    /// Borrow the elements of a CPU tensor as `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        let s = self.cpu_storage()?;
        T::slice(s)
            .ok_or_else(|| Error::DType(format!("tensor is {} but {} was requested", s.dtype(), T::DTYPE)))
    }

    /// Mutable elements of a CPU tensor (copy-on-write when the storage is shared).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let storage = make_unique(&mut self.storage)?;
        match storage {
            Storage::Cpu(s) => {
                let dt = s.dtype();
                T::slice_mut(s)
                    .ok_or_else(|| Error::DType(format!("tensor is {dt} but {} was requested", T::DTYPE)))
            }
            _ => Err(Error::Device("expected a CPU tensor, found a device one".into())),
        }
    }

    /// A copy of the elements on the host as `T` (no conversion: the dtype must match).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        match &*self.storage {
            Storage::Cpu(_) => Ok(self.as_slice::<T>()?.to_vec()),
            _ => self.to_device(&Device::Cpu)?.to_vec(),
        }
    }

    /// Every element as f64 on the host (tests, metrics).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.to_device(&Device::Cpu)?.cpu_storage()?.to_f64_vec())
    }

    /// The single value of a one-element tensor, as f64.
    pub fn scalar_value(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::Shape(format!("expected one element, tensor has shape {}", self.shape)));
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// Same storage, new shape with the same number of elements.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::Shape(format!("cannot reshape {} into {shape}", self.shape)));
        }
        Ok(Tensor { shape, storage: self.storage.clone() })
    }

    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device().same(device) {
            return Ok(self.clone());
        }
        match (&*self.storage, device) {
            (Storage::Cpu(_), Device::Cuda(ctx)) => ctx.upload(self),
            (Storage::Cpu(_), Device::Meta(ctx)) => ctx.upload(self),
            (Storage::Cuda(s), Device::Cpu) => s.context().download(self),
            (Storage::Meta(s), Device::Cpu) => s.context().download(self),
            (Storage::Cuda(s), _) => s.context().download(self)?.to_device(device),
            (Storage::Meta(s), _) => s.context().download(self)?.to_device(device),
            (Storage::Cpu(_), Device::Cpu) => unreachable!("same device handled above"),
        }
    }

    /// Converts the element type (on the CPU; device tensors go through the host for now).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let dev = self.device();
        let host = self.to_device(&Device::Cpu)?;
        let cast = host.cpu_storage()?.cast(dtype);
        Tensor::from_cpu(self.shape.clone(), cast)?.to_device(&dev)
    }

    /// The storage itself, to be written in place: copied (on its device) only when another tensor
    /// shares it.
    pub fn into_storage(mut self) -> Result<Storage> {
        make_unique(&mut self.storage)?;
        Arc::try_unwrap(self.storage)
            .map_err(|_| Error::Invalid("a storage shared after copy on write".into()))
    }

    /// True when both tensors share one storage (no copy happened).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}, {}, {:?})", self.shape, self.dtype(), self.device())
    }
}

/// Copy-on-write access to a storage: copies (on its device) only when another tensor shares it.
fn make_unique(this: &mut Arc<Storage>) -> Result<&mut Storage> {
    if Arc::get_mut(this).is_none() {
        let copy = match &**this {
            Storage::Cpu(s) => Storage::Cpu(s.clone()),
            Storage::Cuda(s) => Storage::Cuda(s.try_clone()?),
            Storage::Meta(s) => Storage::Meta(s.copy()),
        };
        *this = Arc::new(copy);
    }
    Ok(Arc::get_mut(this).expect("unique after copy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_shares_storage_and_checks_numel() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        let r = t.reshape([3, 2]).unwrap();
        assert!(r.same_storage(&t));
        assert!(t.reshape([4, 2]).is_err());
    }

    #[test]
    fn into_storage_copies_only_a_shared_storage() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
        let b = a.clone();
        let Storage::Cpu(CpuStorage::F32(mut v)) = b.into_storage().unwrap() else {
            panic!("f32 on the CPU")
        };
        v[0] = 9.0;
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0], "the shared original is untouched");
        let Storage::Cpu(CpuStorage::F32(v)) = a.into_storage().unwrap() else { panic!("f32 on the CPU") };
        assert_eq!(v, vec![1.0, 2.0]);
    }

    #[test]
    fn copy_on_write_leaves_the_original_alone() {
        let a = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
        let mut b = a.clone();
        b.as_mut_slice::<f64>().unwrap()[0] = 9.0;
        assert_eq!(a.as_slice::<f64>().unwrap(), &[1.0, 2.0]);
        assert_eq!(b.as_slice::<f64>().unwrap(), &[9.0, 2.0]);
    }

    #[test]
    fn dtype_mismatch_is_an_error() {
        let a = Tensor::from_vec(vec![1.0f32], [1]).unwrap();
        assert!(matches!(a.as_slice::<f64>(), Err(Error::DType(_))));
        assert_eq!(a.to_dtype(DType::F64).unwrap().as_slice::<f64>().unwrap(), &[1.0]);
    }

    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        // On machines with a working GPU this opens it; elsewhere it must fail with a sentence.
        if let Err(e) = Device::parse("cuda") {
            let msg = e.to_string();
            assert!(msg.contains("CUDA") || msg.contains("cuda"), "unhelpful message: {msg}");
        }
        assert!(Device::parse("tpu").is_err());
    }
}
