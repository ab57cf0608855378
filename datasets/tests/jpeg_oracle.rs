//! The strict JPEG check against OpenCV's libjpeg-turbo (tests/parity/jpeg_corrupt.py): every damaged
//! sequential JPEG that libjpeg-turbo flags (a warning or a refusal) is an error of `decode_checked`, and
//! every one it decodes without a word decodes here too. Progressive files are not checked by us: there
//! only the absence of false alarms is required, and the misses are counted.

use datasets::image::{decode, decode_checked};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"))
}

#[test]
fn strict_decoding_flags_what_libjpeg_turbo_flags() {
    let dir = fixtures().join("jpeg_corrupt");
    let labels = std::fs::read_to_string(dir.join("labels.txt")).unwrap_or_else(|e| {
        panic!(
            "fixture missing: {} ({e}); generate it with: python tests/parity/jpeg_corrupt.py {}",
            dir.join("labels.txt").display(),
            fixtures().display()
        )
    });
    let (mut checked, mut flagged, mut fast_missed) = (0, 0, 0);
    let (mut progressive_flagged, mut progressive_missed) = (0, 0);
    let mut wrong = Vec::new();
    for line in labels.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, want, said) = (f[0], f[1] == "1", f[2]);
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let ours = decode_checked(&bytes);
        if name.starts_with("progressive") {
            progressive_flagged += usize::from(want);
            if want && ours.is_ok() {
                progressive_missed += 1;
            } else if !want && ours.is_err() {
                wrong.push(format!("{name}: a false alarm ({})", ours.unwrap_err()));
            }
            continue;
        }
        checked += 1;
        flagged += usize::from(want);
        if want && decode(&bytes).is_ok() {
            fast_missed += 1;
        }
        match (want, ours) {
            (true, Ok(_)) => wrong.push(format!("{name}: libjpeg-turbo says '{said}', we decode it")),
            (false, Err(e)) => wrong.push(format!("{name}: libjpeg-turbo is silent, we say '{e}'")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{} disagreements:\n{}", wrong.len(), wrong.join("\n"));
    // The point of the check: most of what libjpeg-turbo flags, the fast decoder alone returns.
    assert!(checked >= 360 && flagged >= 150, "{checked} files, {flagged} flagged: fixture too small");
    assert!(
        fast_missed * 2 >= flagged,
        "only {fast_missed} of {flagged} flagged files pass the fast decoder"
    );
    // Progressive files rest on zune-jpeg's strict mode alone.
    assert!(
        progressive_missed * 2 <= progressive_flagged,
        "{progressive_missed} of {progressive_flagged} flagged progressive files not caught"
    );
    eprintln!(
        "{checked} sequential files, {flagged} flagged by libjpeg-turbo, {fast_missed} of them decoded by the fast path alone; progressive: {progressive_missed} of {progressive_flagged} flagged files not caught"
    );
}
