//! One error type for the engine: every failure carries a sentence a user can act on.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Shapes of an op's operands do not fit together.
    Shape(String),
    /// An op got a dtype it does not support.
    DType(String),
    /// The operands live on different devices, or a device is unavailable.
    Device(String),
    /// The backend does not (yet) implement this op for this dtype.
    Unsupported(String),
    /// A file could not be read or written, or its content is malformed.
    Io(String),
    /// A value is out of its valid range (labels, hyper-parameters, NaN in training).
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::DType(m) => write!(f, "dtype error: {m}"),
            Error::Device(m) => write!(f, "device error: {m}"),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Io(m) => write!(f, "{m}"),
            Error::Invalid(m) => write!(f, "invalid value: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Builds an `Error::Shape` with `format!` arguments.
#[macro_export]
macro_rules! shape_err {
    ($($arg:tt)*) => { $crate::Error::Shape(format!($($arg)*)) };
}
