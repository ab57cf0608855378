//! Convolution speed on the CPU backend: forward, backward-data and backward-filter of the IResNet conv
//! shapes (input 112x112, base width 64 or the small variant's width), in GFLOP/s and images/s.
//!
//! Run: cargo run --release -p engine --example conv_cpu -- [--threads N] [--batch B] [--width W] [--f64]
//! Peer: bench/conv_cpu_torch.py with the same arguments. Results go to bench/results/.

use engine::backend::cpu::CpuBackend;
use engine::backend::{Backend, Conv2dParams};
use engine::rng::Rng;
use engine::{DType, Tensor};
use std::time::Instant;

/// (name, input size, in channels, out channels, kernel, stride): one of each conv kind IResNet runs.
fn shapes(width: usize) -> Vec<(String, usize, usize, usize, usize, usize)> {
    let w = width;
    vec![
        ("stem 3x3 s1".into(), 112, 3, w, 3, 1),
        ("layer1 conv1 3x3 s1".into(), 112, w, w, 3, 1),
        ("layer1 conv2 3x3 s2".into(), 112, w, w, 3, 2),
        ("layer1 downsample 1x1 s2".into(), 112, w, w, 1, 2),
        ("layer2 conv1 3x3 s1".into(), 56, w, 2 * w, 3, 1),
        ("layer2 block2 3x3 s1".into(), 28, 2 * w, 2 * w, 3, 1),
        ("layer3 block2 3x3 s1".into(), 14, 4 * w, 4 * w, 3, 1),
        ("layer4 block2 3x3 s1".into(), 7, 8 * w, 8 * w, 3, 1),
    ]
}

fn randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| r.normal()).collect::<Vec<f64>>(), shape)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// CPU seconds this process has used (user + system), from /proc: on a machine shared with other jobs
/// wall time measures the contention, CPU time the work.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// (median wall seconds, mean CPU seconds) of `f` over enough repetitions to fill about `budget`
/// seconds (at least 3).
fn time(budget: f64, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    while times.len() < 3 || (start.elapsed().as_secs_f64() < budget && times.len() < 50) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_seconds() - cpu0) / times.len() as f64;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[times.len() / 2], cpu)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| -> usize {
        args.iter().position(|a| a == name).map_or(default, |i| args[i + 1].parse().expect("a number"))
    };
    let threads = arg("--threads", 2);
    let batch = arg("--batch", 32);
    let width = arg("--width", 64);
    let dtype = if args.iter().any(|a| a == "--f64") { DType::F64 } else { DType::F32 };
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let be = CpuBackend;
    println!("engine conv, {dtype}, batch {batch}, width {width}, {threads} threads");
    println!(
        "{:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "shape", "fwd GF/s", "bwdD GF/s", "bwdF GF/s", "total ms", "img/s", "cpu ms"
    );
    let (mut all_flops, mut all_secs, mut all_cpu) = (0.0, 0.0, 0.0);
    for (name, hw, cin, cout, k, s) in shapes(width) {
        let p = Conv2dParams { kernel: k, stride: s, padding: k / 2 };
        let x = randn(&[batch, hw, hw, cin], 1, dtype);
        let w = randn(&[cout, k, k, cin], 2, dtype);
        let y = be.conv2d_forward(&x, &w, p).unwrap();
        let dy = randn(y.dims(), 3, dtype);
        let flops = 2.0 * (y.numel() * k * k * cin) as f64;
        let (tf, cf) = time(2.0, || drop(be.conv2d_forward(&x, &w, p).unwrap()));
        // The stem's input is data: training never computes its data gradient.
        let (td, cd) = if cin == 3 {
            (0.0, 0.0)
        } else {
            time(2.0, || drop(be.conv2d_backward_data(&dy, &w, x.shape(), p).unwrap()))
        };
        let (tw, cw) = time(2.0, || drop(be.conv2d_backward_filter(&dy, &x, w.shape(), p).unwrap()));
        let total = tf + td + tw;
        let cpu = cf + cd + cw;
        let gf = |t: f64| if t > 0.0 { flops / t / 1e9 } else { f64::NAN };
        println!(
            "{name:<26} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            gf(tf),
            gf(td),
            gf(tw),
            total * 1e3,
            batch as f64 / total,
            cpu * 1e3
        );
        all_flops += flops * if cin == 3 { 2.0 } else { 3.0 };
        all_secs += total;
        all_cpu += cpu;
    }
    println!(
        "all shapes: {:.1} GFLOP/s forward+backward (wall), {:.1} GFLOP per CPU-second",
        all_flops / all_secs / 1e9,
        all_flops / all_cpu / 1e9
    );
}
