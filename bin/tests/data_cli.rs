//! `engine-train data pack` / `data inspect` end to end: a folder tree in, a face set out, a summary
//! back; bad input exits with status 2 and a message naming the file.

use datasets::image::{encode_jpeg, Image};
use datasets::testutil::TempDir;
use std::process::Command;

fn engine_train(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-train")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn pack_then_inspect() {
    let src = TempDir::new("cli-src");
    for (id, n) in [("id_a", 2), ("id_b", 3)] {
        std::fs::create_dir_all(src.path().join(id)).unwrap();
        for i in 0..n {
            let img = Image::from_rgb(16, 12, vec![(i * 60) as u8; 16 * 12 * 3]);
            std::fs::write(src.path().join(id).join(format!("{i}.jpg")), encode_jpeg(&img, 90).unwrap())
                .unwrap();
        }
    }
    let out = TempDir::new("cli-out");
    let o = out.path().to_str().unwrap();
    let (code, text) = engine_train(&["data", "pack", src.path().to_str().unwrap(), "-o", o]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("packed 5 images of 2 classes (16x12)"), "{text}");
    let (code, text) = engine_train(&["data", "inspect", o, "--decode"]);
    assert_eq!(code, 0, "{text}");
    for want in [
        "images: 5",
        "property: 2 classes, 16x12",
        "labels: 0..=1, 2 distinct",
        "identity records: 2",
        "layout: insightface",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    std::fs::write(out.path().join("property"), "2,16\n").unwrap();
    let (code, text) = engine_train(&["data", "inspect", o]);
    assert_eq!(code, 2);
    assert!(text.contains("property:1"), "{text}");
    let (code, text) = engine_train(&["data", "inspect", "/nonexistent/train.rec"]);
    assert_eq!(code, 2);
    assert!(text.contains("/nonexistent/train.rec: file not found"), "{text}");
}
