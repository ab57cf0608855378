//! Writes `.rec` + `.idx` as MXNet's `MXIndexedRecordIO` does, to temporary names renamed on `finish`.

use super::framing::{encode_lrecord, split_payload, MAGIC, MAX_LENGTH};
use crate::error::{DataError, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct RecordWriter {
    rec: PathBuf,
    idx: PathBuf,
    rec_tmp: PathBuf,
    idx_tmp: PathBuf,
    rec_out: BufWriter<File>,
    idx_out: BufWriter<File>,
    pos: u64,
    finished: bool,
}

/// `path` with `.tmp` appended to its file name.
pub fn temp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

impl RecordWriter {
    pub fn create(rec: &Path, idx: &Path) -> Result<RecordWriter> {
        let rec_tmp = temp_name(rec);
        let idx_tmp = temp_name(idx);
        let rec_out = BufWriter::new(File::create(&rec_tmp).map_err(|e| DataError::io(&rec_tmp, e))?);
        let idx_out = BufWriter::new(File::create(&idx_tmp).map_err(|e| DataError::io(&idx_tmp, e))?);
        Ok(RecordWriter {
            rec: rec.to_path_buf(),
            idx: idx.to_path_buf(),
            rec_tmp,
            idx_tmp,
            rec_out,
            idx_out,
            pos: 0,
            finished: false,
        })
    }

    /// Appends one record under `key`; returns the byte offset it starts at.
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<u64> {
        if payload.len() > MAX_LENGTH as usize {
            return Err(DataError::Invalid {
                what: format!(
                    "record {key} is {} bytes; RecordIO allows at most {MAX_LENGTH}",
                    payload.len()
                ),
            });
        }
        let start = self.pos;
        let mut buf = Vec::with_capacity(payload.len() + 16);
        for part in split_payload(payload) {
            buf.extend_from_slice(&MAGIC.to_le_bytes());
            buf.extend_from_slice(&encode_lrecord(part.cflag, part.bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(part.bytes);
            buf.resize(buf.len().next_multiple_of(4), 0);
        }
        self.rec_out.write_all(&buf).map_err(|e| DataError::io(&self.rec_tmp, e))?;
        writeln!(self.idx_out, "{key}\t{start}").map_err(|e| DataError::io(&self.idx_tmp, e))?;
        self.pos += buf.len() as u64;
        Ok(start)
    }

    /// Flushes and renames the temporary files to their final names.
    pub fn finish(mut self) -> Result<()> {
        self.rec_out.flush().map_err(|e| DataError::io(&self.rec_tmp, e))?;
        self.idx_out.flush().map_err(|e| DataError::io(&self.idx_tmp, e))?;
        std::fs::rename(&self.rec_tmp, &self.rec).map_err(|e| DataError::io(&self.rec, e))?;
        std::fs::rename(&self.idx_tmp, &self.idx).map_err(|e| DataError::io(&self.idx, e))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        // An abandoned write leaves no half files behind.
        if !self.finished {
            let _ = std::fs::remove_file(&self.rec_tmp);
            let _ = std::fs::remove_file(&self.idx_tmp);
        }
    }
}
