//! The CPU backend gives bit-identical results whatever the number of rayon threads.

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Conv2dParams};
use crate::rng::Rng;
use crate::tensor::Tensor;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| r.normal() as f32).collect::<Vec<f32>>(), shape).unwrap()
}

/// Every output of conv (forward, both backwards) and batch norm (forward, backward) as raw f32 vectors.
fn run_all() -> Vec<Vec<f32>> {
    let be = CpuBackend;
    let mut outs = Vec::new();
    for (k, s, p) in [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0)] {
        let prm = Conv2dParams { kernel: k, stride: s, padding: p };
        let x = randn(&[4, 9, 30, 32], 1);
        let w = randn(&[48, k, k, 32], 2);
        let y = be.conv2d_forward(&x, &w, prm).unwrap();
        let dy = randn(y.dims(), 3);
        outs.push(y.to_vec::<f32>().unwrap());
        outs.push(be.conv2d_backward_data(&dy, &w, x.shape(), prm).unwrap().to_vec().unwrap());
        outs.push(be.conv2d_backward_filter(&dy, &x, w.shape(), prm).unwrap().to_vec().unwrap());
    }
    let x = randn(&[7, 13, 11, 24], 4);
    let (g, b) = (randn(&[24], 5), randn(&[24], 6));
    let (y, saved) = be.batch_norm_forward_train(&x, Some(&g), Some(&b), 1e-5, None).unwrap();
    let (dx, dg, db) = be.batch_norm_backward(&randn(x.dims(), 7), &x, Some(&g), &saved, None).unwrap();
    for t in [y, saved.mean, saved.var, dx, dg, db] {
        outs.push(t.to_vec().unwrap());
    }
    outs
}

fn with_threads(n: usize) -> Vec<Vec<f32>> {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(run_all)
}

#[test]
fn conv_and_batch_norm_are_bit_identical_across_thread_counts() {
    let one = with_threads(1);
    for n in [2, 3] {
        let many = with_threads(n);
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "output {i} differs between 1 and {n} threads");
        }
    }
}
