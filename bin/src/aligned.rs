//! Images aligned from landmarks (insightface's `norm_crop`) and their embeddings, for IJB, TinyFace,
//! and image lists whose lines carry landmarks (`embed`, `data pack`).

use datasets::image::align::{norm_crop, ALIGNED_SIZE};
use datasets::image::{decode, Image};
use datasets::loader::extend_normalized;
use engine::embed::embed_pixels;
use engine::model::{IResNet, ParamStore};
use engine::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Images decoded, aligned (and embedded) per chunk, so that no more than this many are held at once.
pub const CHUNK: usize = 256;

/// Reads and decodes an image file; `origin` says where it was listed (file and line) for errors.
pub fn read_image(path: &Path, origin: &str) -> Result<Image> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("{} (listed at {origin}): cannot read: {e}", path.display())))?;
    decode(&bytes).map_err(|e| Error::Io(format!("{} (listed at {origin}): {e}", path.display())))
}

/// The 112x112 crop of an image file from its landmarks and template.
pub fn read_aligned(
    path: &Path,
    origin: &str,
    landmarks: &[[f32; 2]],
    template: &[[f32; 2]; 5],
) -> Result<Image> {
    let img = read_image(path, origin)?;
    norm_crop(&img, landmarks, template).map_err(|e| Error::Io(format!("{origin}: {e}")))
}

/// The model must take the aligned crop's size.
pub fn check_aligned_input(model: &IResNet) -> Result<()> {
    if model.config.input_hw != (ALIGNED_SIZE, ALIGNED_SIZE) {
        let (h, w) = model.config.input_hw;
        return Err(Error::Invalid(format!(
            "landmark alignment gives {ALIGNED_SIZE}x{ALIGNED_SIZE} crops, but the model takes {h}x{w}"
        )));
    }
    Ok(())
}

/// Embeddings `[N, D]` of images of the model's input size: the image's embedding plus that of its
/// horizontal flip (summed in f32) when `flip`, else the image's alone.
pub fn embed_images(
    model: &IResNet,
    params: &mut ParamStore,
    imgs: &[Image],
    flip: bool,
) -> Result<(Vec<f32>, usize)> {
    let hw = model.config.input_hw;
    let mut plain = Vec::with_capacity(imgs.len() * hw.0 * hw.1 * 3);
    let mut flipped = Vec::with_capacity(if flip { plain.capacity() } else { 0 });
    for img in imgs {
        if (img.height, img.width) != hw {
            return Err(Error::Io(format!(
                "an image is {}x{}, the model takes {}x{}",
                img.height, img.width, hw.0, hw.1
            )));
        }
        extend_normalized(&mut plain, &img.data, img.width * 3, false);
        if flip {
            extend_normalized(&mut flipped, &img.data, img.width * 3, true);
        }
    }
    let (mut e, dim) = embed_pixels(model, params, &plain)?;
    if flip {
        let (f, _) = embed_pixels(model, params, &flipped)?;
        e.iter_mut().zip(&f).for_each(|(a, b)| *a += b);
    }
    Ok((e, dim))
}

/// One image to embed: its file, where it was listed, and its landmarks (None: use it as it is).
pub struct Item {
    pub path: PathBuf,
    pub origin: String,
    pub landmarks: Option<Vec<[f32; 2]>>,
}

/// Embeddings of every item, in chunks: read and align in parallel, then embed. Prints progress.
pub fn embed_items(
    model: &IResNet,
    params: &mut ParamStore,
    items: &[Item],
    template: &[[f32; 2]; 5],
    flip: bool,
    what: &str,
) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut dim = model.config.embedding_size;
    let hw = model.config.input_hw;
    let start = std::time::Instant::now();
    for (c, chunk) in items.chunks(CHUNK).enumerate() {
        let imgs: Vec<Image> = chunk
            .par_iter()
            .map(|it| match &it.landmarks {
                Some(l) => read_aligned(&it.path, &it.origin, l, template),
                None => read_image(&it.path, &it.origin).and_then(|img| {
                    if (img.height, img.width) != hw {
                        return Err(Error::Io(format!(
                            "{} (listed at {}) is {}x{}, the model takes {}x{}",
                            it.path.display(),
                            it.origin,
                            img.height,
                            img.width,
                            hw.0,
                            hw.1
                        )));
                    }
                    Ok(img)
                }),
            })
            .collect::<Result<_>>()?;
        let (e, d) = embed_images(model, params, &imgs, flip)?;
        dim = d;
        out.extend(e);
        let done = (c * CHUNK + chunk.len()).min(items.len());
        if c % 40 == 39 || done == items.len() {
            eprintln!(
                "{what}: embedded {done} of {} images ({:.0} s)",
                items.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok((out, dim))
}
