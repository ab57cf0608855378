//! Loader behaviour on a small generated set.

use super::*;
use crate::augment::AugmentConfig;
use crate::faceset::{FaceSet, FaceSetWriter};
use crate::image::{decode, encode_jpeg, Image};
use crate::testutil::TempDir;
use std::sync::Arc;

/// 23 images of 12x10 in 5 classes; image i has a distinct pattern. Image `corrupt` (if any) is garbage.
fn make_set(dir: &TempDir, corrupt: Option<usize>) -> Arc<FaceSet> {
    let mut w = FaceSetWriter::create(dir.path(), 5, 12, 10).unwrap();
    for i in 0..23usize {
        let mut img = Image::new(12, 10);
        for (p, v) in img.data.iter_mut().enumerate() {
            *v = ((p * (i + 3) + i * 11) % 256) as u8;
        }
        let bytes = if corrupt == Some(i) {
            b"\xff\xd8\xff\xe0junk".to_vec()
        } else {
            encode_jpeg(&img, 92).unwrap()
        };
        w.add((i / 5) as u32, &[], &bytes).unwrap();
    }
    w.finish().unwrap();
    Arc::new(FaceSet::open(dir.path()).unwrap())
}

fn cfg(threads: usize) -> LoaderConfig {
    LoaderConfig { batch_size: 4, seed: 42, threads, prefetch: 4, ..LoaderConfig::default() }
}

fn collect(l: &Loader, epoch: u64) -> Vec<Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn batches_hold_normalized_decoded_pixels_and_labels() {
    let dir = TempDir::new("ld-basic");
    let set = make_set(&dir, None);
    let l = Loader::new(set.clone(), LoaderConfig { augment: AugmentConfig::none(), ..cfg(2) }).unwrap();
    assert_eq!(l.image_size(), (12, 10));
    assert_eq!(l.batches_per_epoch(), 5); // 23 / 4, last 3 dropped
    let batches = collect(&l, 0);
    assert_eq!(batches.len(), 5);
    let mut keys = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        assert_eq!((b.index, b.len()), (i, 4));
        let Pixels::F32(px) = &b.pixels else { panic!("f32 expected") };
        assert_eq!(px.len(), 4 * 12 * 10 * 3);
        for (j, &key) in b.keys.iter().enumerate() {
            let s = set.read_key(key).unwrap();
            assert_eq!(b.labels[j], s.label);
            assert_eq!(b.labels[j], ((key - 1) / 5) as u32);
            let img = decode(&s.image).unwrap();
            let want: Vec<f32> = img.data.iter().map(|&v| (v as f32 / 255.0 - 0.5) / 0.5).collect();
            assert_eq!(&px[j * 360..(j + 1) * 360], &want[..]);
        }
        keys.extend_from_slice(&b.keys);
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20, "no sample twice in an epoch");
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let dir = TempDir::new("ld-det");
    let set = make_set(&dir, None);
    let aug = AugmentConfig { crop_prob: 0.5, low_res_prob: 0.5, photometric_prob: 0.5, flip: true };
    let one = collect(&Loader::new(set.clone(), LoaderConfig { augment: aug, ..cfg(1) }).unwrap(), 3);
    let three = collect(&Loader::new(set.clone(), LoaderConfig { augment: aug, ..cfg(3) }).unwrap(), 3);
    assert_eq!(one, three);
    let other_epoch = collect(&Loader::new(set.clone(), LoaderConfig { augment: aug, ..cfg(3) }).unwrap(), 4);
    assert_ne!(one[0].keys, other_epoch[0].keys);
    let other_seed =
        collect(&Loader::new(set, LoaderConfig { augment: aug, seed: 43, ..cfg(2) }).unwrap(), 3);
    assert_ne!(one[0].keys, other_seed[0].keys);
}

#[test]
fn u8_output_applies_the_flip() {
    let dir = TempDir::new("ld-u8");
    let set = make_set(&dir, None);
    let base = LoaderConfig { augment: AugmentConfig::flip_only(), format: PixelFormat::U8, ..cfg(2) };
    let batches = collect(&Loader::new(set.clone(), base).unwrap(), 0);
    let mut flipped = 0;
    for b in &batches {
        let Pixels::U8(px) = &b.pixels else { panic!("u8 expected") };
        for (j, &key) in b.keys.iter().enumerate() {
            let img = decode(&set.read_key(key).unwrap().image).unwrap();
            let got = &px[j * 360..(j + 1) * 360];
            if got != &img.data[..] {
                let mut f = img.clone();
                crate::augment::flip_horizontal(&mut f);
                assert_eq!(got, &f.data[..]);
                flipped += 1;
            }
        }
    }
    assert!((3..18).contains(&flipped), "{flipped} of 20 flipped");
}

/// The GPU trains on u8 batches normalized by kernels/cuda/input.cu; the CPU on the loader's f32 ones.
/// With one seed both formats give the same images, order and flips, so the two paths see one batch.
#[test]
fn u8_and_f32_batches_are_the_same_images() {
    let dir = TempDir::new("ld-u8f32");
    let set = make_set(&dir, None);
    let base = LoaderConfig { augment: AugmentConfig::flip_only(), ..cfg(2) };
    let u8s = collect(
        &Loader::new(set.clone(), LoaderConfig { format: PixelFormat::U8, ..base.clone() }).unwrap(),
        1,
    );
    let f32s =
        collect(&Loader::new(set, LoaderConfig { format: PixelFormat::F32Normalized, ..base }).unwrap(), 1);
    assert_eq!(u8s.len(), f32s.len());
    let table = normalize_table();
    for (a, b) in u8s.iter().zip(&f32s) {
        assert_eq!(a.keys, b.keys);
        let (Pixels::U8(pa), Pixels::F32(pb)) = (&a.pixels, &b.pixels) else { panic!("formats") };
        assert!(pa.iter().map(|&v| table[v as usize]).eq(pb.iter().copied()));
    }
}

#[test]
fn ranks_split_the_epoch() {
    let dir = TempDir::new("ld-rank");
    let set = make_set(&dir, None);
    let mut all = Vec::new();
    for rank in 0..2 {
        let c = LoaderConfig { rank, world: 2, drop_last: false, ..cfg(2) };
        let l = Loader::new(set.clone(), c).unwrap();
        assert_eq!(l.batches_per_epoch(), 3); // 12 per rank
        all.extend(collect(&l, 1).into_iter().flat_map(|b| b.keys));
    }
    assert_eq!(all.len(), 24);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 23);
    let bad = Loader::new(set, LoaderConfig { rank: 2, world: 2, ..cfg(1) }).err().unwrap();
    assert!(bad.to_string().contains("rank 2"));
}

#[test]
fn corrupt_record_fails_or_is_skipped() {
    let dir = TempDir::new("ld-corrupt");
    let set = make_set(&dir, Some(7)); // key 8
    let c = LoaderConfig { shuffle: false, drop_last: false, ..cfg(2) };
    let results: Vec<_> = Loader::new(set.clone(), c.clone()).unwrap().epoch(0).collect();
    assert!(results[0].is_ok());
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("record 8") && e.contains("train.rec"), "{e}");
    assert_eq!(results.len(), 2, "the epoch stops at the failed batch");
    let batches = collect(&Loader::new(set, LoaderConfig { skip_corrupt: true, ..c }).unwrap(), 0);
    let skipped: Vec<_> = batches.iter().flat_map(|b| b.skipped.iter().map(|s| s.0)).collect();
    assert_eq!(skipped, vec![8]);
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 22);
}

#[test]
fn skip_corrupt_also_skips_scan_data_that_only_a_strict_decoder_notices() {
    let dir = TempDir::new("ld-silent");
    let mut w = FaceSetWriter::create(dir.path(), 2, 16, 16).unwrap();
    for i in 0..8usize {
        let mut img = Image::new(16, 16);
        img.data.iter_mut().enumerate().for_each(|(p, v)| *v = ((p * 7 + i * 29) % 251) as u8);
        let mut bytes = encode_jpeg(&img, 90).unwrap();
        if i == 5 {
            bytes = crate::testutil::damage_scan_data(&bytes);
        }
        w.add((i / 4) as u32, &[], &bytes).unwrap();
    }
    w.finish().unwrap();
    let set = Arc::new(FaceSet::open(dir.path()).unwrap());
    let c = LoaderConfig { shuffle: false, drop_last: false, ..cfg(2) };
    // Without skip_corrupt the fast decoder takes it (clean sets pay nothing for the check) ...
    let all = collect(&Loader::new(set.clone(), c.clone()).unwrap(), 0);
    assert_eq!(all.iter().map(|b| b.len()).sum::<usize>(), 8);
    // ... with it, the record is left out and named (key 6: image 5 after record 0).
    let batches = collect(&Loader::new(set, LoaderConfig { skip_corrupt: true, ..c }).unwrap(), 0);
    let skipped: Vec<_> = batches.iter().flat_map(|b| b.skipped.iter().cloned()).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].0 == 6 && skipped[0].1.contains("corrupt data"), "{skipped:?}");
}

#[test]
fn dropping_an_epoch_early_stops_the_workers() {
    let dir = TempDir::new("ld-drop");
    let set = make_set(&dir, None);
    let l = Loader::new(set, LoaderConfig { batch_size: 1, prefetch: 1, ..cfg(3) }).unwrap();
    let mut it = l.epoch(0);
    assert!(it.next().unwrap().is_ok());
    drop(it); // must not hang
}
