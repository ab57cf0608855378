//! Where a tensor's elements live. The CPU variant is a plain typed vector; the CUDA variant is owned by
//! the CUDA backend.

use super::DType;
use crate::backend::cuda::CudaStorage;
use half::{bf16, f16};

pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
        }
    }
    /// Little-endian bytes, as safetensors stores them.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v).to_vec(),
            CpuStorage::F64(v) => bytemuck::cast_slice(v).to_vec(),
            CpuStorage::F16(v) => bytemuck::cast_slice(v).to_vec(),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v).to_vec(),
            CpuStorage::I64(v) => bytemuck::cast_slice(v).to_vec(),
        }
    }
    /// Inverse of `to_le_bytes`; `None` when the byte count does not fit the dtype.
    pub fn from_le_bytes(dtype: DType, b: &[u8]) -> Option<Self> {
        if b.len() % dtype.size_in_bytes() != 0 {
            return None;
        }
        // pod_collect_to_vec copies, so unaligned input is fine.
        Some(match dtype {
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec(b)),
            DType::F64 => CpuStorage::F64(bytemuck::pod_collect_to_vec(b)),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec(b)),
            DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec(b)),
            DType::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec(b)),
        })
    }
    /// Every element as f64 (for tests, metrics and conversions).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// Converts to another dtype (round to nearest; float to i64 truncates).
    pub fn cast(&self, to: DType) -> Self {
        if self.dtype() == to {
            return self.clone();
        }
        let v = self.to_f64_vec();
        match to {
            DType::F32 => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F64 => CpuStorage::F64(v),
            DType::F16 => CpuStorage::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::I64 => CpuStorage::I64(v.iter().map(|&x| x as i64).collect()),
        }
    }
}

/// Rust element types that map one to one onto a `CpuStorage` variant.
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> CpuStorage;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}

macro_rules! impl_element {
    ($t:ty, $v:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$v;
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$v(v)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_element!(f32, F32);
impl_element!(f64, F64);
impl_element!(f16, F16);
impl_element!(bf16, BF16);
impl_element!(i64, I64);
