//! `eval --ijb` and `eval --tinyface` end to end: on the reference fixtures' features
//! (tests/parity/ijb_ref.py, tinyface_ref.py) the report must hold the reference numbers; with a model,
//! images are aligned and embedded, the features are written, and a rerun on them gives the same
//! report; bad input is a one-sentence error naming the file and line, never a panic.

mod common;

use common::{exe, run_ok, scratch};
use datasets::image::align::{Similarity, ARCFACE_112_EVAL_IJBC};
use datasets::image::{encode_jpeg, Image};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    std::env::var_os("FACETRAIN_FIXTURES").map(PathBuf::from).unwrap_or_else(|| root.join("tests/fixtures"))
}

fn fixture(sub: &str) -> PathBuf {
    let p = fixtures().join(sub);
    assert!(
        p.exists(),
        "missing fixture {} (tests/run.sh writes it with tests/parity/ijb_ref.py and tinyface_ref.py)",
        p.display()
    );
    p
}

fn eval(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(exe());
    c.arg("eval").args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "{what}: {got} vs reference {want}");
}

#[test]
fn ijb_report_holds_the_reference_numbers() {
    let root = scratch("ijb-features");
    for case in ["ijbc_default", "ijbc_n0", "ijbb_d0", "ijbc_small"] {
        let dir = fixture("ijb").join(case);
        let exp: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let out = root.join(case);
        let mut flags = vec!["--target", exp["target"].as_str().unwrap()];
        if !exp["keep_norm"].as_bool().unwrap() {
            flags.push("--no-norm");
        }
        if !exp["detector_score"].as_bool().unwrap() {
            flags.push("--no-detector-score");
        }
        let o = eval(
            &flags,
            &[("--ijb", &dir), ("--features", &dir.join("features.safetensors")), ("--output", &out)],
        );
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        let r = &report(&out)["ijb"];
        for (far, e) in exp["tar_at_far"].as_object().unwrap() {
            close(
                &format!("{case} TAR@{far}"),
                r["tar_at_far"][far].as_f64().unwrap(),
                e["tar"].as_f64().unwrap(),
            );
        }
        close(&format!("{case} AUC"), r["auc"].as_f64().unwrap(), exp["auc"].as_f64().unwrap());
        for k in ["templates", "pairs", "images"] {
            assert_eq!(r[k], exp[k], "{case}: {k}");
        }
        // The printed table: eval_ijbc.py's '%.2f' of the percentage.
        let line = format!("{:.2}", exp["tar_at_far"]["1e-04"]["tar"].as_f64().unwrap() * 100.0);
        assert!(String::from_utf8_lossy(&o.stdout).contains(&line), "{case}: table lacks {line}");
        if let Some(id) = exp.get("identification") {
            let m = &r["identification"]["mean"];
            for k in 0..3 {
                close(
                    &format!("{case} mean CMC {k}"),
                    m["cmc"][k].as_f64().unwrap(),
                    id["mean"]["cmc"][k].as_f64().unwrap(),
                );
            }
            for j in 0..2 {
                close(
                    &format!("{case} mean TPIR {j}"),
                    m["tpir"][j].as_f64().unwrap(),
                    id["mean"]["tpir"][j].as_f64().unwrap(),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Copies a fixture case's meta/ into a new folder to break it.
fn copy_case(case: &str, to: &Path) -> PathBuf {
    let src = fixture("ijb").join(case).join("meta");
    std::fs::create_dir_all(to.join("meta")).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join("meta").join(p.file_name().unwrap())).unwrap();
    }
    to.to_path_buf()
}

fn fails_with(o: &Output, parts: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "expected a clean failure, got {:?}: {err}", o.status);
    assert!(!err.contains("panicked"), "{err}");
    for p in parts {
        assert!(err.contains(p), "error lacks '{p}': {err}");
    }
}

#[test]
fn ijb_bad_input_names_the_file_and_line() {
    let root = scratch("ijb-bad");
    let feats = fixture("ijb").join("ijbc_small").join("features.safetensors");
    let d = copy_case("ijbc_small", &root.join("missing"));
    std::fs::remove_file(d.join("meta/ijbc_template_pair_label.txt")).unwrap();
    fails_with(
        &eval(&[], &[("--ijb", &d), ("--features", &feats)]),
        &["ijbc_template_pair_label.txt: file not found"],
    );

    let d = copy_case("ijbc_small", &root.join("landmarks"));
    let p = d.join("meta/ijbc_name_5pts_score.txt");
    let text = std::fs::read_to_string(&p).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let f: Vec<&str> = lines[2].split(' ').collect();
    lines[2] = [&f[..5], &f[6..]].concat().join(" ");
    std::fs::write(&p, lines.join("\n")).unwrap();
    fails_with(
        &eval(&[], &[("--ijb", &d), ("--features", &feats)]),
        &["ijbc_name_5pts_score.txt:3", "found 11 fields"],
    );

    let d = copy_case("ijbc_small", &root.join("rows"));
    let p = d.join("meta/ijbc_face_tid_mid.txt");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    fails_with(
        &eval(&[], &[("--ijb", &d), ("--features", &feats)]),
        &["ijbc_face_tid_mid.txt lists 206 images", "207"],
    );

    let d = copy_case("ijbc_small", &root.join("features"));
    let other = fixture("ijb").join("ijbc_default").join("features.safetensors");
    fails_with(
        &eval(&[], &[("--ijb", &d), ("--features", &other)]),
        &["features.safetensors", "lists 207 images"],
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// A 112x112-input model: one step of the demo trainer on 112 px images.
fn model_112(root: &Path) -> PathBuf {
    let mut c = Command::new(exe());
    c.args(["train", "--device", "cpu", "--threads", "2", "--seed", "7", "--synth-identities", "4"])
        .args(["--synth-images", "4", "--synth-size", "112", "--synth-heldout", "2", "--synth-pairs", "10"])
        .args(["--batch-size", "16", "--epochs", "1", "--eval-every", "1000"])
        .arg("--cache")
        .arg(root.join("cache"))
        .arg("--output")
        .arg(root.join("run"));
    run_ok(c);
    root.join("run/checkpoint.safetensors")
}

/// A small IJB folder with real images: 4 subjects x 2 templates x 3 images (2 media), faces placed by a
/// known similarity so that the 5 landmarks are exact, every template pair listed.
fn small_ijb(dir: &Path) {
    std::fs::create_dir_all(dir.join("meta")).unwrap();
    std::fs::create_dir_all(dir.join("loose_crop")).unwrap();
    let (mut tid, mut pts, mut pairs) = (String::new(), String::new(), String::new());
    let mut n = 0;
    for t in 0..8usize {
        for k in 0..3usize {
            let subject = t / 2;
            let (h, w) = (150, 130);
            let mut img = Image::new(h, w);
            for (i, v) in img.data.iter_mut().enumerate() {
                let (y, x, c) = (i / (3 * w), (i / 3) % w, i % 3);
                *v = ((x * (subject + 1) + y * (c + 2) + 17 * k) % 256) as u8;
            }
            std::fs::write(dir.join(format!("loose_crop/img{n}.jpg")), encode_jpeg(&img, 90).unwrap())
                .unwrap();
            let a = 1.0 + 0.1 * k as f64;
            let m = Similarity { m: [[a, 0.05, -10.0], [-0.05, a, -20.0]] }.inverse();
            let lmk: Vec<String> = ARCFACE_112_EVAL_IJBC
                .iter()
                .flat_map(|p| m.apply([p[0] as f64, p[1] as f64]))
                .map(|v| format!("{v:.3}"))
                .collect();
            tid += &format!("img{n}.jpg {} {}\n", 100 + 7 * t, 1000 + 10 * t + k / 2);
            pts += &format!("img{n}.jpg {} 0.9{k}\n", lmk.join(" "));
            n += 1;
        }
    }
    for a in 0..8usize {
        for b in a + 1..8 {
            pairs += &format!("{} {} {}\n", 100 + 7 * a, 100 + 7 * b, u8::from(a / 2 == b / 2));
        }
    }
    std::fs::write(dir.join("meta/ijbc_face_tid_mid.txt"), tid).unwrap();
    std::fs::write(dir.join("meta/ijbc_name_5pts_score.txt"), pts).unwrap();
    std::fs::write(dir.join("meta/ijbc_template_pair_label.txt"), pairs).unwrap();
}

#[test]
fn ijb_and_tinyface_with_a_model_write_features_that_reproduce_the_report() {
    let root = scratch("ijb-model");
    let ckpt = model_112(&root);
    let ijb = root.join("ijb");
    small_ijb(&ijb);
    let (o1, o2) = (root.join("o1"), root.join("o2"));
    let o = eval(&[], &[("--checkpoint", &ckpt), ("--ijb", &ijb), ("--output", &o1)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let feats = o1.join("ijbc_features.safetensors");
    assert!(feats.is_file(), "no features written");
    let o = eval(&[], &[("--ijb", &ijb), ("--features", &feats), ("--output", &o2)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (report(&o1)["ijb"].clone(), report(&o2)["ijb"].clone());
    assert_eq!(a["tar_at_far"], b["tar_at_far"]);
    assert_eq!(a["auc"], b["auc"]);
    assert_eq!(a["pairs"], 28);
    for (_, v) in a["tar_at_far"].as_object().unwrap() {
        assert!((0.0..=1.0).contains(&v.as_f64().unwrap()));
    }

    // TinyFace on the reference folder's images with the same model, then on the features it wrote.
    let tf = fixture("tinyface").join("root");
    let (t1, t2) = (root.join("t1"), root.join("t2"));
    let o = eval(&[], &[("--checkpoint", &ckpt), ("--tinyface", &tf), ("--output", &t1)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = std::fs::read_to_string(t1.join("tinyface_images.txt")).unwrap();
    assert_eq!(rows, std::fs::read_to_string(fixture("tinyface").join("rows.txt")).unwrap());
    let o = eval(
        &[],
        &[("--tinyface", &tf), ("--features", &t1.join("tinyface_features.safetensors")), ("--output", &t2)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report(&t1)["tinyface"], report(&t2)["tinyface"]);

    // The summary across the two runs' reports.
    let s = root.join("s");
    let o = eval(
        &[],
        &[
            ("--summarize", &o1.join("report.json")),
            ("--summarize", &t1.join("report.json")),
            ("--output", &s),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        report(&s)["summary"]["mixed_low_quality_avg"]["sets"],
        3,
        "IJB-C, TinyFace rank-1 and rank-5"
    );

    // Image lists with landmarks: `embed` aligns before embedding, `data pack --landmarks` packs crops.
    let pts = std::fs::read_to_string(ijb.join("meta/ijbc_name_5pts_score.txt")).unwrap();
    let list: String = pts
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("loose_crop/{} {} {}\n", f[0], i / 6, f[1..11].join(" "))
        })
        .collect();
    std::fs::write(ijb.join("list.txt"), &list).unwrap();
    let emb = root.join("emb.safetensors");
    let mut c = Command::new(exe());
    c.args(["embed", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data")
        .arg(ijb.join("list.txt"))
        .arg("--output")
        .arg(&emb);
    run_ok(c);
    let bytes = std::fs::read(&emb).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["embeddings"]["shape"], serde_json::json!([24, 128]));
    let mut c = Command::new(exe());
    c.args(["data", "pack", "--landmarks"]).arg(ijb.join("list.txt")).arg("-o").arg(root.join("packed"));
    run_ok(c);
    let o = Command::new(exe()).args(["data", "inspect"]).arg(root.join("packed")).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("images: 24") && text.contains("image size: 112x112"), "{text}");
    let bad: String = list
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 1 { format!("{} 1 2\n", l) } else { format!("{l}\n") })
        .collect();
    std::fs::write(ijb.join("list_bad.txt"), bad).unwrap();
    let mut c = Command::new(exe());
    c.args(["embed", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data")
        .arg(ijb.join("list_bad.txt"))
        .arg("--output")
        .arg(&emb);
    fails_with(&c.output().unwrap(), &["list_bad.txt:2", "found 13 values"]);

    // An unreadable image: the error names it and its line in the 5pts file.
    std::fs::write(ijb.join("loose_crop/img5.jpg"), b"not a jpeg").unwrap();
    let o = eval(&[], &[("--checkpoint", &ckpt), ("--ijb", &ijb)]);
    fails_with(&o, &["loose_crop/img5.jpg", "ijbc_name_5pts_score.txt:6"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn tinyface_report_holds_the_reference_numbers() {
    let dir = fixture("tinyface");
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let out = scratch("tinyface-features");
    let o = eval(
        &[],
        &[
            ("--tinyface", &dir.join("root")),
            ("--features", &dir.join("features.safetensors")),
            ("--output", &out),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = &report(&out)["tinyface"];
    for k in ["rank1", "rank5", "rank20"] {
        close(k, r[k].as_f64().unwrap(), exp[k].as_f64().unwrap());
    }
    assert_eq!(r["distractors"], exp["distractors"]);
    // A .mat list naming an image the aligned folder lacks: the error names the list and the entry.
    let broken = out.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let copy = Command::new("cp").arg("-r").arg(dir.join("root/.")).arg(&broken).status().unwrap();
    assert!(copy.success());
    let first = std::fs::read_dir(broken.join("aligned_pad_0.1_pad_high/Gallery_Match"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&first).unwrap();
    let o = eval(&[], &[("--tinyface", &broken), ("--features", &dir.join("features.safetensors"))]);
    fails_with(&o, &["gallery_match_img_ID_pairs.mat: entry", "has no aligned image"]);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn qmagface_constants_are_fitted_on_a_set_with_the_model() {
    let root = scratch("qmag-fit");
    let ckpt = model_112(&root);
    // 360 pairs of the TinyFace fixture's 112x112 gallery images, 240 of them impostors: enough for the
    // FMRs from about 4e-3 to 1e-2 of QMagFace's grid. Half the genuine pairs are an image with itself,
    // so that genuine scores spread over the impostors' and the thresholds differ between FMRs.
    let gallery = fixture("tinyface").join("root/aligned_pad_0.1_pad_high/Gallery_Match");
    let mut imgs: Vec<PathBuf> = std::fs::read_dir(&gallery).unwrap().map(|e| e.unwrap().path()).collect();
    imgs.sort();
    let list: String = (0..360)
        .map(|i| {
            let a = &imgs[i % imgs.len()];
            let b = if i % 6 == 0 { a } else { &imgs[(i * 7 + 3) % imgs.len()] };
            format!("{}\t{}\t{}\n", a.display(), b.display(), u8::from(i % 3 == 0))
        })
        .collect();
    let pairs = root.join("pairs.txt");
    std::fs::write(&pairs, list).unwrap();
    let out = root.join("o");
    let o = eval(
        &["--score", "qmagface"],
        &[("--checkpoint", &ckpt), ("--bin", &pairs), ("--fit-qmagface", &pairs), ("--output", &out)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let fit = &r["qmagface_fit"];
    assert!(fit["alpha"].as_f64().unwrap().is_finite() && fit["beta"].as_f64().unwrap().is_finite(), "{fit}");
    assert!(fit["fmrs"].as_u64().unwrap() >= 2);
    assert!(String::from_utf8_lossy(&o.stdout).contains("QMagFace fit: alpha"));
    let _ = std::fs::remove_dir_all(&root);
}
