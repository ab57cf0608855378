//! The class-sharded head across ranks (model parallel, as insightface's Partial FC without sampling):
//! each rank holds a contiguous range of the classes and its slice of the batch. The embeddings and labels
//! are all-gathered, every rank runs the classifier on its classes with the batch's target cosines and
//! log-sum-exp merged by all-reduce (`classifier::run_sharded_over`), and each keeps the gradient rows of
//! its own samples. The head's running state moves on every rank from the same global batch, so the ranks'
//! copies stay equal.

use super::classifier::{run_sharded_over, Output, RunOptions, Shard};
use super::Head;
use crate::dist::Communicator;
use crate::rng::Rng;
use crate::tensor::Float;
use crate::{Error, Result};

/// Which of a rank's class rows take part in a step, from the whole job's labels: sorted row indices
/// into its shard, every row whose class is some sample's label among them.
pub type Pick<'a> = &'a dyn Fn(&[i64]) -> Vec<usize>;

/// One rank's step: its embeddings `x` `[b, dim]` with their global labels, and its classes
/// `first_class..first_class + C_r` (`weight` `[C_r, dim]`). Returns the loss of the whole batch (the
/// same on every rank), dL/dx and the row reports of this rank's samples, and dL/dW of its classes.
///
/// `pick` (insightface's Partial FC): this rank's classes cut to the rows it chooses from the job's labels
/// (`None`: all of them). The softmax then runs over the chosen classes of every rank; dL/dW is zero on
/// the rows left out, so an optimizer still decays them and moves their momentum.
#[allow(clippy::too_many_arguments)]
pub fn run_rank<T: Float>(
    comm: &dyn Communicator,
    x: &[T],
    labels: &[i64],
    weight: &[T],
    first_class: usize,
    dim: usize,
    head: &mut dyn Head,
    opts: &RunOptions,
    pick: Option<Pick<'_>>,
) -> Result<Output<T>> {
    let rank = comm.rank();
    if dim == 0 || !x.len().is_multiple_of(dim) || x.len() / dim != labels.len() {
        return Err(Error::Shape(format!(
            "rank {rank}: {} embedding values and {} labels for rows of {dim}",
            x.len(),
            labels.len()
        )));
    }
    if weight.is_empty() || !weight.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!(
            "rank {rank}: class weight holds {} values, not [C, {dim}]",
            weight.len()
        )));
    }
    let xs = comm.all_gather(&x.iter().map(|v| v.to_f64()).collect::<Vec<_>>())?;
    let ys = comm.all_gather(&labels.iter().map(|&y| y as f64).collect::<Vec<_>>())?;
    let first_row: usize = ys[..rank].iter().map(Vec::len).sum();
    let x_all: Vec<T> = xs.iter().flatten().map(|&v| T::from_f64(v)).collect();
    let all_labels: Vec<i64> = ys.iter().flatten().map(|&y| y as i64).collect();
    let count = weight.len() / dim;
    let (lo, hi) = (first_class as i64, (first_class + count) as i64);
    let rows: Option<Vec<usize>> = pick.map(|p| p(&all_labels));
    if let Some(r) = &rows {
        if r.windows(2).any(|w| w[0] >= w[1]) || r.last().is_some_and(|&l| l >= count) {
            return Err(Error::Invalid(format!(
                "rank {rank}: the chosen class rows are not sorted rows of its {count}"
            )));
        }
    }
    // A label's row among the chosen ones (-1: another rank's class).
    let local = |y: i64| -> Result<i64> {
        if !(lo..hi).contains(&y) {
            return Ok(-1);
        }
        let row = (y - lo) as usize;
        match &rows {
            None => Ok(row as i64),
            Some(r) => r.binary_search(&row).map(|i| i as i64).map_err(|_| {
                Error::Invalid(format!(
                    "rank {rank}: class {y}, a sample's label, was left out of the sampled classes"
                ))
            }),
        }
    };
    let local: Vec<i64> = all_labels.iter().map(|&y| local(y)).collect::<Result<_>>()?;
    let chosen: Vec<T>;
    let w = match &rows {
        None => weight,
        Some(r) => {
            chosen = r.iter().flat_map(|&i| weight[i * dim..(i + 1) * dim].iter().copied()).collect();
            &chosen
        }
    };
    let mut out = run_sharded_over(&x_all, dim, &[Shard { weight: w, labels: &local }], head, opts, comm)?;
    let b = labels.len();
    if !out.grad_x.is_empty() {
        out.grad_x = out.grad_x[first_row * dim..(first_row + b) * dim].to_vec();
    }
    if let (Some(r), false) = (&rows, out.grad_w.is_empty()) {
        let mut full = vec![T::ZERO; count * dim];
        for (k, &i) in r.iter().enumerate() {
            full[i * dim..(i + 1) * dim].copy_from_slice(&out.grad_w[k * dim..(k + 1) * dim]);
        }
        out.grad_w = full;
    }
    out.rows = out.rows[first_row..first_row + b].to_vec();
    Ok(out)
}

/// insightface's Partial FC choice for a shard of `count` classes from `first`: every class that is one
/// of the job's `labels`, plus classes drawn at random (by `rng`) up to `rate * count` (rounded down) in
/// all; just the positives when they are more. Sorted row indices.
pub fn partial_fc_rows(labels: &[i64], first: usize, count: usize, rate: f64, rng: &mut Rng) -> Vec<usize> {
    let (lo, hi) = (first as i64, (first + count) as i64);
    let mut positive: Vec<usize> =
        labels.iter().filter(|y| (lo..hi).contains(y)).map(|&y| (y - lo) as usize).collect();
    positive.sort_unstable();
    positive.dedup();
    let want = (rate * count as f64) as usize;
    if want <= positive.len() {
        return positive;
    }
    // A random score per class, the positives' above every draw: the top `want` scores.
    let mut score: Vec<(f64, usize)> = (0..count).map(|i| (rng.uniform(), i)).collect();
    for &p in &positive {
        score[p].0 = 2.0;
    }
    score.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut rows: Vec<usize> = score[..want].iter().map(|&(_, i)| i).collect();
    rows.sort_unstable();
    rows
}
