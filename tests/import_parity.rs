//! Released-model layouts written by PyTorch (tests/parity/import_ref.py: insightface iresnet `.pth` in
//! the zip and legacy formats, in f16, and as a torch2onnx-style ONNX with folded batch norms; AdaFace
//! net.py inside Lightning `.ckpt` files; MagFace checkpoints of both its trainers) imported by us: the
//! network each file describes, and embeddings of the same PNG images, fed through our own decoding and
//! normalization, within 1e-4 (norm-wise relative) of PyTorch's with each project's preprocessing.
//! Damaged and foreign files are errors naming the file and the tensor or node. Fails (never skips)
//! when the fixtures are missing.

use engine::embed::{embed_pixels, load_normalized};
use engine::io::safetensors;
use engine::model::import::{import_model, ImportOptions, Imported};
use engine::model::{ChannelOrder, FeaturesNorm, IResNet, Shortcut};
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    let root = std::env::var_os("FACETRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let d = root.join("import");
    assert!(
        d.join("reference.safetensors").exists(),
        "fixture missing: {}; generate it with: .venv/bin/python tests/parity/import_ref.py {}",
        d.join("reference.safetensors").display(),
        root.display()
    );
    d
}

fn embeddings(im: &Imported, images: &Path) -> Vec<f64> {
    let mut px = Vec::new();
    for i in 0..3 {
        px.extend(load_normalized(&images.join(format!("face{i}.png")), im.config.input_hw).unwrap());
    }
    let model = IResNet::new(im.config.clone()).unwrap();
    let (e, _) = embed_pixels(&model, &mut im.params.clone(), &px).unwrap();
    e.iter().map(|&v| v as f64).collect()
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn every_layout_imports_with_pytorchs_embeddings() {
    let d = dir();
    let reference = safetensors::read(&d.join("reference.safetensors")).unwrap();
    // (file, reference, layout named in the source, order, shortcut, features, eps, layers, widths)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        ChannelOrder,
        Shortcut,
        FeaturesNorm,
        f64,
        [usize; 4],
        [usize; 4],
    );
    let (w16, w8) = ([16, 32, 64, 128], [8, 16, 32, 64]);
    let (rgb, bgr) = (ChannelOrder::Rgb, ChannelOrder::Bgr);
    let (proj, sub) = (Shortcut::Projection, Shortcut::SubsampleWhenSameWidth);
    let cases: [Case; 10] = [
        (
            "insightface_r18.pth",
            "insightface_r18",
            "insightface iresnet",
            rgb,
            proj,
            FeaturesNorm::FixedScale,
            1e-5,
            [2, 2, 2, 2],
            w16,
        ),
        (
            "insightface_r18_legacy.pth",
            "insightface_r18",
            "insightface iresnet",
            rgb,
            proj,
            FeaturesNorm::FixedScale,
            1e-5,
            [2, 2, 2, 2],
            w16,
        ),
        (
            "insightface_r18.onnx",
            "insightface_r18",
            "ONNX",
            rgb,
            proj,
            FeaturesNorm::FixedScale,
            1e-5,
            [2, 2, 2, 2],
            w16,
        ),
        (
            "insightface_r34_half.pth",
            "insightface_r34_half",
            "insightface iresnet",
            rgb,
            proj,
            FeaturesNorm::FixedScale,
            1e-5,
            [3, 4, 6, 3],
            w8,
        ),
        (
            "insightface_r50.pth",
            "insightface_r50",
            "insightface iresnet",
            rgb,
            proj,
            FeaturesNorm::FixedScale,
            1e-5,
            [3, 4, 14, 3],
            w8,
        ),
        (
            "adaface_ir18.ckpt",
            "adaface_ir18",
            "AdaFace net.py layout, prefix 'model.' (under 'state_dict')",
            bgr,
            sub,
            FeaturesNorm::NoAffine,
            1e-5,
            [2, 2, 2, 2],
            w16,
        ),
        (
            "adaface_ir50.ckpt",
            "adaface_ir50",
            "AdaFace net.py",
            bgr,
            sub,
            FeaturesNorm::NoAffine,
            1e-5,
            [3, 4, 14, 3],
            w8,
        ),
        (
            "adaface_ir101.ckpt",
            "adaface_ir101",
            "AdaFace net.py",
            bgr,
            sub,
            FeaturesNorm::NoAffine,
            1e-5,
            [3, 13, 30, 3],
            [4, 8, 8, 16],
        ),
        (
            "magface_r18.pth",
            "magface_r18",
            "MagFace iresnet layout, prefix 'features.module.'",
            bgr,
            proj,
            FeaturesNorm::Affine,
            2e-5,
            [2, 2, 2, 2],
            w16,
        ),
        (
            "magface_r34_dp.pth",
            "magface_r34_dp",
            "MagFace iresnet layout, prefix 'module.features.'",
            bgr,
            proj,
            FeaturesNorm::Affine,
            2e-5,
            [3, 4, 6, 3],
            w8,
        ),
    ];
    for (file, name, source, order, shortcut, features, eps, layers, widths) in cases {
        let im =
            import_model(&d.join(file), &ImportOptions::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let c = &im.config;
        assert!(im.source.contains(source), "{file}: source '{}'", im.source);
        assert_eq!(
            (c.layers, c.widths, c.embedding_size, c.input_hw),
            (layers, widths, 512, (112, 112)),
            "{file}"
        );
        if !file.ends_with(".onnx") {
            // A graph's own input contract is RGB by insightface's convention; its variant is what it computes.
            assert_eq!(
                (c.input.order, c.shortcut, c.features, c.bn_eps),
                (order, shortcut, features, eps),
                "{file}"
            );
        }
        let theirs = reference.require(name, &d).unwrap().to_f64_vec().unwrap();
        let e = rel(&embeddings(&im, &d.join("images")), &theirs);
        eprintln!(
            "{file}: {} ({}), relative error {e:.2e}; notes {:?}",
            im.source,
            c.input.describe(),
            im.notes
        );
        assert!(e <= 1e-4, "{file}: relative error {e} against PyTorch");
    }
}

#[test]
fn magface_needs_its_own_epsilon_and_convention() {
    // The fixture's features batch norm has variances near MagFace's eps (2e-5), so importing with
    // insightface's eps or input convention would miss: the checks above do not pass by luck.
    let d = dir();
    let reference = safetensors::read(&d.join("reference.safetensors")).unwrap();
    let theirs = reference.require("magface_r18", &d).unwrap().to_f64_vec().unwrap();
    let im = import_model(&d.join("magface_r18.pth"), &ImportOptions::default()).unwrap();
    let mut wrong_eps = Imported {
        config: im.config.clone(),
        params: im.params.clone(),
        source: String::new(),
        notes: vec![],
    };
    wrong_eps.config.bn_eps = 1e-5;
    assert!(rel(&embeddings(&wrong_eps, &d.join("images")), &theirs) > 1e-3);
    let opts = ImportOptions {
        convention: Some(engine::model::InputConvention::insightface()),
        ..Default::default()
    };
    let rgb = import_model(&d.join("magface_r18.pth"), &opts).unwrap();
    assert!(rel(&embeddings(&rgb, &d.join("images")), &theirs) > 1e-2);
}

fn err(path: &Path) -> String {
    import_model(path, &ImportOptions::default()).err().expect("refused").to_string()
}

#[test]
fn damaged_and_foreign_files_are_clear_errors() {
    let d = dir();
    let tmp = std::env::temp_dir().join(format!("import-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // A truncated zip (the central directory is gone).
    let zip = std::fs::read(d.join("insightface_r18.pth")).unwrap();
    let cut = tmp.join("cut.pth");
    std::fs::write(&cut, &zip[..zip.len() / 2]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut.pth") && e.contains("not a readable zip archive"), "{e}");
    // A truncated legacy file: the last storage ends early.
    let legacy = std::fs::read(d.join("insightface_r18_legacy.pth")).unwrap();
    let cut = tmp.join("cut_legacy.pth");
    std::fs::write(&cut, &legacy[..legacy.len() - 100]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut_legacy.pth") && e.contains("the file ends inside it"), "{e}");
    // A pickle with an opcode outside the subset: INST where the object pickle names OrderedDict.
    let head = b"\x80\x02ccollections\nOrderedDict";
    let at = legacy.windows(head.len()).position(|w| w == head).unwrap();
    let mut inst = legacy.clone();
    inst[at + 2] = b'i';
    let p = tmp.join("inst.pth");
    std::fs::write(&p, &inst).unwrap();
    let e = err(&p);
    assert!(
        e.contains("inst.pth") && e.contains(&format!("pickle byte {}", at + 2)) && e.contains("0x69"),
        "{e}"
    );
    // A tensor whose shape does not fit the network the other tensors describe.
    let e = err(&d.join("bad_shape.pth"));
    assert!(
        e.contains("bad_shape.pth")
            && e.contains("'layer2.0.conv1.weight': shape [32, 16, 1, 3], expected [32, 16, 3, 3]"),
        "{e}"
    );
    // An ONNX graph of another architecture.
    let e = err(&d.join("other_arch.onnx"));
    assert!(e.contains("other_arch.onnx: node '") && e.contains("not an IResNet graph"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
