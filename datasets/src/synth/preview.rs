//! A grid of generated photos (rows: identities, columns: photos of each) for the README, written as
//! an uncompressed PNG (stored deflate blocks) so that no image crate is needed, or as a binary PPM
//! when the path ends in `.ppm`.

use super::{train_image, SynthConfig};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// PNG bytes of an 8-bit RGB image (`rgb` is HWC, `width * height * 3` bytes).
pub fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(rgb.len(), width * height * 3, "encode_png: buffer does not match {width}x{height} RGB");
    let mut raw = Vec::with_capacity((width * 3 + 1) * height);
    for row in rgb.chunks(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Writes `rows` training identities x `cols` photos each, 2-pixel white gutters, to `path`
/// (PNG, or PPM for a `.ppm` path), through a temporary file renamed into place.
pub fn write_preview(path: &Path, cfg: &SynthConfig, rows: usize, cols: usize) -> std::io::Result<()> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    cfg.validate().map_err(|e| invalid(e.to_string()))?;
    if rows == 0 || cols == 0 || rows > cfg.identities {
        return Err(invalid(format!("preview of {rows}x{cols} from {} identities", cfg.identities)));
    }
    let s = cfg.size;
    let gap = 2;
    let (w, h) = (cols * (s + gap) + gap, rows * (s + gap) + gap);
    let tiles: Vec<_> =
        (0..rows * cols).into_par_iter().map(|i| train_image(cfg, (i / cols) as u32, i % cols)).collect();
    let mut canvas = vec![255u8; w * h * 3];
    for (i, tile) in tiles.iter().enumerate() {
        let (x0, y0) = (gap + (i % cols) * (s + gap), gap + (i / cols) * (s + gap));
        for y in 0..s {
            let dst = ((y0 + y) * w + x0) * 3;
            canvas[dst..dst + s * 3].copy_from_slice(&tile.rgb[y * s * 3..(y + 1) * s * 3]);
        }
    }
    let bytes = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ppm")) {
        let mut b = format!("P6\n{w} {h}\n255\n").into_bytes();
        b.extend_from_slice(&canvas);
        b
    } else {
        encode_png(w, h, &canvas)
    };
    let tmp = path.with_extension("tmp-preview");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
