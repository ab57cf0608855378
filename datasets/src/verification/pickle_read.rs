//! insightface's `.bin` files through the crate's pickle reader (`crate::pickle`): a 2-tuple (list of
//! encoded images, list of bools), protocols 2 to 5, from Python 2 (str = bytes) or 3; images as `bytes`
//! or as uint8 numpy arrays. Only the opcodes such files use are accepted, and of the objects only these
//! shapes are understood; everything else is refused with the byte offset.

use super::PairSet;
use crate::error::{DataError, Result};
use crate::pickle::{self, Dialect, Id, Obj, Pickle};
use std::path::Path;

/// Reads an insightface `.bin` verification set.
pub fn read_bin(path: &Path) -> Result<PairSet> {
    let data = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_bin(&data, path)
}

/// Parses `.bin` contents already in memory; `path` names them in errors.
pub fn parse_bin(data: &[u8], path: &Path) -> Result<PairSet> {
    let err = |(offset, detail): (usize, String)| DataError::Pickle {
        path: path.to_path_buf(),
        offset: offset as u64,
        detail,
    };
    let pk = pickle::parse(data, 0, Dialect::BinSet).map_err(err)?;
    let shape_err = |detail: String| err((pk.end, detail));
    let Some(parts) = pk.tuple(pk.root) else {
        return Err(shape_err("top object is not a tuple (bins, issame_list)".into()));
    };
    if parts.len() != 2 {
        return Err(shape_err(format!(
            "top tuple has {} items, expected 2 (bins, issame_list)",
            parts.len()
        )));
    }
    let (Obj::List(bins), Obj::List(flags)) = (pk.get(parts[0]), pk.get(parts[1])) else {
        return Err(shape_err("expected (list, list)".into()));
    };
    let images = bins
        .iter()
        .enumerate()
        .map(|(i, &v)| image_bytes(&pk, v).map_err(|d| shape_err(format!("bins[{i}]: {d}"))))
        .collect::<Result<Vec<_>>>()?;
    let same = flags
        .iter()
        .enumerate()
        .map(|(i, &v)| match pk.get(v) {
            Obj::Bool(b) => Ok(*b),
            Obj::Int(x @ (0 | 1)) => Ok(*x == 1),
            _ => Err(shape_err(format!("issame_list[{i}] is {}, not a bool", pk.kind(v)))),
        })
        .collect::<Result<Vec<_>>>()?;
    PairSet { images, same }.checked(path)
}

fn raw(pk: &Pickle, id: Id) -> Option<Vec<u8>> {
    match pk.get(id) {
        Obj::Bytes(s, e) => Some(pk.data[*s..*e].to_vec()),
        // Python 3 protocol 2 writes bytes as _codecs.encode(str, 'latin1').
        Obj::Object { func, args, .. } if pk.is_global(*func, &["_codecs"], "encode") => {
            match pk.tuple(*args)? {
                [s, enc] if matches!(pk.text(*enc), Some("latin1" | "latin-1")) => match pk.get(*s) {
                    Obj::Str(s) => s.chars().map(|c| u8::try_from(c as u32).ok()).collect(),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// `numpy.dtype('u1')` (or 'i1'): a one-byte element type.
fn is_byte_dtype(pk: &Pickle, id: Id) -> bool {
    let Obj::Object { func, args, .. } = pk.get(id) else { return false };
    pk.is_global(*func, &["numpy"], "dtype")
        && pk
            .tuple(*args)
            .and_then(|a| a.first())
            .and_then(|&d| pk.text(d))
            .is_some_and(|d| d == "u1" || d == "i1")
}

/// Encoded image bytes from `bytes` or a 1-D byte numpy array (`cv2.imencode` output).
fn image_bytes(pk: &Pickle, id: Id) -> std::result::Result<Vec<u8>, String> {
    if let Some(b) = raw(pk, id) {
        return Ok(b);
    }
    let Obj::Object { func, args, state, .. } = pk.get(id) else {
        return Err(format!("{} is not an encoded image", pk.kind(id)));
    };
    // ndarray pickled by __reduce__: _reconstruct(...) then BUILD with (version, shape, dtype, fortran, raw).
    if pk.is_global(*func, &["numpy.core.multiarray", "numpy._core.multiarray"], "_reconstruct") {
        let st = state.and_then(|s| pk.tuple(s)).ok_or("numpy array state is not a tuple")?;
        let [_, shape, dtype, _, payload] = st else {
            return Err("numpy array state is not (version, shape, dtype, fortran, data)".into());
        };
        if !is_byte_dtype(pk, *dtype) {
            return Err("numpy array whose dtype is not uint8".into());
        }
        let bytes = raw(pk, *payload).ok_or("numpy array data is not bytes")?;
        let shape = pk.tuple(*shape).ok_or("numpy array shape is not a tuple")?;
        let dims: Vec<i64> = shape.iter().map(|&d| pk.int(d).unwrap_or(-1)).collect();
        if dims.len() > 2 || dims.iter().product::<i64>() != bytes.len() as i64 {
            return Err(format!("numpy array of shape {dims:?} with {} bytes", bytes.len()));
        }
        return Ok(bytes);
    }
    // Protocol 5: numpy.core.numeric._frombuffer(buffer, dtype, shape, order).
    if pk.is_global(*func, &["numpy.core.numeric", "numpy._core.numeric"], "_frombuffer") {
        return match pk.tuple(*args).ok_or("_frombuffer without arguments")? {
            [buf, dtype, ..] if is_byte_dtype(pk, *dtype) => {
                raw(pk, *buf).ok_or_else(|| "buffer is not bytes".into())
            }
            _ => Err("numpy array whose dtype is not uint8".into()),
        };
    }
    Err(format!("{} is not an encoded image", pk.kind(id)))
}
