//! The training precision (`--precision`, and each preset's), and what it means on the CPU.
//!
//! Mixed precision keeps master weights, optimizer state and batch-norm statistics in f32 and holds the
//! tensors around the GEMMs in 16 bits. The CPU computes in f32 throughout and emulates the rest: the
//! trainer gives its tape the 16-bit type (`Tape::set_autocast`), and every GEMM-running op (convolution,
//! linear, matmul, the head's classifier) then rounds what a GPU would store in half precision: its
//! operands (activations, and the weights as the GEMM reads them), its output, and the gradients it reads
//! and writes (round-to-nearest-even; fp16 beyond 65504 becomes inf). IResNet's final fc runs outside
//! autocast, in f32, as insightface's iresnet does. Overflow and underflow therefore
//! happen where they would on the GPU, so fp16's loss scaling is exercised for real. The CPU gains no
//! speed from it: it computes in f32 and pays for the rounding passes (about 20% on the demo's steps).

use crate::tensor::DType;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    /// With dynamic loss scaling (`train::loss_scale`).
    Fp16,
}

impl Precision {
    /// The 16-bit type the GEMMs' tensors are held in; `None` for f32.
    pub fn half_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::Fp16 => Some(DType::F16),
        }
    }

    /// fp16's narrow range needs the loss scaled; bf16 has f32's range and does not.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    /// The command line's names; `fp32`, `f16` and `float16`-style aliases are accepted too.
    fn from_str(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            _ => Err(Error::Invalid(format!("precision '{s}': expected f32, bf16 or fp16"))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for p in [Precision::F32, Precision::Bf16, Precision::Fp16] {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("float16".parse::<Precision>().unwrap(), Precision::Fp16);
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("fp8") && e.contains("bf16"), "{e}");
        assert_eq!(Precision::default(), Precision::F32);
    }

    #[test]
    fn only_fp16_scales_the_loss_and_f32_rounds_nothing() {
        assert_eq!(Precision::F32.half_dtype(), None);
        assert_eq!(Precision::Bf16.half_dtype(), Some(DType::BF16));
        assert_eq!(Precision::Fp16.half_dtype(), Some(DType::F16));
        assert!(Precision::Fp16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling());
    }
}
