//! The backbone as an ONNX graph (opset 17): input `input` [batch, 3, H, W] float RGB with a dynamic
//! batch, output `embedding` [batch, E], the weights as initializers in PyTorch's layout. Every layer is
//! written as it runs in evaluation mode (batch norms as `BatchNormalization` with their running
//! statistics and epsilon; no folding, so the graph reads back layer for layer).
//!
//! The input is what insightface's ONNX recognition models take: RGB as (x - 127.5) / 127.5. With
//! `fold_normalization` the graph starts from 0..255 pixels instead, with the normalization as its
//! first nodes, named `Sub_...` and `Mul_...`: insightface's `ArcFaceONNX` looks for exactly those
//! names among a graph's first eight nodes to decide that normalization is inside. A model trained on
//! BGR gets `conv1`'s input channels reordered (exact), and one trained with another mean or scale a
//! per-channel `Mul`/`Add` in front (exact up to rounding), so the graph's input contract is the same
//! for every model; `metadata_props` states it.

use super::config::IResNetConfig;
use super::convention::ChannelOrder;
use super::export::to_pytorch_layout;
use super::init::{block_prefix, has_downsample};
use super::params::ParamStore;
use crate::io::onnx::{self, attr_type, AttributeProto, NodeProto, TensorProto};
use crate::io::onnx::{Dimension, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use crate::io::onnx::{TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto};
use crate::tensor::{DType, Tensor};
use crate::Result;
use std::path::Path;

/// ONNX opset of the graph: BatchNormalization-15, PRelu-16, Gemm-13, Flatten-13, MaxPool-12.
pub const OPSET: i64 = 17;
/// The IR version that goes with opset 17.
const IR_VERSION: i64 = 8;

#[derive(Debug, Clone, Default)]
pub struct OnnxOptions {
    /// Take 0..255 RGB pixels and normalize inside the graph.
    pub fold_normalization: bool,
}

/// Writes the backbone `store` of `cfg` as an ONNX file.
pub fn export_onnx(path: &Path, cfg: &IResNetConfig, store: &ParamStore, opts: &OnnxOptions) -> Result<()> {
    onnx::write(path, &onnx_model(cfg, store, opts)?)
}

struct Builder<'a> {
    cfg: &'a IResNetConfig,
    store: &'a ParamStore,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attr_type::INTS, ints: v.to_vec(), ..Default::default() }
}

impl Builder<'_> {
    fn node(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = format!("{name}.out");
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: name.into(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn init(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let t = if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? };
        self.inits.push(onnx::tensor_proto(name, &t)?);
        Ok(name.to_string())
    }

    /// A parameter of ours in PyTorch's layout, as an initializer.
    fn param(&mut self, name: &str) -> Result<String> {
        let t = to_pytorch_layout(self.cfg, name, self.store.get(name)?)?;
        self.init(name, &t)
    }

    fn conv(&mut self, name: &str, x: &str, weight: &str, stride: i64) -> Result<String> {
        let k = self.store.get(weight)?.dims()[1] as i64;
        let p = k / 2;
        let attrs = vec![
            ints("kernel_shape", &[k, k]),
            ints("strides", &[stride, stride]),
            ints("pads", &[p, p, p, p]),
        ];
        Ok(self.node("Conv", name, &[x, weight], attrs))
    }

    fn batch_norm(&mut self, prefix: &str, x: &str) -> Result<String> {
        let mut inputs = vec![x.to_string()];
        for f in ["weight", "bias", "running_mean", "running_var"] {
            inputs.push(self.param(&format!("{prefix}.{f}"))?);
        }
        let eps = AttributeProto {
            name: "epsilon".into(),
            r#type: attr_type::FLOAT,
            f: self.cfg.bn_eps as f32,
            ..Default::default()
        };
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node("BatchNormalization", prefix, &refs, vec![eps]))
    }

    fn prelu(&mut self, name: &str, x: &str) -> Result<String> {
        // PRelu broadcasts its slope from the right: [C, 1, 1] against [N, C, H, W].
        let a = self.store.get(name)?;
        let slope = a.reshape([a.numel(), 1, 1])?;
        let s = self.init(name, &slope)?;
        Ok(self.node("PRelu", name.trim_end_matches(".weight"), &[x, &s], vec![]))
    }

    fn block(&mut self, prefix: &str, x: &str, stride: i64) -> Result<String> {
        let mut y = self.batch_norm(&format!("{prefix}.bn1"), x)?;
        let w = self.param(&format!("{prefix}.conv1.weight"))?;
        y = self.conv(&format!("{prefix}.conv1"), &y, &w, 1)?;
        y = self.batch_norm(&format!("{prefix}.bn2"), &y)?;
        y = self.prelu(&format!("{prefix}.prelu.weight"), &y)?;
        let w = self.param(&format!("{prefix}.conv2.weight"))?;
        y = self.conv(&format!("{prefix}.conv2"), &y, &w, stride)?;
        y = self.batch_norm(&format!("{prefix}.bn3"), &y)?;
        let down = format!("{prefix}.downsample.0.weight");
        let shortcut = if self.store.kind(&down).is_some() {
            let w = self.param(&down)?;
            let s = self.conv(&format!("{prefix}.downsample.0"), x, &w, stride)?;
            self.batch_norm(&format!("{prefix}.downsample.1"), &s)?
        } else if stride != 1 {
            // AdaFace's shortcut, as its net.py writes it: MaxPool2d(1, stride).
            let attrs = vec![ints("kernel_shape", &[1, 1]), ints("strides", &[stride, stride])];
            self.node("MaxPool", &format!("{prefix}.shortcut"), &[x], attrs)
        } else {
            x.to_string()
        };
        Ok(self.node("Add", &format!("{prefix}.add"), &[&y, &shortcut], vec![]))
    }

    /// Per-channel affine on the graph input (RGB order); an identity step is left out unless `keep`.
    fn affine(&mut self, x: &str, ops: [(&str, &str, [f64; 3], f64); 2], keep: bool) -> Result<String> {
        let mut y = x.to_string();
        for (op, name, v, identity) in ops {
            if !keep && v.iter().all(|&c| c == identity) {
                continue;
            }
            let t = Tensor::from_vec(v.iter().map(|&c| c as f32).collect::<Vec<_>>(), [1, 3, 1, 1])?;
            let c = self.init(&format!("{name}.value"), &t)?;
            y = self.node(op, name, &[&y, &c], vec![]);
        }
        Ok(y)
    }
}

/// `conv1.weight` in PyTorch layout with its input channels in RGB order.
fn stem_weight(cfg: &IResNetConfig, store: &ParamStore) -> Result<Tensor> {
    let w = to_pytorch_layout(cfg, "conv1.weight", store.get("conv1.weight")?)?;
    if cfg.input.order == ChannelOrder::Rgb {
        return Ok(w);
    }
    // [O, C, k, k] with C reversed (BGR -> RGB).
    let d = w.dims().to_vec();
    let v = w.to_device(&crate::Device::Cpu)?.to_vec::<f32>()?;
    let (o, c, kk) = (d[0], d[1], d[2] * d[3]);
    let mut out = vec![0f32; v.len()];
    for oi in 0..o {
        for ci in 0..c {
            let (src, dst) = ((oi * c + ci) * kk, (oi * c + (c - 1 - ci)) * kk);
            out[dst..dst + kk].copy_from_slice(&v[src..src + kk]);
        }
    }
    Tensor::from_vec(out, d)
}

/// The model as an ONNX `ModelProto`.
pub fn onnx_model(cfg: &IResNetConfig, store: &ParamStore, opts: &OnnxOptions) -> Result<ModelProto> {
    let mut b = Builder { cfg, store, nodes: Vec::new(), inits: Vec::new() };
    // What conv1 must see, per RGB channel: model = a * graph_input + b.
    let (mean, std) = cfg.input.rgb_mean_std();
    let mut x = if opts.fold_normalization {
        let inv = std.map(|s| 1.0 / s);
        // Both nodes even where one is the identity (a mean of 0): readers look for the pair of names.
        b.affine("input", [("Sub", "Sub_input_mean", mean, 0.0), ("Mul", "Mul_input_scale", inv, 1.0)], true)?
    } else {
        // graph input = (x - 127.5) / 127.5, so x = 127.5 * input + 127.5.
        let a = std.map(|s| 127.5 / s);
        let sh: [f64; 3] = std::array::from_fn(|c| (127.5 - mean[c]) / std[c]);
        b.affine(
            "input",
            [("Mul", "input_adapter.scale", a, 1.0), ("Add", "input_adapter.shift", sh, 0.0)],
            false,
        )?
    };
    let w = b.init("conv1.weight", &stem_weight(cfg, store)?)?;
    x = b.conv("conv1", &x, &w, 1)?;
    x = b.batch_norm("bn1", &x)?;
    x = b.prelu("prelu.weight", &x)?;
    for (s, &blocks) in cfg.layers.iter().enumerate() {
        for k in 0..blocks {
            let stride = if has_downsample(k) { 2 } else { 1 };
            x = b.block(&block_prefix(s, k), &x, stride)?;
        }
    }
    x = b.batch_norm("bn2", &x)?;
    let axis = AttributeProto { name: "axis".into(), r#type: attr_type::INT, i: 1, ..Default::default() };
    x = b.node("Flatten", "flatten", &[&x], vec![axis]);
    let (fw, fb) = (b.param("fc.weight")?, b.param("fc.bias")?);
    let trans = AttributeProto { name: "transB".into(), r#type: attr_type::INT, i: 1, ..Default::default() };
    x = b.node("Gemm", "fc", &[&x, &fw, &fb], vec![trans]);
    b.batch_norm("features", &x)?;
    b.nodes.last_mut().expect("features").output = vec!["embedding".into()];
    let (h, w) = cfg.input_hw;
    let value = |name: &str, dims: Vec<Dimension>| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: onnx::data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
        ..Default::default()
    };
    let fixed = |v: usize| Dimension { dim_value: Some(v as i64), dim_param: None };
    let batch = || Dimension { dim_value: None, dim_param: Some("batch".into()) };
    let graph = GraphProto {
        node: b.nodes,
        name: "iresnet".into(),
        initializer: b.inits,
        input: vec![value("input", vec![batch(), fixed(3), fixed(h), fixed(w)])],
        output: vec![value("embedding", vec![batch(), fixed(cfg.embedding_size)])],
        ..Default::default()
    };
    let mut meta = cfg.to_metadata();
    meta.insert("model_input_convention".into(), cfg.input.describe());
    // The graph's own input contract (what a deployer feeds), replacing the model's convention keys.
    let contract =
        if opts.fold_normalization { ("0,0,0", "1,1,1") } else { ("127.5,127.5,127.5", "127.5,127.5,127.5") };
    meta.insert("input_channels".into(), "RGB".into());
    meta.insert("input_mean".into(), contract.0.into());
    meta.insert("input_std".into(), contract.1.into());
    meta.insert("normalization_inside".into(), opts.fold_normalization.to_string());
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "facetrain".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: meta.into_iter().map(|(key, value)| StringStringEntryProto { key, value }).collect(),
        ..Default::default()
    })
}
