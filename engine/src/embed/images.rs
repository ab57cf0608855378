//! Image lists for `embed` and identification: one `path [label]` per line, paths relative to the list.

use super::embed_with;
use crate::model::{IResNet, ParamStore};
use crate::{Error, Result, Tensor};
use datasets::image::{decode, Image};
use datasets::loader::extend_normalized;
use std::path::{Path, PathBuf};

const CHUNK: usize = 128;

/// (path, label) per line; a missing label is 0.
pub fn read_list(list: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| Error::Io(format!("{}: cannot read: {e}", list.display())))?;
    let base = list.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace();
        let Some(p) = f.next() else { continue };
        let label = match f.next() {
            None => 0,
            Some(l) => l.parse().map_err(|_| {
                Error::Io(format!("{} line {}: label '{l}' is not a whole number", list.display(), i + 1))
            })?,
        };
        out.push((base.join(p), label));
    }
    if out.is_empty() {
        return Err(Error::Io(format!("{}: the list holds no image", list.display())));
    }
    Ok(out)
}

/// Decodes an image and checks it has the model's input size; `what` names it in errors.
pub fn decode_for_model(bytes: &[u8], hw: (usize, usize), what: &str) -> Result<Image> {
    let img = decode(bytes).map_err(|e| Error::Io(format!("{what}: {e}")))?;
    if (img.height, img.width) != hw {
        return Err(Error::Io(format!(
            "{what} is {}x{}, the model takes {}x{}",
            img.height, img.width, hw.0, hw.1
        )));
    }
    Ok(img)
}

/// Decodes and normalizes one image file to NHWC f32 values ((x/255 - 0.5) / 0.5).
pub fn load_normalized(path: &Path, hw: (usize, usize)) -> Result<Vec<f32>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::Io(format!("{}: cannot read: {e}", path.display())))?;
    let img = decode_for_model(&bytes, hw, &path.display().to_string())?;
    let mut px = Vec::with_capacity(img.data.len());
    extend_normalized(&mut px, &img.data, img.width * 3, false);
    Ok(px)
}

/// Embeddings `[N, D]` of normalized NHWC pixels, in chunks.
pub fn embed_pixels(model: &IResNet, params: &mut ParamStore, pixels: &[f32]) -> Result<(Vec<f32>, usize)> {
    let (h, w) = model.config.input_hw;
    let per = h * w * 3;
    let mut out = Vec::new();
    let mut dim = model.config.embedding_size;
    for chunk in pixels.chunks(CHUNK * per) {
        let x = Tensor::from_vec(chunk.to_vec(), [chunk.len() / per, h, w, 3])?;
        let e = embed_with(model, params, &x)?;
        dim = e.dims()[1];
        out.extend(e.to_vec::<f32>()?);
    }
    Ok((out, dim))
}
