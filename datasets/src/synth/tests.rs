use super::*;

fn small(seed: u64) -> SynthConfig {
    SynthConfig { identities: 12, images_per_identity: 3, heldout_identities: 10, pairs: 40, size: 40, seed }
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let a = generate(&small(5)).unwrap();
    let b = generate(&small(5)).unwrap();
    let c = generate(&small(6)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.train[0].rgb, c.train[0].rgb);
    // The parallel result equals rendering the same image alone.
    assert_eq!(a.train[7], train_image(&small(5), 2, 1));
}

#[test]
fn shapes_labels_and_degradation_are_as_configured() {
    let cfg = small(1);
    let set = generate(&cfg).unwrap();
    assert_eq!(set.train.len(), 36);
    assert_eq!(set.classes, 12);
    for (i, img) in set.train.iter().enumerate() {
        assert_eq!(img.label as usize, i / 3);
        assert_eq!(img.rgb.len(), 40 * 40 * 3);
    }
    let all = set.train.iter().chain(set.pairs.iter().flat_map(|(a, b, _)| [a, b]));
    let d: Vec<f32> = all.map(|i| i.degradation).collect();
    assert!(d.iter().all(|x| (0.0..=1.0).contains(x)));
    // Stored levels spread over the range rather than sitting on one value.
    assert!(d.iter().any(|&x| x < 0.2) && d.iter().any(|&x| x > 0.6));
}

#[test]
fn pairs_are_balanced_and_only_from_heldout_identities() {
    let cfg = small(2);
    let set = generate(&cfg).unwrap();
    assert_eq!(set.pairs.len(), 40);
    let same = set.pairs.iter().filter(|p| p.2).count();
    assert_eq!(same, 20);
    let train_labels: std::collections::HashSet<u32> = set.train.iter().map(|i| i.label).collect();
    for (a, b, s) in &set.pairs {
        for img in [a, b] {
            assert!(!train_labels.contains(&img.label), "pair label {} is a training label", img.label);
            assert!((12..22).contains(&img.label));
        }
        assert_eq!(a.label == b.label, *s);
        assert_ne!(a.rgb, b.rgb, "a same pair must be two different photos");
    }
    let used: std::collections::HashSet<u32> =
        set.pairs.iter().flat_map(|p| [p.0.label, p.1.label]).collect();
    assert!(used.len() >= 8, "pairs should spread over the held-out identities, used {}", used.len());
}

#[test]
fn photos_of_one_identity_differ_and_sizes_from_32_work() {
    for size in [32, 57, 64] {
        let cfg = SynthConfig { size, ..small(3) };
        let a = train_image(&cfg, 0, 0);
        let b = train_image(&cfg, 0, 1);
        assert_eq!(a.rgb.len(), size * size * 3);
        let diff = a.rgb.iter().zip(&b.rgb).filter(|(x, y)| x != y).count();
        assert!(diff > a.rgb.len() / 2);
        // Not a blank frame: a real spread of intensities.
        let (lo, hi) = (a.rgb.iter().min().unwrap(), a.rgb.iter().max().unwrap());
        assert!(hi - lo > 100, "dynamic range {lo}..{hi}");
    }
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let bad = [
        SynthConfig { size: 31, ..small(0) },
        SynthConfig { pairs: 41, ..small(0) },
        SynthConfig { heldout_identities: 1, ..small(0) },
        SynthConfig { identities: 0, ..small(0) },
    ];
    for cfg in bad {
        let err = generate(&cfg).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    assert!(generate(&SynthConfig { pairs: 0, heldout_identities: 0, ..small(0) }).is_ok());
}

#[test]
fn best_threshold_accuracy_finds_the_best_cut() {
    let s = [(0.1, false), (0.2, false), (0.3, true), (0.35, false), (0.9, true), (0.95, true)];
    assert!((best_threshold_accuracy(&s) - 5.0 / 6.0).abs() < 1e-12);
    let ties = [(0.5, true), (0.5, false), (0.5, true), (0.5, false)];
    assert!((best_threshold_accuracy(&ties) - 0.5).abs() < 1e-12);
    let separable = [(0.1, false), (0.2, false), (0.8, true)];
    assert_eq!(best_threshold_accuracy(&separable), 1.0);
}

#[test]
fn raw_pixel_cosine_verification_stays_near_chance() {
    let cfg = SynthConfig {
        identities: 1,
        images_per_identity: 1,
        heldout_identities: 100,
        pairs: 800,
        size: 48,
        seed: 11,
    };
    let set = generate(&cfg).unwrap();
    let base = raw_pixel_accuracy(&set.pairs);
    eprintln!("raw-pixel best-threshold accuracy on {} pairs: {base:?}", set.pairs.len());
    assert!(base.best() <= 0.65, "raw-pixel verification is too easy: {base:?}");
    // The test can fail: pairs of identical images are solved perfectly by the same measure.
    let trivial: Vec<_> =
        set.pairs.iter().map(|(a, b, s)| (a.clone(), if *s { a.clone() } else { b.clone() }, *s)).collect();
    assert_eq!(raw_pixel_accuracy(&trivial).raw, 1.0);
}

/// The CPU demo trains at 32 px (the smallest size): downsampling must not make raw pixels a usable cue.
#[test]
fn raw_pixel_cosine_stays_near_chance_at_the_demo_size() {
    let cfg = SynthConfig {
        identities: 1,
        images_per_identity: 1,
        heldout_identities: 100,
        pairs: 800,
        size: 32,
        seed: 12,
    };
    let set = generate(&cfg).unwrap();
    let base = raw_pixel_accuracy(&set.pairs);
    eprintln!("raw-pixel best-threshold accuracy at 32 px on {} pairs: {base:?}", set.pairs.len());
    assert!(base.best() <= 0.65, "raw-pixel verification at 32 px is too easy: {base:?}");
}

#[test]
fn png_preview_has_valid_structure() {
    let dir = std::env::temp_dir().join(format!("synth-preview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("grid.png");
    write_preview(&path, &small(4), 3, 4).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]);
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (4 * 42 + 2, 3 * 42 + 2));
    // IHDR's CRC covers its type and data.
    assert_eq!(u32::from_be_bytes(bytes[29..33].try_into().unwrap()), preview_crc(&bytes[12..29]));
    assert!(bytes.ends_with(&[0xae, 0x42, 0x60, 0x82]));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn preview_crc(b: &[u8]) -> u32 {
    // Bitwise reference CRC-32 (IEEE), independent of the writer's code path.
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
        *t = c;
    }
    !b.iter().fold(!0u32, |c, &x| table[((c ^ x as u32) & 0xff) as usize] ^ (c >> 8))
}
