//! Finite-difference checks of the IResNet forward (one block, the whole small model) in f64, and
//! bit-identical training under a fixed seed.

use super::iresnet::{block_forward, IResNet};
use super::{init_params, IResNetConfig, ParamKind, ParamStore};
use crate::optim::{Optimizer, ParamGroups, Sgd, SgdConfig};
use crate::rng::Rng;
use crate::tape::gradcheck::{random_projection, rel_error};
use crate::tape::{Tape, Var};
use crate::tensor::{DType, Tensor};
use crate::Result;

type Net<'a> = dyn Fn(&mut Tape, &mut ParamStore, Var) -> Result<Var> + 'a;

fn randn(shape: &[usize], rng: &mut Rng, scale: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| scale * rng.normal()).collect::<Vec<f64>>(), shape).unwrap()
}

/// Loss = sum(net(x) * r) in training mode; returns its value.
fn loss(store: &ParamStore, x: &Tensor, net: &Net) -> f64 {
    let mut s = store.clone();
    let mut tape = Tape::no_grad();
    let xv = tape.constant(x.clone());
    let y = net(&mut tape, &mut s, xv).unwrap();
    let l = random_projection(&mut tape, y, 99).unwrap();
    tape.value(l).scalar_value().unwrap()
}

/// Relative error of the tape's gradient against central differences, for x and every trainable entry.
fn check(store: &ParamStore, x: &Tensor, net: &Net, h: f64) -> Vec<(String, f64)> {
    let mut s = store.clone();
    let mut tape = Tape::new();
    let xv = tape.leaf(x.clone());
    let y = net(&mut tape, &mut s, xv).unwrap();
    let l = random_projection(&mut tape, y, 99).unwrap();
    let grads = tape.backward(l).unwrap();
    let mut out = Vec::new();
    let numeric = |t: &Tensor, set: &dyn Fn(Tensor) -> (ParamStore, Tensor)| -> Vec<f64> {
        (0..t.numel())
            .map(|i| {
                let mut f = [0.0; 2];
                for (k, d) in [h, -h].into_iter().enumerate() {
                    let mut p = t.clone();
                    p.as_mut_slice::<f64>().unwrap()[i] += d;
                    let (st, xx) = set(p);
                    f[k] = loss(&st, &xx, net);
                }
                (f[0] - f[1]) / (2.0 * h)
            })
            .collect()
    };
    let gx = grads.get(xv).unwrap().to_f64_vec().unwrap();
    out.push(("x".to_string(), grad_error(&gx, &numeric(x, &|p| (store.clone(), p)))));
    for e in store.entries().iter().filter(|e| e.kind == ParamKind::Trainable) {
        let g = grads
            .param(&e.name)
            .unwrap_or_else(|| panic!("no gradient for {}", e.name))
            .to_f64_vec()
            .unwrap();
        let num = numeric(&e.value, &|p| {
            let mut st = store.clone();
            st.set(&e.name, p).unwrap();
            (st, x.clone())
        });
        out.push((e.name.clone(), grad_error(&g, &num)));
    }
    out
}

/// Batch-norm affine and PReLU values away from their initial 1 / 0 / 0.25, so the check is generic.
fn perturb(store: &mut ParamStore, rng: &mut Rng) {
    for e in store.entries_mut() {
        if e.kind == ParamKind::Trainable && e.value.dims().len() == 1 && !e.name.starts_with("fc.") {
            for v in e.value.as_mut_slice::<f64>().unwrap() {
                *v += 0.2 * rng.normal();
            }
        }
    }
}

/// ||a - b|| / max(||b||, 1e-3): a bias feeding a training-mode batch norm has an exactly zero gradient
/// (the next normalization removes any per-channel shift), where a pure ratio would compare noise.
fn grad_error(a: &[f64], b: &[f64]) -> f64 {
    let norm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    rel_error(a, b) * norm.max(1e-12) / norm.max(1e-3)
}

fn assert_small(errs: &[(String, f64)], tol: f64) {
    for (n, e) in errs {
        assert!(*e < tol, "{n}: relative error {e}");
    }
}

#[test]
fn block_gradients_match_finite_differences() {
    let mut rng = Rng::new(11);
    let cfg = IResNetConfig {
        layers: [2, 1, 1, 1],
        widths: [3, 4, 4, 4],
        input_hw: (16, 16),
        embedding_size: 4,
        ..IResNetConfig::small()
    };
    let mut full = init_params(&cfg, &mut rng, DType::F64).unwrap();
    perturb(&mut full, &mut rng);
    // layer1.0 has a downsample (3 -> 3 channels, stride 2); layer1.1 is the plain block.
    for (prefix, stride, hw, has_down) in [("layer1.0", 2, 6, true), ("layer1.1", 1, 5, false)] {
        let mut store = ParamStore::new();
        for e in full.entries().iter().filter(|e| e.name.starts_with(&format!("{prefix}."))) {
            store.insert(e.name.clone(), e.value.clone(), e.kind).unwrap();
        }
        assert_eq!(store.kind(&format!("{prefix}.downsample.0.weight")).is_some(), has_down);
        let x = randn(&[2, hw, hw, 3], &mut rng, 1.0);
        let net =
            move |t: &mut Tape, s: &mut ParamStore, x: Var| block_forward(t, s, prefix, x, stride, true);
        let errs = check(&store, &x, &net, 1e-5);
        assert_eq!(errs.len(), 1 + store.entries().iter().filter(|e| e.kind == ParamKind::Trainable).count());
        assert_small(&errs, 1e-6);
    }
}

#[test]
fn small_model_gradients_match_finite_differences() {
    let mut rng = Rng::new(12);
    let cfg = IResNetConfig {
        layers: [1, 1, 1, 1],
        widths: [2, 3, 3, 4],
        input_hw: (16, 16),
        embedding_size: 3,
        ..IResNetConfig::small()
    };
    let model = IResNet::new(cfg.clone()).unwrap();
    let mut store = model.init(&mut rng, DType::F64).unwrap();
    perturb(&mut store, &mut rng);
    let x = randn(&[3, 16, 16, 3], &mut rng, 1.0);
    let net = |t: &mut Tape, s: &mut ParamStore, x: Var| model.forward(t, s, x, true, &mut Rng::new(0));
    let errs = check(&store, &x, &net, 1e-5);
    assert_small(&errs, 1e-6);
    // features.weight is frozen: it is on the tape but gets no gradient.
    assert!(errs.iter().all(|(n, _)| n != "features.weight"));
}

#[test]
fn training_updates_running_stats_and_eval_uses_them() {
    let cfg = IResNetConfig { input_hw: (16, 16), ..IResNetConfig::small() };
    let model = IResNet::new(cfg).unwrap();
    let mut rng = Rng::new(3);
    let mut store = model.init(&mut rng, DType::F32).unwrap();
    let x = randn(&[4, 16, 16, 3], &mut rng, 1.0).to_dtype(DType::F32).unwrap();
    let mut tape = Tape::new();
    let xv = tape.constant(x.clone());
    let y = model.forward(&mut tape, &mut store, xv, true, &mut rng).unwrap();
    assert_eq!(tape.value(y).dims(), &[4, 128]);
    assert_eq!(store.get("bn1.num_batches_tracked").unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert_ne!(store.get("layer2.0.bn3.running_var").unwrap().to_f64_vec().unwrap(), vec![1.0; 32]);
    // Eval mode changes nothing in the store and gives the same output twice.
    let before = store.get("features.running_mean").unwrap().to_f64_vec().unwrap();
    let eval = |s: &mut ParamStore| {
        let mut t = Tape::no_grad();
        let xv = t.constant(x.clone());
        let y = model.forward(&mut t, s, xv, false, &mut Rng::new(0)).unwrap();
        t.value(y).to_f64_vec().unwrap()
    };
    assert_eq!(eval(&mut store), eval(&mut store));
    assert_eq!(store.get("features.running_mean").unwrap().to_f64_vec().unwrap(), before);
    assert_eq!(store.get("bn1.num_batches_tracked").unwrap().to_vec::<i64>().unwrap(), vec![1]);
    let mut t = Tape::new();
    let bad = t.constant(Tensor::zeros([2, 32, 32, 3], DType::F32, &crate::Device::Cpu).unwrap());
    assert!(model
        .forward(&mut t, &mut store, bad, true, &mut rng)
        .unwrap_err()
        .to_string()
        .contains("expected [N, 16, 16, 3]"));
}

fn two_sgd_steps(seed: u64) -> ParamStore {
    let cfg = IResNetConfig { input_hw: (32, 32), dropout: 0.2, ..IResNetConfig::small() };
    let model = IResNet::new(cfg).unwrap();
    let mut rng = Rng::new(seed);
    let mut store = model.init(&mut rng, DType::F32).unwrap();
    let mut opt = Sgd::new(SgdConfig::default(), ParamGroups::no_decay_on_batchnorm(5e-4));
    for _ in 0..2 {
        let x = randn(&[4, 32, 32, 3], &mut rng, 1.0).to_dtype(DType::F32).unwrap();
        let mut tape = Tape::new();
        let xv = tape.constant(x);
        let y = model.forward(&mut tape, &mut store, xv, true, &mut rng).unwrap();
        let l = random_projection(&mut tape, y, 5).unwrap();
        let grads = tape.backward(l).unwrap();
        opt.step(&mut store, grads.params(), 0.1).unwrap();
    }
    store
}

#[test]
fn same_seed_gives_bit_identical_weights_whatever_the_thread_count() {
    let a = two_sgd_steps(7);
    let b = two_sgd_steps(7);
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let c = one_thread.install(|| two_sgd_steps(7));
    let d = two_sgd_steps(8);
    let bits = |s: &ParamStore, n: &str| -> Vec<u32> {
        s.get(n)
            .unwrap()
            .as_slice::<f32>()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .unwrap_or_default()
    };
    let mut differs = false;
    for e in a.entries() {
        assert_eq!(bits(&a, &e.name), bits(&b, &e.name), "{} differs between runs", e.name);
        assert_eq!(bits(&a, &e.name), bits(&c, &e.name), "{} differs with one thread", e.name);
        differs |= bits(&a, &e.name) != bits(&d, &e.name);
    }
    assert!(differs, "another seed should give other weights");
}

#[test]
fn adaface_and_magface_variants_have_correct_gradients() {
    use super::{FeaturesNorm, InputConvention, Shortcut};
    // AdaFace's parameter-free subsampled shortcut (stage 1 keeps 2 channels), MagFace's epsilon,
    // trained features affine and BGR x/255 input (the adapter's permutation, scale and shift).
    let mut rng = Rng::new(13);
    let cfg = IResNetConfig {
        layers: [1, 1, 1, 1],
        widths: [2, 3, 3, 4],
        input_hw: (16, 16),
        embedding_size: 3,
        bn_eps: 2e-5,
        shortcut: Shortcut::SubsampleWhenSameWidth,
        features: FeaturesNorm::Affine,
        input: InputConvention::magface(),
        ..IResNetConfig::small()
    };
    let model = IResNet::new(cfg.clone()).unwrap();
    let mut store = model.init(&mut rng, DType::F64).unwrap();
    assert!(store.kind("layer1.0.downsample.0.weight").is_none());
    perturb(&mut store, &mut rng);
    let x = randn(&[3, 16, 16, 3], &mut rng, 1.0);
    let net = |t: &mut Tape, s: &mut ParamStore, x: Var| model.forward(t, s, x, true, &mut Rng::new(0));
    // A smaller step than the other checks: the input shift makes conv1's loss curve more (the central
    // difference's error falls as h^2: 1e-3 at h 1e-5, 1e-8 at h 1e-6 on conv1.weight).
    let errs = check(&store, &x, &net, 1e-6);
    assert_small(&errs, 1e-6);
    assert!(errs.iter().any(|(n, _)| n == "features.weight"));
}

#[test]
fn subsampled_shortcut_and_input_adapter_compute_what_they_replace() {
    use super::{InputConvention, Shortcut};
    // A block without downsample at stride 2 adds x[:, ::2, ::2, :] to its residual branch: with the
    // branch's last batch norm zeroed (weight and bias 0), the block's output is exactly that.
    let cfg = IResNetConfig {
        layers: [1, 1, 1, 1],
        widths: [3, 4, 4, 4],
        input_hw: (16, 16),
        shortcut: Shortcut::SubsampleWhenSameWidth,
        ..IResNetConfig::small()
    };
    let mut rng = Rng::new(4);
    let mut store = init_params(&cfg, &mut rng, DType::F64).unwrap();
    for n in ["layer1.0.bn3.weight", "layer1.0.bn3.bias"] {
        store.set(n, Tensor::from_vec(vec![0.0f64; 3], [3]).unwrap()).unwrap();
    }
    let x = randn(&[2, 6, 6, 3], &mut rng, 1.0);
    let mut tape = Tape::no_grad();
    let xv = tape.constant(x.clone());
    let y = block_forward(&mut tape, &mut store, "layer1.0", xv, 2, false).unwrap();
    let (xs, ys) = (x.to_f64_vec().unwrap(), tape.value(y).to_f64_vec().unwrap());
    assert_eq!(tape.value(y).dims(), &[2, 3, 3, 3]);
    for (n, i, j, c) in (0..2)
        .flat_map(|n| (0..3).flat_map(move |i| (0..3).flat_map(move |j| (0..3).map(move |c| (n, i, j, c)))))
    {
        assert_eq!(ys[((n * 3 + i) * 3 + j) * 3 + c], xs[((n * 6 + 2 * i) * 6 + 2 * j) * 3 + c]);
    }
    // The adapter: an AdaFace model given the fed RGB tensor sees it as BGR, bit for bit; a MagFace
    // model sees x/255 of the same pixels.
    let feed: Vec<f64> = (0..12).map(|v| ((v * 20) as f64 / 255.0 - 0.5) / 0.5).collect();
    let px = Tensor::from_vec(feed.clone(), [1, 2, 2, 3]).unwrap();
    for (conv, f) in [
        (InputConvention::adaface(), Box::new(|v: f64| v) as Box<dyn Fn(f64) -> f64>),
        (InputConvention::magface(), Box::new(|v: f64| v * 0.5 + 0.5)),
    ] {
        let mut t = Tape::no_grad();
        let xv = t.constant(px.clone());
        let y = super::iresnet::adapt_input_for_tests(&mut t, &conv, xv).unwrap();
        let got = t.value(y).to_f64_vec().unwrap();
        for p in 0..4 {
            for c in 0..3 {
                assert_eq!(got[p * 3 + c], f(feed[p * 3 + 2 - c]), "{conv:?} pixel {p} channel {c}");
            }
        }
    }
}
