//! Data: MXNet RecordIO, insightface face sets and verification sets, decoding, augmentation, loader.
//! Does not depend on `engine`.
//!
//! Writing a face set from memory (what the synthetic-data generator uses):
//!
//! ```no_run
//! # fn demo(jpegs: Vec<(u32, Vec<u8>)>) -> datasets::Result<()> {
//! use datasets::faceset::{write_face_set, FaceSetWriter};
//! // (label, encoded JPEG/PNG bytes), labels non-decreasing (identity ranges are contiguous):
//! write_face_set("out/train".as_ref(), jpegs, /*classes*/ 10, /*height*/ 112, /*width*/ 112)?;
//! // Or record by record, with extra per-image labels stored after the class label
//! // (multi-label header, read back as `Sample::header.labels`):
//! let mut w = FaceSetWriter::create("out/train".as_ref(), 10, 112, 112)?;
//! let pixels = datasets::image::Image::new(112, 112); // RGB HWC
//! w.add(0, &[0.3 /* e.g. degradation level */], &datasets::image::encode_jpeg(&pixels, 95).unwrap())?;
//! w.finish()?; // writes identity records, record 0, property; renames temp files into place
//! # Ok(()) }
//! ```
//!
//! Reading: [`faceset::FaceSet::open`] (directory or `.rec`), [`recordio::RecordFile`] for raw records.

pub mod augment;
pub mod error;
pub mod faceset;
pub mod image;
pub mod loader;
pub mod recordio;
pub mod rng;
pub mod synth;
pub mod verification;

pub use error::{DataError, Result};

#[doc(hidden)]
pub mod testutil;
