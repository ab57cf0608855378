//! The `.bin` pickle-subset reader: any bytes give a pair set or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = datasets::verification::parse_bin(data, Path::new("fuzz.bin"));
});
