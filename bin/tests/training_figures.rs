//! The figures `train` draws behind its opt-in flags, checked against independent computations:
//! `--compare-head` (two heads on the same batches, their hyperspheres side by side), `--track-samples`
//! (per-sample norm and target probability, drawn by `analyze --trajectories`) and `--plot-terms` (the
//! head's per-row histograms of the batch at each evaluation).

mod common;
use common::{exe, run_ok, scratch, step_events, tiny_train_cmd, tiny_train_cmd_evaluating};
use engine::embed::PairEval;
use engine::io::safetensors;
use engine::model::import::{import_model, ImportOptions};
use engine::model::IResNet;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// A CSV file as rows of column name -> text.
fn csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let head: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines.map(|l| head.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

fn num(row: &BTreeMap<String, String>, k: &str) -> f64 {
    row[k].parse().unwrap_or_else(|_| panic!("{k} = {:?}", row[k]))
}

/// The demo set's folder (the only one under the cache).
fn demo_dir(cache: &Path) -> std::path::PathBuf {
    cache.read_dir().unwrap().next().unwrap().unwrap().path()
}

/// `embed` of the whole training set with a checkpoint: (embeddings rows, labels, dim).
fn embed_train(cache: &Path, ckpt: &Path, out: &Path) -> (Vec<f64>, Vec<i64>, usize) {
    let mut c = Command::new(exe());
    c.args(["embed", "--device", "cpu", "--checkpoint"]).arg(ckpt).arg("--data");
    c.arg(demo_dir(cache).join("train")).arg("--output").arg(out);
    run_ok(c);
    let st = safetensors::read(out).unwrap();
    let e = st.get("embeddings").unwrap();
    (e.to_f64_vec().unwrap(), st.get("labels").unwrap().to_vec::<i64>().unwrap(), e.dims()[1])
}

/// The tiny demo run (batch 16, 10 steps an epoch), evaluating every 5 steps.
fn every5(cache: &Path, out: &Path) -> Command {
    tiny_train_cmd_evaluating(cache, out, 16, 2, 5)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn two_heads_train_on_the_same_batches_and_are_drawn_side_by_side() {
    let root = scratch("compare-heads");
    let cache = root.join("cache");
    let toy = |c: &mut Command| {
        c.args(["--epochs", "1", "--lr", "0.05", "--embedding-size", "2"]);
    };
    let mut c = every5(&cache, &root.join("both"));
    toy(&mut c);
    c.args(["--head", "magface", "--compare-head", "arcface"]);
    run_ok(c);
    // Each head alone, with the same seed.
    for head in ["magface", "arcface"] {
        let mut c = every5(&cache, &root.join(head));
        toy(&mut c);
        c.args(["--head", head]);
        run_ok(c);
    }
    for head in ["magface", "arcface"] {
        let losses =
            |dir: &Path| step_events(dir).iter().map(|e| e["loss"].as_f64().unwrap()).collect::<Vec<_>>();
        let (together, alone) = (losses(&root.join("both").join(head)), losses(&root.join(head)));
        // Same batches in the same order, same initial weights: every step's loss is the lone run's.
        assert_eq!(together.len(), 10);
        assert_eq!(together, alone, "{head}");
    }
    let (m, a) = (step_events(&root.join("magface")), step_events(&root.join("arcface")));
    assert_ne!(m[0]["loss"], a[0]["loss"], "the two heads give different losses on the same batch");

    // At each evaluation (steps 5 and 10), one picture with two panels; the data beside it holds each
    // panel's points: the demo pairs' embeddings under each run's final network, recomputed here from
    // the exported weights, and the class-centre rays along each checkpoint's classifier rows.
    let dir = root.join("both/hypersphere");
    for step in [5, 10] {
        let svg = std::fs::read_to_string(dir.join(format!("compare-step-{step}.svg"))).unwrap();
        assert!(svg.contains(">magface: embeddings (2-D)") && svg.contains(">arcface: embeddings (2-D)"));
        assert_eq!(svg.matches("<g transform=\"translate(").count(), 3, "two panels and one colour bar");
    }
    let rows = csv(&dir.join("compare-step-10.csv"));
    let pairs = PairEval::load(&demo_dir(&cache).join("pairs.bin"), (32, 32)).unwrap();
    let svg = std::fs::read_to_string(dir.join("compare-step-10.svg")).unwrap();
    for head in ["magface", "arcface"] {
        let run = root.join("both").join(head);
        let im = import_model(&run.join("model.safetensors"), &ImportOptions::default()).unwrap();
        let mut params = im.params;
        let r = pairs.run(&IResNet::new(im.config).unwrap(), &mut params).unwrap();
        let points: Vec<&BTreeMap<String, String>> =
            rows.iter().filter(|r| r["head"] == head && r["kind"] == "point").collect();
        assert_eq!(points.len() * 2, r.embeddings.len(), "{head}: one point per pair image");
        for (p, e) in points.iter().zip(r.embeddings.chunks(2)) {
            assert!(
                close(num(p, "x"), e[0], 1e-5) && close(num(p, "y"), e[1], 1e-5),
                "{head}: {p:?} vs {e:?}"
            );
        }
        let w = safetensors::read(&run.join("checkpoint.safetensors"))
            .unwrap()
            .get("head.classifier.weight")
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let centres: Vec<_> = rows.iter().filter(|r| r["head"] == head && r["kind"] == "centre").collect();
        assert_eq!(centres.len(), 20, "one ray per class");
        for (c, wj) in centres.iter().zip(w.chunks(2)) {
            let (x, y) = (num(c, "x"), num(c, "y"));
            // Parallel and the same way: the ray follows the class centre.
            assert!((x * wj[1] - y * wj[0]).abs() < 1e-9 * x.hypot(y) * wj[0].hypot(wj[1]) + 1e-12);
            assert!(x * wj[0] + y * wj[1] > 0.0);
        }
        assert_eq!(rows.iter().filter(|r| r["head"] == head && r["kind"] == "ring").count(), 3);
    }
    // Both panels' dots are drawn: one per pair image each.
    assert_eq!(svg.matches("r=\"2.5\"").count(), 2 * pairs.same.len() * 2);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn figure_flags_that_cannot_work_are_refused_by_name() {
    let root = scratch("figure-flags");
    let cache = root.join("cache");
    let cases: [(&[&str], &str); 7] = [
        (
            &["--head", "magface", "--compare-head", "nosuchface", "--embedding-size", "2"],
            "--compare-head nosuchface",
        ),
        (&["--head", "arcface", "--compare-head", "arcface", "--embedding-size", "2"], "is --head itself"),
        (&["--compare-head", "arcface", "--embedding-size", "2"], "--compare-head needs --head"),
        (&["--head", "magface", "--compare-head", "arcface"], "--embedding-size 2 or 3"),
        (&["--track-samples", "0"], "--track-samples 0"),
        (&["--track-samples", "9"], "--track-samples 9"),
        (&["--plot-terms", "--sample-rate", "0.5"], "--plot-terms"),
    ];
    for (k, (args, want)) in cases.iter().enumerate() {
        let o = tiny_train_cmd(&cache, &root.join(format!("r{k}"))).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = tiny_train_cmd(&cache, &root.join("d"))
        .args([
            "--data",
            "faces.rec",
            "--head",
            "magface",
            "--compare-head",
            "arcface",
            "--embedding-size",
            "2",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--compare-head draws the first evaluation set"), "{err}");
    let o = tiny_train_cmd(&cache, &root.join("g"))
        .args(["--track-samples", "2", "--gpus", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--track-samples runs in one process"), "{err}");
    let o = Command::new(exe())
        .args(["analyze", "--trajectories"])
        .arg(root.join("missing.jsonl"))
        .arg("--output")
        .arg(root.join("t"))
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing.jsonl"));
    let _ = std::fs::remove_dir_all(&root);
}

/// The `"event":"sample"` lines of a run's log.
fn sample_events(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let all = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    all.filter(|v| v["event"] == "sample").collect()
}

#[test]
fn tracked_samples_log_the_norm_and_probability_a_direct_forward_gives() {
    let root = scratch("track-samples");
    let (cache, run) = (root.join("cache"), root.join("run"));
    let mut c = every5(&cache, &run);
    c.args(["--epochs", "1", "--lr", "0.05", "--head", "cosface", "--s", "30", "--m", "0.35"]);
    c.args(["--track-samples", "3"]);
    run_ok(c);
    let events = sample_events(&run);
    // Records ⌊k·160/3⌋, at each evaluation (steps 5 and 10).
    let key = |e: &serde_json::Value| (e["step"].as_f64().unwrap(), e["sample"].as_f64().unwrap());
    let keys: Vec<_> = events.iter().map(key).collect();
    assert_eq!(keys, [(5.0, 0.0), (5.0, 53.0), (5.0, 106.0), (10.0, 0.0), (10.0, 53.0), (10.0, 106.0)]);

    // At step 10, the last checkpoint's: `embed` of the training set and CosFace's softmax computed here
    // from the checkpoint's classifier (target logit s·(cos - m), the others s·cos).
    let ckpt = run.join("checkpoint.safetensors");
    let (x, labels, dim) = embed_train(&cache, &ckpt, &root.join("emb.safetensors"));
    let w = safetensors::read(&ckpt).unwrap().get("head.classifier.weight").unwrap().to_f64_vec().unwrap();
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
    for e in events.iter().filter(|e| e["step"] == 10.0) {
        let i = e["sample"].as_f64().unwrap() as usize;
        let xi = &x[i * dim..(i + 1) * dim];
        assert_eq!(e["label"].as_f64().unwrap() as i64, labels[i]);
        let logits: Vec<f64> = w
            .chunks(dim)
            .enumerate()
            .map(|(j, wj)| {
                let c = xi.iter().zip(wj).map(|(a, b)| a * b).sum::<f64>() / (norm(xi) * norm(wj));
                30.0 * if j as i64 == labels[i] { c - 0.35 } else { c }
            })
            .collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|z| (z - top).exp()).sum();
        let p = (logits[labels[i] as usize] - top).exp() / sum;
        let (got_norm, got_p) = (e["norm"].as_f64().unwrap(), e["p"].as_f64().unwrap());
        assert!(close(got_norm, norm(xi), 1e-5), "sample {i}: norm {got_norm} vs {}", norm(xi));
        assert!(close(got_p, p, 1e-4), "sample {i}: p {got_p} vs {p}");
    }
    // The norms moved between the two evaluations: the lines are not flat copies of one value.
    assert_ne!(events[0]["norm"], events[3]["norm"]);

    // The plots' data is the log's.
    let out = root.join("trajectories");
    let mut c = Command::new(exe());
    c.args(["analyze", "--trajectories"]).arg(run.join("metrics.jsonl")).arg("--output").arg(&out);
    run_ok(c);
    let rows = csv(&out.join("trajectories.csv"));
    assert_eq!(rows.len(), events.len());
    let mut by_sample = events.clone();
    by_sample.sort_by(|a, b| key(a).1.total_cmp(&key(b).1).then(key(a).0.total_cmp(&key(b).0)));
    for (r, e) in rows.iter().zip(&by_sample) {
        assert_eq!((num(r, "step"), num(r, "sample")), key(e));
        for k in ["norm", "p", "label"] {
            assert!(close(num(r, k), e[k].as_f64().unwrap(), 1e-12), "{k}: {r:?} vs {e}");
        }
    }
    for file in ["trajectory_norm.svg", "trajectory_p.svg"] {
        let svg = std::fs::read_to_string(out.join(file)).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 3, "{file}: one line per sample");
        assert!(svg.contains(&format!(">sample 53 (class {})</text>", labels[53])), "{file}");
        assert!(svg.contains(">training step</text>"));
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn plotted_terms_are_the_batch_rows_under_the_current_network() {
    let root = scratch("plot-terms");
    let (cache, run) = (root.join("cache"), root.join("run"));
    let mut c = every5(&cache, &run);
    // Unaugmented, the batch's images are the records `embed` reads (the demo flips otherwise).
    c.args(["--epochs", "1", "--lr", "0.05", "--head", "adaface", "--plot-terms", "--augment", "none"]);
    run_ok(c);
    assert!(run.join("terms/step-5/rows_norm.svg").exists());
    let dir = run.join("terms/step-10");
    let rows = csv(&dir.join("rows.csv"));
    assert_eq!(rows.len(), 16, "one row per image of the batch");

    // Each row is a training record under the step's network: its norm is one of `embed`'s (from the
    // checkpoint of that step), and its target cosine is that record's against its class centre.
    let ckpt = run.join("checkpoint.safetensors");
    let (x, labels, dim) = embed_train(&cache, &ckpt, &root.join("emb.safetensors"));
    let w = safetensors::read(&ckpt).unwrap().get("head.classifier.weight").unwrap().to_f64_vec().unwrap();
    let norm = |r: &[f64]| r.iter().map(|v| v * v).sum::<f64>().sqrt();
    for r in &rows {
        let (a, c) = (num(r, "norm"), num(r, "c_y"));
        let found = (0..labels.len()).find(|&i| {
            let (xi, wy) = (&x[i * dim..(i + 1) * dim], &w[labels[i] as usize * dim..][..dim]);
            let cos = xi.iter().zip(wy).map(|(p, q)| p * q).sum::<f64>() / (norm(xi) * norm(wy));
            close(norm(xi), a, 1e-5) && close(cos, c, 1e-5)
        });
        assert!(found.is_some(), "row {r:?} is no training record under the checkpoint");
    }

    // Each histogram's bins count the rows' values directly, and the picture draws one bar per bin.
    let bins = csv(&dir.join("rows_histograms.csv"));
    // rows.csv names its columns as the histograms' terms.
    for term in ["norm", "p_y", "quality"] {
        let mine: Vec<_> = bins.iter().filter(|b| b["term"] == term).collect();
        assert_eq!(mine.len(), 20, "{term}");
        let values: Vec<f64> = rows.iter().map(|r| num(r, term)).collect();
        let mut total = 0;
        for (k, b) in mine.iter().enumerate() {
            let (lo, hi) = (num(b, "lo"), num(b, "hi"));
            let last = k + 1 == mine.len();
            let n = values.iter().filter(|&&v| v >= lo && (v < hi || last)).count();
            assert_eq!(num(b, "count") as usize, n, "{term} bin {k} [{lo}, {hi})");
            total += n;
        }
        assert_eq!(total, 16, "{term}");
        let svg = std::fs::read_to_string(dir.join(format!("rows_{term}.svg"))).unwrap();
        assert_eq!(svg.matches("<rect").count(), 2 + 20, "{term}: background, frame and 20 bars");
    }
    assert!(!dir.join("rows_p_d.svg").exists(), "adaface has no p_d");
    let _ = std::fs::remove_dir_all(&root);
}
