//! `.bin` sets pickled by Python (tests/parity/insightface_bin.py: protocols 2, 4, 5; bytes and numpy
//! arrays) read back with the same images and flags.

use datasets::verification::read_bin;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn reads_python_pickles() {
    let dir = fixtures().join("insightface_bin");
    let images_txt = std::fs::read_to_string(dir.join("images.txt")).unwrap_or_else(|e| {
        panic!(
            "fixture missing: {} ({e}); generate it with: python tests/parity/insightface_bin.py {}",
            dir.join("images.txt").display(),
            fixtures().display()
        )
    });
    let images: Vec<Vec<u8>> = images_txt.lines().map(unhex).collect();
    let same: Vec<bool> =
        std::fs::read_to_string(dir.join("issame.txt")).unwrap().lines().map(|l| l == "1").collect();
    assert_eq!((images.len(), same.len()), (6, 3));
    for kind in ["bytes", "numpy"] {
        for proto in [2, 4, 5] {
            let path = dir.join(format!("{kind}_p{proto}.bin"));
            let set = read_bin(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(set.images, images, "{}", path.display());
            assert_eq!(set.same, same, "{}", path.display());
        }
    }
}
