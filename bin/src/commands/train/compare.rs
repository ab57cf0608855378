//! `train --head A --compare-head B`: two heads trained on the same data and drawn side by side (MagFace
//! Fig. 3, QCFace's toy figures: magnitude encodes quality under MagFace and QCFace, not under ArcFace).
//!
//! The two runs go one after the other in this process, each as an ordinary run of its head into
//! OUTPUT/<head>/ (checkpoint, metrics, its own hypersphere/step-N/). One after the other rather than
//! interleaved step by step: each run is then exactly the single-head run (its session, loader and
//! trainer untouched), so the same seed gives both the same batches in the same order (the loader's
//! order is fixed by (seed, epoch)), and only one model is in memory at a time. Each evaluation's
//! hypersphere is kept on a board shared by the two runs; the second run's evaluation at step N finds
//! the first's and writes OUTPUT/hypersphere/compare-step-N.svg (the two panels on the same axes and
//! colour scale, titled by head) and its data as .csv.

use super::Args;
use crate::commands::head_plots::write_text;
use crate::commands::CmdResult;
use engine::eval::svg::{write_svg, ScatterPlot};
use engine::heads::{self, HeadParams};
use engine::{Error, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Each evaluated step's hyperspheres, by run.
type Board = BTreeMap<u64, [Option<ScatterPlot>; 2]>;

/// One run's place in the comparison.
#[derive(Clone)]
pub struct Side {
    board: Arc<Mutex<Board>>,
    /// 0: --head, 1: --compare-head.
    me: usize,
    heads: [String; 2],
    /// OUTPUT/hypersphere.
    dir: PathBuf,
}

impl Side {
    /// Keeps this run's plot of `step`; with the other run's of the same step, draws the two.
    pub fn record(&self, step: u64, plot: &ScatterPlot) -> Result<()> {
        let mut board = self.board.lock().map_err(|_| Error::Invalid("the comparison board broke".into()))?;
        let slot = board.entry(step).or_default();
        slot[self.me] =
            Some(ScatterPlot { title: format!("{}: {}", self.heads[self.me], plot.title), ..plot.clone() });
        if let [Some(a), Some(b)] = slot {
            write_pair(&self.dir, step, &self.heads, [a, b])?;
        }
        Ok(())
    }
}

/// compare-step-N.svg and compare-step-N.csv: every point, class-centre ray end and ring of each panel.
fn write_pair(dir: &Path, step: u64, heads: &[String; 2], panels: [&ScatterPlot; 2]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: cannot create: {e}", dir.display())))?;
    let mut csv = String::from("head,kind,x,y,value\n");
    for (head, p) in heads.iter().zip(panels) {
        for (k, &(x, y)) in p.points.iter().enumerate() {
            let v = p.values.get(k).copied().unwrap_or(f64::NAN);
            let _ = writeln!(csv, "{head},point,{x},{y},{v}");
        }
        for &(x, y) in &p.rays {
            let _ = writeln!(csv, "{head},centre,{x},{y},");
        }
        for &(r, v) in &p.circles {
            let _ = writeln!(csv, "{head},ring,{r},0,{v}");
        }
    }
    write_text(&dir.join(format!("compare-step-{step}.csv")), &csv)?;
    let svg = ScatterPlot::side_by_side(&[panels[0].clone(), panels[1].clone()])?;
    write_svg(&dir.join(format!("compare-step-{step}.svg")), &svg)
}

/// Checks the comparison's flags, then trains --head and --compare-head one after the other through
/// `train` (the ordinary run of one head).
pub fn run(a: &Args, train: impl Fn(Args) -> CmdResult) -> CmdResult {
    let Some(second) = a.figures.compare_head.clone() else { return train(a.clone()) };
    let first = a
        .head
        .clone()
        .ok_or_else(|| Error::Invalid("--compare-head needs --head: the head it is compared with".into()))?;
    if first == second {
        return Err(Error::Invalid(format!("--compare-head {second} is --head itself")).into());
    }
    heads::from_name(&second, &HeadParams::default())
        .map_err(|e| Error::Invalid(format!("--compare-head {second}: {e}")))?;
    if !matches!(a.embedding_size, Some(2 | 3)) {
        return Err(Error::Invalid(
            "--compare-head draws the two hyperspheres: give --embedding-size 2 or 3".into(),
        )
        .into());
    }
    if a.data.is_some() && a.eval.is_empty() {
        return Err(Error::Invalid(
            "--compare-head draws the first evaluation set's embeddings: give --eval (the demo set has its own pairs)"
                .into(),
        )
        .into());
    }
    if a.resume {
        return Err(Error::Invalid(
            "--compare-head cannot --resume: its two runs start together (start it again into a new --output)"
                .into(),
        )
        .into());
    }
    let root = a.output.clone().unwrap_or_else(|| PathBuf::from("runs").join(super::utc_stamp()));
    let heads = [first, second];
    let board = Arc::new(Mutex::new(Board::new()));
    for (me, head) in heads.iter().enumerate() {
        let mut run = a.clone();
        run.head = Some(head.clone());
        if me == 1 {
            // As `head --compare`: the compared head with its own defaults (--head's flags are its own).
            run.head_flags = Default::default();
        }
        run.output = Some(root.join(head));
        run.figures.compare_head = None;
        let dir = root.join("hypersphere");
        run.figures.side = Some(Side { board: board.clone(), me, heads: heads.clone(), dir });
        eprintln!("compare: run {} of 2, head {head}, into {}", me + 1, root.join(head).display());
        train(run)?;
    }
    eprintln!(
        "compare: {} and {} side by side in {}",
        heads[0],
        heads[1],
        root.join("hypersphere").display()
    );
    Ok(())
}
