//! Opening a face set and reading its image records with checked class labels.

use super::property::Property;
use crate::error::{DataError, Result};
use crate::recordio::{ImageHeader, RecordFile};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Where the images are among the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// insightface: record 0's labels (a, b); images are keys 1..a, identity records a..b.
    Insightface { images_end: u64, identities_end: u64 },
    /// No such record 0: every key is an image.
    Flat,
}

/// One image record: its key, class label, full header and encoded image bytes.
#[derive(Debug)]
pub struct Sample<'a> {
    pub key: u64,
    pub label: u32,
    pub header: ImageHeader,
    pub image: Cow<'a, [u8]>,
}

pub struct FaceSet {
    rec: RecordFile,
    property: Option<Property>,
    layout: Layout,
    image_keys: Vec<u64>,
}

impl FaceSet {
    /// `path` is a directory holding `train.rec` (+ `train.idx`, `property`) or a `.rec` file (with the
    /// `.idx` of the same stem and `property` beside it). Without `.idx` the `.rec` is scanned; without
    /// `property` the class count is unknown and labels are only checked to be non-negative integers.
    pub fn open(path: &Path) -> Result<FaceSet> {
        let rec = if path.is_dir() { path.join("train.rec") } else { path.to_path_buf() };
        let idx = rec.with_extension("idx");
        let prop = rec.parent().map(|d| d.join("property")).unwrap_or_else(|| PathBuf::from("property"));
        FaceSet::from_parts(
            &rec,
            idx.is_file().then_some(idx.as_path()),
            prop.is_file().then_some(prop.as_path()),
        )
    }

    pub fn from_parts(rec: &Path, idx: Option<&Path>, property: Option<&Path>) -> Result<FaceSet> {
        let property = property.map(Property::read).transpose()?;
        let rec = RecordFile::open_with_index(rec, idx)?;
        let (layout, image_keys) = find_images(&rec)?;
        if image_keys.is_empty() {
            return Err(DataError::Empty { path: rec.path().to_path_buf() });
        }
        Ok(FaceSet { rec, property, layout, image_keys })
    }

    pub fn len(&self) -> usize {
        self.image_keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_keys.is_empty()
    }

    pub fn image_keys(&self) -> &[u64] {
        &self.image_keys
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn property(&self) -> Option<Property> {
        self.property
    }

    pub fn classes(&self) -> Option<u32> {
        self.property.map(|p| p.classes)
    }

    pub fn records(&self) -> &RecordFile {
        &self.rec
    }

    pub fn path(&self) -> &Path {
        self.rec.path()
    }

    /// The i-th image (0-based position among image keys).
    pub fn sample(&self, i: usize) -> Result<Sample<'_>> {
        self.read_key(self.image_keys[i])
    }

    /// The image record under `key`, its label checked against [0, classes).
    pub fn read_key(&self, key: u64) -> Result<Sample<'_>> {
        let payload = self.rec.read(key)?;
        let path = self.rec.path();
        let (header, image_len) = {
            let (h, img) = ImageHeader::parse(&payload).map_err(|detail| DataError::BadHeader {
                path: path.to_path_buf(),
                key,
                detail,
            })?;
            (h, img.len())
        };
        self.check_id(key, &header)?;
        let label = checked_label(header.class_label(), self.classes(), path, key)?;
        let start = payload.len() - image_len;
        let image = match payload {
            Cow::Borrowed(b) => Cow::Borrowed(&b[start..]),
            Cow::Owned(mut v) => {
                v.drain(..start);
                Cow::Owned(v)
            }
        };
        Ok(Sample { key, label, header, image })
    }

    /// MXNet's `im2rec` and insightface's packers write each record's key into its header `id` and the
    /// `.idx`: a header naming another key means the index points at the wrong record. `id` 0 is taken
    /// as "not recorded" (some writers leave it unset; record 0 holds it by right), and a scanned file
    /// has no keys of its own to compare.
    fn check_id(&self, key: u64, header: &ImageHeader) -> Result<()> {
        match self.rec.index_line(key) {
            Some((idx, line)) if header.id != 0 && header.id != key => Err(DataError::BadLine {
                path: idx.to_path_buf(),
                line,
                detail: format!(
                    "key {key} points at a record whose header names key {} ({}): the index and the .rec disagree",
                    header.id,
                    self.rec.path().display()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// insightface's identity records: for each identity, the image key range [start, end).
    pub fn identity_ranges(&self) -> Result<Vec<(u64, u64)>> {
        let Layout::Insightface { images_end, identities_end } = self.layout else { return Ok(Vec::new()) };
        let path = self.rec.path();
        (images_end..identities_end)
            .map(|key| {
                let payload = self.rec.read(key)?;
                let bad = |detail: String| DataError::BadHeader { path: path.to_path_buf(), key, detail };
                let (h, _) = ImageHeader::parse(&payload).map_err(bad)?;
                self.check_id(key, &h)?;
                if h.labels.len() < 2 || h.labels[0] > h.labels[1] || h.labels[0] < 1.0 {
                    return Err(bad(format!(
                        "identity record with labels {:?}, expected (start, end)",
                        h.labels
                    )));
                }
                Ok((h.labels[0] as u64, h.labels[1] as u64))
            })
            .collect()
    }
}

/// The class label as an integer; anything else names the record.
pub fn checked_label(label: f32, classes: Option<u32>, path: &Path, key: u64) -> Result<u32> {
    let in_range = label.is_finite() && label >= 0.0 && classes.is_none_or(|c| label < c as f32);
    if !in_range {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            key,
            label,
            classes: classes.unwrap_or(1 << 24),
        });
    }
    if label.fract() != 0.0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            key,
            detail: format!("label {label} is not an integer"),
        });
    }
    Ok(label as u32)
}

/// Reads record 0 the way insightface's `MXFaceDataset` does and lists the image keys.
fn find_images(rec: &RecordFile) -> Result<(Layout, Vec<u64>)> {
    if rec.contains(0) {
        let payload = rec.read(0)?;
        let path = rec.path();
        let bad = |detail: String| DataError::BadHeader { path: path.to_path_buf(), key: 0, detail };
        let (h, _) = ImageHeader::parse(&payload).map_err(bad)?;
        if h.flag > 0 {
            let l = &h.labels;
            if l.len() < 2 || !(l[0] >= 1.0 && l[0] <= l[1] && l[1] < 16_777_216.0) {
                return Err(bad(format!(
                    "record 0 labels {l:?} are not an identity range (a, b) with 1 <= a <= b"
                )));
            }
            let (a, b) = (l[0] as u64, l[1] as u64);
            if let Some(k) = (1..b).find(|&k| !rec.contains(k)) {
                return Err(bad(format!("record 0 announces keys 1..{b}, but key {k} is missing")));
            }
            return Ok((Layout::Insightface { images_end: a, identities_end: b }, (1..a).collect()));
        }
    }
    Ok((Layout::Flat, rec.keys().to_vec()))
}
