//! One error type for the crate: every variant names the file and the byte offset, record key or line
//! where the problem was found, so a user with a broken 100 GB set knows where to look.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum DataError {
    /// The file does not exist.
    Missing { path: PathBuf },
    /// Any other I/O failure (permissions, disk full, ...).
    Io { path: PathBuf, source: std::io::Error },
    /// The file ends inside a record header or payload.
    Truncated { path: PathBuf, offset: u64, needed: u64, available: u64 },
    /// A record does not start with 0xced7230a.
    BadMagic { path: PathBuf, offset: u64, found: u32 },
    /// A record's length word points past the end of the file.
    LengthPastEnd { path: PathBuf, offset: u64, length: u64, file_len: u64 },
    /// Continuation flags out of order (e.g. a middle part without a first part).
    BadContinuation { path: PathBuf, offset: u64, cflag: u32, detail: &'static str },
    /// A malformed line in a text file (.idx, property, list, pairs).
    BadLine { path: PathBuf, line: usize, detail: String },
    /// An `.idx` offset that does not point at the start of a record.
    OffsetNotAtRecord { index: PathBuf, line: usize, key: u64, offset: u64, rec: PathBuf, detail: String },
    /// A key asked for that the index does not hold.
    UnknownKey { path: PathBuf, key: u64 },
    /// A record payload too short for its image header or labels, or with impossible values.
    BadHeader { path: PathBuf, key: u64, detail: String },
    /// A class label outside [0, classes).
    LabelOutOfRange { path: PathBuf, key: u64, label: f32, classes: u32 },
    /// A set without a single image.
    Empty { path: PathBuf },
    /// An image that cannot be decoded (or encoded).
    Image { path: PathBuf, record: String, detail: String },
    /// A malformed or unsupported pickle in a `.bin` verification set.
    Pickle { path: PathBuf, offset: u64, detail: String },
    /// A malformed or unsupported MAT file (MATLAB level 5).
    Matlab { path: PathBuf, offset: u64, detail: String },
    /// Invalid arguments to a writer or loader.
    Invalid { what: String },
}

pub type Result<T> = std::result::Result<T, DataError>;

impl DataError {
    /// Maps an I/O error on `path`, turning "not found" into `Missing`.
    pub fn io(path: &Path, source: std::io::Error) -> DataError {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing { path: path.to_path_buf() }
        } else {
            DataError::Io { path: path.to_path_buf(), source }
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DataError::*;
        match self {
            Missing { path } => write!(f, "{}: file not found", path.display()),
            Io { path, source } => write!(f, "{}: {source}", path.display()),
            Truncated { path, offset, needed, available } => write!(
                f,
                "{}: truncated at byte {offset}: needs {needed} bytes, {available} left",
                path.display()
            ),
            BadMagic { path, offset, found } => write!(
                f,
                "{}: no RecordIO magic at byte {offset} (found 0x{found:08x}, expected 0xced7230a)",
                path.display()
            ),
            LengthPastEnd { path, offset, length, file_len } => write!(
                f,
                "{}: record at byte {offset} claims {length} bytes, past the end of the file ({file_len} bytes)",
                path.display()
            ),
            BadContinuation { path, offset, cflag, detail } => {
                write!(f, "{}: record part at byte {offset} (cflag {cflag}): {detail}", path.display())
            }
            BadLine { path, line, detail } => write!(f, "{}:{line}: {detail}", path.display()),
            OffsetNotAtRecord { index, line, key, offset, rec, detail } => write!(
                f,
                "{}:{line}: key {key} points at byte {offset} of {}, which is not a record: {detail}",
                index.display(),
                rec.display()
            ),
            UnknownKey { path, key } => write!(f, "{}: no record with key {key}", path.display()),
            BadHeader { path, key, detail } => write!(f, "{}: record {key}: {detail}", path.display()),
            LabelOutOfRange { path, key, label, classes } => write!(
                f,
                "{}: record {key}: label {label} outside [0, {classes})",
                path.display()
            ),
            Empty { path } => write!(f, "{}: the set holds no images", path.display()),
            Image { path, record, detail } if record.is_empty() => write!(f, "{}: bad image: {detail}", path.display()),
            Image { path, record, detail } => write!(f, "{}: {record}: bad image: {detail}", path.display()),
            Pickle { path, offset, detail } => write!(f, "{}: pickle byte {offset}: {detail}", path.display()),
            Matlab { path, offset, detail } => write!(f, "{}: MAT file byte {offset}: {detail}", path.display()),
            Invalid { what } => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
