//! `engine-train head --plot DIR`: a head's figures from its per-row functions (`engine::heads::probe`),
//! with the numbers behind them as CSV beside the SVGs.
//!
//! - `target_logit.svg`, `target_gradient.svg`: the target logit z_y / s and its slope dz_y/dθ / s against
//!   the target angle θ (QAMFace Figs. 3-4), for the head and each `--compare` head; heads whose margin
//!   depends on the norm are drawn at the low, middle and high end of `--norm-range`. Data:
//!   `head_curves.csv`.
//! - `map_*.svg`: heat maps over (cos θ_y, norm) of p_y, the gradient scaling term dL/dcos θ_y, and where
//!   the head has them the sample weight I(p_y), its gradient factor st, the margin-free p_d and dL/d‖x‖
//!   (AdaFace Fig. 3, SMAFace's weight figures). Data: `head_maps.csv`.
//! - `rows_*.svg` (with `--input`): histograms over the batch of the last step's per-row terms as the
//!   classifier reported them: norm, p_y, and where the head has them ẑ, I, st and p_d. Data: `rows.csv`,
//!   the bins `rows_histograms.csv`. Training draws the same at each evaluation (`train --plot-terms`).
//!
//! The other classes: `--classes` - 1 columns, all at cosine `--other-cos` to the sample. Heads with a
//! norm-based quality (AdaFace, the SMAFace family) get running statistics μ = the middle of
//! `--norm-range` and σ = a sixth of its width, so with h = 0.333 their indicator runs from -1 to 1 across
//! it.

use engine::eval::svg::{write_svg, HeatMap, HistogramPlot, LinePlot, Series};
use engine::heads::probe::{probe, Others, Probe};
use engine::heads::{self, Head, HeadParams, HeadState, Needs, NonTarget, RowReport};
use engine::{Error, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What to draw, from the command line.
pub struct PlotSpec {
    pub dir: PathBuf,
    pub compare: Vec<String>,
    pub others: Others,
    pub norm_range: (f64, f64),
}

pub const MAP_COLS: usize = 80;
pub const MAP_ROWS: usize = 50;

/// "LO,HI" with 0 < LO < HI.
pub fn parse_norm_range(s: &str) -> Result<(f64, f64)> {
    let bad = || Error::Invalid(format!("--norm-range {s:?}: give LO,HI with 0 < LO < HI, e.g. 10,110"));
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The head in evaluation mode, with norm statistics spanning the range where it keeps them.
pub fn prepared(name: &str, params: &HeadParams, (lo, hi): (f64, f64)) -> Result<Box<dyn Head>> {
    let mut head = heads::from_name(name, params)?;
    head.set_training(false);
    let mut state = head.state();
    if state.get("mu").is_some() && state.get("sigma").is_some() {
        for (n, v) in state.values.iter_mut() {
            match n.as_str() {
                "mu" => *v = (lo + hi) / 2.0,
                "sigma" => *v = (hi - lo) / 6.0,
                _ => {}
            }
        }
        head.load_state(&HeadState { values: state.values })?;
    }
    Ok(head)
}

/// The norms a head's curves are drawn at: three when its target logit depends on the norm.
pub fn curve_norms(head: &dyn Head, (lo, hi): (f64, f64)) -> Vec<f64> {
    let n = head.needs();
    if n.norm_with_grad || n.norm_detached {
        vec![lo, (lo + hi) / 2.0, hi]
    } else {
        vec![(lo + hi) / 2.0]
    }
}

/// θ in degrees, 0.5 to 179.5 by 1 (the clamp binds at 0 and 180, where the slope drops to 0).
pub fn thetas() -> impl Iterator<Item = f64> {
    (0..180).map(|k| f64::from(k) + 0.5)
}

/// The map's cell centres: (cos, norm) of cell (row, col).
pub fn cell(row: usize, col: usize, (lo, hi): (f64, f64)) -> (f64, f64) {
    let c = -1.0 + (col as f64 + 0.5) * 2.0 / MAP_COLS as f64;
    let a = lo + (row as f64 + 0.5) * (hi - lo) / MAP_ROWS as f64;
    (c, a)
}

fn line(title: &str, y_label: &str, series: Vec<Series>) -> LinePlot {
    LinePlot {
        title: title.into(),
        x_label: "target angle θ (degrees)".into(),
        y_label: y_label.into(),
        log_x: false,
        y_range: None,
        series,
    }
}

/// A text file written whole or not at all (the project's atomic write).
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    engine::io::atomic::write_atomic(path, text.as_bytes())
}

/// Writes the curves and maps of `head` (built from `params`) into `spec.dir`; returns the files written.
pub fn write_head_plots(name: &str, params: &HeadParams, spec: &PlotSpec) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&spec.dir)
        .map_err(|e| Error::Io(format!("creating {}: {e}", spec.dir.display())))?;
    let main = prepared(name, params, spec.norm_range)?;
    let mut drawn: Vec<(String, Box<dyn Head>)> = vec![(name.to_string(), main)];
    for other in &spec.compare {
        drawn.push((other.clone(), prepared(other, &HeadParams::default(), spec.norm_range)?));
    }
    let mut written = Vec::new();

    // Curves against θ.
    let mut csv = String::from("head,norm,theta_deg,cos,quality,z_y,dz_dtheta\n");
    let (mut logit, mut slope) = (Vec::new(), Vec::new());
    for (label, head) in &drawn {
        let s = head.scale();
        let norms = curve_norms(head.as_ref(), spec.norm_range);
        for &a in &norms {
            let tag = if norms.len() > 1 { format!("{label} ‖x‖ {a:.0}") } else { label.clone() };
            let (mut zs, mut ds) = (Vec::new(), Vec::new());
            for t in thetas() {
                let c = t.to_radians().cos();
                let p = probe(head.as_ref(), a, c, spec.others);
                let _ = writeln!(csv, "{label},{a},{t},{c},{},{},{}", p.quality, p.z_y, p.dz_dtheta);
                zs.push((t, p.z_y / s));
                ds.push((t, p.dz_dtheta / s));
            }
            logit.push(Series { label: tag.clone(), points: zs });
            slope.push(Series { label: tag, points: ds });
        }
    }
    // The first head's non-target logit at the same angle, unmodulated: the margin is the gap to it.
    let (first, s) = (&drawn[0].1, drawn[0].1.scale());
    let reference = match first.non_target() {
        NonTarget::Quadratic => NonTarget::Quadratic,
        _ => NonTarget::Plain,
    };
    let eps = first.clamp_eps();
    let plain = thetas()
        .map(|t| {
            let c = t.to_radians().cos().clamp(-1.0 + eps, 1.0 - eps);
            (t, heads::non_target_logit(&reference, s, c, f64::INFINITY).0 / s)
        })
        .collect();
    logit.push(Series { label: "non-target, same θ".into(), points: plain });
    let files = [
        ("target_logit.svg", line("target logit against the target angle", "z_y / s", logit)),
        ("target_gradient.svg", line("slope of the target logit", "dz_y/dθ / s (per radian)", slope)),
    ];
    for (file, plot) in files {
        let path = spec.dir.join(file);
        write_svg(&path, &plot.to_svg()?)?;
        written.push(path);
    }
    let path = spec.dir.join("head_curves.csv");
    write_text(&path, &csv)?;
    written.push(path);

    // Maps over (cos θ_y, norm) of the first head.
    let head = first.as_ref();
    let grid: Vec<Probe> = (0..MAP_ROWS)
        .flat_map(|r| (0..MAP_COLS).map(move |c| (r, c)))
        .map(|(r, c)| {
            let (cos, a) = cell(r, c, spec.norm_range);
            probe(head, a, cos, spec.others)
        })
        .collect();
    let mut csv = String::from("norm,cos,quality,p_y,weight,st,p_d,d_cos,d_norm\n");
    for p in &grid {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{}",
            p.norm,
            p.c_y,
            p.quality,
            p.p_y(),
            p.weight,
            p.st,
            p.p_d,
            p.d_c,
            p.d_norm
        );
    }
    let needs = head.needs();
    type Field = fn(&Probe) -> f64;
    let mut maps: Vec<(&str, &str, &str, Field)> = vec![
        ("map_p_y.svg", "target probability p_y", "p_y", |p| p.p_y()),
        ("map_scaling.svg", "gradient scaling term dL/dcos θ_y", "dL/dcos θ_y", |p| p.d_c),
    ];
    if needs.p_y_before_weighting {
        maps.push(("map_weight.svg", "sample weight I(p_y)", "I(p_y)", |p| p.weight));
        maps.push(("map_st.svg", "gradient factor st = I + I'·p·log p", "st", |p| p.st));
    }
    if needs.p_d {
        maps.push(("map_p_d.svg", "margin-free target probability p_d", "p_d", |p| p.p_d));
    }
    if needs.norm_with_grad || needs.extra_term {
        maps.push(("map_d_norm.svg", "gradient by the feature norm dL/d‖x‖", "dL/d‖x‖", |p| {
            p.d_norm
        }));
    }
    let setting = format!("{name}, {} classes, others at cos {}", spec.others.classes, spec.others.cos);
    for (file, what, unit, field) in maps {
        let map = HeatMap {
            title: format!("{what} ({setting})"),
            x_label: "cos θ_y".into(),
            y_label: "feature norm ‖x‖".into(),
            value_label: unit.into(),
            x_range: (-1.0, 1.0),
            y_range: spec.norm_range,
            cols: MAP_COLS,
            values: grid.iter().map(field).collect(),
        };
        let path = spec.dir.join(file);
        write_svg(&path, &map.to_svg()?)?;
        written.push(path);
    }
    let path = spec.dir.join("head_maps.csv");
    write_text(&path, &csv)?;
    written.push(path);
    Ok(written)
}

/// `bins` equal bins over the values' range (widened when they are all equal): (edges, counts).
pub fn histogram(values: &[f64], bins: usize) -> (Vec<f64>, Vec<usize>) {
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) =
        if hi > lo { (lo, hi) } else { (lo - 0.5 * lo.abs().max(1e-3), lo + 0.5 * lo.abs().max(1e-3)) };
    histogram_in(values, bins, (lo, hi))
}

/// `bins` equal bins over `lo..hi` (values outside counted in the first or last): (edges, counts).
pub fn histogram_in(values: &[f64], bins: usize, (lo, hi): (f64, f64)) -> (Vec<f64>, Vec<usize>) {
    let edges: Vec<f64> = (0..=bins).map(|k| lo + (hi - lo) * k as f64 / bins as f64).collect();
    let mut counts = vec![0; bins];
    for &v in values {
        counts[(((v - lo) / (hi - lo) * bins as f64).floor().max(0.0) as usize).min(bins - 1)] += 1;
    }
    (edges, counts)
}

/// Histograms of a step's per-row terms over its batch, with the rows (`rows.csv`) and each histogram's
/// bins (`rows_histograms.csv`: term, lo, hi, count) as CSV; returns the files written.
pub fn write_row_histograms(dir: &Path, rows: &[RowReport], needs: Needs) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
    let mut csv = String::from("norm,c_y,quality,p_y,weight,st,p_d,extra,d_norm\n");
    for r in rows {
        let (a, c, q, p, w, st, pd, e, dn) =
            (r.norm, r.c_y, r.quality, r.log_p.exp(), r.weight, r.st, r.p_d, r.extra, r.d_norm);
        let _ = writeln!(csv, "{a},{c},{q},{p},{w},{st},{pd},{e},{dn}");
    }
    type Field = fn(&RowReport) -> f64;
    let mut terms: Vec<(&str, &str, Field)> = vec![
        ("rows_norm.svg", "feature norm ‖x‖", |r| r.norm),
        ("rows_p_y.svg", "target probability p_y", |r| r.log_p.exp()),
    ];
    if needs.norm_detached {
        terms.push(("rows_quality.svg", "norm indicator ẑ", |r| r.quality));
    }
    if needs.p_y_before_weighting {
        terms.push(("rows_weight.svg", "sample weight I(p_y)", |r| r.weight));
        terms.push(("rows_st.svg", "gradient factor st", |r| r.st));
    }
    if needs.p_d {
        terms.push(("rows_p_d.svg", "margin-free target probability p_d", |r| r.p_d));
    }
    let mut written = Vec::new();
    let mut bins = String::from("term,lo,hi,count\n");
    for (file, what, field) in terms {
        let values: Vec<f64> = rows.iter().map(field).filter(|v| v.is_finite()).collect();
        if values.is_empty() {
            continue;
        }
        let (edges, counts) = histogram(&values, 20);
        let term = file.trim_start_matches("rows_").trim_end_matches(".svg");
        for (k, c) in counts.iter().enumerate() {
            let _ = writeln!(bins, "{term},{},{},{c}", edges[k], edges[k + 1]);
        }
        let plot = HistogramPlot {
            title: format!("{what} over the batch ({} samples)", values.len()),
            x_label: what.into(),
            y_label: "samples".into(),
            edges,
            counts,
        };
        let path = dir.join(file);
        write_svg(&path, &plot.to_svg()?)?;
        written.push(path);
    }
    for (file, text) in [("rows.csv", &csv), ("rows_histograms.csv", &bins)] {
        let path = dir.join(file);
        write_text(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_cover_the_values() {
        let (edges, counts) = histogram(&[0.0, 0.1, 0.5, 0.99, 1.0], 4);
        assert_eq!(edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(counts, vec![2, 0, 1, 2], "the maximum falls in the last bin");
        let (edges, counts) = histogram(&[3.0, 3.0], 2);
        assert_eq!((edges[0], edges[2], counts), (1.5, 4.5, vec![0, 2]));
    }
}
