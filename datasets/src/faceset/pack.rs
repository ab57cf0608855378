//! Packing images from disk: a folder tree (one sub-folder per identity) or a list file.
//! Image bytes are stored as they are (no re-encoding loss); each is decoded once to check it and its size.
//! Lists with landmarks are aligned first and re-encoded (`pack_aligned_list`).

use super::writer::{FaceSetSummary, FaceSetWriter};
use crate::error::{DataError, Result};
use crate::image::align::{norm_crop, ALIGNED_SIZE, ARCFACE_112};
use crate::image::decode;
use crate::image_list::read_image_list;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Skip images that do not decode or have the wrong size (reported) instead of failing.
    pub skip_corrupt: bool,
}

#[derive(Debug)]
pub struct PackReport {
    pub summary: FaceSetSummary,
    /// Images left out under `skip_corrupt`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// `root/<identity>/<image>`: identities sorted by folder name get labels 0.., images sorted by name.
pub fn pack_folder(root: &Path, out: &Path, opts: &PackOptions) -> Result<PackReport> {
    let mut identities = list_dir(root)?.into_iter().filter(|p| p.is_dir()).collect::<Vec<_>>();
    identities.sort();
    let mut items = Vec::new();
    for (label, dir) in identities.iter().enumerate() {
        let mut files =
            list_dir(dir)?.into_iter().filter(|p| p.is_file() && is_image_name(p)).collect::<Vec<_>>();
        files.sort();
        items.extend(files.into_iter().map(|f| (label as u32, f)));
    }
    if items.is_empty() {
        return Err(DataError::Empty { path: root.to_path_buf() });
    }
    pack_items(items, identities.len() as u32, out, opts)
}

/// An MXNet `.lst` file: `index<TAB>label[<TAB>more labels]<TAB>path` per line, paths relative to the
/// list's folder. The first label is the class; images are grouped by class (stable) before packing.
pub fn pack_list(list: &Path, out: &Path, opts: &PackOptions) -> Result<PackReport> {
    let text = std::fs::read_to_string(list).map_err(|e| DataError::io(list, e))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |detail: String| DataError::BadLine { path: list.to_path_buf(), line: i + 1, detail };
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 3 {
            return Err(bad(format!("expected `index<TAB>label<TAB>path`, found {line:?}")));
        }
        let label: f32 =
            fields[1].trim().parse().map_err(|_| bad(format!("label {:?} is not a number", fields[1])))?;
        if !(label >= 0.0 && label.fract() == 0.0 && label < 16_777_216.0) {
            return Err(bad(format!("label {label} is not a class index")));
        }
        items.push((label as u32, base.join(fields[fields.len() - 1].trim())));
    }
    if items.is_empty() {
        return Err(DataError::Empty { path: list.to_path_buf() });
    }
    items.sort_by_key(|(l, _)| *l);
    let classes = items.last().unwrap().0 + 1;
    pack_items(items, classes, out, opts)
}

fn pack_items(
    items: Vec<(u32, PathBuf)>,
    classes: u32,
    out: &Path,
    opts: &PackOptions,
) -> Result<PackReport> {
    let mut writer: Option<FaceSetWriter> = None;
    let mut size = (0usize, 0usize);
    let mut skipped = Vec::new();
    for (label, path) in items {
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let checked = decode(&bytes).and_then(|img| {
            if writer.is_some() && (img.height, img.width) != size {
                Err(format!("{}x{} image in a set of {}x{}", img.height, img.width, size.0, size.1))
            } else {
                Ok((img.height, img.width))
            }
        });
        match checked {
            Ok(hw) => {
                if writer.is_none() {
                    size = hw;
                    writer = Some(FaceSetWriter::create(out, classes, hw.0 as u32, hw.1 as u32)?);
                }
                writer.as_mut().unwrap().add(label, &[], &bytes)?;
            }
            Err(detail) if opts.skip_corrupt => skipped.push((path, detail)),
            Err(detail) => return Err(DataError::Image { path, record: String::new(), detail }),
        }
    }
    let writer = writer.ok_or_else(|| DataError::Empty { path: out.to_path_buf() })?;
    Ok(PackReport { summary: writer.finish()?, skipped })
}

/// An image list with landmarks (`path label x1 y1 ... x5 y5` lines, crate::image_list): each image is
/// aligned to insightface's 112x112 ArcFace template (crate::image::align::norm_crop) and packed as a
/// JPEG of quality 95 (what MXNet's `pack_img` writes by default). Grouped by label (stable) as
/// `pack_list` does; a line without landmarks is an error.
pub fn pack_aligned_list(list: &Path, out: &Path, opts: &PackOptions) -> Result<PackReport> {
    let mut entries = read_image_list(list)?;
    if let Some(e) = entries.iter().find(|e| e.landmarks.is_none()) {
        return Err(DataError::BadLine {
            path: list.to_path_buf(),
            line: e.line,
            detail: "no landmarks (aligned packing needs `path label x1 y1 ... x5 y5`)".into(),
        });
    }
    if let Some(e) = entries.iter().find(|e| e.label >= 16_777_216) {
        return Err(DataError::BadLine {
            path: list.to_path_buf(),
            line: e.line,
            detail: format!("label {} is too large", e.label),
        });
    }
    entries.sort_by_key(|e| e.label);
    let classes = entries.last().map_or(0, |e| e.label as u32 + 1);
    let mut writer = FaceSetWriter::create(out, classes, ALIGNED_SIZE as u32, ALIGNED_SIZE as u32)?;
    let mut skipped = Vec::new();
    for e in entries {
        let aligned = std::fs::read(&e.path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| decode(&bytes))
            .and_then(|img| norm_crop(&img, e.landmarks.as_deref().unwrap_or(&[]), &ARCFACE_112));
        match aligned {
            Ok(img) => {
                writer.add_pixels(e.label as u32, &[], &img, 95)?;
            }
            Err(detail) if opts.skip_corrupt => skipped.push((e.path, detail)),
            Err(detail) => {
                return Err(DataError::Image {
                    path: e.path,
                    record: format!("{}:{}", list.display(), e.line),
                    detail,
                })
            }
        }
    }
    Ok(PackReport { summary: writer.finish()?, skipped })
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    rd.map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e))).collect()
}

fn is_image_name(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "jpg" | "jpeg" | "png")
}
