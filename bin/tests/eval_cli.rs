//! `eval`, `embed` and `export` on a checkpoint of a tiny demo run.

mod common;

use common::{exe, run_ok, scratch, train_cmd};
use std::process::Command;

#[test]
fn eval_embed_and_export_work_on_a_trained_checkpoint() {
    let root = scratch("eval");
    let (cache, out) = (root.join("cache"), root.join("run"));
    run_ok(train_cmd(&cache, &out));
    let ckpt = out.join("checkpoint.safetensors");
    let pairs = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path().join("pairs.bin");
    for f in ["loss.svg", "lr.svg", "summary.json", "model.safetensors"] {
        assert!(out.join(f).is_file(), "training left no {f}");
    }

    let report = root.join("eval");
    // QMagFace's constants are the model's own: without them (or --fit-qmagface) it is an error.
    let mut c = Command::new(exe());
    c.args(["eval", "--score", "qmagface", "--checkpoint"]).arg(&ckpt).arg("--bin").arg(&pairs);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fit-qmagface"));
    let mut c = Command::new(exe());
    c.args(["eval", "--score", "qmagface", "--qmag-alpha", "0.077", "--qmag-beta", "0.126", "--checkpoint"])
        .arg(&ckpt)
        .arg("--bin")
        .arg(&pairs)
        .arg("--output")
        .arg(&report);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Accuracy-Flip"));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    let acc = r["pairs"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
    for f in ["pairs-roc.svg", "pairs-magnitude.svg", "pairs-erc.svg"] {
        assert!(report.join(f).is_file(), "eval wrote no {f}");
    }

    let exported = root.join("model.safetensors");
    let mut c = Command::new(exe());
    c.args(["export", "--checkpoint"]).arg(&ckpt).arg("--output").arg(&exported);
    run_ok(c);
    // The exported file evaluates to the same accuracy as the checkpoint.
    let mut c = Command::new(exe());
    c.args(["eval", "--backbone", "small", "--input", "32x32", "--init-weights"])
        .arg(&exported)
        .arg("--bin")
        .arg(&pairs);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut c = Command::new(exe());
    c.args(["eval", "--checkpoint"]).arg(&ckpt).arg("--bin").arg(&pairs);
    let o2 = c.output().unwrap();
    assert_eq!(o.stdout, o2.stdout, "exported weights evaluate differently");

    let emb = root.join("emb.safetensors");
    let mut c = Command::new(exe());
    c.args(["embed", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data")
        .arg(cache.read_dir().unwrap().next().unwrap().unwrap().path().join("train"))
        .arg("--output")
        .arg(&emb);
    run_ok(c);
    let bytes = std::fs::read(&emb).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["embeddings"]["shape"], serde_json::json!([160, 128]));
    assert_eq!(header["labels"]["shape"], serde_json::json!([160]));

    let mut c = Command::new(exe());
    c.args(["eval", "--checkpoint"]).arg(root.join("missing.safetensors")).arg("--bin").arg(&pairs);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.safetensors"));
    let _ = std::fs::remove_dir_all(&root);
}
