//! `engine-train data`: look into and build face-recognition data sets.

use super::CmdResult;
use datasets::demo::write_demo_set;
use datasets::faceset::{pack_folder, pack_list, FaceSet, Layout, PackOptions};
use datasets::image::{decode, decode_checked};
use datasets::synth::{write_preview, SynthConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand)]
enum DataCommand {
    /// Summarize a face set (directory with train.rec, or a .rec) or a .bin verification set.
    Inspect(InspectArgs),
    /// Pack a folder tree (one folder per identity) or an MXNet .lst list into train.rec/.idx/property.
    Pack(PackArgs),
    /// Generate the synthetic demo set: a face set (train/) plus pairs.bin of held-out identities.
    Synth(SynthArgs),
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Output directory (created): train/ (train.rec, train.idx, property), pairs.bin, pairs.degradation.
    #[arg(long, short)]
    out: PathBuf,
    #[arg(long, default_value_t = 400)]
    identities: usize,
    #[arg(long, default_value_t = 24)]
    images: usize,
    #[arg(long, default_value_t = 200)]
    heldout: usize,
    #[arg(long, default_value_t = 2000)]
    pairs: usize,
    /// Image side in pixels (at least 32).
    #[arg(long, default_value_t = 112)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write a PNG grid of some identities (rows) x images (columns).
    #[arg(long)]
    preview: Option<PathBuf>,
}

fn synth(a: SynthArgs) -> CmdResult {
    let cfg = SynthConfig {
        identities: a.identities,
        images_per_identity: a.images,
        heldout_identities: a.heldout,
        pairs: a.pairs,
        size: a.size,
        seed: a.seed,
    };
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: cannot create: {e}", a.out.display()))?;
    write_demo_set(&a.out, &cfg)?;
    println!(
        "wrote {} training images of {} identities and {} pairs ({}x{} px) to {} in {:.1}s",
        a.identities * a.images,
        a.identities,
        a.pairs,
        a.size,
        a.size,
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(p) = a.preview {
        write_preview(&p, &cfg, 6, 8).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("preview: {}", p.display());
    }
    Ok(())
}

#[derive(clap::Args)]
struct InspectArgs {
    path: PathBuf,
    /// Also decode every image (slower; finds corrupt images, including JPEG scan data that
    /// libjpeg-turbo would warn about as "Corrupt JPEG data" but still decode).
    #[arg(long)]
    decode: bool,
    /// Count and list bad records instead of stopping at the first.
    #[arg(long)]
    skip_corrupt: bool,
}

#[derive(clap::Args)]
struct PackArgs {
    /// A folder of identity folders, or a .lst file (index<TAB>label<TAB>path).
    input: PathBuf,
    /// Output directory (created): train.rec, train.idx, property.
    #[arg(long, short)]
    out: PathBuf,
    /// Leave out images that do not decode or differ in size, and list them.
    #[arg(long)]
    skip_corrupt: bool,
    /// The input is an image list of `path label x1 y1 ... x5 y5` lines: align each image to 112x112 from
    /// its five landmarks (insightface's norm_crop) and pack the crops (JPEG, quality 95).
    #[arg(long)]
    landmarks: bool,
}

pub fn run(a: Args) -> CmdResult {
    match a.command {
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Pack(a) => pack(a),
        DataCommand::Synth(a) => synth(a),
    }
}

fn inspect(a: InspectArgs) -> CmdResult {
    if a.path.extension().is_some_and(|e| e == "bin") || a.path.extension().is_some_and(|e| e == "txt") {
        let set = datasets::verification::read_pair_set(&a.path)?;
        let same = set.same.iter().filter(|&&s| s).count();
        println!("verification set: {}", a.path.display());
        println!("pairs: {} ({} same, {} different)", set.pairs(), same, set.pairs() - same);
        let img = decode(&set.images[0]).map_err(|d| format!("{}: image 0: {d}", a.path.display()))?;
        println!("image size: {}x{} (first image)", img.height, img.width);
        return Ok(());
    }
    let set = FaceSet::open(&a.path)?;
    let rec = set.records();
    println!("face set: {}", rec.path().display());
    match rec.index_path() {
        Some(i) => println!("index: {}", i.display()),
        None => println!("index: none (scanned the .rec)"),
    }
    println!("records: {} ({} bytes)", rec.len(), rec.data().len());
    match set.layout() {
        Layout::Insightface { images_end, identities_end } => println!(
            "layout: insightface (record 0: images are keys 1..{images_end}, identity records {images_end}..{identities_end})"
        ),
        Layout::Flat => println!("layout: flat (every key is an image)"),
    }
    println!("images: {}", set.len());
    match set.property() {
        Some(p) => println!("property: {} classes, {}x{}", p.classes, p.height, p.width),
        None => println!("property: none"),
    }
    let ranges = set.identity_ranges()?;
    if !ranges.is_empty() {
        let sizes: Vec<u64> = ranges.iter().map(|(s, e)| e - s).collect();
        println!(
            "identity records: {} (images per identity: min {}, max {}, mean {:.1})",
            ranges.len(),
            sizes.iter().min().unwrap(),
            sizes.iter().max().unwrap(),
            sizes.iter().sum::<u64>() as f64 / sizes.len() as f64
        );
    }
    let first = set.sample(0)?;
    let img =
        decode(&first.image).map_err(|d| format!("{}: record {}: {d}", rec.path().display(), first.key))?;
    println!("image size: {}x{} (record {})", img.height, img.width, first.key);
    // One pass over every image record: labels (and pixels with --decode).
    let (mut lo, mut hi) = (u32::MAX, 0u32);
    let mut per_class = std::collections::BTreeMap::<u32, u64>::new();
    let mut bad = Vec::new();
    for i in 0..set.len() {
        let checked = set.sample(i).and_then(|s| {
            if a.decode {
                decode_checked(&s.image).map_err(|detail| datasets::DataError::Image {
                    path: rec.path().to_path_buf(),
                    record: format!("record {}", s.key),
                    detail,
                })?;
            }
            Ok(s.label)
        });
        match checked {
            Ok(l) => {
                lo = lo.min(l);
                hi = hi.max(l);
                *per_class.entry(l).or_default() += 1;
            }
            Err(e) if a.skip_corrupt => bad.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    if per_class.is_empty() {
        println!("labels: none readable");
    } else {
        println!("labels: {lo}..={hi}, {} distinct", per_class.len());
    }
    if a.skip_corrupt {
        println!("bad records: {}", bad.len());
        for b in bad.iter().take(20) {
            println!("  {b}");
        }
    }
    Ok(())
}

fn pack(a: PackArgs) -> CmdResult {
    let opts = PackOptions { skip_corrupt: a.skip_corrupt };
    let report = if a.landmarks {
        datasets::faceset::pack_aligned_list(&a.input, &a.out, &opts)?
    } else if a.input.is_dir() {
        pack_folder(&a.input, &a.out, &opts)?
    } else {
        pack_list(&a.input, &a.out, &opts)?
    };
    let s = &report.summary;
    println!(
        "packed {} images of {} classes ({}x{}) into {}",
        s.images,
        s.classes,
        s.height,
        s.width,
        s.dir.display()
    );
    if !report.skipped.is_empty() {
        println!("skipped {} images:", report.skipped.len());
        for (p, why) in &report.skipped {
            println!("  {}: {why}", p.display());
        }
    }
    Ok(())
}
