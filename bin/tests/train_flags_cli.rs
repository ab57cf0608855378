//! `engine-train train` flags of issue 16 and 18: `--grad-accum K` runs each step's batch as K
//! micro-batches (the banner says so and the run trains) and refuses a K that does not divide the batch; a
//! launcher's malformed or incomplete variables are errors naming them, and a job of one rank trains
//! alone (several ranks: `multi_rank.rs`); `--augment-prob` sets AdaFace's augmentation probabilities
//! and refuses what is not one.

mod common;

use common::{scratch, step_events, train_cmd};

#[test]
fn micro_batches_train_and_a_k_that_does_not_divide_the_batch_is_refused() {
    let root = scratch("grad-accum");
    let cache = root.join("cache");
    let out = root.join("k4");
    let o = train_cmd(&cache, &out).args(["--grad-accum", "4"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("batch 16 in 4 micro-batches of 4"), "{err}");
    let steps: Vec<f64> = step_events(&out).iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    assert_eq!(steps.len(), 20);
    assert!(steps.iter().all(|l| l.is_finite()));

    let o = train_cmd(&cache, &root.join("k3")).args(["--grad-accum", "3"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--grad-accum 3") && err.contains("16 images"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_launch_without_a_rendezvous_is_refused_by_name_and_a_job_of_one_trains() {
    let root = scratch("launch-env");
    let cache = root.join("cache");
    let o = train_cmd(&cache, &root.join("torchrun"))
        .envs([("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("rank 1 of 2 has no MASTER_ADDR/MASTER_PORT"), "{err}");
    let o = train_cmd(&cache, &root.join("gpus"))
        .arg("--gpus")
        .arg("3")
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--gpus 3, but torchrun started this process as rank 0 of 2"),
        "{err}"
    );
    let o = train_cmd(&cache, &root.join("bad"))
        .envs([("SLURM_PROCID", "0"), ("SLURM_NTASKS", "x")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("SLURM_NTASKS=\"x\""), "{err}");
    let o = train_cmd(&cache, &root.join("one"))
        .envs([("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn augment_prob_trains_and_refuses_what_is_not_a_probability() {
    let root = scratch("augment-prob");
    let cache = root.join("cache");
    let o = train_cmd(&cache, &root.join("p03"))
        .args(["--augment", "adaface", "--augment-prob", "0.3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train_cmd(&cache, &root.join("p2"))
        .args(["--augment", "adaface", "--augment-prob", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--augment-prob 2"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_two_dimensional_embedding_trains_and_one_dimension_is_refused() {
    let root = scratch("embedding-size");
    let cache = root.join("cache");
    let out = root.join("d2");
    let o = train_cmd(&cache, &out).args(["--embedding-size", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The checkpoint records the network: 2-d embeddings, which `embed` then writes.
    let ck = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let n = u64::from_le_bytes(ck[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&ck[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["embedding_size"], "2");
    // The evaluation drew the demo pairs' embeddings on the circle: one ring per degradation third, the
    // rings' levels in rising order.
    let fig = out.join("hypersphere/step-20");
    assert!(std::fs::read_to_string(fig.join("hypersphere.svg")).unwrap().contains("<svg"));
    let rings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fig.join("hypersphere.json")).unwrap()).unwrap();
    let rings = rings["circles"].as_array().unwrap();
    assert_eq!(rings.len(), 3, "{rings:?}");
    let level = |i: usize| rings[i]["mean_degradation"].as_f64().unwrap();
    assert!(level(0) < level(1) && level(1) < level(2), "{rings:?}");
    assert!(rings.iter().all(|r| r["mean_norm"].as_f64().unwrap() > 0.0), "{rings:?}");
    // Starting from that network, another dimension is refused by name, the same one trains.
    let weights = out.join("model.safetensors");
    let o = train_cmd(&cache, &root.join("d3"))
        .args(["--embedding-size", "3"])
        .arg("--init-weights")
        .arg(&weights)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--embedding-size 3, but") && err.contains("2-d embeddings"),
        "{err}"
    );
    let o = train_cmd(&cache, &root.join("d2b"))
        .args(["--embedding-size", "2"])
        .arg("--init-weights")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = train_cmd(&cache, &root.join("d1")).args(["--embedding-size", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--embedding-size 1"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
