//! `engine-train train --precision`: fp16 on the CPU trains with a loss scale logged per step, a preset's
//! precision applies unless the flag overrides it, and an unknown precision is a clear error.

mod common;

use common::{exe, scratch, step_events, train_cmd};
use std::process::Command;

#[test]
fn fp16_logs_the_loss_scale_and_skipped_steps_and_bf16_does_not() {
    let root = scratch("precision");
    let cache = root.join("cache");
    let fp16 = root.join("fp16");
    let o = train_cmd(&cache, &fp16).args(["--precision", "fp16"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("fp16 (emulated on the CPU)"), "{err}");
    let steps = step_events(&fp16);
    assert_eq!(steps.len(), 20);
    let scale = |v: &serde_json::Value| v["loss_scale"].as_f64().unwrap();
    assert!(steps.iter().all(|v| scale(v) > 0.0 && v["skipped"].as_f64().is_some()));
    // Every skipped step halves the scale; the others leave it (2000 steps to grow).
    for w in steps.windows(2) {
        let want = if w[1]["skipped"] == 1.0 { scale(&w[0]) / 2.0 } else { scale(&w[0]) };
        assert_eq!(scale(&w[1]), want);
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fp16.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["precision"], "fp16");
    let skipped = steps.iter().filter(|v| v["skipped"] == 1.0).count() as u64;
    assert_eq!(summary["skipped_steps"].as_u64(), Some(skipped));

    let bf16 = root.join("bf16");
    let o = train_cmd(&cache, &bf16).args(["--precision", "bf16"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let steps = step_events(&bf16);
    assert!(steps.len() == 20 && steps.iter().all(|v| v.get("loss_scale").is_none()));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_presets_precision_applies_unless_the_flag_overrides_it() {
    let root = scratch("precision-preset");
    let cache = root.join("cache");
    // insightface's recipe trains in fp16; the small backbone keeps the run tiny.
    let preset = ["--preset", "ms1mv2-r50-arcface", "--backbone", "small"];
    let mut c = train_cmd(&cache, &root.join("preset"));
    let o = c.args(preset).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("| fp16 (emulated on the CPU) |"), "{err}");
    assert!(step_events(&root.join("preset")).iter().all(|v| v["loss_scale"].as_f64().is_some()));
    let mut c = train_cmd(&cache, &root.join("flag"));
    let o = c.args(preset).args(["--precision", "f32"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("| f32 |"), "{err}");
    assert!(step_events(&root.join("flag")).iter().all(|v| v.get("loss_scale").is_none()));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_unknown_precision_is_a_clear_error_and_help_explains_the_emulation() {
    let root = scratch("precision-bad");
    let o = train_cmd(&root.join("cache"), &root.join("out")).args(["--precision", "fp8"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--precision") && err.contains("fp8") && err.contains("bf16"), "{err}");
    let help = Command::new(exe()).args(["train", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("emulated") && text.contains("GradScaler"), "{text}");
    let _ = std::fs::remove_dir_all(&root);
}
