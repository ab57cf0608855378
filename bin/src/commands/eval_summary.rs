//! The end of every `eval` run: the summary table (engine::eval::summary) over what this run measured
//! and the `--summarize` report.json files, printed, and written with the rest to `report.json`.

use super::eval_flags::BenchmarkFlags;
use engine::eval::summary::{averages, pair_set, table, Quality, Row};
use engine::train::metrics::write_summary;
use engine::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Rows from one report object (ours or an earlier run's).
pub fn rows_of(report: &Map<String, Value>) -> Vec<Row> {
    let mut rows = vec![];
    for (key, v) in report {
        match key.as_str() {
            "ijb" => {
                let name = match v["target"].as_str() {
                    Some("IJBB") => "IJB-B",
                    _ => "IJB-C",
                };
                if let Some(t) = v["tar_at_far"]["1e-04"].as_f64() {
                    rows.push(Row {
                        name: name.into(),
                        metric: "TAR@FAR=1e-4".into(),
                        value: t,
                        quality: Quality::MixedLow,
                    });
                }
            }
            "tinyface" => {
                for (k, label) in [("rank1", "rank-1"), ("rank5", "rank-5")] {
                    if let Some(x) = v[k].as_f64() {
                        rows.push(Row {
                            name: "TinyFace".into(),
                            metric: label.into(),
                            value: x,
                            quality: Quality::MixedLow,
                        });
                    }
                }
            }
            _ => {
                if let Some(acc) = v.get("accuracy").and_then(Value::as_f64) {
                    let (name, quality) = pair_set(key);
                    rows.push(Row { name, metric: "accuracy".into(), value: acc, quality });
                }
            }
        }
    }
    rows
}

fn read_report(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("{}: cannot read: {e}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Io(format!("{}: not a JSON object", path.display()))),
        Err(e) => Err(Error::Io(format!("{}: line {}: {e}", path.display(), e.line()))),
    }
}

/// Prints the summary (when there is anything to summarize) and writes report.json.
pub fn finish(f: &BenchmarkFlags, mut report: Map<String, Value>, out: Option<&Path>) -> Result<()> {
    let mut rows = rows_of(&report);
    for p in &f.summarize {
        rows.extend(rows_of(&read_report(p)?));
    }
    if !rows.is_empty() {
        println!("{}", table(&rows));
        let (hq, lq) = averages(&rows);
        let avg = |a: Option<engine::eval::summary::Average>| {
            a.map(|a| json!({"value": a.value, "sets": a.count, "of": a.of}))
        };
        let list: Vec<Value> =
            rows.iter().map(|r| json!({"set": r.name, "metric": r.metric, "value": r.value})).collect();
        report.insert(
            "summary".into(),
            json!({"rows": list, "high_quality_avg": avg(hq), "mixed_low_quality_avg": avg(lq)}),
        );
    }
    if let Some(out) = out {
        let fields: Vec<(&str, Value)> = report.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        write_summary(&out.join("report.json"), &fields)?;
    }
    Ok(())
}
