//! Issue 18's recipe tests through the command: every preset `--list-presets` names resolves and trains a
//! step at toy size (the small backbone on the tiny demo set, batch 16: IR-100 at batch 512 does not fit
//! here) and prints the recipe it resolved to; QCFace's ArcFace warm-up hands over to hypersphere
//! planning at exactly the step it should in a real run, a resumed one included.

mod common;

use common::{exe, run_ok, scratch, step_events, tiny_train_cmd, train_cmd};
use engine::train::presets;
use std::path::Path;
use std::process::Command;

/// The run's summary.json.
fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn every_preset_trains_one_step_at_toy_size_with_its_recipe() {
    let list = Command::new(exe()).args(["train", "--list-presets"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    let listed: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let names: Vec<&str> = presets::all().iter().map(|p| p.name).collect();
    assert_eq!(listed, names, "{text}");
    let root = scratch("presets");
    let cache = root.join("cache");
    for p in presets::all() {
        let out = root.join(p.name);
        // 0.1 epoch of 10 steps: one step. The preset keeps everything but the network, batch and length.
        let o = tiny_train_cmd(&cache, &out)
            .args(["--preset", p.name, "--backbone", "small", "--epochs", "0.1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{}: {err}", p.name);
        // The banner is the resolved recipe as the command reports it.
        let banner = err.lines().find(|l| l.contains(" | head ")).unwrap_or_else(|| panic!("{err}"));
        println!("{}: {banner}", p.name);
        // The paper's rate scaled linearly to the batch of 16, in the preset's precision (emulated here).
        let lr = format!("batch 16 lr {} | {}", p.scaled_lr(16), p.precision);
        assert!(banner.contains(&format!("head {} |", p.head)) && banner.contains(&lr), "{banner}\n{lr}");
        let steps = step_events(&out);
        assert_eq!(steps.len(), 1, "{}", p.name);
        let loss = steps[0]["loss"].as_f64().unwrap_or(f64::NAN);
        assert!(loss.is_finite() && loss > 0.0, "{}: loss {loss}", p.name);
        let s = summary(&out);
        assert_eq!((s["head"].as_str(), s["steps"].as_u64()), (Some(p.head), Some(1)), "{}", p.name);
        assert_eq!(s["precision"].as_str(), Some(p.precision.name()), "{}", p.name);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The `planning` flag of each step in order: 0 in QCFace's warm-up, 1 in its planning phase.
fn phases(out: &Path) -> Vec<u64> {
    let flag = |v: &serde_json::Value| v["planning"].as_f64().expect("a QCFace step logs its phase") as u64;
    step_events(out).iter().map(flag).collect()
}

/// `warm` steps of warm-up, then planning, over the 20 steps of `train_cmd`.
fn switch_after(warm: usize) -> Vec<u64> {
    (0..20).map(|i| u64::from(i >= warm)).collect()
}

#[test]
fn qcface_switches_to_planning_at_the_step_its_warm_up_ends() {
    let root = scratch("qcface-phase");
    let cache = root.join("cache");
    let qcface = |out: &Path, warmup: Option<&str>| {
        let mut c = train_cmd(&cache, out);
        c.args(["--head", "qcface"]);
        if let Some(w) = warmup {
            c.args(["--warmup-epochs", w]);
        }
        c
    };
    // By default half of the 2 epochs: steps 1-10 warm up, planning from step 11.
    let half = root.join("half");
    let o = qcface(&half, None).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(phases(&half), switch_after(10));
    assert!(err.contains("step 11: QCFace in hypersphere planning (warm-up: 10 steps)"), "{err}");

    // 1.3 epochs of 10 steps: planning from step 14, inside the second epoch, not at its start.
    let mid = root.join("mid");
    run_ok(qcface(&mid, Some("1.3")));
    assert_eq!(phases(&mid), switch_after(13));

    // Killed during step 13 (the last checkpoint is step 12's) and resumed: step 13 still warms up and
    // planning starts at 14 again, so every step's loss equals the uninterrupted run's.
    let resumed = root.join("resumed");
    let killed = qcface(&resumed, Some("1.3")).env(engine::kill_point::VAR, "mid-step@13").status().unwrap();
    assert!(!killed.success());
    let mut again = qcface(&resumed, Some("1.3"));
    again.arg("--resume");
    run_ok(again);
    // The killed run logged steps 1-12; the resumed one 13-20.
    let losses =
        |out: &Path| -> Vec<f64> { step_events(out).iter().map(|v| v["loss"].as_f64().unwrap()).collect() };
    assert_eq!(phases(&resumed), switch_after(13));
    assert_eq!(losses(&resumed), losses(&mid));
    let _ = std::fs::remove_dir_all(&root);
}
