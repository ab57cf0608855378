//! Verification pair sets: insightface's `.bin` pickles and plain text pair lists.

mod pairs;
mod pickle_read;
mod pickle_write;

pub use pairs::read_pairs_list;
pub use pickle_read::{parse_bin, read_bin};
pub use pickle_write::write_bin;

use crate::error::{DataError, Result};
use std::path::Path;

/// `images[2i]` and `images[2i + 1]` form pair i; `same[i]` says whether they show one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSet {
    pub images: Vec<Vec<u8>>,
    pub same: Vec<bool>,
}

impl PairSet {
    pub fn pairs(&self) -> usize {
        self.same.len()
    }

    fn checked(self, path: &Path) -> Result<PairSet> {
        if self.same.is_empty() {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        if self.images.len() != 2 * self.same.len() {
            return Err(DataError::Invalid {
                what: format!(
                    "{}: {} images for {} pairs (need exactly 2 per pair)",
                    path.display(),
                    self.images.len(),
                    self.same.len()
                ),
            });
        }
        Ok(self)
    }
}

/// Reads a `.bin` pickle, or a text pairs list for any other extension.
pub fn read_pair_set(path: &Path) -> Result<PairSet> {
    if path.extension().is_some_and(|e| e == "bin") {
        read_bin(path)
    } else {
        read_pairs_list(path)
    }
}
