//! Markdown reports of the checks and benchmarks, written atomically.

use crate::compare::Compared;
use std::path::Path;

/// Writes a report (its folder created) under a temporary name, then renames it into place.
pub fn save_markdown(path: &Path, text: &str) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    engine::io::atomic::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// One console line per check.
pub fn print_check(c: &Compared) {
    println!(
        "{:<44} {:>11.3e}  (threshold {:.0e}, {}) {}",
        c.name,
        c.err,
        c.tol,
        c.reference,
        if c.ok() { "ok" } else { "FAIL" }
    );
}

/// The table of checks, with the errors of sections that stopped.
pub fn checks_table(device: &str, checks: &[Compared], errors: &[String], footer: &str) -> String {
    let mut s = String::new();
    s.push_str("# engine-train check\n\n");
    s.push_str(&format!("Device: {device}\n\n"));
    s.push_str("Norm-wise relative error ||device - ref|| / ||ref|| on random inputs.\n\n");
    s.push_str("| check | rel. error | threshold | reference | result |\n|---|---|---|---|---|\n");
    for c in checks {
        s.push_str(&format!(
            "| {} | {:.3e} | {:.0e} | {} | {} |\n",
            c.name,
            c.err,
            c.tol,
            c.reference,
            if c.ok() { "pass" } else { "FAIL" }
        ));
    }
    for e in errors {
        s.push_str(&format!("\nERROR: {e}\n"));
    }
    s.push_str(footer);
    s
}
