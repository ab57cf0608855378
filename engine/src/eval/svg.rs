//! A small SVG writer for the training and evaluation plots: line plots (linear or log x, for loss and
//! accuracy curves and ROC) and histograms, with axes, ticks, labels and a legend. Plain text output,
//! no dependencies; every number written is checked finite.

use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis (ROC against FAR); points with `x <= 0` cannot be drawn there and are left out.
    pub log_x: bool,
    /// Fixed y range, e.g. (0, 1) for rates; otherwise the data's range.
    pub y_range: Option<(f64, f64)>,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramPlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// `counts.len() + 1` ascending edges.
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

/// Escapes text for element content and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Maps data coordinates to the plot area.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    log_x: bool,
}

impl Frame {
    fn tx(&self, x: f64) -> f64 {
        let (a, b, v) =
            if self.log_x { (self.x0.log10(), self.x1.log10(), x.log10()) } else { (self.x0, self.x1, x) };
        LEFT + (v - a) / (b - a) * (WIDTH - LEFT - RIGHT)
    }
    fn ty(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)
    }
}

/// A range that is never empty.
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

/// About five "nice" ticks (1, 2, 5 times a power of ten) inside [lo, hi], and the decimals to print.
fn linear_ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// Decades inside [lo, hi] for a log axis.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().ceil() as i32, hi.log10().floor() as i32);
    (a..=b).map(|e| 10f64.powi(e)).collect()
}

fn num(v: f64) -> Result<String> {
    if !v.is_finite() {
        return Err(Error::Invalid(format!("SVG: a coordinate is {v}")));
    }
    Ok(format!("{v:.2}"))
}

fn header(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        WIDTH / 2.0,
        escape(title),
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_label),
    );
}

/// Axes box, tick marks, tick labels and light grid lines.
fn axes(out: &mut String, f: &Frame, xt: &[(f64, String)], yt: &[(f64, String)]) -> Result<()> {
    let (l, r, t, b) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let _ = writeln!(
        out,
        "<rect x=\"{l}\" y=\"{t}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>",
        r - l,
        b - t
    );
    for (v, label) in xt {
        let x = num(f.tx(*v))?;
        let _ = writeln!(out, "<line x1=\"{x}\" y1=\"{t}\" x2=\"{x}\" y2=\"{b}\" stroke=\"#e0e0e0\"/>");
        let _ = writeln!(out, "<line x1=\"{x}\" y1=\"{b}\" x2=\"{x}\" y2=\"{}\" stroke=\"black\"/>", b + 5.0);
        let _ = writeln!(
            out,
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            b + 18.0,
            escape(label)
        );
    }
    for (v, label) in yt {
        let y = num(f.ty(*v))?;
        let _ = writeln!(out, "<line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#e0e0e0\"/>");
        let _ = writeln!(out, "<line x1=\"{}\" y1=\"{y}\" x2=\"{l}\" y2=\"{y}\" stroke=\"black\"/>", l - 5.0);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{y}\" text-anchor=\"end\" dy=\"4\">{}</text>",
            l - 8.0,
            escape(label)
        );
    }
    Ok(())
}

fn labelled(ticks: &[f64], decimals: usize) -> Vec<(f64, String)> {
    ticks.iter().map(|&v| (v, format!("{v:.decimals$}"))).collect()
}

impl LinePlot {
    pub fn to_svg(&self) -> Result<String> {
        let keep = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0);
        let all: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().cloned().filter(keep)).collect();
        if all.is_empty() {
            return Err(Error::Invalid(format!("plot '{}': no drawable points", self.title)));
        }
        let fold = |g: fn(&(f64, f64)) -> f64| {
            all.iter().map(g).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
        };
        let (mut x0, mut x1) = fold(|p| p.0);
        if self.log_x {
            if x1 <= x0 {
                x1 = x0 * 10.0;
            }
            x0 = 10f64.powf(x0.log10().floor());
            x1 = 10f64.powf(x1.log10().ceil());
        } else {
            (x0, x1) = widen(x0, x1);
        }
        let (y0, y1) = match self.y_range {
            Some((a, b)) => widen(a, b),
            None => {
                let (a, b) = fold(|p| p.1);
                widen(a, b)
            }
        };
        let f = Frame { x0, x1, y0, y1, log_x: self.log_x };
        let mut out = String::new();
        header(&mut out, &self.title, &self.x_label, &self.y_label);
        let xt = if self.log_x {
            log_ticks(x0, x1).into_iter().map(|v| (v, format!("1e{}", v.log10().round() as i32))).collect()
        } else {
            let (t, d) = linear_ticks(x0, x1);
            labelled(&t, d)
        };
        let (t, d) = linear_ticks(y0, y1);
        axes(&mut out, &f, &xt, &labelled(&t, d))?;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mut pts = String::new();
            for p in s.points.iter().filter(|p| keep(p)) {
                let _ = write!(pts, "{},{} ", num(f.tx(p.0))?, num(f.ty(p.1.clamp(y0, y1)))?);
            }
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
                pts.trim_end()
            );
            // Legend, top right inside the axes.
            let ly = TOP + 14.0 + 16.0 * i as f64;
            let lx = WIDTH - RIGHT - 150.0;
            let _ = writeln!(
                out,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>",
                lx + 20.0
            );
            let _ =
                writeln!(out, "<text x=\"{}\" y=\"{ly}\" dy=\"4\">{}</text>", lx + 26.0, escape(&s.label));
        }
        out.push_str("</svg>\n");
        Ok(out)
    }
}

impl HistogramPlot {
    pub fn to_svg(&self) -> Result<String> {
        if self.counts.is_empty() || self.edges.len() != self.counts.len() + 1 {
            return Err(Error::Shape(format!(
                "histogram '{}': {} edges for {} bins",
                self.title,
                self.edges.len(),
                self.counts.len()
            )));
        }
        if self.edges.iter().any(|e| !e.is_finite()) || self.edges.windows(2).any(|w| w[1] <= w[0]) {
            return Err(Error::Invalid(format!(
                "histogram '{}': edges must be finite and ascending",
                self.title
            )));
        }
        let (x0, x1) = (self.edges[0], self.edges[self.edges.len() - 1]);
        let top = *self.counts.iter().max().unwrap() as f64;
        let (y0, y1) = (0.0, if top > 0.0 { top * 1.05 } else { 1.0 });
        let f = Frame { x0, x1, y0, y1, log_x: false };
        let mut out = String::new();
        header(&mut out, &self.title, &self.x_label, &self.y_label);
        let (xt, xd) = linear_ticks(x0, x1);
        let (yt, _) = linear_ticks(y0, y1);
        let yt: Vec<f64> = yt.into_iter().filter(|v| v.fract() == 0.0).collect();
        axes(&mut out, &f, &labelled(&xt, xd), &labelled(&yt, 0))?;
        for (i, &c) in self.counts.iter().enumerate() {
            let (xa, xb) = (f.tx(self.edges[i]), f.tx(self.edges[i + 1]));
            let (ya, yb) = (f.ty(c as f64), f.ty(0.0));
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"white\" stroke-width=\"0.5\"/>",
                num(xa)?,
                num(ya)?,
                num(xb - xa)?,
                num(yb - ya)?,
                COLORS[0]
            );
        }
        out.push_str("</svg>\n");
        Ok(out)
    }
}

/// Writes `svg` to `path` through a temporary file, so a crash never leaves half a plot.
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    let tmp = path.with_extension("svg.tmp");
    std::fs::write(&tmp, svg).map_err(|e| Error::Io(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Io(format!("renaming {} to {}: {e}", tmp.display(), path.display())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A structural XML check: tags balance, attributes are quoted, entities are known, numbers finite.
    pub(crate) fn check_well_formed(svg: &str) -> std::result::Result<usize, String> {
        let mut stack: Vec<String> = vec![];
        let mut rest = svg;
        let mut elements = 0;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?.to_string();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                return Err(format!("bad element name {name:?}"));
            }
            check_attributes(&body[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
                if name != "svg" || !body.contains("xmlns=\"http://www.w3.org/2000/svg\"") {
                    return Err(format!("root element is <{name}> without the SVG namespace"));
                }
            }
            elements += 1;
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() || roots != 1 {
            return Err(format!("unclosed {stack:?}, {roots} roots"));
        }
        Ok(elements)
    }

    fn check_text(t: &str) -> std::result::Result<(), String> {
        if t.contains('>') {
            return Err(format!("raw '>' in text {t:?}"));
        }
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            let ok = ["&amp;", "&lt;", "&gt;", "&quot;"].iter().any(|e| rest[i..].starts_with(e));
            if !ok {
                return Err(format!("bad entity in {t:?}"));
            }
            rest = &rest[i + 1..];
        }
        Ok(())
    }

    fn check_attributes(mut a: &str) -> std::result::Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a.find("=\"").ok_or(format!("unquoted attribute in {a:?}"))?;
            let key = &a[..eq];
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {key:?}"));
            }
            let end = a[eq + 2..].find('"').ok_or("unterminated attribute")? + eq + 2;
            let value = &a[eq + 2..end];
            check_text(value)?;
            if value.contains('<') {
                return Err(format!("'<' in attribute {key}"));
            }
            for word in value.split([' ', ',', '(', ')']) {
                let lower = word.to_ascii_lowercase();
                if lower.contains("nan") || lower.contains("inf") {
                    return Err(format!("non-finite number in {key}={value:?}"));
                }
                if let Ok(v) = word.parse::<f64>() {
                    if !v.is_finite() {
                        return Err(format!("non-finite number in {key}"));
                    }
                }
            }
            a = &a[end + 1..];
        }
    }

    #[test]
    fn checker_rejects_broken_documents() {
        assert!(check_well_formed("<svg xmlns=\"http://www.w3.org/2000/svg\"><g></svg>").is_err());
        assert!(
            check_well_formed("<svg xmlns=\"http://www.w3.org/2000/svg\"><line x1=\"NaN\"/></svg>").is_err()
        );
        assert!(
            check_well_formed("<svg xmlns=\"http://www.w3.org/2000/svg\"><text>a & b</text></svg>").is_err()
        );
        assert!(check_well_formed("<svg xmlns=\"http://www.w3.org/2000/svg\"><rect x=1/></svg>").is_err());
        assert!(check_well_formed(
            "<svg xmlns=\"http://www.w3.org/2000/svg\"/><svg xmlns=\"http://www.w3.org/2000/svg\"/>"
        )
        .is_err());
        assert_eq!(
            check_well_formed("<svg xmlns=\"http://www.w3.org/2000/svg\"><g a=\"1 2\"/></svg>"),
            Ok(2)
        );
    }

    #[test]
    fn line_plot_is_well_formed_with_legend_and_escaped_labels() {
        let plot = LinePlot {
            title: "loss & accuracy <train>".into(),
            x_label: "step".into(),
            y_label: "value".into(),
            series: vec![
                Series {
                    label: "loss".into(),
                    points: (0..50).map(|i| (i as f64, 10.0 / (1.0 + i as f64))).collect(),
                },
                Series {
                    label: "acc \"lfw\"".into(),
                    points: vec![(0.0, 0.5), (25.0, 0.9), (49.0, f64::NAN)],
                },
            ],
            ..Default::default()
        };
        let svg = plot.to_svg().unwrap();
        let n = check_well_formed(&svg).unwrap();
        assert!(n > 20, "{n} elements");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("loss &amp; accuracy &lt;train&gt;"));
        assert!(svg.contains("acc &quot;lfw&quot;"));
    }

    #[test]
    fn roc_on_log_x_drops_zero_and_ticks_decades() {
        let plot = LinePlot {
            title: "ROC".into(),
            x_label: "FAR".into(),
            y_label: "TAR".into(),
            log_x: true,
            y_range: Some((0.0, 1.0)),
            series: vec![Series {
                label: "cosine".into(),
                points: vec![(0.0, 0.0), (1e-4, 0.5), (1e-3, 0.7), (1e-2, 0.9), (1.0, 1.0)],
            }],
        };
        let svg = plot.to_svg().unwrap();
        check_well_formed(&svg).unwrap();
        for d in ["1e-4", "1e-3", "1e-2", "1e-1", "1e0"] {
            assert!(svg.contains(&format!(">{d}</text>")), "tick {d} missing");
        }
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 4, "the FAR = 0 point has no place on a log axis");
        let only_zero = LinePlot {
            log_x: true,
            series: vec![Series { label: "x".into(), points: vec![(0.0, 1.0)] }],
            ..Default::default()
        };
        assert!(only_zero.to_svg().is_err());
    }

    #[test]
    fn histogram_draws_one_bar_per_bin() {
        let h = HistogramPlot {
            title: "feature magnitude".into(),
            x_label: "||x||".into(),
            y_label: "images".into(),
            edges: vec![10.0, 20.0, 30.0, 40.0],
            counts: vec![3, 0, 7],
        };
        let svg = h.to_svg().unwrap();
        check_well_formed(&svg).unwrap();
        // Two background/frame rects plus three bars.
        assert_eq!(svg.matches("<rect").count(), 5);
        let bad = HistogramPlot { edges: vec![1.0, 1.0], counts: vec![1], ..Default::default() };
        assert!(bad.to_svg().is_err());
    }

    #[test]
    fn ticks_are_nice_and_inside_the_range() {
        let (t, d) = linear_ticks(0.0, 1.0);
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(d, 1);
        let (t, _) = linear_ticks(3.0, 97.0);
        assert!(t.iter().all(|v| (3.0..=97.0).contains(v)) && t.len() >= 4);
        assert_eq!(log_ticks(1e-6, 1.0).len(), 7);
    }

    #[test]
    fn write_goes_through_a_temporary_name() {
        let dir = std::env::temp_dir().join(format!("facetrain-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plot.svg");
        write_svg(&path, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>");
        assert!(!dir.join("plot.svg.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
