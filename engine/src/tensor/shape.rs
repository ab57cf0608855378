//! Shapes are plain dimension lists; tensors are always contiguous and row-major.

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Dimension `i`, or a shape error naming the op.
    pub fn dim(&self, i: usize) -> usize {
        self.0[i]
    }
    /// The four dims of an NHWC activation.
    pub fn nhwc(&self, op: &str) -> Result<(usize, usize, usize, usize)> {
        match self.0[..] {
            [n, h, w, c] => Ok((n, h, w, c)),
            _ => Err(Error::Shape(format!("{op}: expected an NHWC tensor of rank 4, got {self}"))),
        }
    }
    /// The two dims of a matrix.
    pub fn matrix(&self, op: &str) -> Result<(usize, usize)> {
        match self.0[..] {
            [r, c] => Ok((r, c)),
            _ => Err(Error::Shape(format!("{op}: expected a rank-2 tensor, got {self}"))),
        }
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}
