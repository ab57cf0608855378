//! A reader for exactly the pickles insightface's `.bin` files are: a 2-tuple (list of encoded images,
//! list of bools), protocols 2 to 5, from Python 2 (str = bytes) or 3; images as `bytes` or as uint8 numpy
//! arrays. Every other object is refused with the opcode and its byte offset: unpickling is code
//! execution in Python, here it only builds these few types.

use super::PairSet;
use crate::error::{DataError, Result};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone)]
enum V {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    /// A byte range of the input (bytes, or a Python 2 str).
    Bytes(usize, usize),
    Str(String),
    List(Vec<V>),
    Tuple(Vec<V>),
    Global(String, String),
    /// REDUCE: callable applied to an argument tuple (only numpy/codecs constructors are accepted later).
    Call(Box<V>, Box<V>),
    /// BUILD: object plus `__setstate__` state.
    Built(Box<V>, Box<V>),
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    memo: HashMap<u32, V>,
}

type PResult<T> = std::result::Result<T, (usize, String)>;

/// A .bin file nests about six levels deep (numpy arrays included); far deeper input is refused so that
/// hostile nesting cannot exhaust the stack.
const MAX_DEPTH: u32 = 32;

/// Nesting depth of `v`, counted up to `cap`.
fn depth(v: &V, cap: u32) -> u32 {
    if cap == 0 {
        return 0;
    }
    match v {
        V::List(x) | V::Tuple(x) => 1 + x.iter().map(|c| depth(c, cap - 1)).max().unwrap_or(0),
        V::Call(a, b) | V::Built(a, b) => 1 + depth(a, cap - 1).max(depth(b, cap - 1)),
        _ => 0,
    }
}

fn check_nesting<'v>(at: usize, children: impl IntoIterator<Item = &'v V>) -> PResult<()> {
    if children.into_iter().any(|c| depth(c, MAX_DEPTH) >= MAX_DEPTH) {
        return Err((at, format!("objects nested more than {MAX_DEPTH} deep")));
    }
    Ok(())
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err((
                self.pos,
                format!("needs {n} bytes, file ends after {}", self.data.len() - self.pos),
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> PResult<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn bytes(&mut self, n: u64) -> PResult<V> {
        let n = usize::try_from(n).map_err(|_| (self.pos, "length too large".to_string()))?;
        let start = self.pos;
        self.take(n)?;
        Ok(V::Bytes(start, start + n))
    }

    fn utf8(&mut self, n: u64) -> PResult<V> {
        let at = self.pos;
        let V::Bytes(s, e) = self.bytes(n)? else { unreachable!() };
        std::str::from_utf8(&self.data[s..e])
            .map(|s| V::Str(s.to_string()))
            .map_err(|_| (at, "invalid UTF-8 in a string".into()))
    }

    fn line(&mut self) -> PResult<String> {
        let at = self.pos;
        let end = self.data[self.pos..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or((at, "unterminated text line".to_string()))?;
        let s = std::str::from_utf8(&self.data[self.pos..self.pos + end])
            .map_err(|_| (at, "non-UTF-8 name".to_string()))?;
        self.pos += end + 1;
        Ok(s.to_string())
    }

    fn pop(&mut self, at: usize) -> PResult<V> {
        match self.stack.pop() {
            Some(V::Mark) | None => Err((at, "stack underflow".into())),
            Some(v) => Ok(v),
        }
    }

    fn pop_to_mark(&mut self, at: usize) -> PResult<Vec<V>> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, V::Mark))
            .ok_or((at, "no MARK on the stack".to_string()))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top_list(&mut self, at: usize) -> PResult<&mut Vec<V>> {
        match self.stack.last_mut() {
            Some(V::List(l)) => Ok(l),
            _ => Err((at, "APPEND to something that is not a list".into())),
        }
    }

    fn run(&mut self) -> PResult<V> {
        loop {
            let at = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let proto = self.take(1)?[0];
                    if !(2..=5).contains(&proto) {
                        return Err((at, format!("pickle protocol {proto} (only 2 to 5 are read)")));
                    }
                }
                0x95 => {
                    self.uint(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(at),
                b'(' => self.stack.push(V::Mark),
                b'N' => self.stack.push(V::None),
                0x88 => self.stack.push(V::Bool(true)),
                0x89 => self.stack.push(V::Bool(false)),
                b'K' => {
                    let v = self.uint(1)? as i64;
                    self.stack.push(V::Int(v))
                }
                b'M' => {
                    let v = self.uint(2)? as i64;
                    self.stack.push(V::Int(v))
                }
                b'J' => {
                    let v = self.uint(4)? as u32 as i32 as i64;
                    self.stack.push(V::Int(v))
                }
                b'C' | b'U' => {
                    let n = self.uint(1)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v)
                }
                b'B' | b'T' => {
                    let n = self.uint(4)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v)
                }
                0x8e | 0x96 => {
                    let n = self.uint(8)?;
                    let v = self.bytes(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.uint(1)?;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                b'X' => {
                    let n = self.uint(4)?;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = self.uint(8)?;
                    let v = self.utf8(n)?;
                    self.stack.push(v)
                }
                b']' => self.stack.push(V::List(Vec::new())),
                b')' => self.stack.push(V::Tuple(Vec::new())),
                b'l' => {
                    let items = self.pop_to_mark(at)?;
                    check_nesting(at, &items)?;
                    self.stack.push(V::List(items))
                }
                b't' => {
                    let items = self.pop_to_mark(at)?;
                    check_nesting(at, &items)?;
                    self.stack.push(V::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    check_nesting(at, &items)?;
                    self.stack.push(V::Tuple(items))
                }
                b'a' => {
                    let v = self.pop(at)?;
                    check_nesting(at, [&v])?;
                    self.top_list(at)?.push(v)
                }
                b'e' => {
                    let items = self.pop_to_mark(at)?;
                    check_nesting(at, &items)?;
                    self.top_list(at)?.extend(items)
                }
                b'q' | b'r' | 0x94 => {
                    let key = match op {
                        b'q' => self.uint(1)? as u32,
                        b'r' => self.uint(4)? as u32,
                        _ => self.memo.len() as u32,
                    };
                    let v = self.stack.last().ok_or((at, "memo put on an empty stack".to_string()))?.clone();
                    self.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' { self.uint(1)? as u32 } else { self.uint(4)? as u32 };
                    match self.memo.get(&key) {
                        Some(V::List(_)) => {
                            return Err((at, "a shared reference to a list (not used by .bin files)".into()))
                        }
                        Some(v) => {
                            let v = v.clone();
                            self.stack.push(v)
                        }
                        None => return Err((at, format!("memo key {key} was never stored"))),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(V::Global(module, name))
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (V::Str(module), V::Str(name)) = (module, name) else {
                        return Err((at, "STACK_GLOBAL without two strings".into()));
                    };
                    self.stack.push(V::Global(module, name))
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    check_nesting(at, [&args, &callable])?;
                    self.stack.push(V::Call(Box::new(callable), Box::new(args)))
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let obj = self.pop(at)?;
                    check_nesting(at, [&state, &obj])?;
                    self.stack.push(V::Built(Box::new(obj), Box::new(state)))
                }
                other => {
                    return Err((
                        at,
                        format!(
                            "opcode 0x{other:02x} ({:?}) is not part of a .bin verification set",
                            other as char
                        ),
                    ))
                }
            }
        }
    }
}

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
    let mut p = Parser { data, pos: 0, stack: Vec::new(), memo: HashMap::new() };
    let top = p.run().map_err(err)?;
    let end = p.pos;
    let shape_err = |detail: String| err((end, detail));
    let V::Tuple(mut parts) = top else {
        return Err(shape_err("top object is not a tuple (bins, issame_list)".into()));
    };
    if parts.len() != 2 {
        return Err(shape_err(format!(
            "top tuple has {} items, expected 2 (bins, issame_list)",
            parts.len()
        )));
    }
    let (V::List(bins), V::List(flags)) = (parts.remove(0), parts.remove(0)) else {
        return Err(shape_err("expected (list, list)".into()));
    };
    let images = bins
        .into_iter()
        .enumerate()
        .map(|(i, v)| image_bytes(v, data).map_err(|d| shape_err(format!("bins[{i}]: {d}"))))
        .collect::<Result<Vec<_>>>()?;
    let same = flags
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            V::Bool(b) => Ok(b),
            V::Int(x @ (0 | 1)) => Ok(x == 1),
            other => Err(shape_err(format!("issame_list[{i}] is {}, not a bool", kind(&other)))),
        })
        .collect::<Result<Vec<_>>>()?;
    PairSet { images, same }.checked(path)
}

fn kind(v: &V) -> &'static str {
    match v {
        V::Mark => "a mark",
        V::None => "None",
        V::Bool(_) => "a bool",
        V::Int(_) => "an int",
        V::Bytes(..) => "bytes",
        V::Str(_) => "a str",
        V::List(_) => "a list",
        V::Tuple(_) => "a tuple",
        V::Global(..) => "a global",
        V::Call(..) | V::Built(..) => "an object",
    }
}

fn raw(v: &V, data: &[u8]) -> Option<Vec<u8>> {
    match v {
        V::Bytes(s, e) => Some(data[*s..*e].to_vec()),
        V::Call(f, args) => match (&**f, &**args) {
            // Python 3 protocol 2 writes bytes as _codecs.encode(str, 'latin1').
            (V::Global(m, n), V::Tuple(a)) if m == "_codecs" && n == "encode" => match a.as_slice() {
                [V::Str(s), V::Str(enc)] if enc == "latin1" || enc == "latin-1" => {
                    s.chars().map(|c| u8::try_from(c as u32).ok()).collect()
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn text(v: &V, data: &[u8]) -> Option<String> {
    match v {
        V::Str(s) => Some(s.clone()),
        V::Bytes(s, e) => std::str::from_utf8(&data[*s..*e]).ok().map(str::to_string),
        _ => None,
    }
}

fn is_global(v: &V, modules: &[&str], name: &str) -> bool {
    matches!(v, V::Global(m, n) if modules.contains(&m.as_str()) && n == name)
}

/// `numpy.dtype('u1')` (or 'i1'): a one-byte element type.
fn is_byte_dtype(v: &V, data: &[u8]) -> bool {
    let call = match v {
        V::Built(obj, _) => &**obj,
        other => other,
    };
    let V::Call(f, args) = call else { return false };
    let V::Tuple(a) = &**args else { return false };
    is_global(f, &["numpy"], "dtype")
        && a.first().and_then(|d| text(d, data)).is_some_and(|d| d == "u1" || d == "i1")
}

/// Encoded image bytes from `bytes` or a 1-D byte numpy array (`cv2.imencode` output).
fn image_bytes(v: V, data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if let Some(b) = raw(&v, data) {
        return Ok(b);
    }
    match &v {
        // ndarray pickled by __reduce__: _reconstruct(...) then BUILD with (version, shape, dtype, fortran, raw).
        V::Built(obj, state) => {
            let V::Call(f, _) = &**obj else { return Err("unsupported object".into()) };
            if !is_global(f, &["numpy.core.multiarray", "numpy._core.multiarray"], "_reconstruct") {
                return Err(format!("object built by {f:?}, not a numpy array"));
            }
            let V::Tuple(st) = &**state else { return Err("numpy array state is not a tuple".into()) };
            let [_, V::Tuple(shape), dtype, _, payload] = st.as_slice() else {
                return Err("numpy array state is not (version, shape, dtype, fortran, data)".into());
            };
            if !is_byte_dtype(dtype, data) {
                return Err("numpy array whose dtype is not uint8".into());
            }
            let bytes = raw(payload, data).ok_or("numpy array data is not bytes")?;
            let n: i64 = shape.iter().map(|d| if let V::Int(x) = d { *x } else { -1 }).product();
            if shape.len() > 2 || n != bytes.len() as i64 {
                return Err(format!("numpy array of shape {shape:?} with {} bytes", bytes.len()));
            }
            Ok(bytes)
        }
        // Protocol 5: numpy.core.numeric._frombuffer(buffer, dtype, shape, order).
        V::Call(f, args) if is_global(f, &["numpy.core.numeric", "numpy._core.numeric"], "_frombuffer") => {
            let V::Tuple(a) = &**args else { return Err("_frombuffer without arguments".into()) };
            match a.as_slice() {
                [buf, dtype, ..] if is_byte_dtype(dtype, data) => {
                    raw(buf, data).ok_or_else(|| "buffer is not bytes".into())
                }
                _ => Err("numpy array whose dtype is not uint8".into()),
            }
        }
        other => Err(format!("{} is not an encoded image", kind(other))),
    }
}
