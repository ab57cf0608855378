//! The summary table across benchmarks, grouped as AdaFace reports them (its README and paper tables):
//! high-quality verification sets (LFW, CFP-FP, CPLFW, CALFW, AgeDB: 1:1 accuracy, and their average,
//! "AVG") and the mixed/low-quality benchmarks (IJB-B and IJB-C TAR at FAR 1e-4, TinyFace rank-1 and
//! rank-5, and their average). Other sets are listed without entering an average. An average over fewer
//! sets than its group names says so (`count` of `of`), since it is then not comparable with a paper's.

/// Which average a row enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    High,
    MixedLow,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Display name (e.g. "CFP-FP", "IJB-C").
    pub name: String,
    /// What the value is ("accuracy", "TAR@FAR=1e-4", "rank-1").
    pub metric: String,
    /// A fraction in [0, 1].
    pub value: f64,
    pub quality: Quality,
}

/// The five high-quality sets, by `.bin` file stem, with their display names.
pub const HIGH_QUALITY: [(&str, &str); 5] =
    [("lfw", "LFW"), ("cfp_fp", "CFP-FP"), ("cplfw", "CPLFW"), ("calfw", "CALFW"), ("agedb_30", "AgeDB")];

/// Rows of the mixed/low-quality group (IJB-B, IJB-C, TinyFace rank-1, TinyFace rank-5).
pub const MIXED_LOW_COUNT: usize = 4;

/// Display name and group of a verification set from its file stem (`agedb` is accepted for AgeDB).
pub fn pair_set(stem: &str) -> (String, Quality) {
    let s = stem.to_ascii_lowercase();
    let s = if s == "agedb" { "agedb_30".to_string() } else { s };
    match HIGH_QUALITY.iter().find(|(k, _)| *k == s) {
        Some((_, name)) => (name.to_string(), Quality::High),
        None => (stem.to_string(), Quality::Other),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Average {
    pub value: f64,
    pub count: usize,
    pub of: usize,
}

fn average(rows: &[Row], q: Quality, of: usize) -> Option<Average> {
    let v: Vec<f64> = rows.iter().filter(|r| r.quality == q).map(|r| r.value).collect();
    (!v.is_empty()).then(|| Average { value: v.iter().sum::<f64>() / v.len() as f64, count: v.len(), of })
}

/// (high-quality average, mixed/low-quality average).
pub fn averages(rows: &[Row]) -> (Option<Average>, Option<Average>) {
    (average(rows, Quality::High, HIGH_QUALITY.len()), average(rows, Quality::MixedLow, MIXED_LOW_COUNT))
}

/// A plain-text table in percent with two decimals, high-quality rows first.
pub fn table(rows: &[Row]) -> String {
    let (hq, lq) = averages(rows);
    let mut out =
        format!("| {:<16} | {:<14} | {:>7} |\n|{:-<18}|{:-<16}|{:->9}|\n", "set", "metric", "%", "", "", "");
    let line =
        |name: &str, metric: &str, v: f64| format!("| {name:<16} | {metric:<14} | {:>7.2} |\n", v * 100.0);
    for (q, avg, label) in
        [(Quality::High, hq, "HQ AVG"), (Quality::MixedLow, lq, "mixed/LQ AVG"), (Quality::Other, None, "")]
    {
        for r in rows.iter().filter(|r| r.quality == q) {
            out += &line(&r.name, &r.metric, r.value);
        }
        if let Some(a) = avg {
            out += &line(&format!("{label} ({}/{})", a.count, a.of), "mean", a.value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, v: f64, q: Quality) -> Row {
        Row { name: name.into(), metric: "m".into(), value: v, quality: q }
    }

    #[test]
    fn groups_and_averages() {
        assert_eq!(pair_set("cfp_fp"), ("CFP-FP".to_string(), Quality::High));
        assert_eq!(pair_set("AgeDB").1, Quality::High);
        assert_eq!(pair_set("vgg2_fp").1, Quality::Other);
        let rows = vec![
            row("LFW", 0.998, Quality::High),
            row("CFP-FP", 0.98, Quality::High),
            row("IJB-C", 0.96, Quality::MixedLow),
            row("TinyFace", 0.70, Quality::MixedLow),
            row("pairs", 0.5, Quality::Other),
        ];
        let (hq, lq) = averages(&rows);
        assert_eq!(hq, Some(Average { value: (0.998 + 0.98) / 2.0, count: 2, of: 5 }));
        assert_eq!(lq.unwrap().count, 2);
        let t = table(&rows);
        assert!(t.contains("HQ AVG (2/5)") && t.contains("98.90") && t.contains("mixed/LQ AVG (2/4)"), "{t}");
        assert!(averages(&rows[4..]).0.is_none());
    }
}
