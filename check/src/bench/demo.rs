//! The demo's training on the device through the real data path.

use super::BenchOptions;
use crate::compare::rel_error;
use crate::device_parity;
use crate::gpu_check::CommonArgs;
use crate::report::save_markdown;
use crate::CmdResult;
use datasets::augment::AugmentConfig;
use datasets::loader::{Loader, LoaderConfig, PixelFormat, Pixels};
use engine::embed::PairEval;
use engine::train::demo as demo_defaults;
use engine::train::trainer::{OptimizerChoice, Trainer};
use engine::{DType, Device};
use std::sync::Arc;
use std::time::Instant;

/// `bench --demo STEPS`: the demo's data path (generated set, loader with u8 batches normalized on the
/// device) and the small backbone with CosFace and AdamW on the device; passes when the mean loss of the
/// last 20 steps is under half that of the first 20.
pub fn run(dev: &Device, steps: u64, a: &CommonArgs, o: &BenchOptions) -> CmdResult {
    let be = engine::backend::for_device(dev);
    let set = datasets::demo::ensure_demo_set(&o.cache, &demo_defaults::synth_config())?;
    let faceset = Arc::new(datasets::faceset::FaceSet::open(&set.train)?);
    let classes = faceset.classes().ok_or("demo set without a class count")? as usize;
    let mut cfg = device_parity::small_config(classes, OptimizerChoice::AdamW);
    cfg.backbone.input_hw = (demo_defaults::SIZE, demo_defaults::SIZE);
    cfg.head_params.s = Some(demo_defaults::HEAD_S);
    cfg.lr = demo_defaults::LR;
    cfg.grad_clip = None;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let loader = Loader::new(
        faceset.clone(),
        LoaderConfig {
            batch_size: demo_defaults::BATCH_SIZE,
            seed: a.seed,
            threads,
            prefetch: 2 * threads,
            augment: AugmentConfig::flip_only(),
            format: PixelFormat::U8,
            ..LoaderConfig::default()
        },
    )?;
    let mut trainer = Trainer::new(cfg)?;
    trainer.to_device(dev)?;
    let (h, w) = trainer.model.config.input_hw;
    // The input path as training uses it: a u8 batch normalized by input.cu against the same batch as
    // the loader itself normalizes it for the CPU (same seed, same order and flips).
    let f32_loader = Loader::new(
        faceset.clone(),
        LoaderConfig { format: PixelFormat::F32Normalized, ..loader.config().clone() },
    )?;
    let (Some(bu), Some(bf)) = (loader.epoch(0).next(), f32_loader.epoch(0).next()) else {
        return Err("the demo set made no batch".into());
    };
    let (bu, bf) = (bu?, bf?);
    let (Pixels::U8(pu), Pixels::F32(pf)) = (bu.pixels, bf.pixels) else {
        return Err("unexpected pixel formats".into());
    };
    let n0 = bu.labels.len();
    let on_gpu = be.images_to_nhwc(&pu, [n0, h, w, 3], &vec![false; n0], DType::F32)?;
    let input_err = rel_error(&on_gpu.to_f64_vec()?, &pf.iter().map(|&v| v as f64).collect::<Vec<_>>());
    println!("u8 batch normalized on the GPU vs the loader's f32 batch: {input_err:.3e} (threshold 1e-6)");
    if !(input_err <= 1e-6) {
        return Err(format!("input.cu disagrees with the loader's normalization: {input_err:.3e}").into());
    }
    let mut losses = Vec::new();
    let mut images = 0usize;
    let t0 = Instant::now();
    'run: for epoch in 0.. {
        for batch in loader.epoch(epoch) {
            let batch = batch?;
            let Pixels::U8(px) = batch.pixels else { return Err("loader returned f32 pixels".into()) };
            let n = batch.labels.len();
            let x = be.images_to_nhwc(&px, [n, h, w, 3], &vec![false; n], DType::F32)?;
            let labels: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
            losses.push(trainer.train_step(&x, &labels)?.loss);
            images += n;
            if losses.len() as u64 >= steps {
                break 'run;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let pairs = PairEval::load(&set.pairs, (h, w))?;
    let acc = pairs.run(&trainer.model, &mut trainer.params)?.report.accuracy_mean;
    let (first, last) = device_parity::ends(&losses, 20);
    let ok = losses.iter().all(|l| l.is_finite()) && last < 0.5 * first;
    let text = format!(
        "| steps | batch | images/s (incl. loading) | loss, first 20 | loss, last 20 | held-out pair accuracy | result |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {:.0} | {first:.3} | {last:.3} | {:.4} | {} |\n",
        losses.len(),
        demo_defaults::BATCH_SIZE,
        images as f64 / secs.max(1e-9),
        acc,
        if ok { "pass" } else { "FAIL" }
    );
    print!("{text}");
    save_markdown(&a.report, &format!("# demo training on {} (f32)\n\n{text}", dev.describe()))?;
    if !ok {
        return Err(format!("the demo loss did not fall by half: {first:.3} -> {last:.3}").into());
    }
    Ok(())
}
