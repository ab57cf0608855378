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
//! Reading: [`faceset::FaceSet::open`] (directory or `.rec`), [`recordio::RecordFile`] for raw records,
//! [`verification::read_pair_set`] for `.bin` sets and pair lists.
//!
//! Training batches:
//!
//! ```no_run
//! # fn demo() -> datasets::Result<()> {
//! use datasets::{augment::AugmentConfig, faceset::FaceSet, loader::{Loader, LoaderConfig, Pixels}};
//! let set = std::sync::Arc::new(FaceSet::open("data/faces_emore".as_ref())?);
//! let cfg = LoaderConfig { batch_size: 128, seed: 1, augment: AugmentConfig::default(), ..LoaderConfig::default() };
//! let loader = Loader::new(set, cfg)?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?; // f32 NHWC in [-1, 1] (or u8 NHWC), labels, keys, AdaFace information ratios
//!     if let Pixels::F32(x) = &batch.pixels { assert_eq!(x.len(), batch.len() * 112 * 112 * 3); }
//! }
//! # Ok(()) }
//! ```

pub mod augment;
pub mod demo;
pub mod error;
pub mod faceset;
pub mod image;
pub mod image_list;
pub mod loader;
pub mod matlab;
pub mod pickle;
pub mod recordio;
pub mod rng;
pub mod synth;
pub mod tinyface;
pub mod verification;

pub use error::{DataError, Result};

#[doc(hidden)]
pub mod testutil;
