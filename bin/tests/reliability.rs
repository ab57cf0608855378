//! Regression tests of the defects a hostile but ordinary user found (issue 14), each named after what
//! it guards. The runs use the tiny demo set: 20 identities x 4 images of 32 px, 10 held-out
//! identities, 40 pairs. (Kills: chaos.rs; signals: signals.rs; huge embeddings: head_command.rs.)

mod common;

use common::{exe, scratch};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn train(cache: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(exe());
    c.args(["train", "--device", "cpu"])
        .args(["--synth-identities", "20", "--synth-images", "4", "--synth-size", "32"])
        .args(["--synth-heldout", "10"]);
    // The defaults of S, unless the case sets them (clap refuses a flag given twice).
    for (flag, value) in [("--synth-pairs", "40"), ("--batch-size", "16"), ("--threads", "2")] {
        if !extra.contains(&flag) {
            c.args([flag, value]);
        }
    }
    c.arg("--cache")
        .arg(cache)
        .arg("--output")
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "engine-train failed: {}", stderr(&o));
    stderr(&o)
}

/// Exit status 2 (an error, not a panic's 101) and the message.
fn refused(mut c: Command) -> String {
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    stderr(&o)
}

#[test]
fn a_checkpoint_written_when_the_time_limit_ends_an_epoch_resumes() {
    // Batch 80 over 80 images: one step per epoch, so every time-limited stop is at an epoch's end.
    let root = scratch("tl-epoch-end");
    let cache = root.join("cache");
    let (tl, full) = (root.join("tl"), root.join("full"));
    let flags = ["--batch-size", "80", "--epochs", "3"];
    ok(train(&cache, &full, &flags));
    ok(train(&cache, &tl, &[&flags[..], &["--time-limit", "0.00001"]].concat()));
    for step in 1..3 {
        let err = ok(train(&cache, &tl, &[&flags[..], &["--time-limit", "0.00001", "--resume"]].concat()));
        assert!(
            err.contains("resumed from") && err.contains(&format!("at step {step} (epoch {step})")),
            "{err}"
        );
    }
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(tl.join("model.safetensors")).unwrap();
    assert!(a == b, "three time-limited pieces differ from one run");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn numeric_flags_out_of_range_are_refused_by_name_not_a_panic() {
    let root = scratch("flags");
    let cache = root.join("cache");
    let cases: &[(&[&str], &str)] = &[
        (&["--eval-every", "0"], "--eval-every 0"),
        (&["--checkpoint-every", "0"], "--checkpoint-every 0"),
        (&["--time-limit=-1"], "--time-limit -1"),
        (&["--time-limit", "nan"], "--time-limit NaN"),
        (&["--time-limit", "1e300"], "--time-limit 1e300"),
        (&["--lr=-1"], "--lr -1"),
        (&["--lr", "nan"], "--lr NaN"),
        (&["--weight-decay=-1"], "--weight-decay -1"),
        (&["--grad-clip=-1"], "--grad-clip -1"),
        (&["--momentum", "5"], "--momentum 5"),
        (&["--lr-warmup-epochs=-1"], "--lr-warmup-epochs -1"),
        (&["--epochs", "0"], "--epochs 0"),
        (&["--threads", "0"], "--threads 0"),
        (&["--head", "arcface", "--m", "10"], "arcface: --m 10"),
        (&["--head", "cosface", "--m=-0.2"], "cosface: --m -0.2"),
        (&["--head", "adaface", "--h=-1"], "adaface: --h -1"),
        (&["--batch-size", "1"], "--batch-size 1"),
        (&["--synth-pairs", "0"], "--synth-pairs 0"),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let err = refused(train(&cache, &root.join(format!("o{i}")), flags));
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// The checkpoint an error names exists and holds only finite values; or the error says there is none.
fn named_checkpoint_is_good(err: &str, out: &Path) {
    let ckpt = out.join("checkpoint.safetensors");
    if err.contains("no checkpoint was written") {
        assert!(!ckpt.exists(), "{err}");
        return;
    }
    assert!(err.contains(&format!("the last good checkpoint is {}", ckpt.display())), "{err}");
    let c = engine::train::checkpoint::load(&ckpt).unwrap();
    assert_eq!(c.first_nonfinite().unwrap(), None, "{err}");
    // And it evaluates to finite embeddings.
    let o = Command::new(exe())
        .args(["eval", "--device", "cpu", "--checkpoint"])
        .arg(&ckpt)
        .arg("--bin")
        .arg(
            out.parent()
                .unwrap()
                .join("cache")
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("pairs.bin"),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_diverging_run_never_names_a_poisoned_or_missing_checkpoint() {
    let root = scratch("diverge");
    let cache = root.join("cache");
    let runs: &[&[&str]] = &[
        &["--epochs", "3", "--checkpoint-every", "1", "--lr", "1e6"],
        &["--epochs", "3", "--lr", "1e6"],
        &["--epochs", "3", "--checkpoint-every", "1", "--lr", "10", "--precision", "fp16"],
        &["--epochs", "3", "--lr", "10", "--precision", "fp16"],
    ];
    for (i, flags) in runs.iter().enumerate() {
        let out = root.join(format!("run{i}"));
        let err = refused(train(&cache, &out, flags));
        named_checkpoint_is_good(&err, &out);
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_failed_checkpoint_write_leaves_no_temporary_file_and_stale_ones_are_removed() {
    let root = scratch("disk-full");
    let cache = root.join("cache");
    let out = root.join("out");
    // The demo set first, without a limit; then a 1 MB file-size limit: the 4.5 MB checkpoint cannot be
    // written (EFBIG, as on a full disk).
    ok(train(&cache, &root.join("warm"), &["--epochs", "1"]));
    let mut c = Command::new("bash");
    let cmd = train(&cache, &out, &["--epochs", "1", "--checkpoint-every", "1"]);
    let args: Vec<String> = cmd.get_args().map(|a| format!("'{}'", a.to_string_lossy())).collect();
    c.arg("-c").arg(format!("ulimit -f 1000; exec '{}' {}", exe(), args.join(" "))).stderr(Stdio::piped());
    let err = refused(c);
    assert!(
        err.contains("checkpoint.safetensors: write failed") && err.contains("no checkpoint was written"),
        "{err}"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    // What a kill -9 inside a write leaves (a pid no process has): removed by the next run.
    let stale = out.join(".checkpoint.safetensors.tmp-4194399");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let err = ok(train(&cache, &out, &["--epochs", "1"]));
    assert!(err.contains("removed") && err.contains(".checkpoint.safetensors.tmp-4194399"), "{err}");
    assert!(!stale.exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_poisoned_checkpoint_of_an_older_engine_is_refused_by_resume_and_eval() {
    use engine::io::safetensors;
    let root = scratch("poisoned");
    let cache = root.join("cache");
    let out = root.join("out");
    ok(train(&cache, &out, &["--epochs", "1"]));
    // What the issue's --lr 1e6 run wrote: infinite batch-norm running variances.
    let ckpt = out.join("checkpoint.safetensors");
    let mut st = safetensors::read(&ckpt).unwrap();
    for (_, t) in st.tensors.iter_mut().filter(|(n, _)| n.ends_with("running_var")) {
        t.as_mut_slice::<f32>().unwrap()[0] = f32::INFINITY;
    }
    safetensors::write(&ckpt, &st).unwrap();
    let err = refused(train(&cache, &out, &["--epochs", "2", "--resume"]));
    assert!(
        err.contains("running_var' holds NaN or infinite values") && err.contains("cannot be resumed"),
        "{err}"
    );
    let mut eval = Command::new(exe());
    eval.args(["eval", "--device", "cpu", "--checkpoint"]).arg(&ckpt).arg("--bin");
    eval.arg(cache.read_dir().unwrap().next().unwrap().unwrap().path().join("pairs.bin"));
    eval.stderr(Stdio::piped());
    let err = refused(eval);
    assert!(err.contains("running_var' holds NaN or infinite values"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn resuming_with_another_batch_size_names_the_flag() {
    let root = scratch("batch-size");
    let cache = root.join("cache");
    let out = root.join("out");
    ok(train(&cache, &out, &["--epochs", "1", "--batch-size", "8"]));
    let err = refused(train(&cache, &out, &["--epochs", "2", "--resume"]));
    assert!(err.contains("--batch-size 8") && err.contains("this run has --batch-size 16"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn data_inspect_decode_reports_jpeg_scan_damage_the_fast_decoder_accepts() {
    use datasets::faceset::FaceSetWriter;
    use datasets::image::{encode_jpeg, Image};
    let root = scratch("jpeg-damage");
    let set = root.join("set");
    let mut w = FaceSetWriter::create(&set, 2, 24, 24).unwrap();
    for i in 0..6usize {
        let mut img = Image::new(24, 24);
        img.data.iter_mut().enumerate().for_each(|(p, v)| *v = ((p * 5 + i * 41) % 253) as u8);
        let mut jpg = encode_jpeg(&img, 90).unwrap();
        if i == 3 {
            jpg = datasets::testutil::damage_scan_data(&jpg);
        }
        w.add((i / 3) as u32, &[], &jpg).unwrap();
    }
    w.finish().unwrap();
    let inspect = |decode: bool| {
        let mut c = Command::new(exe());
        c.args(["data", "inspect"]).arg(&set).arg("--skip-corrupt");
        if decode {
            c.arg("--decode");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(inspect(false).contains("bad records: 0"));
    let report = inspect(true);
    assert!(
        report.contains("bad records: 1") && report.contains("record 4") && report.contains("corrupt data"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
