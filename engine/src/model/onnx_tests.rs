//! ONNX export read back by our importer (every variant, with and without the normalization inside),
//! graphs with batch norms folded into their convolutions as PyTorch's exporter writes them, and
//! graphs of other architectures refused by node. ONNX Runtime and insightface's package run our
//! exports in `tests/onnx_export.rs` and `bin/tests/import_export_cli.rs`.

use super::onnx_export::{onnx_model, OnnxOptions};
use super::onnx_import::import_onnx;
use super::testing::{random_images, random_weights};
use super::{FeaturesNorm, IResNet, IResNetConfig, InputConvention, ParamStore, Shortcut};
use crate::io::onnx::{self, ModelProto, TensorProto};
use crate::tensor::Tensor;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnx-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn embed(cfg: &IResNetConfig, store: &ParamStore, x: &Tensor) -> Vec<f64> {
    let model = IResNet::new(cfg.clone()).unwrap();
    crate::embed::embed_with(&model, &mut store.clone(), x).unwrap().to_f64_vec().unwrap()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

fn variants() -> Vec<(&'static str, IResNetConfig)> {
    let base = IResNetConfig {
        layers: [2, 1, 2, 1],
        widths: [8, 16, 16, 24],
        embedding_size: 20,
        ..IResNetConfig::small()
    };
    vec![
        ("insightface 32x48", IResNetConfig { input_hw: (32, 48), ..base.clone() }),
        (
            "adaface",
            IResNetConfig {
                input_hw: (32, 32),
                shortcut: Shortcut::SubsampleWhenSameWidth,
                features: FeaturesNorm::NoAffine,
                input: InputConvention::adaface(),
                ..base.clone()
            },
        ),
        (
            "magface",
            IResNetConfig {
                input_hw: (48, 32),
                bn_eps: 2e-5,
                features: FeaturesNorm::Affine,
                input: InputConvention::magface(),
                ..base
            },
        ),
    ]
}

#[test]
fn exports_read_back_to_the_same_network_and_embeddings() {
    for (what, cfg) in variants() {
        let store = random_weights(&cfg, 1).unwrap();
        let x = random_images(&cfg, 2, 2).unwrap();
        let ours = embed(&cfg, &store, &x);
        for fold in [false, true] {
            let p = tmp(&format!("{}-{fold}.onnx", what.replace(' ', "_")));
            onnx::write(&p, &onnx_model(&cfg, &store, &OnnxOptions { fold_normalization: fold }).unwrap())
                .unwrap();
            let im = import_onnx(&p).unwrap();
            let c = &im.config;
            assert_eq!(
                (c.layers, c.widths, c.input_hw, c.embedding_size),
                (cfg.layers, cfg.widths, cfg.input_hw, cfg.embedding_size),
                "{what}"
            );
            assert_eq!((c.shortcut, c.bn_eps), (cfg.shortcut, cfg.bn_eps), "{what}");
            let back = embed(c, &im.params, &x);
            let e = rel(&back, &ours);
            assert!(e < 1e-5, "{what} fold {fold}: relative error {e}");
        }
    }
}

/// PyTorch's exporter in evaluation mode: each Conv followed by a BatchNormalization becomes one Conv
/// with bias W * g / sqrt(v + eps), b' = beta - g * m / sqrt(v + eps).
fn fold_batch_norms(m: &mut ModelProto) {
    let g = m.graph.as_mut().unwrap();
    let find = |inits: &[TensorProto], n: &str| {
        onnx::to_tensor(inits.iter().find(|t| t.name == n).unwrap(), n).unwrap().to_vec::<f32>().unwrap()
    };
    let mut k = 0;
    while k < g.node.len() {
        let conv_out = g.node[k].output[0].clone();
        let readers: Vec<usize> =
            (0..g.node.len()).filter(|&j| g.node[j].input.contains(&conv_out)).collect();
        if g.node[k].op_type != "Conv"
            || readers.len() != 1
            || g.node[readers[0]].op_type != "BatchNormalization"
        {
            k += 1;
            continue;
        }
        let bn = g.node.remove(readers[0]);
        let eps = bn.attribute[0].f as f64;
        let [gam, beta, mean, var] = [1, 2, 3, 4].map(|i| find(&g.initializer, &bn.input[i]));
        let wname = g.node[k].input[1].clone();
        let w = find(&g.initializer, &wname);
        let per = w.len() / gam.len();
        let s: Vec<f64> = (0..gam.len()).map(|o| gam[o] as f64 / (var[o] as f64 + eps).sqrt()).collect();
        let w2: Vec<f32> = w.iter().enumerate().map(|(i, &v)| (v as f64 * s[i / per]) as f32).collect();
        let b2: Vec<f32> = (0..gam.len()).map(|o| (beta[o] as f64 - s[o] * mean[o] as f64) as f32).collect();
        let dims: Vec<usize> = g
            .initializer
            .iter()
            .find(|t| t.name == wname)
            .unwrap()
            .dims
            .iter()
            .map(|&d| d as usize)
            .collect();
        let fw = format!("{wname}.folded");
        let fb = format!("{wname}.folded_bias");
        g.initializer.push(onnx::tensor_proto(&fw, &Tensor::from_vec(w2, dims).unwrap()).unwrap());
        g.initializer
            .push(onnx::tensor_proto(&fb, &Tensor::from_vec(b2.clone(), [b2.len()]).unwrap()).unwrap());
        let node = &mut g.node[k];
        node.input = vec![node.input[0].clone(), fw, fb];
        node.output = bn.output.clone();
        k += 1;
    }
}

#[test]
fn folded_batch_norms_import_as_convolutions_with_bias() {
    let (_, cfg) = variants().remove(0);
    let store = random_weights(&cfg, 3).unwrap();
    let x = random_images(&cfg, 2, 4).unwrap();
    let mut m = onnx_model(&cfg, &store, &OnnxOptions::default()).unwrap();
    let before = m.graph.as_ref().unwrap().node.len();
    fold_batch_norms(&mut m);
    // Stem, two per block, projections: 1 + 2 * 6 + 4 batch norms folded.
    assert_eq!(before - m.graph.as_ref().unwrap().node.len(), 17);
    let p = tmp("folded.onnx");
    onnx::write(&p, &m).unwrap();
    let im = import_onnx(&p).unwrap();
    assert!(im.notes.iter().any(|n| n.contains("17 batch norms were folded")), "{:?}", im.notes);
    let e = rel(&embed(&im.config, &im.params, &x), &embed(&cfg, &store, &x));
    assert!(e < 1e-5, "relative error {e}");
}

#[test]
fn graphs_of_other_architectures_are_refused_by_node() {
    let (_, cfg) = variants().remove(0);
    let store = random_weights(&cfg, 3).unwrap();
    let good = onnx_model(&cfg, &store, &OnnxOptions::default()).unwrap();
    let check = |edit: &dyn Fn(&mut ModelProto), want: &[&str]| {
        let mut m = good.clone();
        edit(&mut m);
        let p = tmp("bad.onnx");
        onnx::write(&p, &m).unwrap();
        let e = import_onnx(&p).err().expect("refused").to_string();
        for w in want {
            assert!(e.contains(w), "'{w}' not in: {e}");
        }
    };
    let node = |m: &mut ModelProto, name: &str| -> usize {
        m.graph.as_ref().unwrap().node.iter().position(|n| n.name == name).unwrap()
    };
    // ReLU where IResNet has PReLU (a ResNet-style block).
    check(
        &|m| {
            let i = node(m, "layer2.0.prelu");
            m.graph.as_mut().unwrap().node[i].op_type = "Relu".into();
        },
        &["bad.onnx", "node 'layer2.0.prelu' (Relu)", "expected PRelu"],
    );
    // A depthwise convolution (MobileFaceNet-style).
    check(
        &|m| {
            let i = node(m, "layer1.0.conv1");
            m.graph.as_mut().unwrap().node[i].attribute.push(onnx::AttributeProto {
                name: "group".into(),
                r#type: onnx::attr_type::INT,
                i: 8,
                ..Default::default()
            });
        },
        &["node 'layer1.0.conv1' (Conv)", "one group"],
    );
    // Global pooling instead of flattening the final map.
    check(
        &|m| {
            let i = node(m, "flatten");
            m.graph.as_mut().unwrap().node[i].op_type = "GlobalAveragePool".into();
        },
        &["node 'flatten' (GlobalAveragePool)", "expected Flatten"],
    );
    // A block without its batch norm in front: a ResNet's, not an IResNet's.
    check(
        &|m| {
            let i = node(m, "layer3.1.bn1");
            m.graph.as_mut().unwrap().node[i].op_type = "Identity".into();
        },
        &["layer3.1"],
    );
    let p = tmp("garbage.onnx");
    std::fs::write(&p, b"\x08\x07\x12\xff\xff\xff").unwrap();
    let e = import_onnx(&p).err().unwrap().to_string();
    assert!(e.contains("garbage.onnx") && e.contains("not a readable ONNX model"), "{e}");
}

#[test]
fn mutated_onnx_files_give_errors_not_panics() {
    use prost::Message;
    let cfg = IResNetConfig {
        layers: [1, 1, 1, 1],
        widths: [2, 2, 4, 4],
        embedding_size: 4,
        input_hw: (16, 16),
        ..IResNetConfig::small()
    };
    let store = random_weights(&cfg, 5).unwrap();
    let valid = onnx_model(&cfg, &store, &OnnxOptions::default()).unwrap().encode_to_vec();
    let p = tmp("mutated.onnx");
    let mut rng = crate::rng::Rng::new(3);
    let mut ok = 0;
    for _ in 0..1500 {
        let mut b = valid.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next_u64() as u8,
                _ => b.truncate(at.max(1)),
            }
        }
        std::fs::write(&p, &b).unwrap();
        ok += import_onnx(&p).is_ok() as u32;
    }
    assert!(ok < 1500, "some mutations must be refused");
}
