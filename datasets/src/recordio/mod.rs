//! MXNet RecordIO (dmlc-core's container) and the 24-byte image-record header.
//!
//! A `.rec` file is a sequence of `magic, lrecord, payload, padding to 4 bytes`; a payload that contains
//! the magic at a 4-byte-aligned offset is stored split at those points (continuation flags 1, 2, 3) with
//! the magic words dropped, and the reader puts them back.

mod framing;
mod header;
mod index;
mod reader;
mod writer;

pub use framing::{pad4, split_payload, Part, MAGIC};
pub use header::{pack_record, ImageHeader, IR_SIZE};
pub use index::{parse_index, Index};
pub use reader::RecordFile;
pub use writer::{temp_name, RecordWriter};

#[cfg(test)]
mod tests;
