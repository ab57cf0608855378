//! Test helpers: a temporary directory removed on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "datasets-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of `jpeg` with one bit flipped inside its scan data such that the fast decoder still returns
/// an image and the strict check (`image::check_jpeg`, libjpeg-turbo's complaints) refuses it: the
/// silent corruption `--skip-corrupt` and `data inspect --decode` must find.
pub fn damage_scan_data(jpeg: &[u8]) -> Vec<u8> {
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a JPEG with a scan");
    let start = sos + 2 + usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]));
    let end = jpeg.len() - 2;
    // Positions spread over the scan, each bit of each: the first flip that decodes yet is flagged.
    for k in 0..(end - start) {
        let pos = start + (k * 7919) % (end - start);
        for bit in 0..8 {
            let mut c = jpeg.to_vec();
            c[pos] ^= 1 << bit;
            if crate::image::decode(&c).is_ok() && crate::image::check_jpeg(&c).is_err() {
                return c;
            }
        }
    }
    panic!("no bit flip of this JPEG decodes and is flagged");
}
