//! RecordIO container, `.idx` text and image headers: any bytes give records or an error, never a panic.
#![no_main]

use datasets::recordio::{ImageHeader, RecordFile};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // "idx text NUL rec bytes" exercises the index path; anything without a NUL is scanned.
    let (index, rec) = match data.iter().position(|&b| b == 0) {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    let Ok(f) = RecordFile::from_bytes(Path::new("fuzz.rec"), rec.to_vec(), index) else { return };
    for &k in f.keys() {
        if let Ok(payload) = f.read(k) {
            let _ = ImageHeader::parse(&payload);
        }
    }
});
