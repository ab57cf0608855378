//! `engine-train analyze`: statistics of a trained model's embeddings on a set (from `engine-train embed`),
//! with their figures.
//!
//! - MagFace margins (MagFace supplement Table A1): m(a) = l_m + k_m·(ã - l_a), ã = clamp(a, l_a, u_a),
//!   k_m = (u_m - l_m)/(u_a - l_a), over the embeddings' norms a: their mean, min and max, and a
//!   histogram (`margins.json`, `margins.svg`); the bounds are the magface head's (`--l-a`, `--u-a`,
//!   `--l-m`, `--u-m`).
//! - Angles to the class centres (QAMFace Figs. 1, 3, 4; with `--centres`): each sample's angle to its own
//!   class row of the classifier (positive) and to every other row (negative), as histograms in degrees
//!   (`angles.json`, `angles.csv`, `angles.svg`).
//! - The hypersphere (QCFace's and MagFace's toy figures), for embeddings of size 2 or 3: every embedding
//!   as a point (3-D seen along (1, 1, 1)), coloured by its degradation level when `embed` wrote one
//!   (else its class), the class centres as rays, and a dashed circle at the mean norm of each third of
//!   the samples ordered by degradation, coloured by that third's mean degradation: where magnitude
//!   encodes quality, the circles are ordered (`hypersphere.svg`, `hypersphere.json`).
//! - With `--trajectories RUN/metrics.jsonl` instead: the samples `train --track-samples` followed, their
//!   norm and target-class probability against the step (AdaFace Fig. 6; `trajectories.rs`).

use super::head_plots::{histogram_in, write_text};
use super::CmdResult;
use engine::eval::svg::{write_svg, HistogramPlot, LinePlot, ScatterPlot, Series};
use engine::heads::magface::MagFace;
use engine::heads::HeadParams;
use engine::io::safetensors;
use engine::{Error, Result};
use rayon::prelude::*;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Embeddings from `engine-train embed`: `embeddings` [N, D] and `labels` [N].
    #[arg(long, required_unless_present = "trajectories")]
    embeddings: Option<PathBuf>,
    /// Instead of embeddings: a training run's metrics.jsonl with the "sample" lines of `train
    /// --track-samples`; draws each tracked sample's feature norm and target-class probability against
    /// the step (trajectory_norm.svg, trajectory_p.svg, trajectories.csv).
    #[arg(long, value_name = "METRICS_JSONL", conflicts_with_all = ["embeddings", "centres"])]
    trajectories: Option<PathBuf>,
    /// The class centres: a training checkpoint (its classifier, `head.classifier.weight`) or a
    /// safetensors file with `weight` [C, D]; labels index its rows. Without it, no angle statistics.
    #[arg(long)]
    centres: Option<PathBuf>,
    /// Output folder for the statistics (JSON, CSV) and figures (SVG).
    #[arg(long)]
    output: PathBuf,
    /// MagFace's lower feature norm l_a for the margins (its default otherwise).
    #[arg(long)]
    l_a: Option<f64>,
    /// MagFace's upper feature norm u_a.
    #[arg(long)]
    u_a: Option<f64>,
    /// MagFace's lower margin l_m.
    #[arg(long)]
    l_m: Option<f64>,
    /// MagFace's upper margin u_m.
    #[arg(long)]
    u_m: Option<f64>,
}

/// Summary of MagFace's margins m(a) over a set.
#[derive(Debug, Clone, PartialEq)]
pub struct MarginStats {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Samples whose norm lies below l_a / above u_a (their margin is l_m / u_m).
    pub below: usize,
    pub above: usize,
    pub margins: Vec<f64>,
}

pub fn margin_stats(head: &MagFace, norms: &[f64]) -> Result<MarginStats> {
    if norms.is_empty() {
        return Err(Error::Invalid("no embeddings to take margins of".into()));
    }
    let margins: Vec<f64> = norms.iter().map(|&a| head.margin(a)).collect();
    let (min, max) =
        margins.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &m| (a.min(m), b.max(m)));
    Ok(MarginStats {
        mean: margins.iter().sum::<f64>() / margins.len() as f64,
        min,
        max,
        below: norms.iter().filter(|&&a| a < head.l_a).count(),
        above: norms.iter().filter(|&&a| a > head.u_a).count(),
        margins,
    })
}

/// Positive and negative angle counts per degree (bin k holds [k, k + 1) degrees; 180 in the last).
#[derive(Debug, Clone, PartialEq)]
pub struct AngleStats {
    pub positive: Vec<u64>,
    pub negative: Vec<u64>,
    pub mean_positive: f64,
    pub mean_negative: f64,
    /// Mean over samples of the smallest angle to another class (the hardest negative).
    pub mean_nearest_negative: f64,
}

fn unit_rows(m: &[f64], dim: usize) -> Vec<f64> {
    m.chunks(dim)
        .flat_map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(move |v| v / n)
        })
        .collect()
}

/// The degree bin of an angle; 1e-9° of slack so that exact angles computed through acos land in their
/// own bin.
fn degree_bin(deg: f64) -> usize {
    ((deg + 1e-9).floor().max(0.0) as usize).min(179)
}

/// Angles between each embedding and every class row; `labels` index the rows.
pub fn angle_stats(x: &[f64], w: &[f64], labels: &[i64], dim: usize) -> Result<AngleStats> {
    let classes = w.len() / dim;
    if let Some((i, &y)) = labels.iter().enumerate().find(|(_, &y)| y < 0 || y as usize >= classes) {
        return Err(Error::Invalid(format!(
            "label {y} of embedding {i} has no class centre (the centres hold {classes} rows)"
        )));
    }
    if classes < 2 {
        return Err(Error::Invalid("angle statistics need at least 2 class centres".into()));
    }
    let (xh, wh) = (unit_rows(x, dim), unit_rows(w, dim));
    // Blocks of samples in parallel, each tallied on its own, then added in block order (the sums come
    // out the same whatever the thread count; memory stays two histograms per block).
    const BLOCK: usize = 256;
    let tallies: Vec<Tally> = xh
        .par_chunks(dim * BLOCK)
        .zip(labels.par_chunks(BLOCK))
        .map(|(xs, ys)| {
            let mut t = Tally::default();
            for (xi, &y) in xs.chunks(dim).zip(ys) {
                let mut nearest = f64::INFINITY;
                for (j, wj) in wh.chunks(dim).enumerate() {
                    let c: f64 = xi.iter().zip(wj).map(|(a, b)| a * b).sum();
                    let deg = c.clamp(-1.0, 1.0).acos().to_degrees();
                    if j == y as usize {
                        t.positive[degree_bin(deg)] += 1;
                        t.positive_sum += deg;
                    } else {
                        t.negative[degree_bin(deg)] += 1;
                        t.negative_sum += deg;
                        nearest = nearest.min(deg);
                    }
                }
                t.nearest_sum += nearest;
            }
            t
        })
        .collect();
    let mut all = Tally::default();
    for t in &tallies {
        all.positive.iter_mut().zip(&t.positive).for_each(|(a, b)| *a += b);
        all.negative.iter_mut().zip(&t.negative).for_each(|(a, b)| *a += b);
        all.positive_sum += t.positive_sum;
        all.negative_sum += t.negative_sum;
        all.nearest_sum += t.nearest_sum;
    }
    let n = labels.len() as f64;
    Ok(AngleStats {
        mean_positive: all.positive_sum / n,
        mean_negative: all.negative_sum / (n * (classes - 1) as f64),
        mean_nearest_negative: all.nearest_sum / n,
        positive: all.positive,
        negative: all.negative,
    })
}

/// Histograms and sums of some samples' angles.
struct Tally {
    positive: Vec<u64>,
    negative: Vec<u64>,
    positive_sum: f64,
    negative_sum: f64,
    nearest_sum: f64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            positive: vec![0; 180],
            negative: vec![0; 180],
            positive_sum: 0.0,
            negative_sum: 0.0,
            nearest_sum: 0.0,
        }
    }
}

/// An embedding of size 2 as it is; of size 3 seen along (1, 1, 1): onto (1, -1, 0)/√2 and (1, 1, -2)/√6.
pub fn project(v: &[f64]) -> (f64, f64) {
    match *v {
        [a, b] => (a, b),
        [a, b, c] => ((a - b) / 2f64.sqrt(), (a + b - 2.0 * c) / 6f64.sqrt()),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Mean norm and mean level of each third of the samples ordered by `level` (ties by index).
pub fn norm_by_level_thirds(norms: &[f64], level: &[f64]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..norms.len()).collect();
    order.sort_by(|&i, &j| level[i].total_cmp(&level[j]).then(i.cmp(&j)));
    let n = order.len();
    (0..3)
        .map(|k| &order[k * n / 3..(k + 1) * n / 3])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let m = part.len() as f64;
            (part.iter().map(|&i| norms[i]).sum::<f64>() / m, part.iter().map(|&i| level[i]).sum::<f64>() / m)
        })
        .collect()
}

/// The hypersphere figure of embeddings of size 2 or 3 (see the module's comment).
pub fn hypersphere(
    x: &[f64],
    dim: usize,
    labels: &[i64],
    degradation: Option<&[f64]>,
    centres: Option<&[f64]>,
) -> ScatterPlot {
    let norms: Vec<f64> = x.chunks(dim).map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let far = norms.iter().cloned().fold(0.0, f64::max);
    let ray = |u: &[f64]| project(&u.iter().map(|v| v * far).collect::<Vec<_>>());
    let rays = centres.map(|w| unit_rows(w, dim).chunks(dim).map(ray).collect()).unwrap_or_default();
    let (values, value_label, circles, what) = match degradation {
        Some(d) => {
            (d.to_vec(), "degradation level", norm_by_level_thirds(&norms, d), " per degradation third")
        }
        None => {
            let mean = norms.iter().sum::<f64>() / norms.len() as f64;
            (labels.iter().map(|&y| y as f64).collect(), "class", vec![(mean, f64::NAN)], "")
        }
    };
    let view = if dim == 3 { "3-D seen along (1,1,1)" } else { "2-D" };
    ScatterPlot {
        title: format!("embeddings ({view}); rings: mean norm{what}"),
        x_label: if dim == 3 { "(x1 - x2)/√2" } else { "x1" }.into(),
        y_label: if dim == 3 { "(x1 + x2 - 2·x3)/√6" } else { "x2" }.into(),
        points: x.chunks(dim).map(project).collect(),
        values,
        value_label: value_label.into(),
        circles,
        rays,
    }
}

/// Writes `hypersphere.svg` and `hypersphere.json` (each ring's mean norm and mean degradation) into
/// `dir` for embeddings of size 2 or 3, and returns the plot drawn; a training run with such embeddings
/// calls it at each evaluation.
pub fn write_hypersphere(
    dir: &Path,
    x: &[f64],
    dim: usize,
    labels: &[i64],
    degradation: Option<&[f64]>,
    centres: Option<&[f64]>,
) -> Result<ScatterPlot> {
    if !(dim == 2 || dim == 3) {
        return Err(Error::Invalid(format!(
            "the hypersphere figure needs embeddings of size 2 or 3, not {dim}"
        )));
    }
    let plot = hypersphere(x, dim, labels, degradation, centres);
    let level = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
    let circles: Vec<_> =
        plot.circles.iter().map(|&(r, v)| json!({ "mean_norm": r, "mean_degradation": level(v) })).collect();
    let summary = serde_json::to_string_pretty(&json!({ "circles": circles }))
        .map_err(|e| Error::Invalid(format!("hypersphere summary: {e}")))?;
    write_text(&dir.join("hypersphere.json"), &summary)?;
    write_svg(&dir.join("hypersphere.svg"), &plot.to_svg()?)?;
    Ok(plot)
}

/// The class centres of a checkpoint's classifier or of a plain `weight` tensor, as f64 rows.
fn read_centres(path: &Path) -> Result<(Vec<f64>, usize)> {
    let st = safetensors::read(path)?;
    let t = ["head.classifier.weight", "weight"].iter().find_map(|n| st.get(n)).ok_or_else(|| {
        Error::Invalid(format!("{}: holds neither 'head.classifier.weight' nor 'weight'", path.display()))
    })?;
    if t.dims().len() != 2 {
        return Err(Error::Shape(format!(
            "{}: the class centres must be [C, D], got {}",
            path.display(),
            t.shape()
        )));
    }
    Ok((t.to_f64_vec()?, t.dims()[1]))
}

pub fn run(a: Args) -> CmdResult {
    if let Some(log) = &a.trajectories {
        for path in super::trajectories::write_trajectories(log, &a.output)? {
            println!("{}", path.display());
        }
        return Ok(());
    }
    let embeddings = a.embeddings.clone().ok_or("--embeddings (or --trajectories) is required")?;
    let st = safetensors::read(&embeddings)?;
    let e = st.require("embeddings", &embeddings)?;
    if e.dims().len() != 2 || e.dims()[0] == 0 {
        return Err(format!(
            "{}: embeddings must be [N, D] with N > 0, got {}",
            embeddings.display(),
            e.shape()
        )
        .into());
    }
    let (n, dim) = (e.dims()[0], e.dims()[1]);
    let x = e.to_f64_vec()?;
    let labels = st.require("labels", &embeddings)?.to_vec::<i64>()?;
    if labels.len() != n {
        return Err(format!("{}: {} labels for {n} embeddings", embeddings.display(), labels.len()).into());
    }
    std::fs::create_dir_all(&a.output).map_err(|e| format!("creating {}: {e}", a.output.display()))?;

    let bounds = HeadParams { l_a: a.l_a, u_a: a.u_a, l_m: a.l_m, u_m: a.u_m, ..Default::default() };
    let head = MagFace::new(&bounds)?;
    let norms: Vec<f64> = x.chunks(dim).map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    let m = margin_stats(&head, &norms)?;
    let summary = json!({
        "samples": n, "mean": m.mean, "min": m.min, "max": m.max,
        "below_l_a": m.below, "above_u_a": m.above,
        "l_a": head.l_a, "u_a": head.u_a, "l_m": head.l_m, "u_m": head.u_m,
    });
    write_text(&a.output.join("margins.json"), &serde_json::to_string_pretty(&summary)?)?;
    let range = (head.l_m, if head.u_m > head.l_m { head.u_m } else { head.l_m + 0.01 });
    let (edges, counts) = histogram_in(&m.margins, 40, range);
    let plot = HistogramPlot {
        title: format!("MagFace margin m(‖x‖): mean {:.3}, min {:.3}, max {:.3} (rad)", m.mean, m.min, m.max),
        x_label: "margin m(‖x‖) (radians)".into(),
        y_label: "samples".into(),
        edges,
        counts,
    };
    write_svg(&a.output.join("margins.svg"), &plot.to_svg()?)?;
    println!(
        "MagFace margins over {n} samples: mean {:.4}, min {:.4}, max {:.4} ({} below l_a, {} above u_a)",
        m.mean, m.min, m.max, m.below, m.above
    );

    let centres = match &a.centres {
        Some(path) => {
            let (w, wdim) = read_centres(path)?;
            if wdim != dim {
                let what = format!("{}: centres of size {wdim}, embeddings of size {dim}", path.display());
                return Err(what.into());
            }
            Some(w)
        }
        None => None,
    };
    if dim == 2 || dim == 3 {
        let degradation = st.get("degradation").map(|t| t.to_f64_vec()).transpose()?;
        write_hypersphere(&a.output, &x, dim, &labels, degradation.as_deref(), centres.as_deref())?;
    }
    if let Some(w) = centres {
        let s = angle_stats(&x, &w, &labels, dim)?;
        let mut csv = String::from("degree_lo,degree_hi,positive,negative\n");
        for k in 0..180 {
            let _ = writeln!(csv, "{k},{},{},{}", k + 1, s.positive[k], s.negative[k]);
        }
        write_text(&a.output.join("angles.csv"), &csv)?;
        let summary = json!({
            "samples": n, "classes": w.len() / dim,
            "mean_positive_deg": s.mean_positive, "mean_negative_deg": s.mean_negative,
            "mean_nearest_negative_deg": s.mean_nearest_negative,
        });
        write_text(&a.output.join("angles.json"), &serde_json::to_string_pretty(&summary)?)?;
        // Each histogram as a fraction of its own pairs per degree, so both show on one axis.
        let density = |h: &[u64]| {
            let total = h.iter().sum::<u64>().max(1) as f64;
            h.iter().enumerate().map(|(k, &c)| (k as f64 + 0.5, c as f64 / total)).collect()
        };
        let plot = LinePlot {
            title: "angles between embeddings and class centres".into(),
            x_label: "angle (degrees)".into(),
            y_label: "fraction of pairs per degree".into(),
            log_x: false,
            y_range: None,
            series: vec![
                Series {
                    label: format!("positive (mean {:.1}°)", s.mean_positive),
                    points: density(&s.positive),
                },
                Series {
                    label: format!("negative (mean {:.1}°)", s.mean_negative),
                    points: density(&s.negative),
                },
            ],
        };
        write_svg(&a.output.join("angles.svg"), &plot.to_svg()?)?;
        println!(
            "angles to {} class centres: positive mean {:.2}°, negative mean {:.2}°, nearest negative mean {:.2}°",
            w.len() / dim,
            s.mean_positive,
            s.mean_negative,
            s.mean_nearest_negative
        );
    }
    println!("{}", a.output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_follow_the_clamped_linear_map() {
        let head = MagFace::new(&HeadParams::default()).unwrap();
        // l_a 10, u_a 110, l_m 0.45, u_m 0.8.
        let m = margin_stats(&head, &[5.0, 10.0, 60.0, 110.0, 200.0]).unwrap();
        assert_eq!(m.margins, vec![0.45, 0.45, 0.45 + 0.35 * 0.5, 0.8, 0.8]);
        assert!((m.mean - (0.45 * 2.0 + 0.625 + 0.8 * 2.0) / 5.0).abs() < 1e-12);
        assert_eq!((m.min, m.max, m.below, m.above), (0.45, 0.8, 1, 1));
        assert!(margin_stats(&head, &[]).is_err());
    }

    #[test]
    fn angles_to_own_and_other_centres() {
        // Two centres on the axes; sample 0 at 30° from centre 0, sample 1 at 45° between them, label 1.
        let w = [1.0, 0.0, 0.0, 2.0];
        let t = 30f64.to_radians();
        let x = [3.0 * t.cos(), 3.0 * t.sin(), 1.0, 1.0];
        let s = angle_stats(&x, &w, &[0, 1], 2).unwrap();
        assert_eq!((s.positive[30], s.positive[45], s.positive.iter().sum::<u64>()), (1, 1, 2));
        // Sample 0 is 60° from centre 1, sample 1 45° from centre 0.
        assert_eq!(s.negative[60], 1);
        assert_eq!((s.negative[45], s.negative.iter().sum::<u64>()), (1, 2));
        assert!((s.mean_positive - 37.5).abs() < 1e-9 && (s.mean_negative - 52.5).abs() < 1e-9);
        assert!(angle_stats(&x, &w, &[0, 2], 2).unwrap_err().to_string().contains("label 2"));
    }

    #[test]
    fn angle_blocks_add_up_to_a_sample_by_sample_count() {
        // 600 samples over three blocks, 4 classes in 3-D, against a plain loop.
        let (dim, classes, n) = (3, 4, 600);
        let val = |k: usize| ((k * 7919 % 1000) as f64 / 500.0) - 1.0;
        let x: Vec<f64> = (0..n * dim).map(val).collect();
        let w: Vec<f64> = (0..classes * dim).map(|k| val(k * 31 + 5)).collect();
        let labels: Vec<i64> = (0..n).map(|i| (i % classes) as i64).collect();
        let s = angle_stats(&x, &w, &labels, dim).unwrap();
        let (mut pos, mut neg, mut nearest) = (vec![0u64; 180], vec![0u64; 180], 0.0);
        let (xh, wh) = (unit_rows(&x, dim), unit_rows(&w, dim));
        for (i, xi) in xh.chunks(dim).enumerate() {
            let mut near = f64::INFINITY;
            for (j, wj) in wh.chunks(dim).enumerate() {
                let c: f64 = xi.iter().zip(wj).map(|(a, b)| a * b).sum();
                let deg = c.clamp(-1.0, 1.0).acos().to_degrees();
                if j as i64 == labels[i] {
                    pos[degree_bin(deg)] += 1;
                } else {
                    neg[degree_bin(deg)] += 1;
                    near = near.min(deg);
                }
            }
            nearest += near;
        }
        assert_eq!((s.positive, s.negative), (pos, neg));
        assert!((s.mean_nearest_negative - nearest / n as f64).abs() < 1e-9);
    }

    #[test]
    fn hypersphere_projects_and_rings_by_degradation() {
        // (1, 1, 1) is seen end on: it lands on the origin; (1, -1, 0) along the first axis at √2.
        let (a, b) = project(&[1.0, 1.0, 1.0]);
        assert!(a.abs() < 1e-12 && b.abs() < 1e-12);
        let (a, b) = project(&[1.0, -1.0, 0.0]);
        assert!((a - 2f64.sqrt()).abs() < 1e-12 && b.abs() < 1e-12);
        // Six samples: norms 1..6, degradation falling with norm; thirds by degradation.
        let x: Vec<f64> = (1..=6).flat_map(|k| [k as f64, 0.0]).collect();
        let d = [0.9, 0.8, 0.5, 0.4, 0.1, 0.0];
        let plot = hypersphere(&x, 2, &[0, 0, 0, 1, 1, 1], Some(&d), Some(&[0.0, 2.0, 3.0, 0.0]));
        let want = [(5.5, 0.05), (3.5, 0.45), (1.5, 0.85)];
        for (got, want) in plot.circles.iter().zip(want) {
            assert!((got.0 - want.0).abs() < 1e-12 && (got.1 - want.1).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        assert_eq!(plot.circles.len(), 3);
        assert_eq!(plot.points[2], (3.0, 0.0));
        assert_eq!(plot.values, d.to_vec());
        // Rays: the centres' directions at the largest norm.
        assert_eq!(plot.rays, vec![(0.0, 6.0), (6.0, 0.0)]);
        let plain = hypersphere(&x, 2, &[0, 0, 0, 1, 1, 1], None, None);
        assert_eq!(plain.circles.len(), 1);
        assert_eq!(plain.circles[0].0, 3.5);
        assert_eq!(plain.values[4], 1.0);
    }
}
