//! End to end: a tiny MagFace run, `embed` of its training set, then `analyze` with the checkpoint's
//! classifier as class centres; its margins and angle histograms equal a direct computation from the
//! embeddings and the checkpoint's tensors.

mod common;
use common::{exe, run_ok, scratch, tiny_train_cmd};
use datasets::faceset::FaceSet;
use engine::io::safetensors::{self, SafeTensors};
use engine::Tensor;
use std::process::Command;

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn margins_and_angles_of_a_trained_magface_model() {
    let root = scratch("analyze");
    let (cache, run) = (root.join("cache"), root.join("run"));
    let mut c = tiny_train_cmd(&cache, &run);
    c.args(["--epochs", "1", "--head", "magface", "--lr", "0.05"]);
    run_ok(c);
    let ckpt = run.join("checkpoint.safetensors");
    let emb = root.join("emb.safetensors");
    let mut c = Command::new(exe());
    c.args(["embed", "--checkpoint"]).arg(&ckpt).arg("--data");
    c.arg(cache.read_dir().unwrap().next().unwrap().unwrap().path().join("train"));
    c.arg("--output").arg(&emb);
    run_ok(c);

    // Narrow bounds around the embeddings' own norms, so some margins fall inside and some clamp.
    let st = safetensors::read(&emb).unwrap();
    let x = st.get("embeddings").unwrap().to_f64_vec().unwrap();
    let labels = st.get("labels").unwrap().to_vec::<i64>().unwrap();
    let dim = st.get("embeddings").unwrap().dims()[1];
    // The demo records carry their degradation level as a second header label; embed writes it.
    let set =
        FaceSet::open(&cache.read_dir().unwrap().next().unwrap().unwrap().path().join("train")).unwrap();
    let levels: Vec<f32> = (0..set.len()).map(|i| set.sample(i).unwrap().header.labels[1]).collect();
    assert_eq!(st.get("degradation").unwrap().to_vec::<f32>().unwrap(), levels);
    assert!(levels.iter().any(|&v| v != levels[0]));
    let norms: Vec<f64> = x.chunks(dim).map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let (l_a, u_a) = (sorted[sorted.len() / 4], sorted[3 * sorted.len() / 4]);
    let (l_m, u_m) = (0.3, 0.7);

    let out = root.join("analysis");
    let mut c = Command::new(exe());
    c.args(["analyze", "--embeddings"]).arg(&emb).arg("--centres").arg(&ckpt).arg("--output").arg(&out);
    c.args(["--l-a", &l_a.to_string(), "--u-a", &u_a.to_string(), "--l-m", "0.3", "--u-m", "0.7"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("MagFace margins over 160 samples"));

    let direct: Vec<f64> =
        norms.iter().map(|a| l_m + (u_m - l_m) / (u_a - l_a) * (a.clamp(l_a, u_a) - l_a)).collect();
    let m = json(&out.join("margins.json"));
    let mean = direct.iter().sum::<f64>() / direct.len() as f64;
    assert!((m["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{m}");
    assert_eq!(m["min"].as_f64().unwrap(), 0.3);
    assert_eq!(m["max"].as_f64().unwrap(), 0.7);
    assert_eq!(m["below_l_a"], norms.iter().filter(|&&a| a < l_a).count());
    assert!(mean > 0.3 && mean < 0.7);
    let svg = std::fs::read_to_string(out.join("margins.svg")).unwrap();
    assert!(svg.contains("MagFace margin") && svg.contains(&format!("mean {mean:.3}")));

    // Angles against the checkpoint's classifier rows, computed here directly.
    let w = safetensors::read(&ckpt).unwrap().get("head.classifier.weight").unwrap().to_f64_vec().unwrap();
    let unit = |r: &[f64]| {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        r.iter().map(|v| v / n).collect::<Vec<_>>()
    };
    let (mut pos, mut neg) = (vec![0u64; 180], vec![0u64; 180]);
    let mut pos_sum = 0.0;
    for (xi, &y) in x.chunks(dim).zip(&labels) {
        for (j, wj) in w.chunks(dim).enumerate() {
            let c: f64 = unit(xi).iter().zip(unit(wj)).map(|(a, b)| a * b).sum();
            let deg = c.clamp(-1.0, 1.0).acos().to_degrees();
            let bin = ((deg + 1e-9).floor() as usize).min(179);
            if j as i64 == y {
                pos[bin] += 1;
                pos_sum += deg;
            } else {
                neg[bin] += 1;
            }
        }
    }
    let text = std::fs::read_to_string(out.join("angles.csv")).unwrap();
    let rows: Vec<Vec<u64>> =
        text.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert_eq!(rows.len(), 180);
    assert_eq!(rows.iter().map(|r| r[2]).collect::<Vec<_>>(), pos);
    assert_eq!(rows.iter().map(|r| r[3]).collect::<Vec<_>>(), neg);
    assert_eq!(neg.iter().sum::<u64>(), 160 * 19);
    let a = json(&out.join("angles.json"));
    assert!((a["mean_positive_deg"].as_f64().unwrap() - pos_sum / 160.0).abs() < 1e-9);
    // Trained for an epoch, samples sit closer to their own centre than to the others on average.
    assert!(a["mean_positive_deg"].as_f64().unwrap() < a["mean_negative_deg"].as_f64().unwrap(), "{a}");
    let svg = std::fs::read_to_string(out.join("angles.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);

    // A file without class centres is refused with a sentence.
    let mut c = Command::new(exe());
    c.args(["analyze", "--embeddings"]).arg(&emb).arg("--centres").arg(&emb).arg("--output").arg(&out);
    let o = c.output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("neither"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn hypersphere_of_two_dimensional_embeddings() {
    let root = scratch("hypersphere");
    // 30 samples of 3 classes on rays at 0°, 120° and 240°; norm 10 - 8·degradation, so the circles of
    // the three degradation thirds are ordered.
    let (mut x, mut labels, mut deg) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..30 {
        let (class, d) = (i % 3, (i as f64) / 29.0);
        let t = (120.0 * class as f64).to_radians();
        let a = 10.0 - 8.0 * d;
        x.extend([(a * t.cos()) as f32, (a * t.sin()) as f32]);
        labels.push(class as i64);
        deg.push(d as f32);
    }
    let mut st = SafeTensors::default();
    st.push("embeddings", Tensor::from_vec(x.clone(), [30, 2]).unwrap());
    st.push("labels", Tensor::from_vec(labels, [30]).unwrap());
    st.push("degradation", Tensor::from_vec(deg.clone(), [30]).unwrap());
    let emb = root.join("emb.safetensors");
    safetensors::write(&emb, &st).unwrap();
    let mut centres = SafeTensors::default();
    let w: Vec<f32> = (0..3)
        .flat_map(|k| [(120.0f32 * k as f32).to_radians().cos(), (120.0f32 * k as f32).to_radians().sin()])
        .collect();
    centres.push("weight", Tensor::from_vec(w, [3, 2]).unwrap());
    let cpath = root.join("centres.safetensors");
    safetensors::write(&cpath, &centres).unwrap();

    let out = root.join("out");
    let mut c = Command::new(exe());
    c.args(["analyze", "--embeddings"]).arg(&emb).arg("--centres").arg(&cpath).arg("--output").arg(&out);
    run_ok(c);
    let h = json(&out.join("hypersphere.json"));
    let circles = h["circles"].as_array().unwrap();
    assert_eq!(circles.len(), 3);
    // Direct: samples 0-9, 10-19, 20-29 are the thirds (degradation rises with the index).
    for (k, c) in circles.iter().enumerate() {
        let norms: Vec<f64> =
            (10 * k..10 * k + 10).map(|i| (x[2 * i] as f64).hypot(x[2 * i + 1] as f64)).collect();
        let want = norms.iter().sum::<f64>() / 10.0;
        assert!((c["mean_norm"].as_f64().unwrap() - want).abs() < 1e-5, "{c} vs {want}");
        let d = (10 * k..10 * k + 10).map(|i| deg[i] as f64).sum::<f64>() / 10.0;
        assert!((c["mean_degradation"].as_f64().unwrap() - d).abs() < 1e-6);
    }
    let svg = std::fs::read_to_string(out.join("hypersphere.svg")).unwrap();
    assert_eq!(svg.matches("r=\"2.5\"").count(), 30, "one dot per embedding");
    assert_eq!(svg.matches("stroke-dasharray").count(), 3);
    assert_eq!(svg.matches("stroke=\"#444444\"").count(), 3, "one ray per class centre");
    assert!(svg.contains(">degradation level</text>"));
    let _ = std::fs::remove_dir_all(&root);
}
