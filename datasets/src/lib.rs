//! Data: MXNet RecordIO, insightface face sets and verification sets, decoding, augmentation, loader.
//! Does not depend on `engine`.

pub mod error;
pub mod recordio;

pub use error::{DataError, Result};

#[doc(hidden)]
pub mod testutil;
