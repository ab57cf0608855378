//! The IJB meta files in the layout insightface's `eval_ijbc.py` reads (`DIR/meta/`, names in lower
//! case, space-separated, no header):
//! - `ijbc_face_tid_mid.txt`: `image template_id media_id` per image;
//! - `ijbc_name_5pts_score.txt`: `image x1 y1 ... x5 y5 detector_score`, the same images in the same
//!   order;
//! - `ijbc_template_pair_label.txt`: `template_id1 template_id2 label` (label 1 = same subject);
//!
//! and for 1:N (`ijb_evals.py`): `ijbc_1N_gallery_G1.csv`, `..._G2.csv`, `ijbc_1N_probe_mixed.csv` (IJB-B:
//! `ijbb_1N_gallery_S1.csv`, `..._S2.csv`, `ijbb_1N_probe_mixed.csv`), comma-separated with a header row,
//! template id and subject id in the first two columns.
//!
//! Every malformed line is an error naming the file and line. Numbers are parsed as the scripts do:
//! ids as integers; landmarks and detector scores with `float()` (double) and then rounded to float32.
//! The pair file of IJB-C has 15.7 M lines, so it is parsed from bytes without allocating per line.

use crate::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Which benchmark: the file-name prefix and the 1:N gallery names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    IjbB,
    IjbC,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        match s.to_ascii_uppercase().as_str() {
            "IJBB" | "IJB-B" => Ok(Target::IjbB),
            "IJBC" | "IJB-C" => Ok(Target::IjbC),
            _ => Err(Error::Invalid(format!("--target {s}: expected IJBB or IJBC"))),
        }
    }

    /// "IJBB" / "IJBC", as the scripts spell `--target`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::IjbB => "IJBB",
            Target::IjbC => "IJBC",
        }
    }

    fn prefix(&self) -> &'static str {
        match self {
            Target::IjbB => "ijbb",
            Target::IjbC => "ijbc",
        }
    }

    pub fn face_tid_mid(&self, dir: &Path) -> PathBuf {
        dir.join("meta").join(format!("{}_face_tid_mid.txt", self.prefix()))
    }

    pub fn pair_label(&self, dir: &Path) -> PathBuf {
        dir.join("meta").join(format!("{}_template_pair_label.txt", self.prefix()))
    }

    pub fn name_5pts_score(&self, dir: &Path) -> PathBuf {
        dir.join("meta").join(format!("{}_name_5pts_score.txt", self.prefix()))
    }

    /// The two 1:N galleries (G1/G2 for IJB-C, S1/S2 for IJB-B) with their short names.
    pub fn galleries(&self, dir: &Path) -> [(&'static str, PathBuf); 2] {
        let g = |name: &'static str| {
            (name, dir.join("meta").join(format!("{}_1N_gallery_{name}.csv", self.prefix())))
        };
        match self {
            Target::IjbB => [g("S1"), g("S2")],
            Target::IjbC => [g("G1"), g("G2")],
        }
    }

    pub fn probes(&self, dir: &Path) -> PathBuf {
        dir.join("meta").join(format!("{}_1N_probe_mixed.csv", self.prefix()))
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Io(format!("{}: file not found", path.display()))
        } else {
            Error::Io(format!("{}: cannot read: {e}", path.display()))
        }
    })
}

fn line_error(path: &Path, line: usize, detail: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}:{line}: {detail}", path.display()))
}

/// Calls `f(line_number, fields)` for each non-blank line (blank lines are skipped, as pandas does).
fn for_each_line(
    path: &Path,
    bytes: &[u8],
    sep: Option<u8>,
    f: impl FnMut(usize, &[&[u8]]) -> Result<()>,
) -> Result<()> {
    for_each_line_from(path, bytes, 0, sep, f)
}

/// `for_each_line` on a part of a file whose first line is line `skipped + 1`.
fn for_each_line_from(
    path: &Path,
    bytes: &[u8],
    skipped: usize,
    sep: Option<u8>,
    mut f: impl FnMut(usize, &[&[u8]]) -> Result<()>,
) -> Result<()> {
    let mut fields: Vec<&[u8]> = Vec::with_capacity(16);
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate().map(|(i, r)| (i + skipped, r)) {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        fields.clear();
        match sep {
            None => fields.extend(line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty())),
            Some(c) => {
                if !line.iter().all(|b| b.is_ascii_whitespace()) {
                    fields.extend(line.split(|&b| b == c).map(|w| w.trim_ascii()));
                }
            }
        }
        if fields.is_empty() {
            continue;
        }
        if std::str::from_utf8(line).is_err() {
            return Err(line_error(path, i + 1, "not UTF-8 text"));
        }
        f(i + 1, &fields)?;
    }
    Ok(())
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("?")
}

/// An integer field (optional sign, digits).
fn int(path: &Path, line: usize, what: &str, b: &[u8]) -> Result<i64> {
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(line_error(path, line, format!("{what} '{}' is not a whole number", text(b))));
    }
    let v = digits.iter().fold(0i64, |acc, &d| acc * 10 + (d - b'0') as i64);
    Ok(if neg { -v } else { v })
}

/// A float field, as Python's `float()` and then numpy's cast to float32.
fn float32(path: &Path, line: usize, what: &str, b: &[u8]) -> Result<f32> {
    let v: f64 = text(b)
        .parse()
        .map_err(|_| line_error(path, line, format!("{what} '{}' is not a number", text(b))))?;
    if !v.is_finite() {
        return Err(line_error(path, line, format!("{what} '{}' is not finite", text(b))));
    }
    Ok(v as f32)
}

fn nonempty<T>(path: &Path, v: &[T]) -> Result<()> {
    if v.is_empty() {
        return Err(Error::Io(format!("{}: no data lines", path.display())));
    }
    Ok(())
}

/// `image template media` per image.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceTidMid {
    pub images: Vec<String>,
    pub templates: Vec<i64>,
    pub medias: Vec<i64>,
}

pub fn read_face_tid_mid(path: &Path) -> Result<FaceTidMid> {
    let bytes = read_bytes(path)?;
    let mut out = FaceTidMid { images: vec![], templates: vec![], medias: vec![] };
    for_each_line(path, &bytes, None, |line, f| {
        if f.len() != 3 {
            return Err(line_error(
                path,
                line,
                format!("expected `image template_id media_id`, found {} fields", f.len()),
            ));
        }
        out.images.push(text(f[0]).to_string());
        out.templates.push(int(path, line, "template id", f[1])?);
        out.medias.push(int(path, line, "media id", f[2])?);
        Ok(())
    })?;
    nonempty(path, &out.images)?;
    Ok(out)
}

/// `image x1 y1 ... x5 y5 score` per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Name5ptsScore {
    pub images: Vec<String>,
    pub landmarks: Vec<[[f32; 2]; 5]>,
    pub scores: Vec<f32>,
    /// Line number of each row, for later errors about an image.
    pub lines: Vec<usize>,
}

pub fn read_name_5pts_score(path: &Path) -> Result<Name5ptsScore> {
    let bytes = read_bytes(path)?;
    let mut out = Name5ptsScore { images: vec![], landmarks: vec![], scores: vec![], lines: vec![] };
    for_each_line(path, &bytes, None, |line, f| {
        if f.len() != 12 {
            return Err(line_error(
                path,
                line,
                format!(
                    "expected an image name, 10 landmark values (5 points) and a detector score, found {} fields",
                    f.len()
                ),
            ));
        }
        let mut p = [[0f32; 2]; 5];
        for k in 0..10 {
            p[k / 2][k % 2] = float32(path, line, "landmark value", f[1 + k])?;
        }
        out.images.push(text(f[0]).to_string());
        out.landmarks.push(p);
        out.scores.push(float32(path, line, "detector score", f[11])?);
        out.lines.push(line);
        Ok(())
    })?;
    nonempty(path, &out.images)?;
    Ok(out)
}

/// Checks that the two per-image files list the same images in the same order.
pub fn check_same_images(
    tid: &FaceTidMid,
    tid_path: &Path,
    pts: &Name5ptsScore,
    pts_path: &Path,
) -> Result<()> {
    if tid.images.len() != pts.images.len() {
        return Err(Error::Io(format!(
            "{} lists {} images but {} lists {}: the two files must hold the same rows",
            tid_path.display(),
            tid.images.len(),
            pts_path.display(),
            pts.images.len()
        )));
    }
    if let Some(i) = (0..tid.images.len()).find(|&i| tid.images[i] != pts.images[i]) {
        return Err(Error::Io(format!(
            "{}:{}: image '{}', but row {} of {} is '{}': the two files must list the images in the same order",
            pts_path.display(),
            pts.lines[i],
            pts.images[i],
            i + 1,
            tid_path.display(),
            tid.images[i]
        )));
    }
    Ok(())
}

/// `t1 t2 label` per pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairLabels {
    pub t1: Vec<i64>,
    pub t2: Vec<i64>,
    pub same: Vec<bool>,
    pub lines: Vec<u32>,
}

pub fn read_pair_labels(path: &Path) -> Result<PairLabels> {
    let bytes = read_bytes(path)?;
    // IJB-C's 15.7 M lines: parsed in parallel parts cut at line ends, joined in order.
    let parts = split_lines(&bytes, 4 * rayon::current_num_threads());
    let mut skipped = vec![0usize; parts.len()];
    for k in 1..parts.len() {
        skipped[k] = skipped[k - 1] + parts[k - 1].iter().filter(|&&b| b == b'\n').count();
    }
    let parsed: Vec<Result<PairLabels>> =
        parts.par_iter().zip(skipped.par_iter()).map(|(part, &skip)| pairs_in(path, part, skip)).collect();
    let mut out = PairLabels { t1: vec![], t2: vec![], same: vec![], lines: vec![] };
    for p in parsed {
        let p = p?;
        out.t1.extend(p.t1);
        out.t2.extend(p.t2);
        out.same.extend(p.same);
        out.lines.extend(p.lines);
    }
    nonempty(path, &out.t1)?;
    Ok(out)
}

/// `bytes` cut into about `n` parts, each ending after a newline (the last at the end).
fn split_lines(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = vec![];
    let mut start = 0;
    let step = bytes.len().div_ceil(n.max(1)).max(1);
    while start < bytes.len() {
        let mut end = (start + step).min(bytes.len());
        while end < bytes.len() && bytes[end - 1] != b'\n' {
            end += 1;
        }
        parts.push(&bytes[start..end]);
        start = end;
    }
    parts
}

fn pairs_in(path: &Path, part: &[u8], skipped: usize) -> Result<PairLabels> {
    let mut out = PairLabels { t1: vec![], t2: vec![], same: vec![], lines: vec![] };
    // A part ends with its newline: drop it so the split does not add an empty last line.
    let part = part.strip_suffix(b"\n").unwrap_or(part);
    for_each_line_from(path, part, skipped, None, |line, f| {
        if f.len() != 3 {
            return Err(line_error(
                path,
                line,
                format!("expected `template_id1 template_id2 label`, found {} fields", f.len()),
            ));
        }
        out.t1.push(int(path, line, "template id", f[0])?);
        out.t2.push(int(path, line, "template id", f[1])?);
        out.same.push(match f[2] {
            b"1" => true,
            b"0" => false,
            other => {
                return Err(line_error(path, line, format!("label '{}' is neither 0 nor 1", text(other))))
            }
        });
        out.lines.push(line as u32);
        Ok(())
    })?;
    Ok(out)
}

/// Template and subject ids of a 1:N gallery or probe list (one row per image; header skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSubjects {
    pub templates: Vec<i64>,
    pub subjects: Vec<i64>,
}

pub fn read_template_subjects(path: &Path) -> Result<TemplateSubjects> {
    let bytes = read_bytes(path)?;
    let mut out = TemplateSubjects { templates: vec![], subjects: vec![] };
    let mut header = true;
    for_each_line(path, &bytes, Some(b','), |line, f| {
        if std::mem::take(&mut header) {
            return Ok(()); // `TEMPLATE_ID,SUBJECT_ID,FILENAME,...`
        }
        if f.len() < 2 {
            return Err(line_error(path, line, "expected `template_id,subject_id,...`"));
        }
        out.templates.push(int(path, line, "template id", f[0])?);
        out.subjects.push(int(path, line, "subject id", f[1])?);
        Ok(())
    })?;
    nonempty(path, &out.templates)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("facetrain-ijb-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_the_three_files() {
        let t = write("t.txt", "1.jpg 1 69544\n2.jpg 1 69544\r\n\n3.jpg 5 3\n");
        let m = read_face_tid_mid(&t).unwrap();
        assert_eq!(m.templates, vec![1, 1, 5]);
        assert_eq!(m.medias, vec![69544, 69544, 3]);
        let p = write(
            "p.txt",
            "1.jpg 1 2 3 4 5 6 7 8 9 10 0.99\n2.jpg 1 2 3 4 5 6 7 8 9 10 0.5\n3.jpg 0 0 0 0 0 0 0 0 0 1 1\n",
        );
        let l = read_name_5pts_score(&p).unwrap();
        assert_eq!(l.landmarks[0][4], [9.0, 10.0]);
        assert_eq!(l.scores[0], 0.99f64 as f32);
        check_same_images(&m, &t, &l, &p).unwrap();
        let pairs = read_pair_labels(&write("pairs.txt", "1 5 1\n5 1 0\n")).unwrap();
        assert_eq!((pairs.t1, pairs.t2, pairs.same), (vec![1, 5], vec![5, 1], vec![true, false]));
        let g = read_template_subjects(&write(
            "g.csv",
            "TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,7,a.jpg\n3, 7 ,b.jpg\n",
        ))
        .unwrap();
        assert_eq!((g.templates, g.subjects), (vec![3, 3], vec![7, 7]));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let e = read_name_5pts_score(&write("bad5.txt", "1.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n2.jpg 1 2 3 0.9\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad5.txt:2") && e.contains("found 5 fields"), "{e}");
        let e = read_face_tid_mid(&write("badt.txt", "1.jpg x 3\n")).unwrap_err().to_string();
        assert!(e.contains("badt.txt:1") && e.contains("'x'"), "{e}");
        let e = read_pair_labels(&write("badp.txt", "1 2 1\n1 2 2\n")).unwrap_err().to_string();
        assert!(e.contains("badp.txt:2") && e.contains("neither 0 nor 1"), "{e}");
        let e =
            read_face_tid_mid(Path::new("/nonexistent/meta/ijbc_face_tid_mid.txt")).unwrap_err().to_string();
        assert!(e.contains("ijbc_face_tid_mid.txt: file not found"), "{e}");
        assert!(read_pair_labels(&write("empty.txt", "\n\n"))
            .unwrap_err()
            .to_string()
            .contains("no data lines"));
        let e = read_name_5pts_score(&write("nan.txt", "1.jpg 1 2 3 4 5 6 7 8 9 nan 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nan.txt:1") && e.contains("not finite"), "{e}");
    }

    #[test]
    fn pairs_parsed_in_parts_keep_order_and_line_numbers() {
        let mut text = String::new();
        for i in 0..5000 {
            text += &format!("{} {} {}\n", i, i + 1, i % 2);
            if i % 1000 == 7 {
                text += "\n";
            }
        }
        let p = read_pair_labels(&write("many.txt", &text)).unwrap();
        assert_eq!(p.t1, (0..5000).collect::<Vec<i64>>());
        assert_eq!(*p.lines.last().unwrap(), 5005);
        text += "1 2 3\n";
        let e = read_pair_labels(&write("many_bad.txt", &text)).unwrap_err().to_string();
        assert!(e.contains("many_bad.txt:5006:"), "{e}");
        assert_eq!(split_lines(b"a\nb\nc", 2), vec![&b"a\nb\n"[..], &b"c"[..]]);
    }

    #[test]
    fn image_lists_must_agree() {
        let t = write("t2.txt", "a.jpg 1 1\nb.jpg 1 1\n");
        let p = write("p2.txt", "a.jpg 1 2 3 4 5 6 7 8 9 10 1\nc.jpg 1 2 3 4 5 6 7 8 9 10 1\n");
        let e =
            check_same_images(&read_face_tid_mid(&t).unwrap(), &t, &read_name_5pts_score(&p).unwrap(), &p)
                .unwrap_err()
                .to_string();
        assert!(e.contains("p2.txt:2") && e.contains("'c.jpg'") && e.contains("'b.jpg'"), "{e}");
        assert_eq!(Target::parse("ijbb").unwrap(), Target::IjbB);
        assert!(Target::parse("IJBS").is_err());
        assert!(Target::IjbC.galleries(Path::new("D"))[1].1.ends_with("meta/ijbc_1N_gallery_G2.csv"));
    }
}
