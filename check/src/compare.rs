//! The one comparison every check uses: the norm-wise relative error ||ours - ref|| / ||ref|| (plain
//! ||ours|| when the reference is all zeros) against a threshold. A length, shape or dtype mismatch, or a
//! non-finite value of ours, never passes, and neither does NaN.

use engine::tape::gradcheck;
use engine::{Result, Tensor};

/// One comparison and its outcome.
#[derive(Debug, Clone)]
pub struct Compared {
    pub name: String,
    pub err: f64,
    pub tol: f64,
    /// What the reference is (the CPU backend, an f64 formula, a PyTorch fixture, ...).
    pub reference: &'static str,
}

impl Compared {
    /// NaN never passes.
    pub fn ok(&self) -> bool {
        self.err <= self.tol
    }

    /// The same comparison against another kind of reference.
    pub fn against(self, reference: &'static str) -> Compared {
        Compared { reference, ..self }
    }
}

/// Norm-wise relative error of `ours` against `reference`; infinite when the lengths differ or `ours`
/// holds a non-finite value.
pub fn rel_error(ours: &[f64], reference: &[f64]) -> f64 {
    if ours.len() != reference.len() || ours.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    gradcheck::rel_error(ours, reference)
}

/// `ours` against `reference` as values.
pub fn compare_values(
    name: impl Into<String>,
    ours: &[f64],
    reference: &[f64],
    tol: f64,
    what: &'static str,
) -> Compared {
    Compared { name: name.into(), err: rel_error(ours, reference), tol, reference: what }
}

/// `ours` against `reference` as tensors (any devices): their shapes and dtypes must agree too.
pub fn compare(name: impl Into<String>, ours: &Tensor, reference: &Tensor, tol: f64) -> Result<Compared> {
    let name = name.into();
    if ours.dims() != reference.dims() || ours.dtype() != reference.dtype() {
        return Ok(Compared { name, err: f64::INFINITY, tol, reference: "CPU backend" });
    }
    Ok(compare_values(name, &ours.to_f64_vec()?, &reference.to_f64_vec()?, tol, "CPU backend"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_mismatches_and_non_finite_values_fail() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, 2.1], [2]).unwrap();
        assert!(compare("same", &a, &a, 0.0).unwrap().ok());
        assert!(!compare("x", &a, &b, 1e-3).unwrap().ok());
        let nan = Tensor::from_vec(vec![f32::NAN, 2.0], [2]).unwrap();
        assert!(!compare("nan", &nan, &b, 1.0).unwrap().ok());
        assert!(!compare("shape", &a.reshape([1, 2]).unwrap(), &a, 1.0).unwrap().ok());
        assert!(!compare("dtype", &a.to_dtype(engine::DType::F64).unwrap(), &a, 1.0).unwrap().ok());
        assert!(!compare_values("length", &[1.0], &[1.0, 2.0], 1.0, "f64 formula").ok());
        let z = compare_values("zero reference", &[0.5], &[0.0], 1.0, "f64 formula");
        assert_eq!(z.err, 0.5);
    }
}
