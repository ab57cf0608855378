//! The evaluation plots built from reports: ROC (TAR against FAR on a log axis), error-versus-reject,
//! and the feature-magnitude histogram.

use super::quality::{ErrorVersusReject, Histogram};
use super::roc::Roc;
use super::svg::{HistogramPlot, LinePlot, Series};

/// ROC curves on a log FAR axis. Only the highest TAR at each FAR is kept (the curve's corners), which
/// keeps the file small; FAR = 0 has no place on a log axis.
pub fn roc_plot(title: &str, curves: &[(&str, &Roc)]) -> LinePlot {
    let series = curves
        .iter()
        .map(|(label, roc)| {
            let mut points: Vec<(f64, f64)> = Vec::new();
            for p in &roc.points {
                let (far, tar) = (roc.fpr(p), roc.tpr(p));
                match points.last_mut() {
                    Some(last) if last.0 == far => last.1 = tar,
                    _ => points.push((far, tar)),
                }
            }
            Series { label: label.to_string(), points }
        })
        .collect();
    LinePlot {
        title: title.to_string(),
        x_label: "false accept rate".into(),
        y_label: "true accept rate".into(),
        log_x: true,
        y_range: Some((0.0, 1.0)),
        series,
    }
}

/// FNMR against the fraction of lowest-quality genuine pairs rejected.
pub fn erc_plot(title: &str, curves: &[(&str, &ErrorVersusReject)]) -> LinePlot {
    let series = curves
        .iter()
        .map(|(label, erc)| Series {
            label: format!("{label} (FMR {:.0e})", erc.fmr),
            points: erc.points.iter().map(|p| (p.reject, p.fnmr)).collect(),
        })
        .collect();
    LinePlot {
        title: title.to_string(),
        x_label: "fraction rejected (lowest magnitude first)".into(),
        y_label: "false non-match rate".into(),
        log_x: false,
        y_range: None,
        series,
    }
}

pub fn magnitude_histogram_plot(title: &str, h: &Histogram) -> HistogramPlot {
    HistogramPlot {
        title: title.to_string(),
        x_label: "feature magnitude".into(),
        y_label: "images".into(),
        edges: h.edges.clone(),
        counts: h.counts.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::quality::{error_versus_reject, histogram, reject_fractions};
    use crate::eval::svg::tests::check_well_formed;
    use crate::rng::Rng;

    fn scores(n: usize) -> (Vec<f64>, Vec<f64>, Vec<bool>) {
        let mut rng = Rng::new(9);
        let y: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        let q: Vec<f64> = (0..n).map(|_| 10.0 + 30.0 * rng.uniform()).collect();
        let s = (0..n)
            .map(|i| if y[i] { q[i] / 40.0 + 0.2 * rng.normal() } else { 0.2 * rng.normal() })
            .collect();
        (s, q, y)
    }

    #[test]
    fn roc_plot_keeps_one_point_per_far_and_renders() {
        let (s, _, y) = scores(4000);
        let roc = Roc::new(&s, &y).unwrap();
        let plot = roc_plot("ROC", &[("cosine", &roc)]);
        let pts = &plot.series[0].points;
        assert_eq!(pts.len(), 2001, "one point per impostor count 0..=2000");
        assert!(pts.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1));
        assert_eq!(pts[pts.len() - 1], (1.0, 1.0));
        check_well_formed(&plot.to_svg().unwrap()).unwrap();
    }

    #[test]
    fn erc_and_histogram_plots_render() {
        let (s, q, y) = scores(4000);
        let erc = error_versus_reject(&s, &q, &y, 1e-2, &reject_fractions(0.05, 0.5)).unwrap();
        let plot = erc_plot("ERC", &[("magnitude", &erc)]);
        assert_eq!(plot.series[0].points.len(), 11);
        check_well_formed(&plot.to_svg().unwrap()).unwrap();
        let h = histogram(&q, 30).unwrap();
        let svg = magnitude_histogram_plot("magnitudes", &h).to_svg().unwrap();
        check_well_formed(&svg).unwrap();
        assert_eq!(svg.matches("<rect").count(), 32);
    }
}
