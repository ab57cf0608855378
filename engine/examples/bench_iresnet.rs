//! Forward + backward throughput of an IResNet on the CPU (training mode, f32), in images/s.
//! Usage: bench_iresnet <r18|small|...> [batch] [iterations]. Threads: RAYON_NUM_THREADS.
//! bench/iresnet_cpu.sh runs it next to the PyTorch peer.

use engine::model::{IResNet, IResNetConfig};
use engine::rng::Rng;
use engine::tape::gradcheck::random_projection;
use engine::{DType, Tape, Tensor};
use std::time::Instant;

fn main() -> engine::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("small");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cfg = IResNetConfig::by_name(name)?;
    let model = IResNet::new(cfg.clone())?;
    let mut rng = Rng::new(0);
    let mut store = model.init(&mut rng, DType::F32)?;
    println!("{}", cfg.describe(store.parameter_count()));
    let (h, w) = cfg.input_hw;
    let x: Vec<f32> = (0..batch * h * w * 3).map(|_| rng.normal() as f32).collect();
    let x = Tensor::from_vec(x, [batch, h, w, 3])?;
    let mut step = || -> engine::Result<f64> {
        let t0 = Instant::now();
        let mut tape = Tape::new();
        let xv = tape.constant(x.clone());
        let y = model.forward(&mut tape, &mut store, xv, true, &mut rng)?;
        let l = random_projection(&mut tape, y, 1)?;
        let g = tape.backward(l)?;
        std::hint::black_box(g.params().len());
        Ok(t0.elapsed().as_secs_f64())
    };
    step()?; // warm-up
    let mut times = Vec::new();
    for _ in 0..iters {
        times.push(step()?);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    println!(
        "engine {name} batch {batch} threads {}: median {median:.3} s/iter, {:.2} images/s (forward+backward)",
        rayon::current_num_threads(),
        batch as f64 / median
    );
    Ok(())
}
