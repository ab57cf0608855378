//! `--device` on a machine where no GPU can be used: `cuda` and `cuda:N` stop with a sentence (never a
//! panic), `auto` trains on the CPU. CUDA_VISIBLE_DEVICES="" hides any GPU, so the outcome is the same on
//! machines with and without one.

mod common;

use common::{exe, scratch};
use std::process::{Command, Stdio};

fn train_on(device: &str, name: &str) -> std::process::Output {
    let root = scratch(name);
    Command::new(exe())
        .args(["train", "--device", device, "--threads", "2", "--seed", "7"])
        .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
        .args(["--synth-heldout", "4", "--synth-pairs", "20", "--batch-size", "16", "--epochs", "1"])
        .args(["--eval-every", "1000", "--lr", "0.05"])
        .arg("--cache")
        .arg(root.join("cache"))
        .arg("--output")
        .arg(root.join("out"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn cuda_without_a_usable_gpu_is_a_clear_error() {
    for dev in ["cuda", "cuda:1"] {
        let o = train_on(dev, &format!("nogpu-{}", dev.replace(':', "")));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--device {dev} succeeded without a GPU: {err}");
        assert!(!err.contains("panicked"), "--device {dev} panicked: {err}");
        assert!(
            err.contains("CUDA") && err.contains("device") || err.contains("no CUDA driver"),
            "--device {dev}: {err}"
        );
    }
}

#[test]
fn auto_without_a_usable_gpu_trains_on_the_cpu() {
    let o = train_on("auto", "auto");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "--device auto failed: {err}");
    assert!(!err.contains("training on cuda"), "{err}");
    // No --precision and no preset: f32 on the CPU (bf16 would only be emulated there).
    assert!(err.contains("| f32 |"), "the CPU's default precision is not f32: {err}");
}

#[test]
fn gpu_check_without_a_usable_gpu_fails_clearly() {
    let root = scratch("gpucheck");
    let o = Command::new(exe())
        .args(["gpu-check", "--train-demo", "10", "--report"])
        .arg(root.join("r.md"))
        .env("CUDA_VISIBLE_DEVICES", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked") && err.contains("CUDA"), "{err}");
}

/// bench/gpu-check.sh on a machine without a GPU (an nvidia-smi that finds none, as the real one says it):
/// exit status 1 and one sentence, before it looks for a binary or writes a report.
#[test]
fn gpu_check_script_fails_clearly_without_a_gpu() {
    let root = scratch("gpucheck-sh");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let smi = bin.join("nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\necho 'No devices were found'\nexit 6\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/gpu-check.sh");
    let results = root.join("results");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new("bash")
        .arg(&script)
        .args(["--stages", "tests", "--results"])
        .arg(&results)
        .env("PATH", path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no NVIDIA GPU found"), "{err}");
    assert!(!results.exists(), "a report was written without a GPU");
}

/// Opt-in (needs a GPU): the demo set trained on the GPU for 300 steps; `gpu-check --train-demo` fails
/// unless the loss halves. Reported as ignored elsewhere, never as passed;
/// CI runs it on tests/cuda_emu (about 2 minutes); it has not run on a real GPU yet.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_demo_training_loss_falls() {
    let root = scratch("gpudemo");
    let report = root.join("demo.md");
    let o = Command::new(exe())
        .args(["gpu-check", "--train-demo", "300", "--cache"])
        .arg(root.join("cache"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::fs::read_to_string(&report).unwrap().contains("| pass |"));
}

/// Opt-in (needs a GPU): the whole command line on the device. `train --device cuda` writes its
/// checkpoint and weights; `--device auto` takes the GPU (the start-up check passes); `eval --device
/// cuda` scores the held-out pairs like `eval --device cpu` on the same checkpoint (AUC and mean
/// embedding norm agree); `embed --device cuda` writes its file. Runs in CI on tests/cuda_emu.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_train_eval_and_embed_run_on_the_device() {
    let root = scratch("gpucli");
    let train = |device: &str, out: &str| {
        Command::new(exe())
            .args(["train", "--device", device, "--seed", "7", "--checkpoint-every", "3"])
            .args(["--synth-identities", "20", "--synth-images", "8", "--synth-size", "32"])
            .args(["--synth-heldout", "8", "--synth-pairs", "60", "--batch-size", "16", "--epochs", "1"])
            .args(["--eval-every", "5", "--lr", "0.05"])
            .arg("--cache")
            .arg(root.join("cache"))
            .arg("--output")
            .arg(root.join(out))
            .output()
            .unwrap()
    };
    let o = train("cuda", "cuda");
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && err.contains("training on cuda"), "{err}");
    // No --precision and no preset: bf16 on the GPU (f32 on the CPU: auto_without_a_usable_gpu_...).
    assert!(err.contains(") in bf16"), "the GPU's default precision is not bf16: {err}");
    let ckpt = root.join("cuda/checkpoint.safetensors");
    assert!(ckpt.exists() && root.join("cuda/model.safetensors").exists(), "{err}");
    let o = train("auto", "auto");
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && err.contains("training on cuda"),
        "--device auto did not take the GPU: {err}"
    );

    let pairs = find(&root.join("cache"), "pairs.bin").expect("the generated pairs.bin");
    let report = |device: &str| -> serde_json::Value {
        let out = root.join(format!("eval-{device}"));
        let o = Command::new(exe())
            .args(["eval", "--device", device, "--checkpoint"])
            .arg(&ckpt)
            .arg("--bin")
            .arg(&pairs)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "eval --device {device}: {}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(out.join("report.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object().unwrap().values().next().unwrap().clone()
    };
    let (g, c) = (report("cuda"), report("cpu"));
    for key in ["auc", "mean_norm"] {
        let (a, b) = (g[key].as_f64().unwrap(), c[key].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{key}: cuda {a}, cpu {b}");
    }
    let train_dir = pairs.parent().unwrap().join("train");
    let emb = root.join("emb.safetensors");
    let o = Command::new(exe())
        .args(["embed", "--device", "cuda", "--checkpoint"])
        .arg(&ckpt)
        .arg("--data")
        .arg(&train_dir)
        .arg("--output")
        .arg(&emb)
        .output()
        .unwrap();
    assert!(o.status.success() && emb.exists(), "embed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn eval_and_embed_take_device_too() {
    let o = train_on("cpu", "for-eval");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // train_on's folder (scratch() would empty it).
    let root = std::env::temp_dir().join(format!("facetrain-cli-{}-for-eval", std::process::id()));
    let ckpt = find(&root.join("out"), "checkpoint.safetensors")
        .unwrap_or_else(|| root.join("out/checkpoint.safetensors"));
    assert!(ckpt.exists(), "no checkpoint at {}", ckpt.display());
    let pairs = find(&root.join("cache"), "pairs.bin").expect("the generated pairs.bin");
    let train = pairs.parent().unwrap().join("train");
    let run = |cmd: &str, device: &str| {
        let mut c = Command::new(exe());
        c.args([cmd, "--device", device, "--checkpoint"]).arg(&ckpt);
        if cmd == "eval" {
            c.arg("--bin").arg(&pairs);
        } else {
            c.arg("--data").arg(&train).arg("--output").arg(root.join(format!("emb-{device}.safetensors")));
        }
        c.env("CUDA_VISIBLE_DEVICES", "").stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
    };
    for cmd in ["eval", "embed"] {
        let o = run(cmd, "cuda");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && !err.contains("panicked") && err.contains("CUDA"),
            "{cmd} --device cuda: {err}"
        );
        let o = run(cmd, "auto");
        assert!(o.status.success(), "{cmd} --device auto: {}", String::from_utf8_lossy(&o.stderr));
    }
}

fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// Opt-in (needs a GPU; runs in CI on tests/cuda_emu): the benchmark modes bench/gpu-check.sh's ir50 and
/// head stages run, at toy sizes: each finishes, reports a finite loss, and the training benchmark its
/// launch count, no driver allocation in steady state, and the bound on what a CUDA graph could save.
#[test]
#[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
fn gpu_benchmark_modes_run_and_report() {
    let root = scratch("gpubench");
    let run = |args: &[&str], report: &str| -> String {
        let path = root.join(report);
        let o = Command::new(exe()).arg("gpu-check").args(args).arg("--report").arg(&path).output().unwrap();
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read_to_string(&path).unwrap()
    };
    let train = run(
        &["--bench-train", "--backbone", "small", "--batch", "4", "--classes", "50", "--steps", "1"],
        "train.md",
    );
    let head = run(
        &["--bench-head", "--batch", "8", "--classes", "1000", "--block", "256", "--steps", "1"],
        "head.md",
    );
    // The last cell of each table's data row is the loss.
    let row = |md: &str, starts: &str| {
        md.lines()
            .find(|l| l.starts_with(starts))
            .unwrap_or_else(|| panic!("no row {starts}:\n{md}"))
            .to_string()
    };
    let cells =
        |r: &str| r.split('|').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect::<Vec<_>>();
    let t = cells(&row(&train, "| engine small f32"));
    assert!(t.last().unwrap().parse::<f64>().unwrap().is_finite(), "{train}");
    let launches_row = train
        .lines()
        .skip_while(|l| !l.starts_with("| kernel launches"))
        .nth(2)
        .unwrap_or_else(|| panic!("{train}"));
    let l = cells(launches_row);
    assert!(l[0].parse::<f64>().unwrap() > 50.0, "too few launches counted: {train}");
    assert_eq!(l[1], "0", "a steady-state training step allocated from the driver: {train}");
    assert!(l[3].trim_end_matches('%').parse::<f64>().unwrap() > 0.0, "{train}");
    let h = cells(&row(&head, "| engine chunked ArcFace"));
    assert!(h.last().unwrap().parse::<f64>().unwrap().is_finite(), "{head}");
}
