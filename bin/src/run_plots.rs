//! The training curves of a run as SVG files beside its metrics log: loss and learning rate per step, and
//! verification accuracy per step.

use engine::eval::svg::{write_svg, LinePlot, Series};
use engine::train::metrics::read_log;
use engine::Result;
use std::path::Path;

fn series(
    events: &[serde_json::Map<String, serde_json::Value>],
    event: &str,
    y: &str,
    label: &str,
) -> Series {
    let points = events
        .iter()
        .filter(|e| e.get("event").and_then(|v| v.as_str()) == Some(event))
        .filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(y)?.as_f64()?)))
        .collect();
    Series { label: label.to_string(), points }
}

fn plot(title: &str, y_label: &str, s: Series, y_range: Option<(f64, f64)>) -> LinePlot {
    LinePlot {
        title: title.into(),
        x_label: "step".into(),
        y_label: y_label.into(),
        log_x: false,
        y_range,
        series: vec![s],
    }
}

/// Writes loss.svg, lr.svg and accuracy.svg (when the run evaluated) into `dir`.
pub fn write_training_plots(dir: &Path) -> Result<()> {
    let events = read_log(&dir.join("metrics.jsonl"))?;
    let loss = series(&events, "step", "loss", "training loss");
    if loss.points.len() >= 2 {
        write_svg(&dir.join("loss.svg"), &plot("training loss", "loss", loss, None).to_svg()?)?;
        let lr = series(&events, "step", "lr", "learning rate");
        write_svg(&dir.join("lr.svg"), &plot("learning rate", "lr", lr, None).to_svg()?)?;
    }
    let acc = series(&events, "eval", "accuracy", "verification accuracy (10-fold)");
    if acc.points.len() >= 2 {
        write_svg(
            &dir.join("accuracy.svg"),
            &plot("verification accuracy", "accuracy", acc, Some((0.5, 1.0))).to_svg()?,
        )?;
    }
    Ok(())
}
