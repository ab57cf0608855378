//! Data-parallel training over several processes on the CPU (issue 16): `train --gpus N` starts N ranks
//! that meet over TCP; the same job under the real torchrun and under Slurm's variables; a killed rank, a
//! hung rank and SIGTERM end the job naming the cause, and its checkpoint resumes on another number of
//! ranks.

mod common;

use common::{exe, scratch, tiny_train_cmd_with};
use engine::io::safetensors;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tiny demo job: 20 identities x 8 images of 32 px, `batch` images per rank, `epochs` epochs, one
/// thread per rank.
fn job(cache: &Path, out: &Path, batch: usize, epochs: usize) -> Command {
    let mut c = tiny_train_cmd_with(cache, out, batch, 1);
    c.args(["--epochs", &epochs.to_string(), "--checkpoint-every", "2", "--lr", "0.05"]);
    c
}

fn events(out: &Path, kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["event"] == kind).collect()
}

fn run(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `c`, a job of two ranks whose rank 1 meets the kill point `point` and there `how`
/// (`FACETRAIN_TEST_KILL_SIGNAL`; `None`: SIGKILL), run on two GPUs with `cuda`: it must fail. Its
/// stderr and how long it ran.
fn rank_1_broken(mut c: Command, point: &str, how: Option<&str>, cuda: bool) -> (String, Duration) {
    c.envs([("FACETRAIN_TEST_KILL_AT", point), ("FACETRAIN_TEST_KILL_RANK", "1")]);
    if let Some(h) = how {
        c.env("FACETRAIN_TEST_KILL_SIGNAL", h);
    }
    let mut c = if cuda { on_cuda(&c) } else { c };
    let t0 = Instant::now();
    let (ok, err) = run(&mut c);
    assert!(!ok, "{err}");
    (err, t0.elapsed())
}

/// Waits (at most a minute) until the job writing `out` has logged `n` steps.
fn wait_for_steps(out: &Path, n: usize) {
    let t0 = Instant::now();
    while events(out, "step").len() < n {
        assert!(t0.elapsed() < Duration::from_secs(60), "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

#[test]
fn two_ranks_train_as_one_job_and_its_checkpoint_resumes_alone_and_on_two_again() {
    let root = scratch("mr-train");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let (ok, err) = run(job(&cache, &out, 8, 2).args(["--gpus", "2"]));
    assert!(ok, "{err}");
    assert!(err.contains("batch 8 x 2 ranks = 16"), "{err}");
    // One progress banner and one ending: rank 1 is quiet.
    assert_eq!(err.matches("done: 20 steps").count(), 1, "{err}");
    let steps = events(&out, "step");
    assert_eq!(steps.len(), 20, "rank 0 alone logs the job's steps");
    // Every rank's own speed every 10 steps (on the CPU the head is sharded: the loss is the job's).
    let ranks = events(&out, "rank");
    assert_eq!(ranks.len(), 4);
    let at10: Vec<(f64, f64)> = ranks
        .iter()
        .filter(|v| v["step"] == 10.0)
        .map(|v| (v["rank"].as_f64().unwrap(), v["images_per_second"].as_f64().unwrap()))
        .collect();
    assert_eq!(at10.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0.0, 1.0]);
    assert!(at10.iter().all(|r| r.1 > 0.0), "{at10:?}");
    assert!(steps.iter().all(|s| s["loss"].as_f64().unwrap().is_finite()));

    // The checkpoint is the job's: one process with the same global batch continues it...
    let (ok, err) = run(job(&cache, &out, 16, 3).arg("--resume"));
    assert!(ok && err.contains("resumed from") && err.contains("done: 30 steps"), "{err}");
    // ... and so do two ranks again.
    let (ok, err) = run(job(&cache, &out, 8, 4).args(["--resume", "--gpus", "2"]));
    assert!(ok && err.contains("at step 30") && err.contains("done: 40 steps"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn partial_fc_trains_alone_and_over_two_ranks_and_refuses_a_rate_out_of_range() {
    let root = scratch("mr-pfc");
    let cache = root.join("cache");
    let one = root.join("one");
    let (ok, err) = run(job(&cache, &one, 16, 1).args(["--sample-rate", "0.3"]));
    assert!(ok && err.contains("(Partial FC: 0.3 of each rank's per step)"), "{err}");
    let two = root.join("two");
    // Two ranks, each step in two micro-batches: the sharded head's collectives run per micro-batch.
    let (ok, err) =
        run(job(&cache, &two, 8, 1).args(["--sample-rate", "0.3", "--gpus", "2", "--grad-accum", "2"]));
    assert!(ok && err.contains("batch 8 x 2 ranks = 16 in 2 micro-batches of 4"), "{err}");
    assert!(err.contains("done: 10 steps"), "{err}");
    for out in [&one, &two] {
        let losses: Vec<f64> = events(out, "step").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
        assert!(losses.len() == 10 && losses.iter().all(|l| l.is_finite()), "{losses:?}");
    }
    let (ok, err) = run(job(&cache, &root.join("bad"), 16, 1).args(["--sample-rate", "1.5"]));
    assert!(!ok && err.contains("--sample-rate 1.5"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_killed_rank_ends_the_job_naming_it_and_the_job_resumes() {
    let root = scratch("mr-kill");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let mut c = job(&cache, &out, 8, 2);
    c.args(["--gpus", "2"]);
    let (err, took) = rank_1_broken(c, "mid-step@5", None, false);
    assert!(err.contains("rank 1") && err.contains("killed"), "{err}");
    assert!(err.contains("the last good checkpoint is"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let (ok, err) = run(job(&cache, &out, 8, 2).args(["--gpus", "2", "--resume"]));
    assert!(ok && err.contains("at step 4") && err.contains("done: 20 steps"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_hung_rank_is_noticed_within_the_collective_timeout() {
    let root = scratch("mr-hang");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let mut c = job(&cache, &out, 8, 2);
    c.args(["--gpus", "2", "--collective-timeout", "3"]);
    let (err, took) = rank_1_broken(c, "mid-step@5", Some("SIGSTOP"), false);
    // Rank 0 names the silent rank; the launcher then ends the stopped process.
    assert!(err.contains("rank 0:") && err.contains("rank 1"), "{err}");
    assert!(err.contains("no heartbeat") || err.contains("did not reach the collective"), "{err}");
    assert!(took < Duration::from_secs(45), "{took:?}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn sigterm_to_the_launcher_stops_every_rank_after_one_step_with_a_checkpoint() {
    let root = scratch("mr-term");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let mut child = job(&cache, &out, 8, 200).args(["--gpus", "2"]).spawn().unwrap();
    wait_for_steps(&out, 3);
    // SAFETY: kill(2) on the child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(err.matches("stopped by SIGTERM").count(), 1, "{err}");
    let last = events(&out, "step").last().unwrap()["step"].as_f64().unwrap();
    assert!(err.contains(&format!("stopped by SIGTERM at step {last} ")), "{err}");
    assert!(out.join("checkpoint.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_ranks_of_a_launcher_killed_without_a_word_stop_with_a_checkpoint() {
    let root = scratch("mr-orphan");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let mut launcher = job(&cache, &out, 8, 200).args(["--gpus", "2"]).spawn().unwrap();
    let t0 = Instant::now();
    wait_for_steps(&out, 3);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The ranks are the processes whose command line names this job's output folder.
    let ranks = || -> usize {
        let key = out.to_string_lossy().into_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&key))
                    .unwrap_or(false)
            })
            .count()
    };
    while ranks() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the ranks outlived their launcher");
        std::thread::sleep(Duration::from_millis(50));
    }
    // They stopped as after a SIGTERM: rank 0's checkpoint of the last step it logged.
    let last = events(&out, "step").last().unwrap()["step"].as_f64().unwrap() as u64;
    let ck = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(ck[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&ck[8..8 + header_len]).unwrap();
    assert_eq!(header["__metadata__"]["step"], Value::from(last.to_string()));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_real_torchrun_launches_the_job() {
    let py = std::env::var("FACETRAIN_PYTHON")
        .expect("FACETRAIN_PYTHON (the venv of tests/run.sh, whose torch brings torchrun) must be set");
    let torchrun = Path::new(&py).with_file_name("torchrun");
    let root = scratch("mr-torchrun");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let port = free_port_pair();
    let mut c = Command::new(&torchrun);
    c.args(["--no-python", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"])
        .arg(format!("--master_port={port}"))
        .arg(exe());
    let inner = job(&cache, &out, 8, 1);
    c.args(inner.get_args()).stdout(Stdio::null()).stderr(Stdio::piped());
    let (ok, err) = run(&mut c);
    assert!(ok, "{err}");
    assert!(err.contains("batch 8 x 2 ranks = 16") && err.contains("done: 10 steps"), "{err}");
    assert_eq!(events(&out, "step").len(), 10);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn slurm_variables_make_a_job_of_two_tasks() {
    let root = scratch("mr-slurm");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let port = free_port_pair().to_string();
    let tasks: Vec<_> = (0..2)
        .map(|r| {
            let rank = r.to_string();
            job(&cache, &out, 8, 1)
                .envs([
                    ("SLURM_PROCID", rank.as_str()),
                    ("SLURM_LOCALID", rank.as_str()),
                    ("SLURM_NTASKS", "2"),
                    ("MASTER_ADDR", "localhost"),
                    ("MASTER_PORT", port.as_str()),
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = tasks.into_iter().map(|t| t.wait_with_output().unwrap()).collect();
    for (r, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "task {r}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let err0 = String::from_utf8_lossy(&outs[0].stderr);
    assert!(err0.contains("batch 8 x 2 ranks = 16") && err0.contains("done: 10 steps"), "{err0}");
    assert!(!String::from_utf8_lossy(&outs[1].stderr).contains("done:"), "rank 1 is quiet");
    let _ = std::fs::remove_dir_all(&root);
}

/// `c` on two CUDA devices: its `--device cpu` made `cuda`, two emulated devices presented (a real
/// machine ignores the variable), stdout dropped and stderr kept.
fn on_cuda(c: &Command) -> Command {
    let mut d = Command::new(c.get_program());
    for a in c.get_args() {
        d.arg(if a == "cpu" { "cuda".into() } else { a.to_owned() });
    }
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            d.env(k, v);
        }
    }
    d.env("FACETRAIN_EMU_DEVICES", "2").stdout(Stdio::null()).stderr(Stdio::piped());
    d
}

/// Every tensor of two safetensors files, as (name, norm-wise relative difference).
fn differences(a: &Path, b: &Path) -> Vec<(String, f64)> {
    let (a, b) = (safetensors::read(a).unwrap(), safetensors::read(b).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    a.tensors
        .iter()
        .map(|(n, t)| {
            let (x, y) = (t.to_f64_vec().unwrap(), b.get(n).unwrap().to_f64_vec().unwrap());
            let d: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum::<f64>().sqrt();
            let norm: f64 = y.iter().map(|q| q * q).sum::<f64>().sqrt();
            (n.clone(), d / norm.max(1e-30))
        })
        .collect()
}

#[test]
#[ignore = "needs two CUDA GPUs (or tests/cuda_emu with FACETRAIN_EMU_DEVICES=2); run with --ignored"]
fn gpu_two_ranks_train_on_two_devices_and_resume_on_one() {
    let root = scratch("mr-gpu");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let f32_job_env = |dir: &Path, more: &[&str], env: &[(&str, &str)]| {
        let mut c = on_cuda(job(&cache, dir, 8, 1).args(["--gpus", "2", "--precision", "f32"]).args(more));
        let (ok, err) = run(c.envs(env.iter().copied()));
        assert!(ok, "{err}");
        err
    };
    let f32_job = |dir: &Path, more: &[&str]| f32_job_env(dir, more, &[]);
    let ckpt = |dir: &Path| dir.join("checkpoint.safetensors");
    let trace = [("FACETRAIN_EMU_NCCL_TRACE", "1")];

    // The class-sharded head, by default: 10 of the 20 classes on each GPU, the backbone's gradients
    // summed by NCCL in buckets during the backward, every rank's classifier rows its own. The ranks log
    // their speed but no loss of their own: it is the job's. (That its steps are the whole head's, to
    // rounding, is engine::heads' gpu_the_sharded_head_on_cuda_equals_the_cpu_sharded_path_and_one_rank:
    // over ten steps at this demo's lr 0.05 the two drift apart by ~1e-2, the tiny network's
    // sensitivity, which at lr 0.005 stays ~1e-6.)
    let err = f32_job_env(&out, &[], &trace);
    assert!(err.contains("training on cuda:0") && err.contains("batch 8 x 2 ranks = 16"), "{err}");
    assert!(err.contains("gradients averaged on the GPUs by NCCL 2."), "{err}");
    assert!(
        err.contains("head class-sharded over 2 ranks on cuda:0 (") && err.contains(": 10 of its 20 classes"),
        "{err}"
    );
    assert!(err.contains("done: 10 steps"), "{err}");
    let losses: Vec<f64> = events(&out, "step").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    assert!(losses.len() == 10 && losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let ranks = events(&out, "rank");
    assert!(ranks.len() == 2 && ranks.iter().all(|v| v["loss"].as_f64().is_none()), "{ranks:?}");
    // Its embeddings and per-row values travel by NCCL's all-gather (three a step: embeddings, target
    // cosines, log-sum-exp pairs of the job's 16 rows), its embedding gradients by its reduce-scatter:
    // 8 rows x 128 per rank.
    let calls = |what: &str| {
        err.lines().filter(|l| l.starts_with("[nccl-emu] rank 0: ") && l.ends_with(what)).count()
    };
    assert_eq!(calls("AllGather count 1024"), 10, "the embeddings' all-gather each step: {err}");
    assert_eq!(calls("ReduceScatter count 1024"), 10, "the embedding gradients' reduce-scatter: {err}");
    assert_eq!(calls("AllGather count 32"), 10, "target cosines and owner flags, 2 x 16 rows: {err}");
    assert_eq!(calls("AllGather count 64"), 10, "log-sum-exp pairs, 4 x 16 rows: {err}");
    assert_eq!(calls("AllGather count 1"), 10, "every rank's flag for a non-finite gradient: {err}");

    // Through the host instead: the same bits (two ranks' f32 sums are exact in the host's f64 and
    // rounded once, as NCCL's; the per-row merges are the same code on the same gathered values).
    let host = root.join("host");
    let err = f32_job_env(&host, &["--collectives", "host"], &trace);
    assert!(!err.contains("[nccl-emu]") && !err.contains("NCCL"), "--collectives host called NCCL: {err}");
    for (n, d) in differences(&ckpt(&out), &ckpt(&host)) {
        assert_eq!(d, 0.0, "{n}: the sharded head through NCCL and through the host differ by {d:e}");
    }

    // Buckets change when the gradients travel, not what they add up to: tiny buckets (many
    // all-reduces during the backward, on the communication stream) and none (one after it) give the
    // default's bits.
    for mib in ["0.01", "0"] {
        let dir = root.join(format!("buckets-{mib}"));
        f32_job(&dir, &["--bucket-mb", mib]);
        for (n, d) in differences(&ckpt(&dir), &ckpt(&out)) {
            assert_eq!(d, 0.0, "{n}: --bucket-mb {mib} differs from the default by {d:e}");
        }
    }

    // --whole-head: the classifier whole on each GPU, averaged with the backbone. Every rank's own loss
    // is logged, and the job's is their mean; through the host, the same weights to rounding (f32 sums
    // in rank order on the device, f64 on the host, then the mean).
    let whole = root.join("whole");
    let err = f32_job(&whole, &["--whole-head"]);
    assert!(!err.contains("class-sharded"), "{err}");
    let losses: Vec<f64> = events(&whole, "step").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    let own: Vec<f64> = events(&whole, "rank").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    assert!(losses.len() == 10 && own.len() == 2, "{losses:?} {own:?}");
    assert!((0.5 * (own[0] + own[1]) - losses[9]).abs() < 1e-5 * losses[9].abs(), "{own:?} {losses:?}");
    let whole_host = root.join("whole-host");
    f32_job(&whole_host, &["--whole-head", "--collectives", "host"]);
    for (name, d) in differences(&ckpt(&whole), &ckpt(&whole_host)) {
        assert!(d < 1e-4, "{name}: NCCL and host collectives differ by {d:e}");
    }
    // Three GPUs: shards of 6, 7 and 7 of the 20 classes, the checkpoint's rows gathered by NCCL from
    // shards padded to 7, against the same job through the host: the classifier and its optimizer
    // state agree to rounding (a row out of place would be off by its whole size). (Three ranks' f32
    // sums round otherwise than the host's f64 ones, and AdamW turns that rounding into whole steps
    // on the backbone's tensors whose gradients are nearly zero, like the biases before a batch norm,
    // so those are not compared.)
    let three = |dir: &Path, more: &[&str]| {
        let mut c = on_cuda(job(&cache, dir, 8, 1).args(["--gpus", "3", "--precision", "f32"]).args(more));
        let (ok, err) = run(c.env("FACETRAIN_EMU_DEVICES", "3"));
        assert!(ok && err.contains(": 6 of its 20 classes on rank 0"), "{err}");
    };
    let (nccl3, host3) = (root.join("three"), root.join("three-host"));
    three(&nccl3, &[]);
    three(&host3, &["--collectives", "host"]);
    let w =
        safetensors::read(&ckpt(&nccl3)).unwrap().get("head.classifier.weight").map(|t| t.dims().to_vec());
    assert_eq!(w.map(|d| d[0]), Some(20));
    let head_rows = differences(&ckpt(&nccl3), &ckpt(&host3));
    let head_rows: Vec<_> = head_rows.iter().filter(|(n, _)| n.contains("classifier.weight")).collect();
    assert!(head_rows.len() >= 2, "the classifier and its optimizer state: {head_rows:?}");
    for (name, d) in head_rows {
        assert!(*d < 1e-3, "{name}: three GPUs through NCCL and through the host differ by {d:e}");
    }
    // Partial FC needs the sharded head.
    let mut c = on_cuda(job(&cache, &root.join("bad"), 8, 1).args([
        "--gpus",
        "2",
        "--whole-head",
        "--sample-rate",
        "0.5",
    ]));
    let (ok, err) = run(&mut c);
    assert!(
        !ok && err.contains("--whole-head: Partial FC (--sample-rate) runs on the class-sharded head"),
        "{err}"
    );

    // The job's checkpoint continues on one device with the same global batch.
    let (ok, err) = run(&mut on_cuda(job(&cache, &out, 16, 2).args(["--resume", "--precision", "f32"])));
    assert!(ok && err.contains("at step 10") && err.contains("done: 20 steps"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Partial FC on two GPUs (the class-sharded head, in the default precision: its cosine GEMMs under
/// autocast), its checkpoint continued on one GPU, sampling alone there.
#[test]
#[ignore = "needs two CUDA GPUs (or tests/cuda_emu with FACETRAIN_EMU_DEVICES=2); run with --ignored"]
fn gpu_partial_fc_trains_on_two_devices_and_resumes_on_one() {
    let root = scratch("mr-gpu-pfc");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let (ok, err) = run(&mut on_cuda(job(&cache, &out, 8, 1).args(["--gpus", "2", "--sample-rate", "0.5"])));
    assert!(ok, "{err}");
    assert!(
        err.contains("training on cuda:0") && err.contains("head class-sharded over 2 ranks on cuda:0"),
        "{err}"
    );
    assert!(
        err.contains("(Partial FC: 0.5 of each rank's per step)") && err.contains("done: 10 steps"),
        "{err}"
    );
    let losses: Vec<f64> = events(&out, "step").iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    assert!(losses.len() == 10 && losses.iter().all(|l| l.is_finite()), "{losses:?}");
    // The whole classifier is in the checkpoint (gathered from both GPUs' shards).
    let ckpt = safetensors::read(&out.join("checkpoint.safetensors")).unwrap();
    let w = ckpt.get("head.classifier.weight").map(|t| t.dims().to_vec());
    assert_eq!(w.as_ref().map(|d| d[0]), Some(20), "{w:?}");
    let (ok, err) = run(&mut on_cuda(job(&cache, &out, 16, 2).args(["--resume", "--sample-rate", "0.5"])));
    assert!(ok && err.contains("at step 10") && err.contains("done: 20 steps"), "{err}");
    assert!(!err.contains("head class-sharded over"), "one process samples alone: {err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
#[ignore = "needs two CUDA GPUs (or tests/cuda_emu with FACETRAIN_EMU_DEVICES=2); run with --ignored"]
fn gpu_torchrun_launches_an_nccl_job() {
    let py = std::env::var("FACETRAIN_PYTHON")
        .expect("FACETRAIN_PYTHON (the venv of tests/run.sh, whose torch brings torchrun) must be set");
    let root = scratch("mr-gpu-torchrun");
    let (cache, out) = (root.join("cache"), root.join("out"));
    let port = free_port_pair();
    let mut c = Command::new(Path::new(&py).with_file_name("torchrun"));
    c.args(["--no-python", "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"])
        .arg(format!("--master_port={port}"))
        .arg(exe())
        .args(job(&cache, &out, 8, 1).get_args());
    let (ok, err) = run(&mut on_cuda(&c));
    assert!(ok, "{err}");
    assert!(err.contains("by NCCL 2.") && err.contains("done: 10 steps"), "{err}");
    assert_eq!(events(&out, "step").len(), 10);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
#[ignore = "needs two CUDA GPUs (or tests/cuda_emu with FACETRAIN_EMU_DEVICES=2); run with --ignored"]
fn gpu_a_killed_or_stopped_rank_ends_an_nccl_job_naming_it_and_the_job_resumes() {
    let root = scratch("mr-gpu-kill");
    let (cache, out) = (root.join("cache"), root.join("out"));
    // A two-GPU job whose rank 1 meets `point` (`how` there: SIGKILL when None); its stderr and time.
    let broken_with = |dir: &Path, timeout: &str, point: &str, how: Option<&str>, more: &[&str]| {
        let mut c = job(&cache, dir, 8, 2);
        c.args(["--gpus", "2", "--collective-timeout", timeout]).args(more);
        rank_1_broken(c, point, how, true)
    };
    let broken = |dir: &Path, timeout: &str, point: &str, how: Option<&str>| {
        broken_with(dir, timeout, point, how, &[])
    };
    // Killed after step 5's all-reduce: rank 0 waits in step 6's on its GPU until the heartbeat hears of
    // the death and aborts the communicator.
    let (err, took) = broken(&out, "600", "mid-step@5", None);
    assert!(err.contains("rank 0: rank 1's process ended") && err.contains("killed"), "{err}");
    assert!(err.contains("the last good checkpoint is"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // Killed before it joins the NCCL communicator: rank 0, blocked in NCCL's initialisation, hears of
    // it from the heartbeat.
    let (err, took) = broken(&root.join("init"), "600", "nccl-init", None);
    assert!(err.contains("rank 0: rank 1's process ended") && err.contains("killed"), "{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    // Stopped (SIGSTOP): silent on the heartbeat link, so taken for hung within the collective timeout.
    // Rank 0 waits for it in the step's end (a host collective) or in the next step's all-reduce on its
    // GPU (then the heartbeat's silence aborts the communicator): either names rank 1.
    let (err, took) = broken(&root.join("stop"), "3", "mid-step@5", Some("SIGSTOP"));
    assert!(err.contains("rank 0:") && err.contains("rank 1"), "{err}");
    assert!(err.contains("no heartbeat") || err.contains("did not reach the collective"), "{err}");
    assert!(took < Duration::from_secs(45), "{took:?}");
    // Stuck before its step's all-reduce but alive (its heartbeats go on), the head whole on each GPU:
    // rank 0 waits on its GPU, and only its NCCL watchdog's timeout ends the wait.
    let (err, took) = broken_with(&root.join("hang"), "3", "step-start@6", Some("HANG"), &["--whole-head"]);
    assert!(err.contains("rank 0 failed: its gradient all-reduce did not finish within 3 s"), "{err}");
    assert!(took < Duration::from_secs(45), "{took:?}");
    // The same with the sharded head: the step's first collective is the host's gather of the labels,
    // whose timeout names the rank that never came.
    let (err, took) = broken(&root.join("hang-sharded"), "3", "step-start@6", Some("HANG"));
    assert!(err.contains("rank 0: rank 1 did not reach the collective within 3 s"), "{err}");
    assert!(took < Duration::from_secs(45), "{took:?}");
    // The killed job's checkpoint resumes on two GPUs.
    let (ok, err) = run(&mut on_cuda(job(&cache, &out, 8, 2).args(["--gpus", "2", "--resume"])));
    assert!(ok && err.contains("at step 4") && err.contains("done: 20 steps"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
#[ignore = "needs two CUDA GPUs (or tests/cuda_emu with FACETRAIN_EMU_DEVICES=2); run with --ignored"]
fn gpu_without_nccl_a_job_is_a_clear_error_or_runs_on_host_collectives() {
    // The CUDA libraries of this machine without libnccl: every loader path but through a folder of
    // links that leaves NCCL out.
    let root = scratch("mr-gpu-nonccl");
    let libs = root.join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Everything else of the folder: the emulation's NVRTC finds its headers beside itself.
            if !name.starts_with("libnccl") && !libs.join(&name).exists() {
                std::os::unix::fs::symlink(e.path(), libs.join(&name)).unwrap();
            }
        }
    }
    let (cache, out) = (root.join("cache"), root.join("out"));
    let mut c = on_cuda(job(&cache, &out, 8, 1).args(["--gpus", "2"]));
    c.env("LD_LIBRARY_PATH", &libs).env_remove("FACETRAIN_NCCL_DIR");
    let t0 = Instant::now();
    let (ok, err) = run(&mut c);
    assert!(!ok, "{err}");
    assert!(err.contains("NCCL not found") && err.contains("--collectives host"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let mut c = on_cuda(job(&cache, &root.join("host"), 8, 1).args(["--gpus", "2", "--collectives", "host"]));
    c.env("LD_LIBRARY_PATH", &libs);
    let (ok, err) = run(&mut c);
    assert!(ok && err.contains("done: 10 steps"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
