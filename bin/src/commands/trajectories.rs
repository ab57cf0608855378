//! `analyze --trajectories RUN/metrics.jsonl`: the tracked training samples of `train --track-samples`
//! across training (AdaFace Fig. 6): their feature norm and their target-class probability against the
//! step, one line per sample (`trajectory_norm.svg`, `trajectory_p.svg`), with the numbers drawn as
//! `trajectories.csv`.

use super::head_plots::write_text;
use engine::eval::svg::{write_svg, LinePlot, Series};
use engine::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One tracked sample's points: its label and (step, norm, p) in log order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trajectory {
    pub label: i64,
    pub points: Vec<(f64, f64, f64)>,
}

/// The `"event":"sample"` lines of a metrics log, by sample index.
pub fn read_trajectories(log: &Path) -> Result<BTreeMap<u64, Trajectory>> {
    let text = std::fs::read_to_string(log)
        .map_err(|e| Error::Io(format!("{}: cannot read: {e}", log.display())))?;
    let mut out: BTreeMap<u64, Trajectory> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| Error::Invalid(format!("{}:{}: {why}", log.display(), n + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        if v["event"] != "sample" {
            continue;
        }
        // A NaN is logged as null: it stays NaN (a gap in the line).
        let num = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        // The log writes every number as f64: the index is a whole one.
        let index = v["sample"].as_f64().filter(|s| *s >= 0.0 && s.fract() == 0.0);
        let (step, sample) = (v["step"].as_f64(), index.map(|s| s as u64));
        let (Some(step), Some(sample)) = (step, sample) else {
            return Err(bad("a sample line without its step and sample index"));
        };
        let t = out.entry(sample).or_default();
        t.label = num("label") as i64;
        t.points.push((step, num("norm"), num("p")));
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no \"sample\" lines (train with --track-samples K to log them)",
            log.display()
        )));
    }
    Ok(out)
}

/// Writes the two plots and the CSV into `dir`; returns the files written.
pub fn write_trajectories(log: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let tracks = read_trajectories(log)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
    let mut csv = String::from("sample,label,step,norm,p\n");
    let (mut norms, mut probs) = (Vec::new(), Vec::new());
    for (sample, t) in &tracks {
        for &(step, norm, p) in &t.points {
            let _ = writeln!(csv, "{sample},{},{step},{norm},{p}", t.label);
        }
        let label = format!("sample {sample} (class {})", t.label);
        norms.push(Series { label: label.clone(), points: t.points.iter().map(|q| (q.0, q.1)).collect() });
        probs.push(Series { label, points: t.points.iter().map(|q| (q.0, q.2)).collect() });
    }
    let plots = [
        ("trajectory_norm.svg", "feature norm of tracked training samples", "feature norm ‖x‖", None, norms),
        (
            "trajectory_p.svg",
            "target-class probability of tracked training samples",
            "p_y (the head's softmax, with its margin)",
            Some((0.0, 1.0)),
            probs,
        ),
    ];
    let mut written = Vec::new();
    for (file, title, y_label, y_range, series) in plots {
        let plot = LinePlot {
            title: title.into(),
            x_label: "training step".into(),
            y_label: y_label.into(),
            log_x: false,
            y_range,
            series,
        };
        let path = dir.join(file);
        write_svg(&path, &plot.to_svg()?)?;
        written.push(path);
    }
    let path = dir.join("trajectories.csv");
    write_text(&path, &csv)?;
    written.push(path);
    Ok(written)
}
