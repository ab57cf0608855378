//! RGB to JPEG for the writer (raw pixels -> records). jpeg-encoder: pure Rust, no dependencies, baseline
//! JFIF with standard tables, which every decoder (OpenCV's libjpeg included) reads.

use super::Image;
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// Encodes with 4:2:0 chroma subsampling (as OpenCV's `imencode` does by default) at `quality` 1..=100.
pub fn encode_jpeg(img: &Image, quality: u8) -> Result<Vec<u8>, String> {
    if img.height == 0 || img.width == 0 || img.height > 65535 || img.width > 65535 {
        return Err(format!("cannot encode a {}x{} image as JPEG", img.height, img.width));
    }
    let mut out = Vec::with_capacity(img.data.len() / 8 + 1024);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.encode(&img.data, img.width as u16, img.height as u16, ColorType::Rgb)
        .map_err(|e| format!("JPEG encoder: {e}"))?;
    Ok(out)
}
