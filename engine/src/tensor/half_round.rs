//! Rounding f32/f64 values to the nearest bf16 or fp16 value while keeping the wider type: the CPU's
//! emulation of tensors a GPU holds in half precision. Round-to-nearest-even, as a conversion to the
//! 16-bit storage type would do; fp16 magnitudes from 65520 up become infinite (65504 is the largest
//! finite fp16, 65520 the tie that rounds to even, i.e. away from it), and fp16 subnormals (multiples of
//! 2^-24) are kept, so overflow and underflow behave like the real storage.

use crate::tensor::{DType, Tensor};
use crate::{Error, Result};
use rayon::prelude::*;

/// Smallest normal fp16, 2^-14.
const F16_MIN_NORMAL: f32 = 6.103_515_6e-5;
/// Magnitudes at or above this round to infinity in fp16.
const F16_OVERFLOW: f32 = 65_520.0;

/// `x` rounded to the nearest bf16 (ties to even), as f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    if x.is_nan() {
        // Quiet NaN with the payload's high bits, as the 16-bit conversion keeps them.
        return f32::from_bits((b & 0xFFFF_0000) | 0x0040_0000);
    }
    // Adding just under half an ulp (plus the kept lowest bit, for ties to even) carries exactly when the
    // dropped half rounds up; a carry out of the mantissa moves the exponent (up to infinity) as it should.
    f32::from_bits(b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
}

/// `x` rounded to the nearest fp16 (ties to even), as f32. Written without branches (every case is
/// computed, then one is selected) so that loops over it vectorize.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    let b = x.to_bits();
    let sign = b & 0x8000_0000;
    let ab = b & 0x7FFF_FFFF;
    let a = f32::from_bits(ab);
    // Normal range: keep 10 of f32's 23 mantissa bits, as in `round_bf16`.
    let normal = ab.wrapping_add(0x0FFF + ((ab >> 13) & 1)) & !0x1FFF;
    // Below 2^-14, 0.5 + a has an ulp of 2^-24, fp16's subnormal step: the addition rounds a to it
    // (to nearest even) and the subtraction is exact.
    let subnormal = ((a + 0.5) - 0.5).to_bits();
    let r = if a < F16_MIN_NORMAL { subnormal } else { normal };
    let r = if a >= F16_OVERFLOW { 0x7F80_0000 } else { r };
    // NaN (all comparisons above false): quiet, with the payload bits fp16 keeps.
    let r = if x.is_nan() { 0x7FC0_0000 | (b & 0x007F_E000) } else { r };
    f32::from_bits(sign | r)
}

/// `x` rounded once, directly, to the nearest bf16 (`to` BF16) or fp16 (otherwise); f64 serves the
/// gradient checks. (The half crate's f64 conversion goes through f32 first, which can round twice.)
pub fn round_f64(x: f64, to: DType) -> f64 {
    // (significand bits, smallest normal exponent, largest finite value)
    let (bits, emin, max) = match to {
        DType::BF16 => (8, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127)),
        _ => (11, -14, 65504.0),
    };
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    let e = ((a.to_bits() >> 52) as i32 - 1023).max(emin);
    // Dividing by a power of two is exact, so only round_ties_even rounds.
    let quantum = 2f64.powi(e - (bits - 1));
    let r = (a / quantum).round_ties_even() * quantum;
    let r = if r > max { f64::INFINITY } else { r };
    r.copysign(x)
}

fn check_target(to: DType) -> Result<()> {
    match to {
        DType::F16 | DType::BF16 => Ok(()),
        other => Err(Error::DType(format!("half-precision rounding targets f16 or bf16, not {other}"))),
    }
}

/// Elements per rayon task: below this, threading costs more than the rounding.
const CHUNK: usize = 1 << 14;

fn round_slice_f32(v: &mut [f32], to: DType) {
    // One monomorphic loop per type (no function pointer), so each vectorizes.
    if to == DType::BF16 {
        v.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|e| *e = round_bf16(*e)));
    } else {
        v.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|e| *e = round_f16(*e)));
    }
}

/// A copy of `t` with every element rounded to `to` (f16 or bf16), in `t`'s own dtype (f32 or f64).
pub fn round_tensor(t: &Tensor, to: DType) -> Result<Tensor> {
    check_target(to)?;
    if let (Ok(_), DType::F32) = (t.cpu_storage(), t.dtype()) {
        // One pass, reading the source and writing the copy (not a copy, then a pass over it).
        let src = t.as_slice::<f32>()?;
        let out: Vec<f32> = if to == DType::BF16 {
            src.par_iter().with_min_len(CHUNK).map(|&e| round_bf16(e)).collect()
        } else {
            src.par_iter().with_min_len(CHUNK).map(|&e| round_f16(e)).collect()
        };
        return Tensor::from_vec(out, t.shape().clone());
    }
    let mut out = t.clone();
    round_in_place(&mut out, to)?;
    Ok(out)
}

/// Rounds `t`'s elements to `to` in place (copying first only when its storage is shared).
pub fn round_in_place(t: &mut Tensor, to: DType) -> Result<()> {
    check_target(to)?;
    if t.cpu_storage().is_err() {
        // Off the CPU: a real round trip through the 16-bit type gives the same values.
        *t = t.to_dtype(to)?.to_dtype(t.dtype())?;
        return Ok(());
    }
    match t.dtype() {
        DType::F32 => round_slice_f32(t.as_mut_slice::<f32>()?, to),
        DType::F64 => t.as_mut_slice::<f64>()?.iter_mut().for_each(|e| *e = round_f64(*e, to)),
        other => {
            return Err(Error::DType(format!(
                "half-precision rounding of a {other} tensor (expected f32 or f64)"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits()
    }

    fn by_half_f16(x: f32) -> f32 {
        f16::from_f32(x).to_f32()
    }

    fn by_half_bf16(x: f32) -> f32 {
        bf16::from_f32(x).to_f32()
    }

    #[test]
    fn fp16_edge_cases_match_the_half_crate_and_ieee() {
        let cases: &[(f32, f32)] = &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (1.0, 1.0),
            (65504.0, 65504.0),
            // Below the tie rounds down to the largest finite value; the tie and above overflow.
            (65519.996, 65504.0),
            (65520.0, f32::INFINITY),
            (-65520.0, f32::NEG_INFINITY),
            (1e6, f32::INFINITY),
            (f32::MAX, f32::INFINITY),
            (f32::INFINITY, f32::INFINITY),
            // Ties between 1 and 1 + 2^-10 go to the even mantissa (1); 1 + 3·2^-11 goes up to 1 + 2^-9.
            (1.0 + 1.0 / 2048.0, 1.0),
            (1.0 + 3.0 / 2048.0, 1.0 + 2.0 / 1024.0),
            // Subnormals: multiples of 2^-24; half of 2^-24 ties to 0, 1.5·2^-24 ties to 2·2^-24.
            (5.960_464_5e-8, 5.960_464_5e-8),
            (2.980_232_2e-8, 0.0),
            (f32::from_bits(0x3300_0001), 5.960_464_5e-8),
            (8.940_697e-8, 1.192_092_9e-7),
            (1e-10, 0.0),
            (-1e-10, -0.0),
            // Just below 2^-14 rounds up into the smallest normal.
            (6.103_515e-5, 6.103_515_6e-5),
        ];
        for &(x, want) in cases {
            assert!(same(round_f16(x), want), "round_f16({x:e}) = {:e}, want {want:e}", round_f16(x));
            assert!(same(round_f16(x), by_half_f16(x)), "round_f16({x:e}) disagrees with half");
        }
        assert!(round_f16(f32::NAN).is_nan());
    }

    #[test]
    fn bf16_edge_cases_match_the_half_crate_and_ieee() {
        let ulp = 1.0 / 128.0; // bf16 keeps 7 mantissa bits
        let cases: &[(f32, f32)] = &[
            (0.0, 0.0),
            (-0.0, -0.0),
            (1.0 + ulp / 2.0, 1.0),
            (1.0 + 3.0 * ulp / 2.0, 1.0 + 2.0 * ulp),
            (f32::MAX, f32::INFINITY),
            (f32::NEG_INFINITY, f32::NEG_INFINITY),
            // Values from torch's float32 -> bfloat16 conversion.
            (3.0e38, 3.004_055_3e38),
            // bf16 keeps f32's range: f32 subnormals round on the same grid.
            (1e-40, 9.183_55e-41),
        ];
        for &(x, want) in cases {
            assert!(same(round_bf16(x), want), "round_bf16({x:e}) = {:e}, want {want:e}", round_bf16(x));
            assert!(same(round_bf16(x), by_half_bf16(x)), "round_bf16({x:e}) disagrees with half");
        }
        assert!(round_bf16(f32::NAN).is_nan());
    }

    #[test]
    fn a_sweep_of_bit_patterns_matches_the_half_crate_bit_for_bit() {
        // Every 97th pattern (odd stride: all low-bit residues are hit), NaNs included, both signs.
        let mut bits = 0u64;
        let mut nans = 0;
        while bits < 1 << 32 {
            let x = f32::from_bits(bits as u32);
            let (a, b) = (round_f16(x), by_half_f16(x));
            let (c, d) = (round_bf16(x), by_half_bf16(x));
            if x.is_nan() {
                nans += 1;
                assert!(a.is_nan() && b.is_nan() && c.is_nan() && d.is_nan());
            } else {
                assert!(same(a, b), "fp16 of {x:e} ({bits:#x}): {a:e} vs half {b:e}");
                assert!(same(c, d), "bf16 of {x:e} ({bits:#x}): {c:e} vs half {d:e}");
            }
            bits += 97;
        }
        assert!(nans > 0);
    }

    #[test]
    fn f64_rounding_agrees_with_f32_rounding_on_f32_values() {
        let mut bits = 0u64;
        while bits < 1 << 32 {
            let x = f32::from_bits(bits as u32);
            if !x.is_nan() {
                assert_eq!(round_f64(x as f64, DType::F16), round_f16(x) as f64, "{x:e}");
                assert_eq!(round_f64(x as f64, DType::BF16), round_bf16(x) as f64, "{x:e}");
            }
            bits += 9973;
        }
        assert!(round_f64(f64::NAN, DType::F16).is_nan());
        assert_eq!(round_f64(-1e300, DType::BF16), f64::NEG_INFINITY);
    }

    #[test]
    fn tensors_round_in_their_own_dtype_and_reject_other_targets() {
        let x = Tensor::from_vec(vec![1.0f32 + 1.0 / 1024.0, 70000.0, 1e-9], [3]).unwrap();
        let r = round_tensor(&x, DType::F16).unwrap();
        assert_eq!(r.dtype(), DType::F32);
        assert_eq!(r.to_vec::<f32>().unwrap(), vec![1.0 + 1.0 / 1024.0, f32::INFINITY, 0.0]);
        // The input is untouched (the copy did not write through shared storage).
        assert_eq!(x.to_vec::<f32>().unwrap()[1], 70000.0);
        let b = round_tensor(&x, DType::BF16).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(b, vec![1.0, 70144.0, round_bf16(1e-9)]);
        // f64 rounds once, directly: 1 + 2^-11 + 2^-40 is above the tie, so it rounds up.
        let y = Tensor::from_vec(vec![1.0f64 + 2f64.powi(-11) + 2f64.powi(-40)], [1]).unwrap();
        let ry = round_tensor(&y, DType::F16).unwrap().to_f64_vec().unwrap();
        assert_eq!(ry, vec![1.0 + 2f64.powi(-10)]);
        assert!(matches!(round_tensor(&x, DType::F32), Err(Error::DType(_))));
        let big: Vec<f32> = (0..100_000).map(|i| i as f32 * 0.37).collect();
        let rb = round_tensor(&Tensor::from_vec(big.clone(), [100_000]).unwrap(), DType::F16).unwrap();
        assert!(rb.to_vec::<f32>().unwrap().iter().zip(&big).all(|(r, x)| same(*r, by_half_f16(*x))));
    }
}
