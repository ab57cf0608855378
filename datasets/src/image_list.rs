//! Image lists with optional landmarks, for `embed` and `data pack --landmarks`: one image per line,
//! `path [label] [x1 y1 ... x5 y5]` (or 68 points, 136 values), whitespace-separated, paths relative to
//! the list's folder. A line with landmarks is aligned to insightface's 112x112 template before use.

use crate::error::{DataError, Result};
use crate::image::align::parse_landmarks;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    pub path: PathBuf,
    pub label: u64,
    pub landmarks: Option<Vec<[f32; 2]>>,
    /// 1-based line number in the list, for errors.
    pub line: usize,
}

pub fn read_image_list(list: &Path) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some((p, rest)) = f.split_first() else { continue };
        let bad = |detail: String| DataError::BadLine { path: list.to_path_buf(), line: i + 1, detail };
        let (label, lmk) = match rest.len() {
            0 => (None, &rest[..0]),
            1 | 11 | 137 => (Some(rest[0]), &rest[1..]),
            10 | 136 => (None, rest),
            n => {
                return Err(bad(format!(
                    "expected `path [label] [10 or 136 landmark values]`, found {n} values after the path"
                )))
            }
        };
        let label = match label {
            None => 0,
            Some(l) => l.parse().map_err(|_| bad(format!("label '{l}' is not a whole number")))?,
        };
        let landmarks = if lmk.is_empty() { None } else { Some(parse_landmarks(lmk).map_err(bad)?) };
        out.push(ListEntry { path: base.join(p), label, landmarks, line: i + 1 });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: list.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_landmarks_are_optional() {
        let dir = std::env::temp_dir().join(format!("facetrain-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let l = dir.join("list.txt");
        let five = "1 2 3 4 5 6 7 8 9 10";
        std::fs::write(&l, format!("a.jpg\nb.jpg 7\n\nc.jpg 3 {five}\nd.jpg {five}\n")).unwrap();
        let e = read_image_list(&l).unwrap();
        assert_eq!(e.iter().map(|x| x.label).collect::<Vec<_>>(), vec![0, 7, 3, 0]);
        assert_eq!(e[2].landmarks.as_ref().unwrap()[4], [9.0, 10.0]);
        assert!(e[1].landmarks.is_none());
        assert_eq!((e[2].line, e[2].path.clone()), (4, dir.join("c.jpg")));
        std::fs::write(&l, "a.jpg 1 2 3\n").unwrap();
        let err = read_image_list(&l).unwrap_err().to_string();
        assert!(err.contains("list.txt:1") && err.contains("found 3 values"), "{err}");
        std::fs::write(&l, format!("a.jpg 1 {}\n", "x ".repeat(10))).unwrap();
        assert!(read_image_list(&l).unwrap_err().to_string().contains("'x'"));
    }
}
