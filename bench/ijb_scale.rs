//! IJB-C-sized protocol timing: generated metadata of IJB-C's size (469,375 images, 23,124 templates,
//! 15,658,489 template pairs of which 19,557 genuine; 1:N with galleries of 1,772 and 1,759 templates and
//! 19,593 probe templates) and random 512-d features; times reading the meta files, template pooling,
//! pair scoring, the ROC with its TAR table, and the two 1:N gallery searches. The features stand in for
//! a model's; nothing here depends on their values except the work done.
//!
//! Run: cargo run --release -p engine --example ijb_scale -- [--dim 512] [--dir /tmp/ijb_scale]
//! Results go to bench/results/ (see bench/README.md).

use engine::eval::ijb::identification::{gather, search, unique_templates};
use engine::eval::ijb::meta;
use engine::eval::ijb::templates::{template_features, PoolOptions};
use engine::eval::ijb::verification::{evaluate, pair_rows, score_pairs};
use engine::rng::Rng;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

const IMAGES: usize = 469_375;
const TEMPLATES: usize = 23_124;
const PAIRS: usize = 15_658_489;
const GENUINE: usize = 19_557;
const G1: usize = 1_772;
const G2: usize = 1_759;
const PROBES: usize = 19_593;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.into())
}

fn timed<T>(label: &str, log: &mut String, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let v = f();
    let line = format!("{label:<44} {:>8.2} s", t.elapsed().as_secs_f64());
    println!("{line}");
    writeln!(log, "| {label} | {:.2} |", t.elapsed().as_secs_f64()).unwrap();
    v
}

fn main() {
    let dim: usize = arg("--dim", "512").parse().expect("--dim N");
    let dir = PathBuf::from(arg("--dir", "/tmp/ijb_scale"));
    std::fs::create_dir_all(dir.join("meta")).unwrap();
    let mut rng = Rng::new(1);
    // Template ids sparse in 1..=200_000 as IJB-C's; images spread over templates, a few media each.
    let template_ids: Vec<i64> = (0..TEMPLATES as i64).map(|t| 1 + t * 8 + (t % 7)).collect();
    println!("writing IJB-C-sized meta files to {} ...", dir.display());
    let mut tid =
        std::io::BufWriter::new(std::fs::File::create(dir.join("meta/ijbc_face_tid_mid.txt")).unwrap());
    let mut pts =
        std::io::BufWriter::new(std::fs::File::create(dir.join("meta/ijbc_name_5pts_score.txt")).unwrap());
    for i in 0..IMAGES {
        let t = if i < TEMPLATES { i } else { (rng.uniform() * TEMPLATES as f64) as usize };
        let media = t * 4 + (rng.uniform() * 4.0) as usize;
        writeln!(tid, "{i}.jpg {} {media}", template_ids[t]).unwrap();
        writeln!(
            pts,
            "{i}.jpg 46.06 62.04 83.29 60.66 64.57 80.75 48.65 97.07 79.53 96.03 {:.6}",
            0.5 + rng.uniform() / 2.0
        )
        .unwrap();
    }
    drop((tid, pts));
    let mut pf = std::io::BufWriter::new(
        std::fs::File::create(dir.join("meta/ijbc_template_pair_label.txt")).unwrap(),
    );
    for p in 0..PAIRS {
        let a = (rng.uniform() * TEMPLATES as f64) as usize;
        let b = (rng.uniform() * TEMPLATES as f64) as usize;
        writeln!(pf, "{} {} {}", template_ids[a], template_ids[b], u8::from(p < GENUINE)).unwrap();
    }
    drop(pf);
    let feats: Vec<f32> = (0..IMAGES * dim).map(|_| rng.uniform() as f32 - 0.5).collect();

    let mut log = String::new();
    let total = Instant::now();
    let tid = timed("read face_tid_mid (469,375 lines)", &mut log, || {
        meta::read_face_tid_mid(&dir.join("meta/ijbc_face_tid_mid.txt")).unwrap()
    });
    let pts = timed("read name_5pts_score (469,375 lines)", &mut log, || {
        meta::read_name_5pts_score(&dir.join("meta/ijbc_name_5pts_score.txt")).unwrap()
    });
    let pairs = timed("read template_pair_label (15,658,489 lines)", &mut log, || {
        meta::read_pair_labels(&dir.join("meta/ijbc_template_pair_label.txt")).unwrap()
    });
    let start = Instant::now();
    let t = timed("pool 23,124 templates", &mut log, || {
        template_features(&feats, dim, &pts.scores, &tid.templates, &tid.medias, PoolOptions::default())
            .unwrap()
    });
    let rows = timed("pair ids to template rows", &mut log, || {
        pair_rows(&t, &pairs.t1, &pairs.t2, &pairs.lines, "pairs").unwrap()
    });
    let scores = timed("score 15.7 M pairs", &mut log, || score_pairs(&t, &rows));
    let v =
        timed("ROC (scikit-learn's) + TAR table + AUC", &mut log, || evaluate(&scores, &pairs.same).unwrap());
    let pooling_scoring = start.elapsed().as_secs_f64();
    timed("1:N: 19,593 probes x (1,772 + 1,759) gallery", &mut log, || {
        let pid: Vec<i64> = (0..PROBES).map(|k| template_ids[k]).collect();
        let psub: Vec<i64> = (0..PROBES as i64).map(|k| k % 3600).collect();
        let (pids, psub) = unique_templates(&pid, &psub);
        let pf = gather(&t, &pids, "probes").unwrap();
        for (off, n) in [(PROBES, G1), (PROBES + G1, G2)] {
            let gid: Vec<i64> = (off..off + n).map(|k| template_ids[k]).collect();
            let gsub: Vec<i64> =
                (0..n as i64).map(|k| k + if off == PROBES { 0 } else { G1 as i64 }).collect();
            let (gids, gsub) = unique_templates(&gid, &gsub);
            let gf = gather(&t, &gids, "gallery").unwrap();
            search(&pf, &psub, &gf, &gsub, dim, "G").unwrap();
        }
    });
    println!(
        "pooling + scoring + ROC: {pooling_scoring:.2} s; everything after writing the files: {:.2} s",
        total.elapsed().as_secs_f64()
    );
    println!("(TAR@1e-4 of random features: {:.4}; {} ROC points)", v.tar_at_far[2].tar, v.roc.fpr.len());
    println!("\n| step | seconds |\n| --- | --- |\n{log}");
}
