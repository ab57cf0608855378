//! Dispatch of `eval`'s benchmark protocols (IJB-B/C, TinyFace), with a model or on `--features`.

use super::eval_flags::BenchmarkFlags;
use super::eval_ijb::Model;
use engine::Result;
use serde_json::Value;
use std::path::Path;

pub fn run(
    f: &BenchmarkFlags,
    model: Model,
    out: Option<&Path>,
    report: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let mut model = model;
    if let Some(dir) = &f.ijb {
        let m = model.as_mut().map(|(m, p)| (*m, &mut **p));
        super::eval_ijb::run(f, dir, m, out, report)?;
    }
    if let Some(dir) = &f.tinyface {
        let m = model.as_mut().map(|(m, p)| (*m, &mut **p));
        super::eval_tinyface::run(f, dir, m, out, report)?;
    }
    Ok(())
}
