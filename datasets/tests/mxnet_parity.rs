//! MXNet parity, both directions (CI generates the fixtures with tests/parity/mxnet_recordio.py and
//! provides MXNet through $FACETRAIN_PYTHON):
//! - a face set written by MXNet's MXIndexedRecordIO + pack_img reads back with the same keys, headers,
//!   labels and identity ranges, and pixels equal to mx.image.imdecode's within JPEG-decoder tolerance;
//! - a face set and a .bin set written by us read back in MXNet / pickle (tests/parity/_check_mxnet_read.py).

use datasets::faceset::{FaceSet, FaceSetWriter, Layout};
use datasets::image::{decode, encode_jpeg, Image};
use datasets::recordio::{RecordFile, MAGIC};
use datasets::testutil::TempDir;
use datasets::verification::{write_bin, PairSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixtures() -> PathBuf {
    std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/fixtures"))
}

/// One line of expected.txt.
struct Expected {
    key: u64,
    flag: u32,
    label_bits: u32,
    id: u64,
    id2: u64,
    extra_bits: Vec<u32>,
    height: usize,
    width: usize,
    offset: usize,
    format: String,
}

fn parse_expected(text: &str) -> Vec<Expected> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 10, "expected.txt line {l:?}");
            let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
            Expected {
                key: f[0].parse().unwrap(),
                flag: f[1].parse().unwrap(),
                label_bits: hex(f[2]),
                id: f[3].parse().unwrap(),
                id2: f[4].parse().unwrap(),
                extra_bits: if f[5] == "-" { vec![] } else { f[5].split(',').map(hex).collect() },
                height: f[6].parse().unwrap(),
                width: f[7].parse().unwrap(),
                offset: f[8].parse().unwrap(),
                format: f[9].to_string(),
            }
        })
        .collect()
}

fn diff_stats(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let mut sum = 0u64;
    let mut max = 0u8;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        sum += d as u64;
        max = max.max(d);
    }
    (sum as f64 / a.len() as f64, max)
}

/// Different IDCT/upsampling implementations differ by a few levels on some pixels of a JPEG.
const JPEG_MEAN_TOL: f64 = 1.0;
const JPEG_MAX_TOL: u8 = 8;

#[test]
fn reads_what_mxnet_wrote() {
    let dir = fixtures().join("mxnet_recordio");
    let expected_path = dir.join("expected.txt");
    let text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "MXNet fixture missing: {} ({e}). Generate it with: python tests/parity/mxnet_recordio.py {} \
             (tests/run.sh does this with MXNet installed)",
            expected_path.display(),
            fixtures().display()
        )
    });
    let expected = parse_expected(&text);
    let pixels = std::fs::read(dir.join("pixels.u8")).expect("pixels.u8 beside expected.txt");
    let set = FaceSet::open(&dir).unwrap();
    let n = expected.len() as u64;
    assert_eq!(set.layout(), Layout::Insightface { images_end: n + 1, identities_end: n + 4 });
    assert_eq!(set.image_keys(), (1..=n).collect::<Vec<_>>().as_slice());
    assert_eq!(set.identity_ranges().unwrap(), vec![(1, 4), (4, 5), (5, 9)]);
    // The magic-valued label made MXNet split that record: the fixture does exercise the join.
    let raw = std::fs::read(dir.join("train.rec")).unwrap();
    let parts = raw.chunks_exact(4).filter(|w| u32::from_le_bytes((*w).try_into().unwrap()) == MAGIC).count();
    assert!(parts > set.records().len(), "no split record in the fixture ({parts} magic words)");
    for e in &expected {
        let s = set.read_key(e.key).unwrap();
        assert_eq!(s.header.flag, e.flag, "key {}", e.key);
        assert_eq!(s.header.label.to_bits(), e.label_bits, "key {}", e.key);
        assert_eq!((s.header.id, s.header.id2), (e.id, e.id2));
        assert_eq!(
            s.header.labels.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
            e.extra_bits,
            "key {}",
            e.key
        );
        let img = decode(&s.image).unwrap();
        assert_eq!((img.height, img.width), (e.height, e.width), "key {}", e.key);
        let want = &pixels[e.offset..e.offset + e.height * e.width * 3];
        let (mean, max) = diff_stats(&img.data, want);
        if e.format == "png" {
            assert_eq!(max, 0, "PNG key {} must decode exactly", e.key);
        } else {
            assert!(
                mean < JPEG_MEAN_TOL && max <= JPEG_MAX_TOL,
                "key {}: mean |diff| {mean:.3}, max {max}",
                e.key
            );
        }
    }
    // Without the index, the scan finds the same records under the same keys.
    let scanned = RecordFile::open_with_index(&dir.join("train.rec"), None).unwrap();
    let mut keys = scanned.keys().to_vec();
    keys.sort();
    assert_eq!(keys, (0..n + 4).collect::<Vec<_>>());
    for k in 0..n + 4 {
        assert_eq!(scanned.read(k).unwrap(), set.records().read(k).unwrap(), "key {k}");
    }
}

fn pattern(h: usize, w: usize, seed: usize) -> Image {
    let mut img = Image::new(h, w);
    for y in 0..h {
        for x in 0..w {
            let p = (y * w + x) * 3;
            img.data[p] = (20 + seed * 25 + x * 3).min(255) as u8;
            img.data[p + 1] = (40 + y * 4) as u8;
            img.data[p + 2] = (200 - x * 2 - seed * 10) as u8;
        }
    }
    img
}

#[test]
fn mxnet_reads_what_we_write() {
    let python = std::env::var("FACETRAIN_PYTHON").unwrap_or_else(|_| {
        panic!("FACETRAIN_PYTHON is not set: point it at a Python with mxnet==1.9.1 and numpy<2 (tests/run.sh sets it)")
    });
    let dir = TempDir::new("mx-write");
    let (h, w) = (48, 40);
    let per_class = [2usize, 3, 1];
    let mut writer = FaceSetWriter::create(dir.path(), 3, h as u32, w as u32).unwrap();
    let magic_f32 = f32::from_bits(MAGIC);
    let mut lines = Vec::new();
    let mut pixels = Vec::new();
    let mut jpegs = Vec::new();
    for (label, &n) in per_class.iter().enumerate() {
        for i in 0..n {
            let jpg = encode_jpeg(&pattern(h, w, label * 3 + i), 90).unwrap();
            // One multi-label record with the magic at an aligned offset: our writer must split it.
            let extra: Vec<f32> = if (label, i) == (1, 1) { vec![magic_f32, 0.25] } else { vec![] };
            let key = writer.add(label as u32, &extra, &jpg).unwrap();
            let bits = |v: f32| format!("{:08x}", v.to_bits());
            let (flag, label_bits, extra_bits) = if extra.is_empty() {
                (0, bits(label as f32), "-".to_string())
            } else {
                let all: Vec<String> =
                    std::iter::once(label as f32).chain(extra.iter().copied()).map(bits).collect();
                (all.len(), bits(0.0), all.join(","))
            };
            lines.push(format!(
                "{key}\t{flag}\t{label_bits}\t{key}\t0\t{extra_bits}\t{h}\t{w}\t{}\tjpg",
                pixels.len()
            ));
            pixels.extend_from_slice(&decode(&jpg).unwrap().data);
            jpegs.push(jpg);
        }
    }
    writer.finish().unwrap();
    std::fs::write(dir.path().join("expected.txt"), lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.path().join("pixels.u8"), &pixels).unwrap();
    let pairs = PairSet { images: jpegs[..4].to_vec(), same: vec![true, false] };
    write_bin(&dir.path().join("pairs.bin"), &pairs).unwrap();

    let script = repo_root().join("tests/parity/_check_mxnet_read.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "MXNet check failed:\n{log}");
    assert!(log.contains("mxnet read 6 images"), "{log}");
}
