//! Decoded u8 images to the normalized NHWC batch: the reference of kernels/cuda/input.cu, through the
//! loader's own normalization (`datasets::loader::extend_normalized`), so both paths agree with what the
//! CPU trains on.

use crate::tensor::{DType, Tensor};
use crate::{Error, Result};
use datasets::loader::extend_normalized;

pub fn images_to_nhwc(images: &[u8], shape: [usize; 4], flip: &[bool], dtype: DType) -> Result<Tensor> {
    let [n, h, w, c] = shape;
    if c != 3 || images.len() != n * h * w * 3 || flip.len() != n {
        return Err(Error::Shape(format!(
            "images_to_nhwc: {} bytes and {} flips for images of shape {shape:?}",
            images.len(),
            flip.len()
        )));
    }
    let mut out = Vec::with_capacity(images.len());
    for (img, &f) in images.chunks_exact((h * w * 3).max(1)).zip(flip) {
        extend_normalized(&mut out, img, w * 3, f);
    }
    let t = Tensor::from_vec(out, shape)?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        super::half::cast(&t, dtype)
    }
}
