//! Our ONNX export run by ONNX Runtime (tests/parity/_onnx_run.py, after onnx's checker has validated
//! each graph): every backbone depth (IR-18 at insightface's widths; deeper ones at reduced widths and
//! input sizes, so that CI stays within seconds), square and non-square inputs, the demo's small
//! backbone, and the AdaFace and MagFace variants with their input conventions, each with and without
//! the normalization folded into the graph. ONNX Runtime's embeddings must match ours within 1e-4
//! (norm-wise relative). Fails (never skips) without FACETRAIN_PYTHON (tests/run.sh sets it).

use engine::io::safetensors::{self, SafeTensors};
use engine::model::iresnet::nhwc_to_nchw;
use engine::model::onnx_export::{export_onnx, OnnxOptions};
use engine::model::testing::{random_images, random_weights};
use engine::model::{FeaturesNorm, IResNet, IResNetConfig, InputConvention, Shortcut};
use engine::Tensor;
use std::path::PathBuf;

fn cases() -> Vec<(&'static str, IResNetConfig)> {
    let at = |name: &str, widths: [usize; 4], hw: (usize, usize)| IResNetConfig {
        widths,
        input_hw: hw,
        ..IResNetConfig::by_name(name).unwrap()
    };
    let ada = IResNetConfig {
        shortcut: Shortcut::SubsampleWhenSameWidth,
        features: FeaturesNorm::NoAffine,
        input: InputConvention::adaface(),
        ..at("r18", [16, 32, 64, 128], (112, 112))
    };
    let mag = IResNetConfig {
        bn_eps: 2e-5,
        features: FeaturesNorm::Affine,
        input: InputConvention::magface(),
        ..at("r18", [16, 32, 64, 128], (112, 112))
    };
    vec![
        ("r18_112x112", at("r18", [64, 128, 256, 512], (112, 112))),
        ("r34_112x96", at("r34", [32, 64, 128, 256], (112, 96))),
        ("r50_112x112", at("r50", [16, 32, 64, 128], (112, 112))),
        ("r100_64x64", at("r100", [8, 16, 32, 64], (64, 64))),
        ("r200_32x48", at("r200", [8, 16, 32, 64], (32, 48))),
        ("small_32x32", IResNetConfig { input_hw: (32, 32), ..IResNetConfig::small() }),
        ("adaface_r18", ada),
        ("magface_r18", mag),
    ]
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn onnx_runtime_reproduces_our_embeddings_for_every_depth_size_and_convention() {
    let python = std::env::var("FACETRAIN_PYTHON").unwrap_or_else(|_| {
        panic!("FACETRAIN_PYTHON is not set: point it at a Python with onnx and onnxruntime (tests/run.sh sets it)")
    });
    let dir = std::env::temp_dir().join(format!("onnx-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ours = Vec::new();
    for (seed, (name, cfg)) in cases().into_iter().enumerate() {
        let store = random_weights(&cfg, seed as u64).unwrap();
        let feed = random_images(&cfg, 2, 100 + seed as u64).unwrap();
        let model = IResNet::new(cfg.clone()).unwrap();
        let emb = engine::embed::embed_with(&model, &mut store.clone(), &feed).unwrap().to_f64_vec().unwrap();
        // The same images as 0..255 pixels (the feed is (x - 127.5) / 127.5 of whole values).
        let raw: Vec<f32> =
            feed.to_vec::<f32>().unwrap().iter().map(|v| (v * 127.5 + 127.5).round()).collect();
        let raw = Tensor::from_vec(raw, feed.dims().to_vec()).unwrap();
        let mut inp = SafeTensors::default();
        inp.push("feed", nhwc_to_nchw(&feed).unwrap());
        inp.push("raw", nhwc_to_nchw(&raw).unwrap());
        for fold in [false, true] {
            let stem = format!("{name}{}", if fold { "_folded" } else { "" });
            export_onnx(
                &dir.join(format!("{stem}.onnx")),
                &cfg,
                &store,
                &OnnxOptions { fold_normalization: fold },
            )
            .unwrap();
            safetensors::write(&dir.join(format!("{stem}.input.safetensors")), &inp).unwrap();
            ours.push((stem, emb.clone()));
        }
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity/_onnx_run.py");
    let out = std::process::Command::new(&python).arg(&script).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    for (stem, emb) in ours {
        let ort = safetensors::read(&dir.join(format!("{stem}.ort.safetensors"))).unwrap();
        let theirs = ort.get("embedding").unwrap().to_f64_vec().unwrap();
        let e = rel(&theirs, &emb);
        eprintln!("{stem}: ONNX Runtime against ours, relative error {e:.2e}");
        assert!(e <= 1e-4, "{stem}: relative error {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
