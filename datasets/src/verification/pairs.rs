//! A plain pairs list: one pair per line, `path1<TAB>path2<TAB>same` (or separated by spaces when the
//! paths hold none), `same` one of 1/0/true/false; paths relative to the list's folder. `#` starts a comment.

use super::PairSet;
use crate::error::{DataError, Result};
use std::path::Path;

pub fn read_pairs_list(list: &Path) -> Result<PairSet> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut set = PairSet { images: Vec::new(), same: Vec::new() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |detail: String| DataError::BadLine { path: list.to_path_buf(), line: i + 1, detail };
        let fields: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        if fields.len() != 3 {
            return Err(bad(format!("expected `path1<TAB>path2<TAB>same`, found {line:?}")));
        }
        let same = match fields[2].to_ascii_lowercase().as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            other => return Err(bad(format!("`same` must be 1/0/true/false, found {other:?}"))),
        };
        for f in &fields[..2] {
            let p = base.join(f);
            set.images.push(std::fs::read(&p).map_err(|e| DataError::io(&p, e))?);
        }
        set.same.push(same);
    }
    set.checked(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn reads_pairs_and_names_bad_lines() {
        let dir = TempDir::new("pairs");
        std::fs::write(dir.path().join("a.jpg"), b"A").unwrap();
        std::fs::write(dir.path().join("b c.jpg"), b"B").unwrap();
        let list = dir.path().join("pairs.txt");
        std::fs::write(&list, "# comment\na.jpg\tb c.jpg\t1\na.jpg a.jpg false\n").unwrap();
        let s = read_pairs_list(&list).unwrap();
        assert_eq!(s.images, vec![b"A".to_vec(), b"B".to_vec(), b"A".to_vec(), b"A".to_vec()]);
        assert_eq!(s.same, vec![true, false]);
        std::fs::write(&list, "a.jpg a.jpg 1\na.jpg a.jpg maybe\n").unwrap();
        let e = read_pairs_list(&list).unwrap_err().to_string();
        assert!(e.contains("pairs.txt:2"), "{e}");
        std::fs::write(&list, "a.jpg nope.jpg 1\n").unwrap();
        assert!(read_pairs_list(&list).unwrap_err().to_string().contains("nope.jpg"));
        std::fs::write(&list, "\n").unwrap();
        assert!(matches!(read_pairs_list(&list), Err(DataError::Empty { .. })));
    }
}
