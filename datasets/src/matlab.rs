//! A reader for the subset of MATLAB's MAT-file level 5 format (MATLAB 5 to 7.x, not 7.3/HDF5) that data
//! set releases such as TinyFace's identity lists use: numeric arrays of any class, char arrays and cell
//! arrays of those, each variable optionally zlib-compressed (`-v7`, MATLAB's default). Structs, sparse
//! and complex arrays are reported as unsupported, not guessed at.
//!
//! Layout (MathWorks, "MAT-File Format", level 5): a 128-byte header (text, subsystem offset, version,
//! endian indicator "IM" for little-endian files), then data elements. An element is an 8-byte tag (type,
//! byte count) and its data padded to 8 bytes, or a "small" element packing type, count and up to 4 bytes
//! of data into 8 bytes. A variable is a miMATRIX element holding sub-elements: array flags (class),
//! dimensions, name, then the data (real part, or for a cell one miMATRIX per entry, column-major).
//! miCOMPRESSED wraps one element in a zlib stream.

use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

/// A variable's value.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// Any numeric or logical class, converted to f64, column-major.
    Numeric { dims: Vec<usize>, data: Vec<f64> },
    /// A char array as UTF-16/UCS-2 code units, column-major.
    Char { dims: Vec<usize>, units: Vec<u16> },
    /// A cell array, column-major.
    Cell { dims: Vec<usize>, items: Vec<MatValue> },
    /// A class this reader does not decode (struct, object, sparse, function), or complex data.
    Unsupported { class: u8, detail: String },
}

impl MatValue {
    /// The rows of a char array as strings (a 1 x n char array is one string).
    pub fn strings(&self) -> Option<Vec<String>> {
        let MatValue::Char { dims, units } = self else { return None };
        let (rows, cols) = (dims.first().copied().unwrap_or(0), dims.iter().skip(1).product::<usize>());
        Some(
            (0..rows)
                .map(|r| {
                    String::from_utf16_lossy(&(0..cols).map(|c| units[c * rows + r]).collect::<Vec<_>>())
                })
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .collect(),
        )
    }
}

/// The variables of a MAT file, in file order.
pub fn read_mat(path: &Path) -> Result<Vec<(String, MatValue)>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_mat(&bytes, path)
}

struct Reader<'a> {
    path: &'a PathBuf,
    big: bool,
}

fn bad(path: &Path, offset: usize, detail: impl Into<String>) -> DataError {
    DataError::Matlab { path: path.to_path_buf(), offset: offset as u64, detail: detail.into() }
}

pub fn parse_mat(bytes: &[u8], path: &Path) -> Result<Vec<(String, MatValue)>> {
    let path = path.to_path_buf();
    if bytes.len() < 128 {
        return Err(bad(&path, 0, "shorter than the 128-byte MAT header"));
    }
    if bytes.starts_with(b"MATLAB 7.3") {
        return Err(bad(&path, 0, "a MATLAB 7.3 (HDF5) file; save it with -v7 to read it here"));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        e => return Err(bad(&path, 126, format!("no MAT-file level 5 endian indicator (found {e:02x?})"))),
    };
    let r = Reader { path: &path, big };
    let mut vars = vec![];
    let mut pos = 128;
    while pos + 8 <= bytes.len() {
        let (ty, n, data_at, next) = r.tag(bytes, pos, false)?;
        let body = &bytes[data_at..data_at + n];
        let (ty, inner, base) = if ty == MI_COMPRESSED {
            let raw = zune_inflate::DeflateDecoder::new(body)
                .decode_zlib()
                .map_err(|e| bad(&path, pos, format!("cannot inflate a compressed variable: {e:?}")))?;
            let (ty, n, at, _) = r.tag(&raw, 0, false)?;
            (ty, raw[at..at + n].to_vec(), data_at)
        } else {
            (ty, body.to_vec(), data_at)
        };
        if ty != MI_MATRIX {
            return Err(bad(&path, pos, format!("top-level element of type {ty}, expected a matrix")));
        }
        vars.push(r.matrix(&inner, base)?);
        pos = next;
    }
    Ok(vars)
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;

const MX_CELL: u8 = 1;
const MX_CHAR: u8 = 4;

impl Reader<'_> {
    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }

    /// (type, byte count, data offset, offset of the next element). Sub-elements are padded to 8 bytes;
    /// top-level ones are not (the compressed ones are not padded at all).
    fn tag(&self, b: &[u8], at: usize, padded: bool) -> Result<(u32, usize, usize, usize)> {
        if at + 8 > b.len() {
            return Err(bad(self.path, at, "truncated element tag"));
        }
        let first = self.u32_at(b, at);
        if first >> 16 != 0 {
            // Small element: count in the upper half, type in the lower, data in the next 4 bytes.
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(bad(self.path, at, format!("small element claims {n} bytes")));
            }
            return Ok((ty, n, at + 4, at + 8));
        }
        let n = self.u32_at(b, at + 4) as usize;
        let end = at + 8 + n;
        if end > b.len() {
            return Err(bad(
                self.path,
                at,
                format!("element of {n} bytes runs past the end ({} bytes)", b.len()),
            ));
        }
        let next = if padded { (end + 7) & !7 } else { end };
        Ok((self.u32_at(b, at), n, at + 8, next.min(b.len())))
    }

    fn numbers(&self, ty: u32, d: &[u8], at: usize) -> Result<Vec<f64>> {
        let w = match ty {
            MI_INT8 | MI_UINT8 | MI_UTF8 => 1,
            MI_INT16 | MI_UINT16 | MI_UTF16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            _ => return Err(bad(self.path, at, format!("data of type {ty} is not numeric"))),
        };
        if !d.len().is_multiple_of(w) {
            return Err(bad(self.path, at, format!("{} bytes do not form values of {w} bytes", d.len())));
        }
        Ok(d.chunks(w)
            .map(|c| {
                let mut a = [0u8; 8];
                a[..w].copy_from_slice(c);
                if self.big {
                    a[..w].reverse();
                }
                match ty {
                    MI_INT8 => a[0] as i8 as f64,
                    MI_INT16 => i16::from_le_bytes([a[0], a[1]]) as f64,
                    MI_UINT16 | MI_UTF16 => u16::from_le_bytes([a[0], a[1]]) as f64,
                    MI_INT32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                    MI_UINT32 => u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                    MI_SINGLE => f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64,
                    MI_DOUBLE => f64::from_le_bytes(a),
                    MI_INT64 => i64::from_le_bytes(a) as f64,
                    MI_UINT64 => u64::from_le_bytes(a) as f64,
                    _ => a[0] as f64, // uint8, utf8
                }
            })
            .collect())
    }

    /// A miMATRIX element's content (`d`, found at file offset `base` for errors): (name, value).
    fn matrix(&self, d: &[u8], base: usize) -> Result<(String, MatValue)> {
        if d.is_empty() {
            return Ok((String::new(), MatValue::Numeric { dims: vec![0, 0], data: vec![] }));
        }
        let (_, n, at, next) = self.tag(d, 0, true)?;
        if n < 8 {
            return Err(bad(self.path, base, "array flags too short"));
        }
        let flags = self.u32_at(d, at);
        let class = (flags & 0xff) as u8;
        let complex = flags & 0x800 != 0;
        let (_, n, at, next) = self.tag(d, next, true)?;
        let dims: Vec<usize> =
            self.numbers(MI_INT32, &d[at..at + n], base + at)?.iter().map(|&v| v.max(0.0) as usize).collect();
        let (_, n, at, mut next) = self.tag(d, next, true)?;
        let name = String::from_utf8_lossy(&d[at..at + n]).into_owned();
        let count: usize = dims.iter().product();
        let value = match class {
            MX_CELL => {
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let (ty, n, at, nx) = self.tag(d, next, true)?;
                    if ty != MI_MATRIX {
                        return Err(bad(
                            self.path,
                            base + next,
                            format!("cell entry of type {ty}, expected a matrix"),
                        ));
                    }
                    items.push(self.matrix(&d[at..at + n], base + at)?.1);
                    next = nx;
                }
                MatValue::Cell { dims, items }
            }
            MX_CHAR | 6..=15 if complex => MatValue::Unsupported { class, detail: "complex data".into() },
            MX_CHAR => {
                let units = if count == 0 || next >= d.len() {
                    vec![]
                } else {
                    let (ty, n, at, _) = self.tag(d, next, true)?;
                    match ty {
                        MI_UTF8 => String::from_utf8_lossy(&d[at..at + n]).encode_utf16().collect(),
                        _ => self.numbers(ty, &d[at..at + n], base + at)?.iter().map(|&v| v as u16).collect(),
                    }
                };
                if units.len() != count {
                    return Err(bad(
                        self.path,
                        base,
                        format!("char array '{name}' holds {} of {count} characters", units.len()),
                    ));
                }
                MatValue::Char { dims, units }
            }
            6..=15 => {
                let data = if count == 0 || next >= d.len() {
                    vec![]
                } else {
                    let (ty, n, at, _) = self.tag(d, next, true)?;
                    self.numbers(ty, &d[at..at + n], base + at)?
                };
                if data.len() != count {
                    return Err(bad(
                        self.path,
                        base,
                        format!("array '{name}' holds {} of {count} values", data.len()),
                    ));
                }
                MatValue::Numeric { dims, data }
            }
            c => MatValue::Unsupported { class: c, detail: format!("array class {c}") },
        };
        Ok((name, value))
    }
}
