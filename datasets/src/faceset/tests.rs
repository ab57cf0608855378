//! Face-set round trips and bad-input cases.

use super::*;
use crate::error::DataError;
use crate::image::{decode, encode_jpeg, Image};
use crate::recordio::{pack_record, ImageHeader, RecordWriter};
use crate::testutil::TempDir;

fn jpeg(shade: u8) -> Vec<u8> {
    let mut img = Image::new(8, 6);
    img.data.iter_mut().enumerate().for_each(|(i, p)| *p = shade.wrapping_add((i % 7) as u8));
    encode_jpeg(&img, 90).unwrap()
}

#[test]
fn writes_insightface_layout_and_reads_it_back() {
    let dir = TempDir::new("fs-rt");
    let items = vec![(0, jpeg(10)), (0, jpeg(20)), (2, jpeg(30)), (3, jpeg(40)), (3, jpeg(50))];
    let s = write_face_set(dir.path(), items.clone(), 4, 8, 6).unwrap();
    assert_eq!((s.images, s.classes), (5, 4));
    assert_eq!(std::fs::read_to_string(dir.path().join("property")).unwrap(), "4,8,6\n");
    for scan in [false, true] {
        if scan {
            std::fs::remove_file(dir.path().join("train.idx")).unwrap();
        }
        let fs = FaceSet::open(dir.path()).unwrap();
        assert_eq!(fs.layout(), Layout::Insightface { images_end: 6, identities_end: 10 });
        assert_eq!(fs.image_keys(), &[1, 2, 3, 4, 5]);
        assert_eq!(fs.identity_ranges().unwrap(), vec![(1, 3), (6, 6), (3, 4), (4, 6)]);
        for (i, (label, bytes)) in items.iter().enumerate() {
            let smp = fs.sample(i).unwrap();
            assert_eq!(smp.label, *label);
            assert_eq!(&*smp.image, &bytes[..]);
            assert_eq!(smp.header.id, i as u64 + 1);
        }
    }
}

#[test]
fn extra_labels_are_kept_and_class_is_first() {
    let dir = TempDir::new("fs-multi");
    let mut w = FaceSetWriter::create(dir.path(), 2, 8, 6).unwrap();
    w.add(1, &[0.75, 3.0], &jpeg(1)).unwrap();
    w.finish().unwrap();
    let fs = FaceSet::open(&dir.path().join("train.rec")).unwrap();
    let smp = fs.sample(0).unwrap();
    assert_eq!(smp.label, 1);
    assert_eq!(smp.header.labels, vec![1.0, 0.75, 3.0]);
}

#[test]
fn writer_refuses_bad_labels_and_leaves_no_files() {
    let dir = TempDir::new("fs-wbad");
    {
        let mut w = FaceSetWriter::create(dir.path(), 2, 8, 6).unwrap();
        assert!(w.add(2, &[], &jpeg(0)).unwrap_err().to_string().contains("outside [0, 2)"));
        w.add(1, &[], &jpeg(0)).unwrap();
        assert!(w.add(0, &[], &jpeg(0)).unwrap_err().to_string().contains("must not decrease"));
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let e = FaceSetWriter::create(dir.path(), 2, 8, 6).unwrap().finish().unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }));
}

/// A flat set (no record 0 header) written record by record.
fn flat_set(dir: &TempDir, labels: &[f32], property: Option<&str>) {
    let mut w = RecordWriter::create(&dir.path().join("train.rec"), &dir.path().join("train.idx")).unwrap();
    for (k, &l) in labels.iter().enumerate() {
        w.write(k as u64, &pack_record(&ImageHeader::single(l, k as u64), &jpeg(0))).unwrap();
    }
    w.finish().unwrap();
    if let Some(p) = property {
        std::fs::write(dir.path().join("property"), p).unwrap();
    }
}

#[test]
fn flat_layout_and_label_out_of_range() {
    let dir = TempDir::new("fs-flat");
    flat_set(&dir, &[0.0, 1.0, 5.0, -1.0, 1.5], Some("3,8,6"));
    let fs = FaceSet::open(dir.path()).unwrap();
    assert_eq!(fs.layout(), Layout::Flat);
    assert_eq!(fs.len(), 5);
    assert_eq!(fs.sample(1).unwrap().label, 1);
    let e = fs.sample(2).unwrap_err();
    assert!(matches!(e, DataError::LabelOutOfRange { key: 2, classes: 3, .. }), "{e}");
    assert!(e.to_string().contains("record 2") && e.to_string().contains("train.rec"), "{e}");
    assert!(matches!(fs.sample(3).unwrap_err(), DataError::LabelOutOfRange { key: 3, .. }));
    assert!(fs.sample(4).unwrap_err().to_string().contains("not an integer"));
}

#[test]
fn empty_set_and_bad_record_zero() {
    let dir = TempDir::new("fs-empty");
    let rec = dir.path().join("train.rec");
    std::fs::write(&rec, b"").unwrap();
    assert!(matches!(FaceSet::open(dir.path()).err().unwrap(), DataError::Empty { .. }));
    // Record 0 announcing no images (a = 1).
    let mut w = RecordWriter::create(&rec, &dir.path().join("train.idx")).unwrap();
    w.write(0, &pack_record(&ImageHeader::multi(vec![1.0, 1.0], 0), b"")).unwrap();
    w.finish().unwrap();
    assert!(matches!(FaceSet::open(dir.path()).err().unwrap(), DataError::Empty { .. }));
    // Record 0 announcing keys that are not there.
    let mut w = RecordWriter::create(&rec, &dir.path().join("train.idx")).unwrap();
    w.write(0, &pack_record(&ImageHeader::multi(vec![3.0, 4.0], 0), b"")).unwrap();
    w.finish().unwrap();
    let e = FaceSet::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("record 0") && e.contains("key 1 is missing"), "{e}");
}

#[test]
fn missing_and_bad_property() {
    let dir = TempDir::new("fs-prop");
    flat_set(&dir, &[0.0], Some("x,1,2"));
    let e = FaceSet::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("property:1"), "{e}");
    let e = FaceSet::from_parts(&dir.path().join("train.rec"), None, Some(&dir.path().join("nope")))
        .err()
        .unwrap();
    assert!(matches!(e, DataError::Missing { .. }));
    std::fs::remove_file(dir.path().join("property")).unwrap();
    assert_eq!(FaceSet::open(dir.path()).unwrap().classes(), None);
}

#[test]
fn pack_folder_and_list() {
    let src = TempDir::new("fs-src");
    for (id, n) in [("bob", 2), ("alice", 1)] {
        std::fs::create_dir_all(src.path().join(id)).unwrap();
        for i in 0..n {
            std::fs::write(src.path().join(id).join(format!("{i}.jpg")), jpeg(i as u8 * 50)).unwrap();
        }
    }
    std::fs::write(src.path().join("bob").join("bad.jpg"), b"\xff\xd8garbage").unwrap();
    let out = TempDir::new("fs-out");
    let e = pack_folder(src.path(), out.path(), &PackOptions::default()).unwrap_err().to_string();
    assert!(e.contains("bad.jpg"), "{e}");
    let rep = pack_folder(src.path(), out.path(), &PackOptions { skip_corrupt: true }).unwrap();
    assert_eq!(rep.skipped.len(), 1);
    assert_eq!(
        (rep.summary.images, rep.summary.classes, rep.summary.height, rep.summary.width),
        (3, 2, 8, 6)
    );
    let fs = FaceSet::open(out.path()).unwrap();
    let labels: Vec<u32> = (0..3).map(|i| fs.sample(i).unwrap().label).collect();
    assert_eq!(labels, vec![0, 1, 1]); // alice = 0, bob = 1
    assert_eq!(decode(&fs.sample(2).unwrap().image).unwrap().height, 8);

    std::fs::write(src.path().join("l.lst"), "0\t1\tbob/0.jpg\n1\t0\talice/0.jpg\n\n2\t1\tbob/1.jpg\n")
        .unwrap();
    let out2 = TempDir::new("fs-out2");
    let rep = pack_list(&src.path().join("l.lst"), out2.path(), &PackOptions::default()).unwrap();
    assert_eq!(rep.summary.images, 3);
    let fs = FaceSet::open(out2.path()).unwrap();
    assert_eq!(fs.identity_ranges().unwrap(), vec![(1, 2), (2, 4)]);
    std::fs::write(src.path().join("b.lst"), "0\tx\tbob/0.jpg\n").unwrap();
    let e =
        pack_list(&src.path().join("b.lst"), out2.path(), &PackOptions::default()).unwrap_err().to_string();
    assert!(e.contains("b.lst:1"), "{e}");
}

#[test]
fn add_pixels_encodes_and_checks_size() {
    let dir = TempDir::new("fs-pixels");
    let mut w = FaceSetWriter::create(dir.path(), 1, 8, 6).unwrap();
    let img = Image::from_rgb(8, 6, vec![90; 144]);
    w.add_pixels(0, &[], &img, 95).unwrap();
    assert!(w
        .add_pixels(0, &[], &Image::new(6, 8), 95)
        .unwrap_err()
        .to_string()
        .contains("6x8 image for a set of 8x6"));
    w.finish().unwrap();
    let fs = FaceSet::open(dir.path()).unwrap();
    let back = decode(&fs.sample(0).unwrap().image).unwrap();
    assert!(back.data.iter().all(|&v| v.abs_diff(90) <= 1));
}

/// Rewrites `train.idx`, giving each key in `remap` the offset another key had.
fn remap_index(dir: &std::path::Path, remap: &[(u64, u64)]) {
    let idx = dir.join("train.idx");
    let text = std::fs::read_to_string(&idx).unwrap();
    let offsets: std::collections::HashMap<u64, String> = text
        .lines()
        .map(|l| l.split_once('\t').unwrap())
        .map(|(k, o)| (k.parse().unwrap(), o.to_string()))
        .collect();
    let out: String = text
        .lines()
        .map(|l| {
            let k: u64 = l.split_once('\t').unwrap().0.parse().unwrap();
            let from = remap.iter().find(|(key, _)| *key == k).map_or(k, |(_, other)| *other);
            format!("{k}\t{}\n", offsets[&from])
        })
        .collect();
    std::fs::write(&idx, out).unwrap();
}

#[test]
fn an_index_key_pointing_at_another_keys_record_is_refused() {
    let items = vec![(0, jpeg(10)), (1, jpeg(20)), (1, jpeg(30)), (2, jpeg(40))];
    // Key 3 at key 2's record: two keys, one record, found when the set opens.
    let dir = TempDir::new("idx-dup");
    write_face_set(dir.path(), items.clone(), 3, 8, 6).unwrap();
    remap_index(dir.path(), &[(3, 2)]);
    let e = FaceSet::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("train.idx:") && e.contains("key 3 points at byte") && e.contains("key 2"), "{e}");
    // Keys 1 and 2 swapped: no offset repeats, but the records' headers name the other key.
    let dir = TempDir::new("idx-swap");
    write_face_set(dir.path(), items, 3, 8, 6).unwrap();
    remap_index(dir.path(), &[(1, 2), (2, 1)]);
    let set = FaceSet::open(dir.path()).unwrap();
    let e = set.sample(0).unwrap_err().to_string();
    assert!(
        e.contains("train.idx:") && e.contains("key 1 points at a record whose header names key 2"),
        "{e}"
    );
    // Without the index the file is scanned, in order, and reads as written.
    std::fs::remove_file(dir.path().join("train.idx")).unwrap();
    let set = FaceSet::open(dir.path()).unwrap();
    assert_eq!(set.sample(0).unwrap().label, 0);
}
