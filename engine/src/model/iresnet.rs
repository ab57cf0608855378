//! IResNet forward as insightface's `iresnet.py`: stem conv-BN-PReLU; blocks
//! BN-conv3x3-BN-PReLU-conv3x3(stride)-BN plus the shortcut (1x1 stride-2 conv + BN in the first block of a
//! stage); then BN, flatten, dropout, fc, and the `features` BatchNorm1d whose weight stays 1.
//! In training mode every batch norm uses batch statistics and updates its running statistics
//! (momentum 0.1, unbiased variance) and `num_batches_tracked` in the store.
//! The AdaFace/MagFace variants (`config`): the configured batch-norm epsilon; a first block without a
//! `downsample` subsamples its shortcut; a model trained on another input convention converts the fed
//! tensor in front of `conv1` (`convention`).

use super::config::IResNetConfig;
use super::convention::InputConvention;
use super::init::{block_prefix, has_downsample, init_params};
use super::params::ParamStore;
use crate::backend::Conv2dParams;
use crate::ops;
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};

/// insightface sets eps 1e-5 on every batch norm (the default of `IResNetConfig::bn_eps`); torch's
/// default momentum 0.1.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct IResNet {
    pub config: IResNetConfig,
}

impl IResNet {
    pub fn new(config: IResNetConfig) -> Result<Self> {
        config.validate()?;
        Ok(IResNet { config })
    }

    /// Fresh parameters (insightface's initialization) drawn from `rng`.
    pub fn init(&self, rng: &mut Rng, dtype: DType) -> Result<ParamStore> {
        init_params(&self.config, rng, dtype)
    }

    /// x: `[N, H, W, in_channels]` (NHWC) -> embeddings `[N, embedding_size]`. `rng` is drawn from only
    /// when dropout is active (training with p > 0).
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &mut ParamStore,
        x: Var,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Var> {
        let cfg = &self.config;
        let (n, h, w, c) = tape.value(x).shape().nhwc("IResNet input")?;
        if (h, w) != cfg.input_hw || c != cfg.in_channels {
            return Err(Error::Shape(format!(
                "IResNet input: expected [N, {}, {}, {}], got [{n}, {h}, {w}, {c}]",
                cfg.input_hw.0, cfg.input_hw.1, cfg.in_channels
            )));
        }
        let eps = cfg.bn_eps;
        let x = adapt_input(tape, &cfg.input, x)?;
        let mut y = conv(tape, store, "conv1.weight", x, 1)?;
        y = batch_norm_prelu(tape, store, "bn1", "prelu.weight", y, train, eps)?;
        for (s, &blocks) in cfg.layers.iter().enumerate() {
            for b in 0..blocks {
                let stride = if has_downsample(b) { 2 } else { 1 };
                y = block(tape, store, &block_prefix(s, b), y, stride, train, eps)?;
            }
        }
        y = batch_norm(tape, store, "bn2", y, train, eps)?;
        y = ops::flatten(tape, y)?;
        if train && cfg.dropout > 0.0 {
            y = ops::dropout(tape, y, cfg.dropout, true, rng.next_u64())?;
        }
        let (fw, fb) = (store.var(tape, "fc.weight")?, store.var(tape, "fc.bias")?);
        // fc and features run in f32 under mixed precision, as insightface's iresnet does
        // (`self.fc(x.float() if self.fp16 else x)`, then `self.features`, outside its autocast region):
        // the 25,088-term dot products of IR-50's fc would otherwise take 16-bit operands.
        let half = tape.autocast();
        y = ops::widen_to_f32(tape, y)?;
        tape.set_autocast(None)?;
        let out = ops::linear(tape, y, fw, Some(fb))
            .and_then(|fc| batch_norm(tape, store, "features", fc, train, eps));
        tape.set_autocast(half)?;
        out
    }
}

/// A constant 1x1 convolution outside autocast: `w` is `[cout, 1, 1, cin]`. Each output sums one
/// weighted input and zeros, so a permutation (weights 1) is exact, and a scale rounds once.
fn fixed_pointwise(tape: &mut Tape, x: Var, w: Vec<f64>, cout: usize, stride: usize) -> Result<Var> {
    let t = tape.value(x);
    let (dtype, device, cin) = (t.dtype(), t.device(), t.dims()[3]);
    let w = Tensor::from_vec(w, [cout, 1, 1, cin])?.to_dtype(dtype)?.to_device(&device)?;
    let w = tape.constant(w);
    let half = tape.autocast();
    tape.set_autocast(None)?;
    let y = ops::conv2d(tape, x, w, Conv2dParams { kernel: 1, stride, padding: 0 });
    tape.set_autocast(half)?;
    y
}

/// The fed tensor (RGB, (x - 127.5) / 127.5) in the model's own convention; the identity for
/// insightface's.
fn adapt_input(tape: &mut Tape, c: &InputConvention, x: Var) -> Result<Var> {
    if c.is_feed() {
        return Ok(x);
    }
    let map = c.from_feed();
    let mut w = vec![0.0; 9];
    for (out, &(src, a, _)) in map.iter().enumerate() {
        w[out * 3 + src] = a;
    }
    let y = fixed_pointwise(tape, x, w, 3, 1)?;
    if map.iter().all(|m| m.2 == 0.0) {
        return Ok(y);
    }
    let t = tape.value(y);
    let shift =
        Tensor::from_vec(map.map(|m| m.2).to_vec(), [3])?.to_dtype(t.dtype())?.to_device(&t.device())?;
    let shift = tape.constant(shift);
    ops::add_channels(tape, y, shift)
}

#[cfg(test)]
pub(crate) fn adapt_input_for_tests(tape: &mut Tape, c: &InputConvention, x: Var) -> Result<Var> {
    adapt_input(tape, c, x)
}

/// Every other pixel in both directions (AdaFace's `MaxPool2d(1, stride)` shortcut), as an identity
/// 1x1 convolution of that stride: exact, differentiable, and on every backend.
fn subsample(tape: &mut Tape, x: Var, stride: usize) -> Result<Var> {
    let c = tape.value(x).dims()[3];
    let mut w = vec![0.0; c * c];
    for i in 0..c {
        w[i * c + i] = 1.0;
    }
    fixed_pointwise(tape, x, w, c, stride)
}

fn conv(tape: &mut Tape, store: &ParamStore, name: &str, x: Var, stride: usize) -> Result<Var> {
    let w = store.var(tape, name)?;
    let k = tape.value(w).dims()[1];
    ops::conv2d(tape, x, w, Conv2dParams { kernel: k, stride, padding: k / 2 })
}

fn prelu(tape: &mut Tape, store: &ParamStore, name: &str, x: Var) -> Result<Var> {
    let a = store.var(tape, name)?;
    ops::prelu(tape, x, a)
}

/// Batch norm `prefix` over the last dim; training mode also updates the running statistics.
pub fn batch_norm(
    tape: &mut Tape,
    store: &mut ParamStore,
    prefix: &str,
    x: Var,
    train: bool,
    eps: f64,
) -> Result<Var> {
    let g = store.var(tape, &format!("{prefix}.weight"))?;
    let b = store.var(tape, &format!("{prefix}.bias"))?;
    if !train {
        return batch_norm_eval(tape, store, prefix, x, g, b, eps);
    }
    with_running(store, prefix, |running| {
        ops::batch_norm_train(tape, x, Some(g), Some(b), eps, Some(running))
    })
}

/// Batch norm `bn` then PReLU `alpha`: in training one fused op (one kernel each way on a GPU).
fn batch_norm_prelu(
    tape: &mut Tape,
    store: &mut ParamStore,
    bn: &str,
    alpha: &str,
    x: Var,
    train: bool,
    eps: f64,
) -> Result<Var> {
    let g = store.var(tape, &format!("{bn}.weight"))?;
    let b = store.var(tape, &format!("{bn}.bias"))?;
    if !train {
        let y = batch_norm_eval(tape, store, bn, x, g, b, eps)?;
        return prelu(tape, store, alpha, y);
    }
    let a = store.var(tape, alpha)?;
    with_running(store, bn, |running| ops::batch_norm_prelu_train(tape, x, g, b, a, eps, Some(running)))
}

fn batch_norm_eval(
    tape: &mut Tape,
    store: &ParamStore,
    prefix: &str,
    x: Var,
    g: Var,
    b: Var,
    eps: f64,
) -> Result<Var> {
    let (rm, rv) =
        (store.get(&format!("{prefix}.running_mean"))?, store.get(&format!("{prefix}.running_var"))?);
    ops::batch_norm_eval(tape, x, Some(g), Some(b), rm, rv, eps)
}

/// Runs a training batch norm `prefix` with its running statistics (which it updates), then counts the
/// batch in `num_batches_tracked`.
fn with_running<T>(
    store: &mut ParamStore,
    prefix: &str,
    f: impl FnOnce(ops::Running<'_>) -> Result<T>,
) -> Result<T> {
    let (rm_name, rv_name) = (format!("{prefix}.running_mean"), format!("{prefix}.running_var"));
    let (mut rm, mut rv) = (store.get(&rm_name)?.clone(), store.get(&rv_name)?.clone());
    let out = f(ops::Running { mean: &mut rm, var: &mut rv, momentum: BN_MOMENTUM })?;
    store.set(&rm_name, rm)?;
    store.set(&rv_name, rv)?;
    increment_counter(store, &format!("{prefix}.num_batches_tracked"))?;
    Ok(out)
}

/// num_batches_tracked += 1 (an I64 scalar; kept wherever the store lives).
fn increment_counter(store: &mut ParamStore, name: &str) -> Result<()> {
    let t = store.get(name)?;
    let dev = t.device();
    let mut host = t.to_device(&Device::Cpu)?;
    host.as_mut_slice::<i64>()?[0] += 1;
    store.set(name, if dev.is_cpu() { host } else { host.to_device(&dev)? })
}

/// One IBasicBlock named `prefix` (e.g. `layer1.0`) with insightface's batch-norm epsilon.
pub fn block_forward(
    tape: &mut Tape,
    store: &mut ParamStore,
    prefix: &str,
    x: Var,
    stride: usize,
    train: bool,
) -> Result<Var> {
    block(tape, store, prefix, x, stride, train, BN_EPS)
}

/// One IBasicBlock; its shortcut is `downsample.{0,1}` when the store holds
/// `{prefix}.downsample.0.weight`, else the input itself, subsampled when `stride` is 2 (AdaFace).
fn block(
    tape: &mut Tape,
    store: &mut ParamStore,
    prefix: &str,
    x: Var,
    stride: usize,
    train: bool,
    eps: f64,
) -> Result<Var> {
    let mut y = batch_norm(tape, store, &format!("{prefix}.bn1"), x, train, eps)?;
    y = conv(tape, store, &format!("{prefix}.conv1.weight"), y, 1)?;
    let (bn2, alpha) = (format!("{prefix}.bn2"), format!("{prefix}.prelu.weight"));
    y = batch_norm_prelu(tape, store, &bn2, &alpha, y, train, eps)?;
    y = conv(tape, store, &format!("{prefix}.conv2.weight"), y, stride)?;
    let (bn3, down) = (format!("{prefix}.bn3"), format!("{prefix}.downsample.0.weight"));
    let has_down = store.kind(&down).is_some();
    if !train {
        y = batch_norm(tape, store, &bn3, y, false, eps)?;
        let shortcut = if has_down {
            let s = conv(tape, store, &down, x, stride)?;
            batch_norm(tape, store, &format!("{prefix}.downsample.1"), s, false, eps)?
        } else if stride != 1 {
            subsample(tape, x, stride)?
        } else {
            x
        };
        return ops::add(tape, y, shortcut);
    }
    // Training: bn3 and the shortcut's batch norm, and the sum, in one op (one pass over the output on a
    // GPU). bn3's parameters are put on the tape before the shortcut's, as the separate ops would.
    let (g, b) = (store.var(tape, &format!("{bn3}.weight"))?, store.var(tape, &format!("{bn3}.bias"))?);
    if !has_down {
        let shortcut = if stride != 1 { subsample(tape, x, stride)? } else { x };
        return with_running(store, &bn3, |r| {
            ops::batch_norm_add_train(tape, y, g, b, eps, Some(r), shortcut, None)
        });
    }
    let s = conv(tape, store, &down, x, stride)?;
    let dbn = format!("{prefix}.downsample.1");
    let (sg, sb) = (store.var(tape, &format!("{dbn}.weight"))?, store.var(tape, &format!("{dbn}.bias"))?);
    let (rm_name, rv_name) = (format!("{dbn}.running_mean"), format!("{dbn}.running_var"));
    let (mut rm, mut rv) = (store.get(&rm_name)?.clone(), store.get(&rv_name)?.clone());
    let out = with_running(store, &bn3, |r| {
        let running = Some(ops::Running { mean: &mut rm, var: &mut rv, momentum: BN_MOMENTUM });
        let shortcut = ops::ShortcutBn { gamma: sg, beta: sb, running };
        ops::batch_norm_add_train(tape, y, g, b, eps, Some(r), s, Some(shortcut))
    })?;
    store.set(&rm_name, rm)?;
    store.set(&rv_name, rv)?;
    increment_counter(store, &format!("{dbn}.num_batches_tracked"))?;
    Ok(out)
}

/// A batch of NCHW images (PyTorch layout) as our NHWC tensor.
pub fn nchw_to_nhwc(t: &Tensor) -> Result<Tensor> {
    let d = t.dims();
    if d.len() != 4 {
        return Err(Error::Shape(format!("nchw_to_nhwc: expected rank 4, got {}", t.shape())));
    }
    super::export::permute(t, d, &[0, 2, 3, 1])
}

/// The inverse of `nchw_to_nhwc`.
pub fn nhwc_to_nchw(t: &Tensor) -> Result<Tensor> {
    let d = t.dims();
    if d.len() != 4 {
        return Err(Error::Shape(format!("nhwc_to_nchw: expected rank 4, got {}", t.shape())));
    }
    super::export::permute(t, d, &[0, 3, 1, 2])
}
