//! Writes a generated set as raw arrays for the PyTorch learnability check in bench/, plus a preview:
//! `cargo run --release -p datasets --example synth_dump -- OUT_DIR IDS IMAGES HELDOUT PAIRS SIZE SEED`.
//! OUT_DIR gets train_rgb.u8 (N*S*S*3), train_label.u32, train_deg.f32, pair_rgb.u8 (2P*S*S*3, first
//! then second of each pair), pair_same.u8, meta.txt, preview.png.

use datasets::synth::{generate, raw_pixel_accuracy, write_preview, SynthConfig};
use std::io::Write;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 7 {
        eprintln!("usage: synth_dump OUT_DIR IDS IMAGES HELDOUT PAIRS SIZE SEED");
        std::process::exit(2);
    }
    let num = |i: usize| {
        a[i].parse::<u64>().unwrap_or_else(|_| panic!("argument {} is not a number: {}", i + 1, a[i]))
    };
    let cfg = SynthConfig {
        identities: num(1) as usize,
        images_per_identity: num(2) as usize,
        heldout_identities: num(3) as usize,
        pairs: num(4) as usize,
        size: num(5) as usize,
        seed: num(6),
    };
    let out = std::path::PathBuf::from(&a[0]);
    std::fs::create_dir_all(&out).unwrap();
    let t = std::time::Instant::now();
    let set = generate(&cfg).unwrap();
    let gen_s = t.elapsed().as_secs_f64();
    let images = set.train.len() + 2 * set.pairs.len();
    println!("generated {images} images of {}px in {gen_s:.2}s ({:.0}/s)", cfg.size, images as f64 / gen_s);
    let base = raw_pixel_accuracy(&set.pairs);
    println!("raw pixel best-threshold accuracy: {base:?}");
    let w =
        |name: &str, bytes: &[u8]| std::fs::File::create(out.join(name)).unwrap().write_all(bytes).unwrap();
    w("train_rgb.u8", &set.train.iter().flat_map(|i| i.rgb.iter().copied()).collect::<Vec<u8>>());
    w("train_label.u32", &set.train.iter().flat_map(|i| i.label.to_le_bytes()).collect::<Vec<u8>>());
    w("train_deg.f32", &set.train.iter().flat_map(|i| i.degradation.to_le_bytes()).collect::<Vec<u8>>());
    w(
        "pair_rgb.u8",
        &set.pairs.iter().flat_map(|(x, y, _)| x.rgb.iter().chain(&y.rgb).copied()).collect::<Vec<u8>>(),
    );
    w("pair_same.u8", &set.pairs.iter().map(|p| p.2 as u8).collect::<Vec<u8>>());
    w(
        "pair_deg.f32",
        &set.pairs
            .iter()
            .flat_map(|(x, y, _)| [x.degradation, y.degradation])
            .flat_map(f32::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    w(
        "meta.txt",
        format!("{} {} {} {}\n", set.train.len(), set.pairs.len(), cfg.size, cfg.identities).as_bytes(),
    );
    write_preview(&out.join("preview.png"), &cfg, 8.min(cfg.identities), 8).unwrap();
}
