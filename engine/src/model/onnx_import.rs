//! An IResNet from an ONNX graph: ours (`onnx_export`), insightface's model zoo (`w600k_r50.onnx` and
//! the like, exported from PyTorch in evaluation mode, where each batch norm that follows a convolution
//! is folded into it as a bias), or one that normalizes inside (insightface's MXNet conversions: first
//! nodes `_minus`/`_mul`). The graph is followed along its data flow from the input: optional leading
//! per-channel `Sub`/`Mul`/`Add`/`Div`, the stem (Conv, BatchNormalization, PRelu), blocks (a batch norm
//! and two convolutions beside a projection, a `MaxPool(1, 2)` or the identity, joined by `Add`), then
//! BatchNormalization, Flatten, Gemm, BatchNormalization. Anything else is refused, naming the node.
//!
//! A convolution whose batch norm was folded into it becomes a convolution followed by a batch norm
//! that only adds the bias (weight 1, mean 0, variance 1 - eps): the same function in evaluation mode.
//! Fine-tuning from such weights starts from other statistics than the original: in training mode
//! those batch norms normalize each channel by its batch statistics (the folded scale is lost until
//! training relearns it), so a `.pth` of the same model is the better start; `eval` and `embed` are
//! exact.
//!
//! The input contract follows insightface's `ArcFaceONNX`: a graph whose first eight nodes include
//! names starting with `Sub`/`_minus` and `Mul`/`_mul` takes 0..255 RGB pixels, any other RGB as
//! (x - 127.5) / 127.5; leading per-channel affine nodes become the model's input convention.

use super::config::{FeaturesNorm, IResNetConfig, Shortcut};
use super::convention::{ChannelOrder, InputConvention};
use super::import::{build_store, Imported};
use super::layouts::{Layout, Mapped};
use crate::io::onnx::{self, NodeProto};
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Reads an ONNX file and maps its graph onto an IResNet.
pub fn import_onnx(path: &Path) -> Result<Imported> {
    let origin = path.display().to_string();
    let model = onnx::read(path)?;
    let graph =
        model.graph.as_ref().ok_or_else(|| Error::Io(format!("{origin}: ONNX model without a graph")))?;
    let mut w = Walker::new(graph, &origin)?;
    let net = w.walk()?;
    net.into_imported(&origin)
}

/// A batch norm's parameters; `eps` None for one standing in for a folded batch norm.
struct Bn {
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
    eps: Option<f64>,
}

struct Block {
    stride: usize,
    width: usize,
    /// `Some(true)`: projection; `Some(false)`: MaxPool(1, stride); `None`: identity.
    projection: Option<bool>,
}

/// What the walk found, in PyTorch layout under our names (batch norms kept apart until the common
/// epsilon is known).
struct Net {
    tensors: Vec<(String, Tensor)>,
    bns: Vec<(String, Bn)>,
    blocks: Vec<Block>,
    /// Per RGB channel: conv1 sees a * graph_input + b.
    affine: ([f64; 3], [f64; 3]),
    raw_input: bool,
    input_hw: Option<(usize, usize)>,
    features_scale_is_one: bool,
}

struct Walker<'a> {
    origin: &'a str,
    nodes: &'a [NodeProto],
    consumers: HashMap<&'a str, Vec<usize>>,
    consts: HashMap<&'a str, Tensor>,
    input: String,
    input_dims: Vec<Option<usize>>,
    outputs: Vec<&'a str>,
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.ints.clone())
}

fn attr_int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

impl<'a> Walker<'a> {
    fn new(g: &'a onnx::GraphProto, origin: &'a str) -> Result<Walker<'a>> {
        let mut consts: HashMap<&str, Tensor> = HashMap::new();
        for t in &g.initializer {
            consts.insert(&t.name, onnx::to_tensor(t, &format!("{origin}: initializer '{}'", t.name))?);
        }
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            if n.output.is_empty() {
                return Err(Error::Io(format!("{origin}: node '{}' ({}) has no output", n.name, n.op_type)));
            }
            if n.op_type == "Constant" {
                let v = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
                if let (Some(v), Some(out)) = (v, n.output.first()) {
                    consts.insert(out, onnx::to_tensor(v, &format!("{origin}: constant '{out}'"))?);
                }
            }
            // PyTorch's exporter shares equal initializers through Identity nodes.
            if n.op_type == "Identity" {
                if let (Some(src), Some(out)) =
                    (n.input.first().and_then(|i| consts.get(i.as_str())).cloned(), n.output.first())
                {
                    consts.insert(out, src);
                }
            }
            for inp in &n.input {
                consumers.entry(inp.as_str()).or_default().push(i);
            }
        }
        let inp =
            g.input.iter().find(|v| !consts.contains_key(v.name.as_str())).ok_or_else(|| {
                Error::Io(format!("{origin}: the graph has no input besides its initializers"))
            })?;
        let input_dims = inp
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.iter().map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize)).collect())
            .unwrap_or_default();
        Ok(Walker {
            origin,
            nodes: &g.node,
            consumers,
            consts,
            input: inp.name.clone(),
            input_dims,
            outputs: g.output.iter().map(|o| o.name.as_str()).collect(),
        })
    }

    fn describe(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let name = if n.name.is_empty() { format!("#{i}") } else { n.name.clone() };
        format!("{}: node '{name}' ({})", self.origin, n.op_type)
    }

    fn fail<T>(&self, i: usize, what: &str) -> Result<T> {
        Err(Error::Io(format!("{}: {what}; this is not an IResNet graph we read", self.describe(i))))
    }

    /// The nodes reading tensor `t`.
    fn readers(&self, t: &str) -> Vec<usize> {
        self.consumers.get(t).cloned().unwrap_or_default()
    }

    /// The one node reading `t` (skipping identities), or an error naming what reads it.
    fn next(&self, t: &str, after: &str) -> Result<usize> {
        let r = self.readers(t);
        if r.len() != 1 {
            let who: Vec<String> = r.iter().map(|&i| self.describe(i)).collect();
            return Err(Error::Io(format!(
                "{}: tensor '{t}' ({after}) is read by {} nodes ({}), expected one; this is not an IResNet graph we read",
                self.origin,
                r.len(),
                who.join(", ")
            )));
        }
        let n = &self.nodes[r[0]];
        // Identities in evaluation: Identity, Dropout, and a Cast to float in a float graph (PyTorch
        // writes one for a `.float()` in front of fc).
        let to_float = n.op_type == "Cast" && attr_int(n, "to") == Some(onnx::data_type::FLOAT as i64);
        if n.op_type == "Identity" || n.op_type == "Dropout" || to_float {
            return self.next(&n.output[0], after);
        }
        Ok(r[0])
    }

    fn out(&self, i: usize) -> &'a str {
        &self.nodes[i].output[0]
    }

    fn konst(&self, i: usize, k: usize, what: &str) -> Result<Tensor> {
        let name = self.nodes[i].input.get(k).map(String::as_str).unwrap_or("");
        match self.consts.get(name) {
            Some(t) => Ok(t.clone()),
            None => self.fail(i, &format!("its {what} ('{name}') is not a constant")),
        }
    }

    fn expect(&self, i: usize, op: &str, role: &str) -> Result<()> {
        if self.nodes[i].op_type != op {
            return self.fail(i, &format!("expected {op} ({role})"));
        }
        Ok(())
    }

    /// A Conv with kernel `k` and the given stride (padding k/2, no groups or dilation); its weight and
    /// bias.
    fn conv(&self, i: usize, k: i64, role: &str) -> Result<(Tensor, Option<Tensor>, usize)> {
        self.expect(i, "Conv", role)?;
        let n = &self.nodes[i];
        let kernel = attr_ints(n, "kernel_shape");
        let strides = attr_ints(n, "strides").unwrap_or(vec![1, 1]);
        let pads = attr_ints(n, "pads").unwrap_or(vec![0; 4]);
        let p = k / 2;
        if kernel.as_ref().is_some_and(|v| v != &[k, k]) || strides.len() != 2 || strides[0] != strides[1] {
            return self.fail(
                i,
                &format!(
                    "{role} must be {k}x{k} with equal strides, found kernel {kernel:?} strides {strides:?}"
                ),
            );
        }
        if pads != [p, p, p, p]
            || attr_int(n, "group").unwrap_or(1) != 1
            || attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return self
                .fail(i, &format!("{role} must have padding {p}, one group, no dilation (pads {pads:?})"));
        }
        let w = self.konst(i, 1, "weight")?;
        if w.dims().len() != 4 || w.dims()[2..] != [k as usize, k as usize] {
            return self
                .fail(i, &format!("{role} weight has shape {:?}, expected [out, in, {k}, {k}]", w.dims()));
        }
        let b =
            if n.input.len() > 2 && !n.input[2].is_empty() { Some(self.konst(i, 2, "bias")?) } else { None };
        Ok((w, b, strides[0] as usize))
    }

    fn bn_params(&self, i: usize) -> Result<Bn> {
        self.expect(i, "BatchNormalization", "batch norm")?;
        // The attribute is an f32: its shortest decimal (1e-5, not 9.99999974e-6) is the value meant.
        let eps = self.nodes[i]
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f.to_string().parse::<f64>().unwrap_or(a.f as f64));
        let p = |k: usize, w: &str| self.konst(i, k, w).and_then(|t| t.to_dtype(crate::DType::F32));
        Ok(Bn {
            weight: p(1, "scale")?,
            bias: p(2, "bias")?,
            mean: p(3, "mean")?,
            var: p(4, "variance")?,
            eps: Some(eps),
        })
    }

    /// The batch norm after a convolution: the next node's, or the folded stand-in from the bias.
    /// Returns it and the tensor after it.
    fn conv_bn(&self, conv: usize, bias: Option<Tensor>, channels: usize) -> Result<(Bn, &'a str)> {
        let out = self.out(conv);
        let next = self.next(out, "a convolution's output")?;
        let zeros = || Tensor::from_vec(vec![0f32; channels], [channels]);
        if self.nodes[next].op_type == "BatchNormalization" {
            let mut bn = self.bn_params(next)?;
            if let Some(b) = bias {
                // BN(conv + b) = BN with its mean lowered by b.
                let m: Vec<f32> = bn
                    .mean
                    .to_vec::<f32>()?
                    .iter()
                    .zip(b.to_dtype(crate::DType::F32)?.to_vec::<f32>()?)
                    .map(|(m, b)| m - b)
                    .collect();
                bn.mean = Tensor::from_vec(m, [channels])?;
            }
            return Ok((bn, self.out(next)));
        }
        let bias = match bias {
            Some(b) => b.to_dtype(crate::DType::F32)?,
            None => zeros()?,
        };
        let ones = Tensor::from_vec(vec![1f32; channels], [channels])?;
        Ok((Bn { weight: ones.clone(), bias, mean: zeros()?, var: ones, eps: None }, out))
    }

    fn walk(&mut self) -> Result<Net> {
        let mut net = Net {
            tensors: Vec::new(),
            bns: Vec::new(),
            blocks: Vec::new(),
            affine: ([1.0; 3], [0.0; 3]),
            raw_input: false,
            input_hw: None,
            features_scale_is_one: true,
        };
        let names: Vec<&str> = self.nodes.iter().take(8).map(|n| n.name.as_str()).collect();
        net.raw_input = names.iter().any(|n| n.starts_with("Sub") || n.starts_with("_minus"))
            && names.iter().any(|n| n.starts_with("Mul") || n.starts_with("_mul"));
        if let [_, c, h, w] = self.input_dims[..] {
            if c.is_some_and(|c| c != 3) {
                return Err(Error::Io(format!(
                    "{}: input '{}' has {c:?} channels, expected 3",
                    self.origin, self.input
                )));
            }
            net.input_hw = h.zip(w);
        }
        let input = self.input.clone();
        let mut t: &str = self.leading_affine(&input, &mut net)?;
        // Stem.
        let i = self.next(t, "the input")?;
        let (w, b, stride) = self.conv(i, 3, "the stem convolution")?;
        if stride != 1 {
            return self.fail(i, "the stem convolution must have stride 1");
        }
        let c0 = w.dims()[0];
        net.tensors.push(("conv1.weight".into(), w));
        let (bn, after) = self.conv_bn(i, b, c0)?;
        net.bns.push(("bn1".into(), bn));
        let p = self.next(after, "the stem batch norm")?;
        t = self.prelu(p, "prelu.weight", &mut net)?;
        // Blocks until the tail's batch norm (read by one node, followed by Flatten).
        loop {
            let r = self.readers(t);
            if r.len() == 1 && self.nodes[r[0]].op_type == "BatchNormalization" {
                break;
            }
            t = self.block(t, &mut net)?;
        }
        self.tail(t, &mut net)?;
        Ok(net)
    }

    /// Leading per-channel Sub/Add/Mul/Div by constants, composed into conv1's input affine.
    fn leading_affine(&self, input: &str, net: &mut Net) -> Result<&'a str> {
        let mut t: &'a str = self.consumers.get_key_value(input).map(|(k, _)| *k).unwrap_or("");
        if t.is_empty() {
            return Err(Error::Io(format!("{}: nothing reads the input '{input}'", self.origin)));
        }
        loop {
            let i = self.next(t, "the input")?;
            let n = &self.nodes[i];
            let op = n.op_type.as_str();
            if !matches!(op, "Sub" | "Add" | "Mul" | "Div") {
                return Ok(t);
            }
            let (other, first) = if n.input[0] == t { (1, true) } else { (0, false) };
            let c = self.konst(i, other, "operand")?.to_f64_vec()?;
            let c: [f64; 3] = match c.len() {
                1 => [c[0]; 3],
                3 => [c[0], c[1], c[2]],
                _ => {
                    return self.fail(
                        i,
                        &format!("a per-channel constant of {} values in front of the stem", c.len()),
                    )
                }
            };
            let (a, b) = &mut net.affine;
            for ch in 0..3 {
                match (op, first) {
                    ("Sub", true) => b[ch] -= c[ch],
                    ("Add", _) => b[ch] += c[ch],
                    ("Mul", _) => {
                        a[ch] *= c[ch];
                        b[ch] *= c[ch];
                    }
                    ("Div", true) => {
                        a[ch] /= c[ch];
                        b[ch] /= c[ch];
                    }
                    _ => return self.fail(i, "a constant divided or subtracted by the input"),
                }
            }
            t = self.out(i);
        }
    }

    fn prelu(&self, i: usize, name: &str, net: &mut Net) -> Result<&'a str> {
        self.expect(i, "PRelu", name)?;
        let s = self.konst(i, 1, "slope")?;
        let n = s.numel();
        net.tensors.push((name.into(), s.reshape([n])?));
        Ok(self.out(i))
    }

    /// One block reading `x`; returns its sum.
    fn block(&self, x: &'a str, net: &mut Net) -> Result<&'a str> {
        let k = net.blocks.len();
        let p = format!("block{k}");
        let r = self.readers(x);
        let bn1 = r.iter().copied().find(|&i| self.nodes[i].op_type == "BatchNormalization");
        let Some(bn1) = bn1.filter(|_| r.len() == 2) else {
            let i = r.first().copied().unwrap_or(0);
            return self.fail(i, "expected a block: a batch norm and a shortcut reading the same tensor");
        };
        net.bns.push((format!("{p}.bn1"), self.bn_params(bn1)?));
        let c1 = self.next(self.out(bn1), "a block's first batch norm")?;
        let (w, b, s1) = self.conv(c1, 3, "a block's first convolution")?;
        if s1 != 1 {
            return self.fail(c1, "a block's first convolution must have stride 1");
        }
        let width = w.dims()[0];
        net.tensors.push((format!("{p}.conv1.weight"), w));
        let (bn, after) = self.conv_bn(c1, b, width)?;
        net.bns.push((format!("{p}.bn2"), bn));
        let pr = self.next(after, "a block's second batch norm")?;
        let y = self.prelu(pr, &format!("{p}.prelu.weight"), net)?;
        let c2 = self.next(y, "a block's PReLU")?;
        let (w, b, stride) = self.conv(c2, 3, "a block's second convolution")?;
        net.tensors.push((format!("{p}.conv2.weight"), w));
        let (bn, res) = self.conv_bn(c2, b, width)?;
        net.bns.push((format!("{p}.bn3"), bn));
        let add = self.next(res, "a block's residual branch")?;
        self.expect(add, "Add", "the block's sum")?;
        let Some(sc) = r.iter().copied().find(|&i| i != bn1) else {
            return self.fail(bn1, "the block's batch norm reads its input twice");
        };
        let projection = match self.nodes[sc].op_type.as_str() {
            "Add" if sc == add => None,
            "Conv" => {
                let (w, b, s) = self.conv(sc, 1, "a projection shortcut")?;
                if s != stride {
                    return self.fail(sc, "the projection's stride differs from the block's");
                }
                net.tensors.push((format!("{p}.downsample.0.weight"), w));
                let (bn, o) = self.conv_bn(sc, b, width)?;
                net.bns.push((format!("{p}.downsample.1"), bn));
                if self.next(o, "a projection shortcut")? != add {
                    return self.fail(sc, "the projection does not lead to the block's sum");
                }
                Some(true)
            }
            "MaxPool" => {
                let n = &self.nodes[sc];
                let ok = attr_ints(n, "kernel_shape").as_deref() == Some(&[1, 1])
                    && attr_ints(n, "strides").as_deref() == Some(&[stride as i64, stride as i64]);
                if !ok || self.next(self.out(sc), "a subsampling shortcut")? != add {
                    return self.fail(
                        sc,
                        "a pooling shortcut must be MaxPool 1x1 with the block's stride, into the sum",
                    );
                }
                Some(false)
            }
            _ => {
                return self
                    .fail(sc, "expected the block's shortcut: Conv 1x1, MaxPool 1x1 or the sum itself")
            }
        };
        net.blocks.push(Block { stride, width, projection });
        Ok(self.out(add))
    }

    /// BatchNormalization, Flatten, Gemm (or MatMul + Add), BatchNormalization, graph output.
    fn tail(&self, x: &'a str, net: &mut Net) -> Result<()> {
        let bn = self.next(x, "the last block")?;
        net.bns.push(("bn2".into(), self.bn_params(bn)?));
        let f = self.next(self.out(bn), "the last batch norm")?;
        if !matches!(self.nodes[f].op_type.as_str(), "Flatten" | "Reshape") {
            return self.fail(f, "expected Flatten after the last batch norm");
        }
        let g = self.next(self.out(f), "the flattened features")?;
        let (w, b, out) = match self.nodes[g].op_type.as_str() {
            "Gemm" => {
                let n = &self.nodes[g];
                let trans = attr_int(n, "transB").unwrap_or(0) == 1;
                let one = |k: &str| n.attribute.iter().find(|a| a.name == k).is_none_or(|a| a.f == 1.0);
                if attr_int(n, "transA").unwrap_or(0) != 0 || !one("alpha") || !one("beta") {
                    return self.fail(g, "fc must be a plain Gemm (no transA, alpha and beta 1)");
                }
                let w = self.konst(g, 1, "weight")?;
                let w = if trans { w } else { transpose(&w)? };
                (w, self.konst(g, 2, "bias")?, self.out(g))
            }
            "MatMul" => {
                let w = transpose(&self.konst(g, 1, "weight")?)?;
                let a = self.next(self.out(g), "fc's product")?;
                self.expect(a, "Add", "fc's bias")?;
                let k = if self.nodes[a].input[0] == self.out(g) { 1 } else { 0 };
                (w, self.konst(a, k, "bias")?, self.out(a))
            }
            _ => return self.fail(g, "expected the fc layer (Gemm, or MatMul and Add)"),
        };
        if w.dims().len() != 2 {
            return self.fail(g, &format!("fc's weight has shape {:?}, expected [out, in]", w.dims()));
        }
        net.tensors.push(("fc.weight".into(), w));
        net.tensors.push(("fc.bias".into(), b));
        let fb = self.next(out, "the fc layer")?;
        let feat = self.bn_params(fb)?;
        net.features_scale_is_one = feat.weight.to_f64_vec()?.iter().all(|&v| v == 1.0);
        net.bns.push(("features".into(), feat));
        let last = self.out(fb);
        if !self.outputs.contains(&last) || self.consumers.contains_key(last) {
            return self.fail(fb, "the features batch norm must be the graph's output");
        }
        Ok(())
    }
}

fn transpose(w: &Tensor) -> Result<Tensor> {
    let d = w.dims().to_vec();
    if d.len() != 2 {
        return Err(Error::Shape(format!("fc weight of shape {d:?}")));
    }
    super::export::permute(w, &d, &[1, 0])
}

impl Net {
    fn into_imported(self, origin: &str) -> Result<Imported> {
        let mut cfg = IResNetConfig::r50();
        // Stages: a block of stride 2 starts one.
        let mut stage_of = Vec::new();
        let mut stages: Vec<(usize, usize)> = Vec::new(); // (blocks, width)
        for (k, b) in self.blocks.iter().enumerate() {
            if b.stride == 2 {
                stages.push((0, b.width));
            } else if b.stride != 1 || stages.is_empty() {
                return Err(Error::Io(format!(
                    "{origin}: block {k} has stride {} where an IResNet stage has 2 then 1",
                    b.stride
                )));
            }
            let s = stages.len() - 1;
            stages[s].0 += 1;
            stage_of.push((s, stages[s].0 - 1));
        }
        if stages.len() != 4 {
            return Err(Error::Io(format!(
                "{origin}: {} stages of strided blocks, an IResNet has 4",
                stages.len()
            )));
        }
        for (s, &(n, w)) in stages.iter().enumerate() {
            cfg.layers[s] = n;
            cfg.widths[s] = w;
        }
        cfg.shortcut = if self.blocks.iter().any(|b| b.projection == Some(false)) {
            Shortcut::SubsampleWhenSameWidth
        } else {
            Shortcut::Projection
        };
        cfg.features =
            if self.features_scale_is_one { FeaturesNorm::FixedScale } else { FeaturesNorm::Affine };
        // The most common epsilon becomes the model's; others are absorbed into their variances.
        let mut counts: Vec<(f64, usize)> = Vec::new();
        for e in self.bns.iter().filter_map(|(_, b)| b.eps) {
            match counts.iter_mut().find(|(v, _)| *v == e) {
                Some(c) => c.1 += 1,
                None => counts.push((e, 1)),
            }
        }
        cfg.bn_eps = counts.iter().max_by_key(|c| c.1).map_or(1e-5, |c| c.0);
        let (a, b) = self.affine;
        let (mean, std): ([f64; 3], [f64; 3]) = if self.raw_input {
            (std::array::from_fn(|c| -b[c] / a[c]), a.map(|v| 1.0 / v))
        } else {
            (std::array::from_fn(|c| (a[c] - b[c]) * 127.5 / a[c]), a.map(|v| 127.5 / v))
        };
        cfg.input = InputConvention { order: ChannelOrder::Rgb, mean, std };
        let fc = &self.tensors.iter().find(|(n, _)| n == "fc.weight").expect("tail read").1;
        cfg.embedding_size = fc.dims()[0];
        let fc_in = fc.dims()[1];
        cfg.input_hw = match self.input_hw {
            Some(hw) => hw,
            None => {
                let side = ((fc_in / cfg.widths[3].max(1)) as f64).sqrt().round() as usize;
                (side * 16, side * 16)
            }
        };
        cfg.validate().map_err(|e| Error::Io(format!("{origin}: {e}")))?;
        let rename = |n: &str| -> String {
            match n.strip_prefix("block").and_then(|r| r.split_once('.')) {
                Some((k, rest)) => {
                    let (s, b) = stage_of[k.parse::<usize>().expect("our own name")];
                    format!("layer{}.{b}.{rest}", s + 1)
                }
                None => n.to_string(),
            }
        };
        let mut tensors = Vec::new();
        for (n, t) in self.tensors {
            tensors.push((rename(&n), n.clone(), t));
        }
        let mut folded = 0;
        for (n, bn) in self.bns {
            let eps = bn.eps.unwrap_or_else(|| {
                folded += 1;
                cfg.bn_eps
            });
            // (x - m) / sqrt(v + eps) with the model's eps: v + eps - eps_model; folded: 1 - eps_model.
            let var: Vec<f32> = if bn.eps.is_none() {
                vec![(1.0 - cfg.bn_eps) as f32; bn.var.numel()]
            } else {
                bn.var.to_vec::<f32>()?.iter().map(|&v| (v as f64 + eps - cfg.bn_eps) as f32).collect()
            };
            let c = var.len();
            let p = rename(&n);
            for (f, t) in [("weight", bn.weight), ("bias", bn.bias), ("running_mean", bn.mean)] {
                tensors.push((format!("{p}.{f}"), format!("{n}.{f}"), t));
            }
            tensors.push((
                format!("{p}.running_var"),
                format!("{n}.running_var"),
                Tensor::from_vec(var, [c])?,
            ));
        }
        let mapped =
            Mapped { layout: Layout::Insightface, prefix: String::new(), tensors, ignored: Vec::new() };
        let mut notes = Vec::new();
        if folded > 0 {
            notes.push(format!(
                "{folded} batch norms were folded into convolutions in this graph: imported as convolutions plus a bias \
                 (exact for eval and embed; fine-tuning re-learns their statistics)"
            ));
        }
        let params = build_store(&cfg, &mapped, origin, &mut notes)?;
        Ok(Imported { config: cfg, params, source: "ONNX graph".into(), notes })
    }
}
