//! JPEG and PNG to RGB u8 HWC. zune-jpeg: pure Rust, SIMD, fuzzed, and faster per thread than
//! libjpeg-turbo through OpenCV on small face crops; zune-png from the same family for PNG.

use super::Image;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

impl Format {
    /// Recognises the format from the first bytes (not from a file name, which may lie).
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xff, 0xd8]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else {
            None
        }
    }
}

/// Faces are small; anything this large is a corrupt header, not a face.
const MAX_SIDE: usize = 8192;

/// Decodes into `out` (resized to h*w*3), reusing its allocation; returns (height, width).
pub fn decode_into(bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, usize), String> {
    decode_with(bytes, out, false)
}

fn decode_with(bytes: &[u8], out: &mut Vec<u8>, strict: bool) -> Result<(usize, usize), String> {
    let tidy = |e: String| e.trim_end().replace('\n', "; ");
    match Format::sniff(bytes) {
        Some(Format::Jpeg) => decode_jpeg(bytes, out, strict).map_err(tidy),
        Some(Format::Png) => decode_png(bytes, out, strict).map_err(tidy),
        None if bytes.is_empty() => Err("empty image".into()),
        None => Err(format!("neither JPEG nor PNG (starts with {:02x?})", &bytes[..bytes.len().min(4)])),
    }
}

/// `decode_into` after the strict check of a JPEG's entropy-coded data (`check_jpeg`): what
/// libjpeg-turbo would warn about is an error here, where the fast decoder alone returns an image.
pub fn decode_into_checked(bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, usize), String> {
    if Format::sniff(bytes) == Some(Format::Jpeg) {
        super::check_jpeg(bytes).map_err(|e| format!("JPEG: corrupt data: {e}"))?;
    }
    // zune-jpeg's strict mode too: it is what catches some damage in the progressive files the check
    // above does not read.
    decode_with(bytes, out, true)
}

/// `decode` with the strict check (see `decode_into_checked`).
pub fn decode_checked(bytes: &[u8]) -> Result<Image, String> {
    let mut data = Vec::new();
    let (height, width) = decode_into_checked(bytes, &mut data)?;
    Ok(Image { height, width, data })
}

pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    let mut data = Vec::new();
    let (height, width) = decode_into(bytes, &mut data)?;
    Ok(Image { height, width, data })
}

fn options() -> DecoderOptions {
    DecoderOptions::new_fast().set_max_width(MAX_SIDE).set_max_height(MAX_SIDE)
}

fn decode_jpeg(bytes: &[u8], out: &mut Vec<u8>, strict: bool) -> Result<(usize, usize), String> {
    let opts = options().jpeg_set_out_colorspace(ColorSpace::RGB).set_strict_mode(strict);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    dec.decode_headers().map_err(|e| format!("JPEG: {e:?}"))?;
    let (w, h) = dec.dimensions().ok_or("JPEG: no dimensions")?;
    let size = dec.output_buffer_size().ok_or("JPEG: no output size")?;
    if size != w * h * 3 {
        return Err(format!("JPEG: decoder gives {size} bytes for {h}x{w} RGB"));
    }
    out.resize(size, 0);
    dec.decode_into(out).map_err(|e| format!("JPEG: {e:?}"))?;
    Ok((h, w))
}

fn decode_png(bytes: &[u8], out: &mut Vec<u8>, strict: bool) -> Result<(usize, usize), String> {
    // Strict: the chunk CRCs and the zlib checksum are verified too.
    let opts = options().png_set_strip_to_8bit(true).set_strict_mode(strict);
    let mut dec = zune_png::PngDecoder::new_with_options(ZCursor::new(bytes), opts);
    dec.decode_headers().map_err(|e| format!("PNG: {e:?}"))?;
    let (w, h) = dec.dimensions().ok_or("PNG: no dimensions")?;
    let cs = dec.colorspace().ok_or("PNG: no colour space")?;
    let raw = dec.decode_raw().map_err(|e| format!("PNG: {e:?}"))?;
    let channels = cs.num_components();
    if raw.len() != w * h * channels {
        return Err(format!("PNG: {} bytes for {h}x{w}x{channels}", raw.len()));
    }
    out.resize(w * h * 3, 0);
    match cs {
        ColorSpace::RGB => out.copy_from_slice(&raw),
        ColorSpace::RGBA => rgb_from(&raw, 4, out, |p| [p[0], p[1], p[2]]),
        ColorSpace::Luma => rgb_from(&raw, 1, out, |p| [p[0]; 3]),
        ColorSpace::LumaA => rgb_from(&raw, 2, out, |p| [p[0]; 3]),
        other => return Err(format!("PNG: unsupported colour space {other:?}")),
    }
    Ok((h, w))
}

/// Alpha is dropped, not composited: OpenCV's default IMREAD_COLOR (what MXNet's imdecode uses) does the same.
fn rgb_from(raw: &[u8], n: usize, out: &mut [u8], f: impl Fn(&[u8]) -> [u8; 3]) {
    for (src, dst) in raw.chunks_exact(n).zip(out.chunks_exact_mut(3)) {
        dst.copy_from_slice(&f(src));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::encode_jpeg;

    fn gradient(h: usize, w: usize) -> Image {
        let mut img = Image::new(h, w);
        for y in 0..h {
            for x in 0..w {
                let p = (y * w + x) * 3;
                img.data[p] = (x * 255 / w) as u8;
                img.data[p + 1] = (y * 255 / h) as u8;
                img.data[p + 2] = 128;
            }
        }
        img
    }

    #[test]
    fn jpeg_round_trip_is_close() {
        let img = gradient(40, 56);
        let jpg = encode_jpeg(&img, 95).unwrap();
        let back = decode(&jpg).unwrap();
        assert_eq!((back.height, back.width), (40, 56));
        let mad: f64 =
            img.data.iter().zip(&back.data).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>()
                / img.data.len() as f64;
        assert!(mad < 2.0, "mean abs diff {mad}");
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let jpg = encode_jpeg(&gradient(32, 32), 90).unwrap();
        assert!(decode(&[]).unwrap_err().contains("empty"));
        assert!(decode(b"GIF89a....").unwrap_err().contains("neither JPEG nor PNG"));
        // Truncations and byte flips at many places: never a panic; an error where the header breaks.
        assert!(decode(&jpg[..20]).is_err());
        for cut in (2..jpg.len()).step_by(37) {
            let _ = decode(&jpg[..cut]);
        }
        for pos in (2..jpg.len()).step_by(11) {
            let mut b = jpg.clone();
            b[pos] ^= 0x5a;
            let _ = decode(&b);
        }
        assert!(decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
    }

    /// A minimal stored-deflate PNG writer, so the test needs no encoder crate.
    fn png_rgb(h: usize, w: usize, channels: usize, color_type: u8, pixels: &[u8]) -> Vec<u8> {
        fn crc32(data: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in data {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                }
            }
            !c
        }
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        let mut raw = Vec::new();
        for y in 0..h {
            raw.push(0); // filter: none
            raw.extend_from_slice(&pixels[y * w * channels..(y + 1) * w * channels]);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &raw {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        let mut z = vec![0x78, 0x01, 1];
        z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
        z.extend_from_slice(&raw);
        z.extend_from_slice(&((b << 16) | a).to_be_bytes());
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &z);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn png_rgb_rgba_and_gray_decode_exactly() {
        let img = gradient(6, 5);
        let png = png_rgb(6, 5, 3, 2, &img.data);
        assert_eq!(decode(&png).unwrap(), img);
        let rgba: Vec<u8> = img.data.chunks(3).flat_map(|p| [p[0], p[1], p[2], 77]).collect();
        assert_eq!(decode(&png_rgb(6, 5, 4, 6, &rgba)).unwrap(), img);
        let gray: Vec<u8> = (0..30).map(|i| i as u8 * 8).collect();
        let g = decode(&png_rgb(6, 5, 1, 0, &gray)).unwrap();
        assert_eq!(&g.data[..6], &[0, 0, 0, 8, 8, 8]);
    }
}
