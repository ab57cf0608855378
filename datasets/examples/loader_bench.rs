//! Loader throughput, for bench/loader/run.sh.
//!
//!   loader_bench make DIR [N]        writes N (default 4000) face-like 112x112 JPEGs as DIR/train.rec
//!   loader_bench run DIR [THREADS]   images/s: a bare decode+flip+normalize loop, then the loader
//!                                    (shuffled random access, batches of 128) with flip only and with
//!                                    AdaFace's augmentations, on 1 thread and on THREADS (default: all)
//!   loader_bench parts DIR           time per image of decoding and of each augmentation alone

use datasets::augment::AugmentConfig;
use datasets::faceset::{FaceSet, FaceSetWriter};
use datasets::image::{decode_into, encode_jpeg, Image};
use datasets::loader::{Loader, LoaderConfig};
use datasets::rng::Rng;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn face(rng: &mut Rng) -> Image {
    let (h, w) = (112usize, 112usize);
    let mut img = Image::new(h, w);
    let skin = [rng.range(120.0, 220.0), rng.range(80.0, 170.0), rng.range(60.0, 150.0)];
    let (cy, cx) = (rng.range(50.0, 62.0), rng.range(50.0, 62.0));
    let (fy, fx) = (rng.range(0.05, 0.3), rng.range(0.05, 0.3));
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = ((y as f64 - cy) / 46.0, (x as f64 - cx) / 38.0);
            let inside = (1.0 - (dy * dy + dx * dx)).clamp(0.0, 1.0).sqrt();
            let eyes = if (y as f64 - cy + 12.0).abs() < 4.0 && ((x as f64 - cx).abs() - 16.0).abs() < 6.0 {
                0.4
            } else {
                1.0
            };
            let tex = 12.0 * ((y as f64 * fy).sin() * (x as f64 * fx).cos());
            for (c, &tone) in skin.iter().enumerate() {
                let bg = 40.0 + 30.0 * c as f64;
                let v = bg * (1.0 - inside) + tone * inside * eyes + tex + rng.range(-9.5, 9.5);
                img.data[(y * w + x) * 3 + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

fn make(dir: &Path, n: usize) {
    let classes = (n / 40).max(1) as u32;
    let mut w = FaceSetWriter::create(dir, classes, 112, 112).unwrap();
    let mut rng = Rng::new(1);
    let mut bytes = 0usize;
    for i in 0..n {
        let jpg = encode_jpeg(&face(&mut rng), 95).unwrap();
        bytes += jpg.len();
        w.add((i * classes as usize / n) as u32, &[], &jpg).unwrap();
    }
    w.finish().unwrap();
    println!("wrote {n} images, {classes} classes, {:.1} KB average JPEG", bytes as f64 / n as f64 / 1024.0);
}

fn bare(set: &FaceSet) -> f64 {
    let mut buf = Vec::new();
    let mut out = vec![0f32; 112 * 112 * 3];
    let t = Instant::now();
    for i in 0..set.len() {
        let s = set.sample(i).unwrap();
        let (h, w) = decode_into(&s.image, &mut buf).unwrap();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    out[(y * w + x) * 3 + c] =
                        (buf[(y * w + (w - 1 - x)) * 3 + c] as f32 / 255.0 - 0.5) / 0.5;
                }
            }
        }
        std::hint::black_box(&out);
    }
    set.len() as f64 / t.elapsed().as_secs_f64()
}

fn loader(set: &Arc<FaceSet>, threads: usize, augment: AugmentConfig) -> f64 {
    let cfg =
        LoaderConfig { batch_size: 128, threads, prefetch: 2 * threads, augment, ..LoaderConfig::default() };
    let l = Loader::new(set.clone(), cfg).unwrap();
    let t = Instant::now();
    let mut n = 0;
    for b in l.epoch(0) {
        n += std::hint::black_box(b.unwrap()).len();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Microseconds per image for each stage alone, each augmentation forced on (p = 1).
fn parts(set: &FaceSet) {
    use datasets::augment::{crop_zero_pad, jitter, low_resolution};
    let n = set.len();
    let mut imgs = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        let mut buf = Vec::new();
        let (h, w) = decode_into(&set.sample(i).unwrap().image, &mut buf).unwrap();
        imgs.push(Image { height: h, width: w, data: buf });
    }
    println!("decode: {:.1} us/image", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    type Stage = fn(&mut Image, &mut Rng);
    let stages: [(&str, Stage); 3] = [
        ("crop", |i, r| {
            crop_zero_pad(i, r);
        }),
        ("low resolution", |i, r| {
            low_resolution(i, r);
        }),
        ("photometric", |i, r| jitter(i, r)),
    ];
    for (name, f) in stages {
        let mut work = imgs.clone();
        let t = Instant::now();
        for (k, img) in work.iter_mut().enumerate() {
            f(img, &mut Rng::new(k as u64));
        }
        println!("{name}: {:.1} us/image", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("make") => make(Path::new(&args[2]), args.get(3).map_or(4000, |s| s.parse().unwrap())),
        Some("run") => {
            let set = Arc::new(FaceSet::open(Path::new(&args[2])).unwrap());
            let all = args.get(3).map_or_else(
                || std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                |s| s.parse().unwrap(),
            );
            // Warm the page cache so every row measures decoding, not the disk.
            set.records().verify_all().unwrap();
            println!("rust bare loop (decode+flip+normalize, 1 thread): {:.0} images/s", bare(&set));
            for threads in [1, all] {
                for (name, aug) in [
                    ("flip only", AugmentConfig::flip_only()),
                    ("AdaFace 0.2 + flip", AugmentConfig::default()),
                ] {
                    println!(
                        "rust loader, {threads} thread(s), {name}: {:.0} images/s",
                        loader(&set, threads, aug)
                    );
                }
            }
        }
        Some("parts") => parts(&FaceSet::open(Path::new(&args[2])).unwrap()),
        _ => eprintln!("usage: loader_bench make DIR [N] | run DIR [THREADS] | parts DIR"),
    }
}
