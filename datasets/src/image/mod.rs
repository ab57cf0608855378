//! Images as RGB u8, height x width x 3 (HWC), their JPEG/PNG coding, and face alignment.

pub mod align;
mod decode;
mod encode;
mod jpeg_check;

pub use decode::{decode, decode_checked, decode_into, decode_into_checked, Format};
pub use encode::encode_jpeg;
pub use jpeg_check::check_jpeg;

/// An RGB image, rows top to bottom, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn new(height: usize, width: usize) -> Image {
        Image { height, width, data: vec![0; height * width * 3] }
    }

    pub fn from_rgb(height: usize, width: usize, data: Vec<u8>) -> Image {
        assert_eq!(data.len(), height * width * 3, "RGB buffer size");
        Image { height, width, data }
    }
}
