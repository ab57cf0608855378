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
    sized_header(out, WIDTH, title, x_label, y_label)
}

/// The document head for a picture `width` wide: its plot area is the standard one, at the left.
fn sized_header(out: &mut String, width: f64, title: &str, x_label: &str, y_label: &str) {
    open_svg(out, width);
    labels(out, width, title, x_label, y_label);
}

/// The root element and a white background, `width` wide.
fn open_svg(out: &mut String, width: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {width} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{HEIGHT}\" fill=\"white\"/>\n"
    );
}

/// The title centred over `width`, and the axis labels of the standard plot area.
fn labels(out: &mut String, width: f64, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        width / 2.0,
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
        // A white box under the legend, so curves behind it do not run through the labels.
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"146\" height=\"{}\" fill=\"white\" fill-opacity=\"0.85\"/>",
            WIDTH - RIGHT - 154.0,
            TOP + 4.0,
            16.0 * self.series.len() as f64 + 4.0
        );
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

/// A value over a rectangle as coloured cells, with a colour bar: the head maps over (cos θ, norm).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeatMap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// What the colours stand for (the colour bar's label).
    pub value_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub cols: usize,
    /// `rows × cols` values, row-major, row 0 at the bottom (`y_range.0`), column 0 at `x_range.0`; a
    /// non-finite value is drawn grey and left out of the colour range.
    pub values: Vec<f64>,
}

/// Viridis at five stops, interpolated linearly: dark purple (low) to yellow (high).
const RAMP: [(f64, f64, f64); 5] =
    [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
const BAR_SPACE: f64 = 110.0;

/// The colour of `t` in [0, 1] on [`RAMP`], as #rrggbb.
pub fn ramp_color(t: f64) -> String {
    let u = t.clamp(0.0, 1.0) * (RAMP.len() - 1) as f64;
    let k = (u.floor() as usize).min(RAMP.len() - 2);
    let (a, b, f) = (RAMP[k], RAMP[k + 1], u - k as f64);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    format!("#{:02x}{:02x}{:02x}", mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The colour bar right of the plot area: 64 bands from v0 (bottom) to v1, ticks and the value's label.
fn colour_bar(out: &mut String, v0: f64, v1: f64, value_label: &str) -> Result<()> {
    // The colour bar: 64 bands from v0 (bottom) to v1, with the value axis's ticks beside it.
    let (bx, top, bottom) = (WIDTH + 5.0, TOP, HEIGHT - BOTTOM);
    let band = (bottom - top) / 64.0;
    for k in 0..64 {
        let _ = writeln!(
            out,
            "<rect x=\"{bx}\" y=\"{}\" width=\"18\" height=\"{}\" fill=\"{}\"/>",
            num(bottom - (k + 1) as f64 * band)?,
            num(band + 0.3)?,
            ramp_color((k as f64 + 0.5) / 64.0)
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{bx}\" y=\"{top}\" width=\"18\" height=\"{}\" fill=\"none\" stroke=\"black\"/>",
        bottom - top
    );
    let (vt, vd) = linear_ticks(v0, v1);
    for v in vt {
        let y = num(bottom - (v - v0) / (v1 - v0) * (bottom - top))?;
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"black\"/>",
            bx + 18.0,
            bx + 22.0
        );
        let _ = writeln!(out, "<text x=\"{}\" y=\"{y}\" dy=\"4\">{v:.vd$}</text>", bx + 25.0);
    }
    let lx = WIDTH + BAR_SPACE - 10.0;
    let ly = (top + bottom) / 2.0;
    let _ = writeln!(
        out,
        "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" transform=\"rotate(-90 {lx} {ly})\">{}</text>",
        escape(value_label)
    );
    Ok(())
}

impl HeatMap {
    /// The finite values' (min, max), widened when they are all equal.
    pub fn value_range(&self) -> Option<(f64, f64)> {
        let fin = self.values.iter().filter(|v| v.is_finite());
        let (lo, hi) = fin.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        (lo <= hi).then(|| widen(lo, hi))
    }

    pub fn to_svg(&self) -> Result<String> {
        if self.cols == 0 || self.values.is_empty() || !self.values.len().is_multiple_of(self.cols) {
            return Err(Error::Shape(format!(
                "heat map '{}': {} values in rows of {}",
                self.title,
                self.values.len(),
                self.cols
            )));
        }
        let ((x0, x1), (y0, y1)) = (self.x_range, self.y_range);
        if !(x0.is_finite() && x1.is_finite() && y0.is_finite() && y1.is_finite() && x1 > x0 && y1 > y0) {
            return Err(Error::Invalid(format!("heat map '{}': empty or non-finite axes", self.title)));
        }
        let (v0, v1) = self
            .value_range()
            .ok_or_else(|| Error::Invalid(format!("heat map '{}': no finite value", self.title)))?;
        let rows = self.values.len() / self.cols;
        let f = Frame { x0, x1, y0, y1, log_x: false };
        let mut out = String::new();
        sized_header(&mut out, WIDTH + BAR_SPACE, &self.title, &self.x_label, &self.y_label);
        let (cw, ch) = ((x1 - x0) / self.cols as f64, (y1 - y0) / rows as f64);
        for (k, &v) in self.values.iter().enumerate() {
            let (r, c) = (k / self.cols, k % self.cols);
            let (xa, xb) = (f.tx(x0 + c as f64 * cw), f.tx(x0 + (c + 1) as f64 * cw));
            let (ya, yb) = (f.ty(y0 + (r + 1) as f64 * ch), f.ty(y0 + r as f64 * ch));
            let fill = if v.is_finite() { ramp_color((v - v0) / (v1 - v0)) } else { "#bbbbbb".into() };
            // Cells overlap by a hair so no seam shows between them.
            let _ = writeln!(
                out,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" shape-rendering=\"crispEdges\"/>",
                num(xa)?,
                num(ya)?,
                num(xb - xa + 0.3)?,
                num(yb - ya + 0.3)?
            );
        }
        let (xt, xd) = linear_ticks(x0, x1);
        let (yt, yd) = linear_ticks(y0, y1);
        axes(&mut out, &f, &labelled(&xt, xd), &labelled(&yt, yd))?;
        colour_bar(&mut out, v0, v1, &self.value_label)?;
        out.push_str("</svg>\n");
        Ok(out)
    }
}

/// Points in a plane about the origin at equal scale on both axes (circles stay round): embeddings of
/// a 2-D (or projected 3-D) head, coloured by a value, with circles of given radii and rays to given
/// points (class centres).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScatterPlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<(f64, f64)>,
    /// One value per point, coloured on the ramp with a colour bar; empty: every point one colour.
    pub values: Vec<f64>,
    pub value_label: String,
    /// Dashed circles about the origin: (radius, value coloured on the same ramp, or NaN for black).
    pub circles: Vec<(f64, f64)>,
    /// Thin lines from the origin to these points.
    pub rays: Vec<(f64, f64)>,
}

impl ScatterPlot {
    /// Half the height of the square the plot shows: the farthest point, circle or ray end, plus 5%.
    pub fn reach(&self) -> f64 {
        let far = |&(x, y): &(f64, f64)| x.hypot(y);
        let r = self.points.iter().chain(&self.rays).map(far).chain(self.circles.iter().map(|c| c.0));
        r.filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-12) * 1.05
    }

    pub fn to_svg(&self) -> Result<String> {
        self.check()?;
        let coloured = !self.values.is_empty();
        let (v0, v1) = self.value_range();
        let mut out = String::new();
        let width = if coloured { WIDTH + BAR_SPACE } else { WIDTH };
        open_svg(&mut out, width);
        self.panel(&mut out, width, self.reach(), (v0, v1))?;
        if coloured {
            colour_bar(&mut out, v0, v1, &self.value_label)?;
        }
        out.push_str("</svg>\n");
        Ok(out)
    }

    /// Several plots side by side in one picture, each titled by its own title, on the same axes (the
    /// largest reach of them all) and the same colour scale (the union of their values), with one colour
    /// bar at the right (the first plot's label): two heads' hyperspheres compared at a glance.
    pub fn side_by_side(panels: &[ScatterPlot]) -> Result<String> {
        if panels.is_empty() {
            return Err(Error::Invalid("side by side: no plot".into()));
        }
        for p in panels {
            p.check()?;
        }
        let reach = panels.iter().map(ScatterPlot::reach).fold(0.0, f64::max);
        let ranges: Vec<(f64, f64)> = panels.iter().filter_map(ScatterPlot::finite_range).collect();
        let (lo, hi) =
            ranges.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| (a.min(r.0), b.max(r.1)));
        let (v0, v1) = if lo <= hi { widen(lo, hi) } else { (0.0, 1.0) };
        let coloured = panels.iter().any(|p| !p.values.is_empty());
        let n = panels.len() as f64;
        let mut out = String::new();
        open_svg(&mut out, n * WIDTH + if coloured { BAR_SPACE } else { 0.0 });
        for (k, p) in panels.iter().enumerate() {
            // Each panel is drawn in the standard frame, moved right by a picture's width.
            let _ = writeln!(out, "<g transform=\"translate({},0)\">", k as f64 * WIDTH);
            p.panel(&mut out, WIDTH, reach, (v0, v1))?;
            out.push_str("</g>\n");
        }
        if coloured {
            let _ = writeln!(out, "<g transform=\"translate({},0)\">", (n - 1.0) * WIDTH);
            colour_bar(&mut out, v0, v1, &panels[0].value_label)?;
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        Ok(out)
    }

    fn check(&self) -> Result<()> {
        if self.points.is_empty() || (!self.values.is_empty() && self.values.len() != self.points.len()) {
            return Err(Error::Shape(format!(
                "scatter '{}': {} points, {} values",
                self.title,
                self.points.len(),
                self.values.len()
            )));
        }
        Ok(())
    }

    /// The (min, max) of the finite values and circle levels, if any.
    fn finite_range(&self) -> Option<(f64, f64)> {
        let fin = self.values.iter().chain(self.circles.iter().map(|c| &c.1)).filter(|v| v.is_finite());
        let (lo, hi) = fin.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        (lo <= hi).then_some((lo, hi))
    }

    /// The colour scale's range: the finite values', widened when they are all equal.
    fn value_range(&self) -> (f64, f64) {
        self.finite_range().map_or((0.0, 1.0), |(lo, hi)| widen(lo, hi))
    }

    /// Title (centred over `width`), axes, rays, points and circles in the standard plot area, `r` from
    /// the origin to the top, coloured on `v0..v1`.
    fn panel(&self, out: &mut String, width: f64, r: f64, (v0, v1): (f64, f64)) -> Result<()> {
        let aspect = (WIDTH - LEFT - RIGHT) / (HEIGHT - TOP - BOTTOM);
        let f = Frame { x0: -r * aspect, x1: r * aspect, y0: -r, y1: r, log_x: false };
        let scale = (HEIGHT - TOP - BOTTOM) / (2.0 * r);
        let coloured = !self.values.is_empty();
        let colour = |v: f64| if v.is_finite() { ramp_color((v - v0) / (v1 - v0)) } else { "#000000".into() };
        labels(out, width, &self.title, &self.x_label, &self.y_label);
        let (xt, xd) = linear_ticks(f.x0, f.x1);
        let (yt, yd) = linear_ticks(f.y0, f.y1);
        axes(out, &f, &labelled(&xt, xd), &labelled(&yt, yd))?;
        let (ox, oy) = (num(f.tx(0.0))?, num(f.ty(0.0))?);
        for &(x, y) in &self.rays {
            let _ = writeln!(
                out,
                "<line x1=\"{ox}\" y1=\"{oy}\" x2=\"{}\" y2=\"{}\" stroke=\"#444444\" stroke-width=\"1\"/>",
                num(f.tx(x))?,
                num(f.ty(y))?
            );
        }
        for (k, &(x, y)) in self.points.iter().enumerate() {
            let fill = if coloured { colour(self.values[k]) } else { COLORS[0].to_string() };
            let _ = writeln!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{fill}\" fill-opacity=\"0.8\"/>",
                num(f.tx(x))?,
                num(f.ty(y))?
            );
        }
        for &(radius, v) in &self.circles {
            let _ = writeln!(
                out,
                "<circle cx=\"{ox}\" cy=\"{oy}\" r=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>",
                num(radius * scale)?,
                colour(v)
            );
        }
        Ok(())
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
    fn heat_map_colours_each_cell_by_its_value() {
        let map = HeatMap {
            title: "p_y".into(),
            x_label: "cos".into(),
            y_label: "norm".into(),
            value_label: "p & q".into(),
            x_range: (-1.0, 1.0),
            y_range: (10.0, 110.0),
            cols: 3,
            values: vec![0.0, 0.5, 1.0, f64::NAN, 0.25, 0.75],
        };
        let svg = map.to_svg().unwrap();
        check_well_formed(&svg).unwrap();
        assert_eq!(map.value_range(), Some((0.0, 1.0)));
        let cells: Vec<&str> =
            svg.lines().filter(|l| l.starts_with("<rect") && !l.contains("stroke")).collect();
        // Background, six cells, 64 colour-bar bands.
        assert_eq!(cells.len(), 1 + 6 + 64);
        assert!(cells[1].contains(&ramp_color(0.0)) && cells[3].contains(&ramp_color(1.0)));
        assert!(cells[4].contains("#bbbbbb"), "a NaN cell is grey");
        assert!(cells[5].contains(&ramp_color(0.25)));
        // The bottom row (row 0) is drawn lower than the top row.
        let y = |l: &str| l.split("y=\"").nth(1).unwrap().split('"').next().unwrap().parse::<f64>().unwrap();
        assert!(y(cells[1]) > y(cells[4]));
        assert_eq!(ramp_color(0.0), "#440154");
        assert_eq!(ramp_color(1.0), "#fde725");
        assert!(svg.contains("p &amp; q"));
        assert!(HeatMap { values: vec![f64::NAN], cols: 1, ..map.clone() }.to_svg().is_err());
        assert!(HeatMap { cols: 4, ..map }.to_svg().is_err());
    }

    #[test]
    fn scatter_keeps_circles_round_and_points_in_place() {
        let plot = ScatterPlot {
            title: "2-D embeddings".into(),
            x_label: "x1".into(),
            y_label: "x2".into(),
            points: vec![(3.0, 0.0), (0.0, -2.0), (-1.0, 1.0)],
            values: vec![0.0, 1.0, 0.5],
            value_label: "degradation".into(),
            circles: vec![(2.5, 0.0), (1.0, f64::NAN)],
            rays: vec![(3.0, 3.0)],
        };
        let svg = plot.to_svg().unwrap();
        check_well_formed(&svg).unwrap();
        let attr = |l: &str, k: &str| -> f64 {
            l.split(&format!(" {k}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap()
        };
        let dots: Vec<&str> = svg.lines().filter(|l| l.contains("r=\"2.5\"")).collect();
        assert_eq!(dots.len(), 3);
        // Equal scale: pixels per unit the same along x and y, measured from the origin.
        let rings: Vec<&str> = svg.lines().filter(|l| l.contains("stroke-dasharray")).collect();
        let (ox, oy) = (attr(rings[0], "cx"), attr(rings[0], "cy"));
        let px = (attr(dots[0], "cx") - ox) / 3.0;
        let py = (attr(dots[1], "cy") - oy) / 2.0;
        assert!((px - py).abs() < 0.01, "{px} vs {py}");
        assert!((attr(rings[0], "r") - 2.5 * px).abs() < 0.01);
        assert!(dots[1].contains(&ramp_color(1.0)) && dots[2].contains(&ramp_color(0.5)));
        assert!(rings[0].contains(&ramp_color(0.0)) && rings[1].contains("#000000"));
        // The farthest thing is the ray's end at 3·√2.
        assert!((plot.reach() - 3.0 * 2f64.sqrt() * 1.05).abs() < 1e-12);
        assert!(ScatterPlot { values: vec![1.0], ..plot }.to_svg().is_err());
    }

    #[test]
    fn side_by_side_shares_axes_and_colours() {
        let a = ScatterPlot {
            title: "magface".into(),
            points: vec![(1.0, 0.0), (0.0, 1.0)],
            values: vec![0.0, 0.5],
            value_label: "degradation".into(),
            ..Default::default()
        };
        let b = ScatterPlot {
            title: "arcface".into(),
            points: vec![(4.0, 0.0), (0.0, -2.0)],
            values: vec![0.5, 1.0],
            circles: vec![(3.0, f64::NAN)],
            ..a.clone()
        };
        let svg = ScatterPlot::side_by_side(&[a.clone(), b.clone()]).unwrap();
        check_well_formed(&svg).unwrap();
        assert!(svg.contains(">magface</text>") && svg.contains(">arcface</text>"));
        assert_eq!(svg.matches("<g transform=\"translate(").count(), 3, "two panels and the colour bar");
        let attr = |l: &str, k: &str| -> f64 {
            l.split(&format!(" {k}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap()
        };
        let dots: Vec<&str> = svg.lines().filter(|l| l.contains("r=\"2.5\"")).collect();
        assert_eq!(dots.len(), 4);
        // One scale for both panels (the second's reach, 4): a point at x = 1 in the first panel sits a
        // quarter as far from the centre as the point at x = 4 in the second.
        let centre = (WIDTH - RIGHT + LEFT) / 2.0;
        let (d1, d4) = (attr(dots[0], "cx") - centre, attr(dots[2], "cx") - centre);
        assert!((4.0 * d1 - d4).abs() < 0.05, "{d1} vs {d4}");
        // One colour range, 0..1 over both: the first panel's 0.5 and the second's 0.5 share a colour.
        assert!(dots[0].contains(&ramp_color(0.0)) && dots[1].contains(&ramp_color(0.5)));
        assert!(dots[2].contains(&ramp_color(0.5)) && dots[3].contains(&ramp_color(1.0)));
        assert_eq!(svg.matches("width=\"18\"").count(), 65, "one colour bar: 64 bands and a frame");
        assert!(ScatterPlot::side_by_side(&[]).is_err());
        // Alone, a plot is drawn exactly as before: its own reach and colours.
        let alone = a.to_svg().unwrap();
        assert!(alone.lines().filter(|l| l.contains("r=\"2.5\"")).any(|l| l.contains(&ramp_color(1.0))));
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
