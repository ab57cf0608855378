//! Round trips and every bad-input case of the container reader.

use super::*;
use crate::error::DataError;
use crate::testutil::TempDir;
use std::path::PathBuf;

fn write_set(dir: &TempDir, payloads: &[(u64, Vec<u8>)]) -> (PathBuf, PathBuf) {
    let rec = dir.path().join("t.rec");
    let idx = dir.path().join("t.idx");
    let mut w = RecordWriter::create(&rec, &idx).unwrap();
    for (k, p) in payloads {
        w.write(*k, p).unwrap();
    }
    w.finish().unwrap();
    (rec, idx)
}

fn with_magic_inside() -> Vec<u8> {
    let mut p = vec![1u8, 2, 3, 4];
    p.extend_from_slice(&MAGIC.to_le_bytes());
    p.extend_from_slice(&[5, 6, 7, 8]);
    p.extend_from_slice(&MAGIC.to_le_bytes());
    p.push(9);
    p
}

#[test]
fn round_trip_with_index_and_scan() {
    let dir = TempDir::new("rio-rt");
    let payloads = vec![(0u64, b"hello".to_vec()), (1, with_magic_inside()), (2, vec![]), (3, vec![7; 13])];
    let (rec, idx) = write_set(&dir, &payloads);
    assert!(!crate::recordio::writer::temp_name(&rec).exists());
    let f = RecordFile::open(&rec).unwrap();
    assert_eq!(f.index_path(), Some(idx.as_path()));
    for (k, p) in &payloads {
        assert_eq!(&*f.read(*k).unwrap(), &p[..], "key {k}");
    }
    // Split payload: three parts on disk, one record read back; file is 4-byte aligned.
    assert_eq!(f.data().len() % 4, 0);
    let scanned = RecordFile::open_with_index(&rec, None).unwrap();
    assert_eq!(scanned.keys(), &[0, 1, 2, 3]);
    for (k, p) in &payloads {
        assert_eq!(&*scanned.read(*k).unwrap(), &p[..]);
    }
}

#[test]
fn scan_recognises_trailing_record_zero() {
    let dir = TempDir::new("rio-h0");
    let img = |l: f32| pack_record(&ImageHeader::single(l, 0), b"img");
    // Images 1..2, identity record 3, then record 0 = (3, 4) written last, as insightface's tools do.
    let payloads = vec![
        (1, img(0.0)),
        (2, img(0.0)),
        (3, pack_record(&ImageHeader::multi(vec![1.0, 3.0], 3), b"")),
        (0, pack_record(&ImageHeader::multi(vec![3.0, 4.0], 0), b"")),
    ];
    let (rec, _) = write_set(&dir, &payloads);
    let f = RecordFile::open_with_index(&rec, None).unwrap();
    assert_eq!(f.keys(), &[1, 2, 3, 0]);
    let (h, _) = ImageHeader::parse(&f.read(0).unwrap()).unwrap().clone();
    assert_eq!(h.labels, vec![3.0, 4.0]);
}

#[test]
fn missing_file_is_named() {
    let e = RecordFile::open(std::path::Path::new("/nonexistent/x.rec")).err().unwrap();
    assert!(matches!(e, DataError::Missing { .. }));
    assert!(e.to_string().contains("/nonexistent/x.rec"));
}

#[test]
fn truncated_file() {
    let dir = TempDir::new("rio-trunc");
    let (rec, idx) = write_set(&dir, &[(0, vec![1; 40]), (1, vec![2; 40])]);
    let bytes = std::fs::read(&rec).unwrap();
    // Cut inside the second record's header: the scan fails there.
    std::fs::write(&rec, &bytes[..48 + 5]).unwrap();
    let e = RecordFile::open_with_index(&rec, None).err().unwrap();
    assert!(matches!(e, DataError::Truncated { offset: 48, .. }), "{e}");
    assert!(e.to_string().contains("t.rec") && e.to_string().contains("byte 48"), "{e}");
    // Cut inside the payload: the length runs past the end.
    std::fs::write(&rec, &bytes[..48 + 20]).unwrap();
    let e = RecordFile::open_with_index(&rec, None).err().unwrap();
    assert!(matches!(e, DataError::LengthPastEnd { offset: 48, length: 40, .. }), "{e}");
    // With the index, the second key's offset lies inside the file but its payload does not.
    let f = RecordFile::open_with_index(&rec, Some(&idx)).unwrap();
    assert!(f.read(0).is_ok());
    assert!(matches!(f.read(1).err().unwrap(), DataError::LengthPastEnd { .. }));
}

#[test]
fn wrong_magic() {
    let dir = TempDir::new("rio-magic");
    let (rec, _) = write_set(&dir, &[(0, vec![1; 8]), (1, vec![2; 8])]);
    let mut bytes = std::fs::read(&rec).unwrap();
    bytes[16] ^= 0xff;
    std::fs::write(&rec, &bytes).unwrap();
    let e = RecordFile::open_with_index(&rec, None).err().unwrap();
    assert!(matches!(e, DataError::BadMagic { offset: 16, .. }), "{e}");
    assert!(e.to_string().contains("byte 16"));
}

#[test]
fn length_past_end() {
    let dir = TempDir::new("rio-len");
    let (rec, _) = write_set(&dir, &[(0, vec![1; 8])]);
    let mut bytes = std::fs::read(&rec).unwrap();
    bytes[4..8].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&rec, &bytes).unwrap();
    let e = RecordFile::open_with_index(&rec, None).err().unwrap();
    assert!(matches!(e, DataError::LengthPastEnd { offset: 0, length: 1000, file_len: 16, .. }), "{e}");
}

#[test]
fn index_offset_not_at_a_record() {
    let dir = TempDir::new("rio-idx");
    let (rec, idx) = write_set(&dir, &[(0, vec![1; 8]), (1, vec![2; 8])]);
    std::fs::write(&idx, "0\t0\n1\t4\n").unwrap();
    let f = RecordFile::open(&rec).unwrap();
    let e = f.read(1).err().unwrap();
    assert!(matches!(e, DataError::OffsetNotAtRecord { line: 2, key: 1, offset: 4, .. }), "{e}");
    assert!(e.to_string().contains("t.idx:2"), "{e}");
    std::fs::write(&idx, "0\t0\n1\t4000\n").unwrap();
    let e = RecordFile::open(&rec).err().unwrap();
    assert!(e.to_string().contains("past the end"), "{e}");
    std::fs::write(&idx, "0\t0\n1\t2\n").unwrap();
    let e = RecordFile::open(&rec).unwrap().read(1).err().unwrap();
    assert!(e.to_string().contains("multiple of 4"), "{e}");
}

#[test]
fn index_pointing_at_a_continuation_part() {
    let dir = TempDir::new("rio-cont");
    let (rec, idx) = write_set(&dir, &[(0, with_magic_inside())]);
    // The second part starts at 8 + 4 = 12.
    std::fs::write(&idx, "0\t12\n").unwrap();
    let e = RecordFile::open(&rec).unwrap().read(0).err().unwrap();
    assert!(e.to_string().contains("continuation part"), "{e}");
    // Scanning a file that starts with a middle part.
    let bytes = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &bytes[12..]).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let e = RecordFile::open(&rec).err().unwrap();
    assert!(matches!(e, DataError::BadContinuation { offset: 0, cflag: 2, .. }), "{e}");
}

#[test]
fn unknown_key_and_empty_file() {
    let dir = TempDir::new("rio-empty");
    let rec = dir.path().join("e.rec");
    std::fs::write(&rec, b"").unwrap();
    let f = RecordFile::open(&rec).unwrap();
    assert!(f.is_empty());
    let e = f.read(0).err().unwrap();
    assert!(matches!(e, DataError::UnknownKey { key: 0, .. }), "{e}");
}

#[test]
fn mutated_files_give_errors_not_panics() {
    // A quick in-tree stand-in for the cargo-fuzz target (datasets/fuzz): random flips, cuts and
    // length-word edits of a valid file, read through scan and through an index.
    let dir = TempDir::new("rio-mut");
    let (rec, idx) = write_set(
        &dir,
        &[
            (0, with_magic_inside()),
            (1, pack_record(&ImageHeader::multi(vec![1.0, 2.0], 1), b"abc")),
            (2, vec![3; 9]),
        ],
    );
    let w_bytes = std::fs::read(&rec).unwrap();
    let idx_text = std::fs::read_to_string(&idx).unwrap();
    let mut rng = crate::rng::Rng::new(99);
    for _ in 0..3000 {
        let mut b = w_bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let p = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[p] ^= 1 << rng.below(8),
                1 => b[p] = rng.next_u64() as u8,
                _ => b.truncate(p),
            }
            if b.is_empty() {
                break;
            }
        }
        for index in [None, Some(idx_text.as_str())] {
            if let Ok(f) = RecordFile::from_bytes(std::path::Path::new("m.rec"), b.clone(), index) {
                for &k in f.keys() {
                    if let Ok(p) = f.read(k) {
                        let _ = ImageHeader::parse(&p);
                    }
                }
            }
        }
    }
}
