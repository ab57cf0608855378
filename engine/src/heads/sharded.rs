//! The class-sharded head across ranks (model parallel, as insightface's Partial FC without sampling):
//! each rank holds a contiguous range of the classes and its slice of the batch. The embeddings and labels
//! are all-gathered, every rank runs the classifier on its classes with the batch's target cosines and
//! log-sum-exp merged by all-reduce (`classifier::run_sharded_over`), and each keeps the gradient rows of
//! its own samples. The head's running state moves on every rank from the same global batch, so the ranks'
//! copies stay equal.

use super::classifier::{run_sharded_over, Output, RunOptions, Shard};
use super::Head;
use crate::dist::Communicator;
use crate::tensor::Float;
use crate::{Error, Result};

/// One rank's step: its embeddings `x` `[b, dim]` with their global labels, and its classes
/// `first_class..first_class + C_r` (`weight` `[C_r, dim]`). Returns the loss of the whole batch (the
/// same on every rank), dL/dx and the row reports of this rank's samples, and dL/dW of its classes.
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
    let (lo, hi) = (first_class as i64, (first_class + weight.len() / dim) as i64);
    let local: Vec<i64> = ys
        .iter()
        .flatten()
        .map(|&y| y as i64)
        .map(|y| if (lo..hi).contains(&y) { y - lo } else { -1 })
        .collect();
    let mut out = run_sharded_over(&x_all, dim, &[Shard { weight, labels: &local }], head, opts, comm)?;
    let b = labels.len();
    if !out.grad_x.is_empty() {
        out.grad_x = out.grad_x[first_row * dim..(first_row + b) * dim].to_vec();
    }
    out.rows = out.rows[first_row..first_row + b].to_vec();
    Ok(out)
}
