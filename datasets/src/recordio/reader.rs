//! Random access to a memory-mapped `.rec` by key, through its `.idx` or, without one, a scan.

use super::framing::{decode_lrecord, pad4, FIRST, LAST, MAGIC, MIDDLE, WHOLE};
use super::header::ImageHeader;
use super::index::{parse_index, Index};
use crate::error::{DataError, Result};
use memmap2::Mmap;
use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

enum Bytes {
    Map(Mmap),
    /// mmap cannot map an empty file.
    Empty,
    /// In-memory contents (fuzzing, tests).
    Owned(Vec<u8>),
}

pub struct RecordFile {
    path: PathBuf,
    /// The `.idx` that gave the offsets, if any (for error messages).
    index_path: Option<PathBuf>,
    bytes: Bytes,
    index: Index,
}

/// Two keys at one offset would read one record twice (and never the one the second key was for).
fn check_offsets_unique(index: &Index, idx: &Path) -> Result<()> {
    let mut by_offset: Vec<usize> = (0..index.len()).collect();
    by_offset.sort_by_key(|&i| (index.offsets[i], index.lines[i]));
    for w in by_offset.windows(2) {
        let (a, b) = (w[0], w[1]);
        if index.offsets[a] == index.offsets[b] {
            return Err(DataError::BadLine {
                path: idx.to_path_buf(),
                line: index.lines[b] as usize,
                detail: format!(
                    "key {} points at byte {}, the record of key {} (line {}): one record cannot hold two keys",
                    index.keys[b], index.offsets[b], index.keys[a], index.lines[a]
                ),
            });
        }
    }
    Ok(())
}

impl RecordFile {
    /// Opens `rec` with the `.idx` beside it (same stem) when there is one, else scans the file.
    pub fn open(rec: &Path) -> Result<RecordFile> {
        let idx = rec.with_extension("idx");
        RecordFile::open_with_index(rec, idx.is_file().then_some(idx.as_path()))
    }

    /// Opens `rec` with the given index, or scans it when `idx` is None.
    pub fn open_with_index(rec: &Path, idx: Option<&Path>) -> Result<RecordFile> {
        let file = File::open(rec).map_err(|e| DataError::io(rec, e))?;
        let len = file.metadata().map_err(|e| DataError::io(rec, e))?.len();
        let bytes = if len == 0 {
            Bytes::Empty
        } else {
            // SAFETY: the map is read-only; a file changed under us gives wrong bytes, which the
            // parser checks like any other bad input, not undefined behaviour in safe code we own.
            Bytes::Map(unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(rec, e))?)
        };
        let index = match idx {
            Some(idx) => Some((std::fs::read_to_string(idx).map_err(|e| DataError::io(idx, e))?, idx)),
            None => None,
        };
        RecordFile::build(rec, bytes, index.as_ref().map(|(t, p)| (t.as_str(), *p)))
    }

    /// A record file held in memory; `name` stands in for the path in errors, `index` is `.idx` text.
    pub fn from_bytes(name: &Path, bytes: Vec<u8>, index: Option<&str>) -> Result<RecordFile> {
        let idx_name = name.with_extension("idx");
        RecordFile::build(name, Bytes::Owned(bytes), index.map(|t| (t, idx_name.as_path())))
    }

    fn build(rec: &Path, bytes: Bytes, index: Option<(&str, &Path)>) -> Result<RecordFile> {
        let mut rf = RecordFile { path: rec.to_path_buf(), index_path: None, bytes, index: Index::default() };
        let len = rf.data().len() as u64;
        match index {
            Some((text, idx)) => {
                let index = parse_index(text, idx)?;
                // Only bounds and uniqueness here: checking each magic would read the whole file at open.
                check_offsets_unique(&index, idx)?;
                if let Some(i) = (0..index.len()).find(|&i| index.offsets[i].saturating_add(8) > len) {
                    return Err(DataError::OffsetNotAtRecord {
                        index: idx.to_path_buf(),
                        line: index.lines[i] as usize,
                        key: index.keys[i],
                        offset: index.offsets[i],
                        rec: rec.to_path_buf(),
                        detail: format!("past the end of the file ({len} bytes)"),
                    });
                }
                rf.index = index;
                rf.index_path = Some(idx.to_path_buf());
            }
            None => rf.index = rf.scan()?,
        }
        Ok(rf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn index_path(&self) -> Option<&Path> {
        self.index_path.as_deref()
    }

    /// The `.idx` file and line that gave `key` its offset (`None` when the file was scanned).
    pub fn index_line(&self, key: u64) -> Option<(&Path, usize)> {
        let idx = self.index_path.as_deref()?;
        Some((idx, self.index.lines[self.index.position(key)?] as usize))
    }

    pub fn data(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Map(m) => m,
            Bytes::Empty => &[],
            Bytes::Owned(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Keys in file (index) order.
    pub fn keys(&self) -> &[u64] {
        &self.index.keys
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.position(key).is_some()
    }

    /// The payload of record `key`, joined from its parts (borrowed when it is stored whole).
    pub fn read(&self, key: u64) -> Result<Cow<'_, [u8]>> {
        let pos =
            self.index.position(key).ok_or_else(|| DataError::UnknownKey { path: self.path.clone(), key })?;
        let offset = self.index.offsets[pos];
        if let Some(idx) = &self.index_path {
            // A bad offset from the index is the index's fault: say so, with its line.
            if let Err(detail) = self.check_record_start(offset) {
                return Err(DataError::OffsetNotAtRecord {
                    index: idx.clone(),
                    line: self.index.lines[pos] as usize,
                    key,
                    offset,
                    rec: self.path.clone(),
                    detail,
                });
            }
        }
        Ok(self.read_at(offset)?.0)
    }

    fn check_record_start(&self, offset: u64) -> std::result::Result<(), String> {
        let d = self.data();
        let o = offset as usize;
        if !o.is_multiple_of(4) {
            return Err("offset is not a multiple of 4".into());
        }
        let magic = u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
        if magic != MAGIC {
            return Err(format!("found 0x{magic:08x} instead of the magic"));
        }
        let (cflag, _) = decode_lrecord(u32::from_le_bytes(d[o + 4..o + 8].try_into().unwrap()));
        if cflag != WHOLE && cflag != FIRST {
            return Err(format!("that is a continuation part (cflag {cflag}), not a record start"));
        }
        Ok(())
    }

    /// Reads the record whose first part starts at `offset`; returns it and the offset after it.
    pub fn read_at(&self, offset: u64) -> Result<(Cow<'_, [u8]>, u64)> {
        let d = self.data();
        let file_len = d.len() as u64;
        let mut pos = offset;
        let mut joined: Option<Vec<u8>> = None;
        loop {
            if pos + 8 > file_len {
                return Err(DataError::Truncated {
                    path: self.path.clone(),
                    offset: pos,
                    needed: 8,
                    available: file_len.saturating_sub(pos),
                });
            }
            let p = pos as usize;
            let magic = u32::from_le_bytes(d[p..p + 4].try_into().unwrap());
            if magic != MAGIC {
                return Err(DataError::BadMagic { path: self.path.clone(), offset: pos, found: magic });
            }
            let (cflag, length) = decode_lrecord(u32::from_le_bytes(d[p + 4..p + 8].try_into().unwrap()));
            let start = pos + 8;
            if start + length as u64 > file_len {
                return Err(DataError::LengthPastEnd {
                    path: self.path.clone(),
                    offset: pos,
                    length: length as u64,
                    file_len,
                });
            }
            let body = &d[start as usize..(start + length as u64) as usize];
            // The last record may lack its padding; tolerate that (dmlc's reader does too).
            let next = (start + pad4(length as u64)).min(file_len);
            let bad =
                |detail| DataError::BadContinuation { path: self.path.clone(), offset: pos, cflag, detail };
            match (cflag, joined.as_mut()) {
                (WHOLE, None) => return Ok((Cow::Borrowed(body), next)),
                (FIRST, None) => joined = Some(body.to_vec()),
                (MIDDLE | LAST, Some(buf)) => {
                    buf.extend_from_slice(&MAGIC.to_le_bytes());
                    buf.extend_from_slice(body);
                    if cflag == LAST {
                        return Ok((Cow::Owned(joined.unwrap()), next));
                    }
                }
                (MIDDLE | LAST, None) => return Err(bad("continuation part without a first part")),
                (WHOLE | FIRST, Some(_)) => {
                    return Err(bad("new record before the last part of a split record"))
                }
                _ => return Err(bad("unknown continuation flag (valid: 0..3)")),
            }
            pos = next;
        }
    }

    /// Walks the whole file; keys are record positions, except for insightface's layout where record 0
    /// (the identity-range header) is written last: that one gets key 0 and the others 1.. in order.
    fn scan(&self) -> Result<Index> {
        let file_len = self.data().len() as u64;
        let mut offsets = Vec::new();
        let mut pos = 0u64;
        while pos < file_len {
            offsets.push(pos);
            pos = self.read_at(pos)?.1;
        }
        let n = offsets.len() as u64;
        let mut keys: Vec<u64> = (0..n).collect();
        if n >= 2 && self.looks_like_trailing_header0(offsets[n as usize - 1], n) {
            keys = (1..n).chain(std::iter::once(0)).collect();
        }
        let lines = vec![0; offsets.len()];
        Index::new(keys, offsets, lines, &self.path)
    }

    fn looks_like_trailing_header0(&self, offset: u64, n: u64) -> bool {
        let Ok((payload, _)) = self.read_at(offset) else { return false };
        let Ok((h, rest)) = ImageHeader::parse(&payload) else { return false };
        h.flag == 2
            && rest.is_empty()
            && h.labels[1] == n as f32
            && h.labels[0] >= 1.0
            && h.labels[0] <= h.labels[1]
    }

    /// Reads every record once, in file order (for `inspect` and tests): the first error, if any.
    pub fn verify_all(&self) -> Result<()> {
        for &k in &self.index.keys {
            self.read(k)?;
        }
        Ok(())
    }
}
