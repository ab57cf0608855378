//! The `.idx` text index: one `key<TAB>offset` line per record, offset = byte position of the record's
//! magic in the `.rec`.

use crate::error::{DataError, Result};
use std::collections::HashMap;
use std::path::Path;

/// Key to byte offset, in file order, with the `.idx` line of each entry kept for error messages.
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub keys: Vec<u64>,
    pub offsets: Vec<u64>,
    /// 1-based line in the `.idx` file (0 when the index came from a scan).
    pub lines: Vec<u32>,
    lookup: Lookup,
}

#[derive(Debug, Clone)]
enum Lookup {
    /// Keys are (nearly) 0..n: position by key in a vector, u32::MAX where absent.
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u32>),
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::Dense(Vec::new())
    }
}

impl Index {
    /// Builds the lookup; refuses duplicate keys (MXNet would silently keep the last one).
    pub fn new(keys: Vec<u64>, offsets: Vec<u64>, lines: Vec<u32>, path: &Path) -> Result<Index> {
        let n = keys.len();
        let max = keys.iter().copied().max().unwrap_or(0);
        let dup = |i: usize| DataError::BadLine {
            path: path.to_path_buf(),
            line: lines[i] as usize,
            detail: format!("duplicate key {}", keys[i]),
        };
        let lookup = if (max as usize) < 2 * n + 16 {
            let mut v = vec![u32::MAX; max as usize + 1];
            for (i, &k) in keys.iter().enumerate() {
                if v[k as usize] != u32::MAX {
                    return Err(dup(i));
                }
                v[k as usize] = i as u32;
            }
            Lookup::Dense(v)
        } else {
            let mut m = HashMap::with_capacity(n);
            for (i, &k) in keys.iter().enumerate() {
                if m.insert(k, i as u32).is_some() {
                    return Err(dup(i));
                }
            }
            Lookup::Sparse(m)
        };
        Ok(Index { keys, offsets, lines, lookup })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Position of `key` in file order.
    pub fn position(&self, key: u64) -> Option<usize> {
        let p = match &self.lookup {
            Lookup::Dense(v) => *v.get(usize::try_from(key).ok()?)?,
            Lookup::Sparse(m) => *m.get(&key)?,
        };
        (p != u32::MAX).then_some(p as usize)
    }
}

/// Parses `.idx` text. Blank lines are ignored; anything else that is not `key<TAB>offset` is an error
/// naming the line.
pub fn parse_index(text: &str, path: &Path) -> Result<Index> {
    let mut keys = Vec::new();
    let mut offsets = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |detail: String| DataError::BadLine { path: path.to_path_buf(), line: i + 1, detail };
        let mut fields = line.split_whitespace();
        let (Some(k), Some(o), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad(format!("expected `key<TAB>offset`, found {line:?}")));
        };
        let key: u64 = k.parse().map_err(|_| bad(format!("key {k:?} is not a non-negative integer")))?;
        let off: u64 = o.parse().map_err(|_| bad(format!("offset {o:?} is not a non-negative integer")))?;
        keys.push(key);
        offsets.push(off);
        lines.push((i + 1) as u32);
    }
    Index::new(keys, offsets, lines, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_offsets_and_lines() {
        let idx = parse_index("1\t0\n2\t1024\n\n0\t2048\r\n", Path::new("t.idx")).unwrap();
        assert_eq!(idx.keys, vec![1, 2, 0]);
        assert_eq!(idx.offsets, vec![0, 1024, 2048]);
        assert_eq!(idx.lines, vec![1, 2, 4]);
        assert_eq!(idx.position(0), Some(2));
        assert_eq!(idx.position(3), None);
    }

    #[test]
    fn sparse_keys_use_a_map() {
        let idx = parse_index("5\t0\n1000000\t8\n", Path::new("t.idx")).unwrap();
        assert_eq!(idx.position(1_000_000), Some(1));
        assert_eq!(idx.position(6), None);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e = parse_index("0\t0\n1\tx\n", Path::new("t.idx")).unwrap_err().to_string();
        assert!(e.contains("t.idx:2") && e.contains("offset \"x\""), "{e}");
        let e = parse_index("0\t0\t7\n", Path::new("t.idx")).unwrap_err().to_string();
        assert!(e.contains("t.idx:1"), "{e}");
        let e = parse_index("0\t0\n0\t8\n", Path::new("t.idx")).unwrap_err().to_string();
        assert!(e.contains("t.idx:2") && e.contains("duplicate key 0"), "{e}");
        let e = parse_index("-1\t0\n", Path::new("t.idx")).unwrap_err().to_string();
        assert!(e.contains("not a non-negative integer"), "{e}");
    }
}
