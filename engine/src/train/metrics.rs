//! The training log: a JSON-lines metrics file (one object per event) and the human progress line, which
//! redraws in place on a terminal and prints plain periodic lines otherwise (CI logs, `| tee`).

use crate::io::atomic::write_atomic;
use crate::{Error, Result};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Appends one JSON object per line; flushed each line so a killed run keeps what it logged.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending (a resumed run continues the same file). A last line cut short (a
    /// full disk while the killed run wrote it) is dropped first, so the file stays one object a line.
    pub fn open(path: &Path) -> Result<MetricsLog> {
        let io = |e: std::io::Error| Error::Io(format!("{}: cannot open metrics log: {e}", path.display()));
        let file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        drop_torn_tail(&file).map_err(io)?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    /// Writes `{"event": event, ...fields}`; non-finite numbers are written as null (JSON has no NaN).
    pub fn log(&mut self, event: &str, fields: &[(&str, f64)]) -> Result<()> {
        let mut m = Map::new();
        m.insert("event".into(), Value::from(event));
        for (k, v) in fields {
            let val = serde_json::Number::from_f64(*v).map(Value::Number).unwrap_or(Value::Null);
            m.insert((*k).into(), val);
        }
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::Io(format!("{}: cannot append: {e}", self.path.display())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Truncates the bytes after the last newline (a line is far shorter than the 64 KiB looked at).
fn drop_torn_tail(file: &File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let from = len.saturating_sub(1 << 16);
    let mut tail = Vec::new();
    let mut f = file;
    f.seek(SeekFrom::Start(from))?;
    f.read_to_end(&mut tail)?;
    if tail.last().is_some_and(|&b| b != b'\n') {
        let keep = tail.iter().rposition(|&b| b == b'\n').map_or(from, |p| from + p as u64 + 1);
        file.set_len(keep)?;
    }
    Ok(())
}

/// Reads every event of a metrics log (for plots, summaries and tests).
pub fn read_log(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("{}: cannot read metrics log: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::Io(format!("{}: line {} is not a JSON object", path.display(), i + 1))),
        })
        .collect()
}

/// Writes a small JSON summary atomically (end of training, evaluation reports).
pub fn write_summary(path: &Path, fields: &[(&str, Value)]) -> Result<()> {
    let m: Map<String, Value> = fields.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
    let text = serde_json::to_string_pretty(&Value::Object(m)).expect("JSON values serialize");
    write_atomic(path, text.as_bytes())
}

/// Images/s and ETA from a moving start, printed every `every` (plain mode) or redrawn (terminal).
pub struct Progress {
    start: Instant,
    last_print: Option<Instant>,
    every: Duration,
    terminal: bool,
    total_steps: u64,
    first_step: u64,
    /// fp16: (loss scale, steps skipped so far), shown at the line's end.
    loss_scale: Option<(f64, u64)>,
}

impl Progress {
    pub fn new(total_steps: u64, first_step: u64, every: Duration) -> Progress {
        Progress {
            start: Instant::now(),
            last_print: None,
            every,
            terminal: std::io::stderr().is_terminal(),
            total_steps,
            first_step,
            loss_scale: None,
        }
    }

    /// fp16 runs: the current loss scale and the number of skipped steps, for the next lines.
    pub fn set_loss_scale(&mut self, scale: f64, skipped: u64) {
        self.loss_scale = Some((scale, skipped));
    }

    /// Formats the line; `None` when it is not time to print yet (plain mode) .
    pub fn line(&mut self, epoch: usize, step: u64, loss: f64, lr: f64, images: u64) -> Option<String> {
        let now = Instant::now();
        if let Some(t) = self.last_print {
            if now - t < self.every && step < self.total_steps {
                return None;
            }
        }
        self.last_print = Some(now);
        let secs = (now - self.start).as_secs_f64().max(1e-9);
        let done = step.saturating_sub(self.first_step).max(1);
        let left = self.total_steps.saturating_sub(step);
        let eta = secs / done as f64 * left as f64;
        let amp = self.loss_scale.map(|(s, k)| format!(" scale {s} skipped {k}")).unwrap_or_default();
        Some(format!(
            "epoch {epoch} step {step}/{} loss {loss:.4} lr {lr:.5} {:.1} img/s eta {}{amp}",
            self.total_steps,
            images as f64 / secs,
            format_duration(eta)
        ))
    }

    /// Prints the line to stderr, in place on a terminal.
    pub fn print(&mut self, epoch: usize, step: u64, loss: f64, lr: f64, images: u64) {
        if let Some(l) = self.line(epoch, step, loss, lr, images) {
            if self.terminal {
                eprint!("\r\x1b[2K{l}");
                if step >= self.total_steps {
                    eprintln!();
                }
            } else {
                eprintln!("{l}");
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_appends_parsable_lines_and_nan_becomes_null() {
        let dir = std::env::temp_dir().join(format!("metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        let _ = std::fs::remove_file(&p);
        let mut log = MetricsLog::open(&p).unwrap();
        log.log("step", &[("loss", 1.5), ("lr", 0.1)]).unwrap();
        log.log("step", &[("loss", f64::NAN)]).unwrap();
        drop(log);
        let mut log = MetricsLog::open(&p).unwrap();
        log.log("eval", &[("acc", 0.9)]).unwrap();
        let ev = read_log(&p).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["loss"].as_f64(), Some(1.5));
        assert!(ev[1]["loss"].is_null());
        assert_eq!(ev[2]["event"].as_str(), Some("eval"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_progress_line_shows_the_loss_scale_once_set() {
        let mut p = Progress::new(10, 0, Duration::ZERO);
        let plain = p.line(0, 1, 2.0, 0.1, 64).unwrap();
        assert!(plain.contains("step 1/10 loss 2.0000") && !plain.contains("scale"), "{plain}");
        p.set_loss_scale(32768.0, 3);
        let amp = p.line(0, 2, 2.0, 0.1, 128).unwrap();
        assert!(amp.ends_with("scale 32768 skipped 3"), "{amp}");
    }

    #[test]
    fn durations_format_as_minutes_or_hours() {
        assert_eq!(format_duration(75.0), "1m15s");
        assert_eq!(format_duration(3725.0), "1h02m");
    }

    #[test]
    fn a_line_cut_short_by_a_killed_run_is_dropped_when_the_log_reopens() {
        let dir = std::env::temp_dir().join(format!("metrics-torn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        std::fs::write(&p, "{\"event\":\"step\",\"step\":1}\n{\"event\":\"st").unwrap();
        let mut log = MetricsLog::open(&p).unwrap();
        log.log("step", &[("step", 2.0)]).unwrap();
        let steps: Vec<f64> = read_log(&p).unwrap().iter().map(|e| e["step"].as_f64().unwrap()).collect();
        assert_eq!(steps, [1.0, 2.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
