//! The TinyFace test set in the layout AdaFace's evaluation reads (`validation_lq/tinyface_helper.py`):
//! `ROOT/tinyface/Testing_Set/{probe_img_ID_pairs.mat, gallery_match_img_ID_pairs.mat}` (the release's
//! identity lists: `probe_set`/`probe_ids`, `gallery_set`/`gallery_ids`) and the aligned copy
//! `ROOT/<aligned>/{Probe, Gallery_Match, Gallery_Distractor}`.
//!
//! AdaFace lists the release's image folders and labels each image by its file name's prefix
//! (`int(name.split('_')[0])`), then finds its aligned copy by the name without extension. Here the
//! probe and gallery-match lists come from the `.mat` files (the protocol's own lists, so the release's
//! original image folders are not needed), each name's prefix must agree with its id (so both readings
//! give the same labels), and the aligned copy is found by the name without extension in the aligned
//! folder of the same role. Distractors are every `.jpg`, `.png` or `.jpeg` under the aligned
//! `Gallery_Distractor` (AdaFace's extension list, case as written), in sorted path order.

use crate::error::{DataError, Result};
use crate::matlab::{read_mat, MatValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 3] = ["jpg", "png", "jpeg"];

/// One image of the protocol: its aligned file and identity (None for a distractor).
#[derive(Debug, Clone, PartialEq)]
pub struct TinyFaceImage {
    pub path: PathBuf,
    pub label: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TinyFaceSet {
    pub probes: Vec<TinyFaceImage>,
    pub gallery_match: Vec<TinyFaceImage>,
    pub distractors: Vec<TinyFaceImage>,
}

impl TinyFaceSet {
    /// Every image in feature-row order: probes, gallery matches, distractors.
    pub fn all(&self) -> impl Iterator<Item = &TinyFaceImage> {
        self.probes.iter().chain(&self.gallery_match).chain(&self.distractors)
    }
}

fn invalid(what: String) -> DataError {
    DataError::Invalid { what }
}

/// Files under `dir` (recursively) with one of AdaFace's image extensions, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))? {
            let p = e.map_err(|e| DataError::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().and_then(|x| x.to_str()).is_some_and(|x| EXTENSIONS.contains(&x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn stem(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// (names, ids) of one `.mat` list.
fn mat_list(path: &Path, names_var: &str, ids_var: &str) -> Result<Vec<(String, i64)>> {
    let vars = read_mat(path)?;
    let get = |name: &str| {
        vars.iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or_else(|| {
            let found: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            invalid(format!("{}: no variable '{name}' (found: {})", path.display(), found.join(", ")))
        })
    };
    let names: Vec<String> = match get(names_var)? {
        MatValue::Cell { items, .. } => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.strings().as_deref() {
                Some([s]) => Ok(s.clone()),
                _ => Err(invalid(format!(
                    "{}: {names_var} entry {} is not one file name",
                    path.display(),
                    i + 1
                ))),
            })
            .collect::<Result<_>>()?,
        _ => {
            return Err(invalid(format!("{}: {names_var} is not a cell array of file names", path.display())))
        }
    };
    let ids: Vec<f64> = match get(ids_var)? {
        MatValue::Numeric { data, .. } => data.clone(),
        _ => return Err(invalid(format!("{}: {ids_var} is not a numeric array", path.display()))),
    };
    if ids.len() != names.len() {
        return Err(invalid(format!(
            "{}: {} names in {names_var} but {} ids in {ids_var}",
            path.display(),
            names.len(),
            ids.len()
        )));
    }
    names
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (n, id))| {
            if id.fract() != 0.0 || !id.is_finite() {
                return Err(invalid(format!(
                    "{}: {ids_var} entry {} is {id}, not an identity",
                    path.display(),
                    i + 1
                )));
            }
            let prefix = n.split('_').next().unwrap_or("");
            if let Ok(p) = prefix.parse::<i64>() {
                if p != id as i64 {
                    return Err(invalid(format!(
                        "{}: entry {} '{n}' has id {id} but its name says {p} (AdaFace labels by the name)",
                        path.display(),
                        i + 1
                    )));
                }
            }
            Ok((n, id as i64))
        })
        .collect()
}

/// Aligned files of `list` found by name without extension in `dir`.
fn resolve(list: Vec<(String, i64)>, dir: &Path, mat: &Path) -> Result<Vec<TinyFaceImage>> {
    let by_stem: HashMap<String, PathBuf> = image_files(dir)?.into_iter().map(|p| (stem(&p), p)).collect();
    list.into_iter()
        .enumerate()
        .map(|(i, (name, id))| {
            let key = stem(Path::new(&name));
            let path = by_stem.get(&key).cloned().ok_or_else(|| {
                invalid(format!(
                    "{}: entry {} '{name}' has no aligned image in {}",
                    mat.display(),
                    i + 1,
                    dir.display()
                ))
            })?;
            Ok(TinyFaceImage { path, label: Some(id) })
        })
        .collect()
}

pub fn open(root: &Path, aligned: &str) -> Result<TinyFaceSet> {
    let testing = root.join("tinyface").join("Testing_Set");
    let (pm, gm) = (testing.join("probe_img_ID_pairs.mat"), testing.join("gallery_match_img_ID_pairs.mat"));
    let al = root.join(aligned);
    let probes = resolve(mat_list(&pm, "probe_set", "probe_ids")?, &al.join("Probe"), &pm)?;
    let gallery_match =
        resolve(mat_list(&gm, "gallery_set", "gallery_ids")?, &al.join("Gallery_Match"), &gm)?;
    let distractors: Vec<TinyFaceImage> = image_files(&al.join("Gallery_Distractor"))?
        .into_iter()
        .map(|path| TinyFaceImage { path, label: None })
        .collect();
    Ok(TinyFaceSet { probes, gallery_match, distractors })
}
