//! Where a tensor's elements live. The CPU variant is a plain typed vector; the CUDA variant is owned by
//! the CUDA backend.

use super::half_round::round_f64;
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
        if !b.len().is_multiple_of(dtype.size_in_bytes()) {
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
            // half's from_f64 drops the low 32 bits of the f64 before rounding, so f32 values a hair
            // above a tie round down (found by the CUDA emulation's exact cast check); round_f64 rounds
            // once and correctly, after which the conversion is exact.
            DType::F16 => {
                CpuStorage::F16(v.iter().map(|&x| f16::from_f64(round_f64(x, DType::F16))).collect())
            }
            DType::BF16 => {
                CpuStorage::BF16(v.iter().map(|&x| bf16::from_f64(round_f64(x, DType::BF16))).collect())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 values just above a bf16/fp16 tie (the tie's bit plus one of f32's lowest three mantissa bits)
    /// round up, as cvt.rn on a GPU does; and ordinary values match half's own f32 conversion.
    #[test]
    fn cast_to_16_bits_rounds_once_to_nearest_even() {
        let above_bf16_tie = f32::from_bits(0x3F80_8001); // 1 + 2^-8 + 2^-23: just above halfway
        let above_f16_tie = f32::from_bits(0x3F80_1001); // 1 + 2^-11 + 2^-23
        let mut xs =
            vec![above_bf16_tie, -above_bf16_tie, above_f16_tie, 1.0 + 2f32.powi(-8), 65519.0, 65520.0];
        xs.extend((0..2000).map(|i| ((i as f32) * 0.7371).sin() * 10f32.powi(i % 7 - 3)));
        let s = CpuStorage::F32(xs.clone());
        let CpuStorage::BF16(b) = s.cast(DType::BF16) else { panic!("not bf16") };
        let CpuStorage::F16(h) = s.cast(DType::F16) else { panic!("not f16") };
        assert_eq!(b[0].to_bits(), 0x3F81, "just above the tie rounds up");
        assert_eq!(b[1].to_bits(), 0xBF81);
        assert_eq!(h[2].to_bits(), 0x3C01);
        assert_eq!(b[3].to_bits(), 0x3F80, "an exact tie rounds to even");
        assert_eq!(h[4].to_bits(), 0x7BFF, "65519 rounds to the largest finite fp16");
        assert!(h[5].is_infinite(), "65520 overflows");
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(b[i], bf16::from_f32(x), "bf16 of {x}");
            assert_eq!(h[i], f16::from_f32(x), "f16 of {x}");
        }
    }
}
