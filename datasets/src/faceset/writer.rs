//! Writing a face set as insightface's tools do: images at keys 1..a, one identity record per class at
//! keys a..b (labels = that class's image key range), then record 0 (labels = (a, b)) written last, and
//! `property`. All files go to temporary names renamed at `finish`.

use super::property::Property;
use crate::error::{DataError, Result};
use crate::image::{encode_jpeg, Image};
use crate::recordio::{pack_record, ImageHeader, RecordWriter};
use std::path::{Path, PathBuf};

pub struct FaceSetWriter {
    dir: PathBuf,
    records: RecordWriter,
    property: Property,
    next_key: u64,
    /// Per class, the key range of its images (start == end: none yet).
    ranges: Vec<(u64, u64)>,
    last_label: Option<u32>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceSetSummary {
    pub dir: PathBuf,
    pub images: u64,
    pub classes: u32,
    pub height: u32,
    pub width: u32,
}

impl FaceSetWriter {
    /// Starts `dir/train.rec`, `dir/train.idx` (creating `dir`); `property` is written at `finish`.
    pub fn create(dir: &Path, classes: u32, height: u32, width: u32) -> Result<FaceSetWriter> {
        if classes == 0 || height == 0 || width == 0 {
            return Err(DataError::Invalid {
                what: format!(
                    "face set needs classes, height and width > 0 (got {classes}, {height}, {width})"
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let records = RecordWriter::create(&dir.join("train.rec"), &dir.join("train.idx"))?;
        Ok(FaceSetWriter {
            dir: dir.to_path_buf(),
            records,
            property: Property { classes, height, width },
            next_key: 1,
            ranges: vec![(0, 0); classes as usize],
            last_label: None,
        })
    }

    /// Adds one encoded image (JPEG or PNG bytes, stored as given) of class `label`. `extra` labels, if
    /// any, are stored after the class label in a multi-label header (flag = 1 + extra.len()), which
    /// insightface's loader reads as class = first label. Classes must come in non-decreasing order,
    /// as identity ranges are contiguous key ranges. Returns the record key.
    pub fn add(&mut self, label: u32, extra: &[f32], encoded: &[u8]) -> Result<u64> {
        if label >= self.property.classes {
            return Err(DataError::Invalid {
                what: format!("image label {label} outside [0, {})", self.property.classes),
            });
        }
        if self.last_label.is_some_and(|l| label < l) {
            return Err(DataError::Invalid {
                what: format!("labels must not decrease (got {label} after {})", self.last_label.unwrap()),
            });
        }
        let key = self.next_key;
        let header = if extra.is_empty() {
            ImageHeader::single(label as f32, key)
        } else {
            let mut labels = vec![label as f32];
            labels.extend_from_slice(extra);
            ImageHeader::multi(labels, key)
        };
        self.records.write(key, &pack_record(&header, encoded))?;
        let r = &mut self.ranges[label as usize];
        if r.0 == r.1 {
            *r = (key, key + 1);
        } else {
            r.1 = key + 1;
        }
        self.last_label = Some(label);
        self.next_key += 1;
        Ok(key)
    }

    /// Adds raw RGB pixels, JPEG-encoded at `quality` (pack_img's default is 95); the image must have
    /// the set's size.
    pub fn add_pixels(&mut self, label: u32, extra: &[f32], img: &Image, quality: u8) -> Result<u64> {
        let Property { height, width, .. } = self.property;
        if (img.height, img.width) != (height as usize, width as usize) {
            return Err(DataError::Invalid {
                what: format!("{}x{} image for a set of {height}x{width}", img.height, img.width),
            });
        }
        let jpg = encode_jpeg(img, quality).map_err(|what| DataError::Invalid { what })?;
        self.add(label, extra, &jpg)
    }

    pub fn images(&self) -> u64 {
        self.next_key - 1
    }

    /// Writes the identity records and record 0, then renames everything into place.
    pub fn finish(mut self) -> Result<FaceSetSummary> {
        let images = self.images();
        if images == 0 {
            return Err(DataError::Empty { path: self.dir.join("train.rec") });
        }
        let first_identity = self.next_key;
        let mut key = first_identity;
        for &(start, end) in &self.ranges {
            // A class without images gets an empty range at the end of the images.
            let (s, e) = if start == end { (first_identity, first_identity) } else { (start, end) };
            let h = ImageHeader::multi(vec![s as f32, e as f32], key);
            self.records.write(key, &pack_record(&h, &[]))?;
            key += 1;
        }
        let h0 = ImageHeader::multi(vec![first_identity as f32, key as f32], 0);
        self.records.write(0, &pack_record(&h0, &[]))?;
        self.records.finish()?;
        self.property.write(&self.dir.join("property"))?;
        let Property { classes, height, width } = self.property;
        Ok(FaceSetSummary { dir: self.dir, images, classes, height, width })
    }
}

/// Packs in-memory encoded images into `dir` (`train.rec`, `train.idx`, `property`), e.g. for generated
/// data. `items` yields (class label, encoded JPEG/PNG bytes) with labels non-decreasing.
pub fn write_face_set<I>(
    dir: &Path,
    items: I,
    classes: u32,
    height: u32,
    width: u32,
) -> Result<FaceSetSummary>
where
    I: IntoIterator<Item = (u32, Vec<u8>)>,
{
    let mut w = FaceSetWriter::create(dir, classes, height, width)?;
    for (label, bytes) in items {
        w.add(label, &[], &bytes)?;
    }
    w.finish()
}
