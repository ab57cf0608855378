//! The class-sharded head across ranks (model parallel, as insightface's Partial FC without sampling):
//! each rank holds a contiguous range of the classes and its slice of the batch. The embeddings and labels
//! are all-gathered, every rank runs the classifier on its classes with the batch's target cosines and
//! log-sum-exp merged by all-reduce (`classifier::run_sharded_over`), and each keeps the gradient rows of
//! its own samples. The head's running state moves on every rank from the same global batch, so the ranks'
//! copies stay equal.

use super::classifier::{run_sharded_over, Output, RunOptions, Shard};
use super::Head;
use crate::backend::{cuda, MarginHeadCall};
use crate::dist::Communicator;
use crate::rng::Rng;
use crate::tensor::{DType, Device, Float, Tensor};
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
    let job = RankBatch::gather(comm, x, labels, weight.len(), first_class, dim, pick)?;
    let chosen: Vec<T>;
    let w = match &job.rows {
        None => weight,
        Some(r) => {
            chosen = r.iter().flat_map(|&i| weight[i * dim..(i + 1) * dim].iter().copied()).collect();
            &chosen
        }
    };
    let shard = Shard { weight: w, labels: &job.local };
    let mut out = run_sharded_over(&job.x_all, dim, &[shard], head, opts, comm)?;
    let (first_row, b) = (job.first_row, labels.len());
    if !out.grad_x.is_empty() {
        out.grad_x = out.grad_x[first_row * dim..(first_row + b) * dim].to_vec();
    }
    if let (Some(r), false) = (&job.rows, out.grad_w.is_empty()) {
        let mut full = vec![T::ZERO; job.count * dim];
        for (k, &i) in r.iter().enumerate() {
            full[i * dim..(i + 1) * dim].copy_from_slice(&out.grad_w[k * dim..(k + 1) * dim]);
        }
        out.grad_w = full;
    }
    out.rows = out.rows[first_row..first_row + b].to_vec();
    Ok(out)
}

/// The job's batch as one rank of a sharded head sees it, whatever device runs its classifier: the
/// embeddings and labels of every rank gathered (through the host communicator: B·world·dim values),
/// each label mapped to its row among this rank's chosen classes.
struct RankBatch<T> {
    /// Every rank's embeddings `[B_job, dim]`, in rank order.
    x_all: Vec<T>,
    /// Each job row's label as a row of this rank's chosen classes; -1 where another rank owns it.
    local: Vec<i64>,
    /// Partial FC's chosen rows of this rank's classes (sorted); `None`: all of them.
    rows: Option<Vec<usize>>,
    /// This rank's first row in the job's batch.
    first_row: usize,
    /// This rank's classes (C_r).
    count: usize,
}

impl<T: Float> RankBatch<T> {
    fn gather(
        comm: &dyn Communicator,
        x: &[T],
        labels: &[i64],
        weight_len: usize,
        first_class: usize,
        dim: usize,
        pick: Option<Pick<'_>>,
    ) -> Result<RankBatch<T>> {
        let rank = comm.rank();
        if dim == 0 || !x.len().is_multiple_of(dim) || x.len() / dim != labels.len() {
            return Err(Error::Shape(format!(
                "rank {rank}: {} embedding values and {} labels for rows of {dim}",
                x.len(),
                labels.len()
            )));
        }
        if weight_len == 0 || !weight_len.is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "rank {rank}: class weight holds {weight_len} values, not [C, {dim}]"
            )));
        }
        let xs = comm.all_gather(&x.iter().map(|v| v.to_f64()).collect::<Vec<_>>())?;
        let ys = comm.all_gather(&labels.iter().map(|&y| y as f64).collect::<Vec<_>>())?;
        let first_row: usize = ys[..rank].iter().map(Vec::len).sum();
        let x_all: Vec<T> = xs.iter().flatten().map(|&v| T::from_f64(v)).collect();
        let all_labels: Vec<i64> = ys.iter().flatten().map(|&y| y as i64).collect();
        let count = weight_len / dim;
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
        Ok(RankBatch { x_all, local, rows, first_row, count })
    }
}

/// `run_rank` with the classifier on a CUDA device (f32 tensors there; the whole job's loss, dL/dx of
/// this rank's embeddings and dL/dW of its classes, all on the device). The batch is gathered as on the
/// CPU (`RankBatch`, host collectives); the chunked classifier runs this rank's chosen classes, merging
/// its per-row values over the ranks in its host round trip (`backend::cuda::sharded_margin_head`).
/// Partial FC's chosen rows are taken, and their gradients put back among zeros, on the device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_rank_cuda(
    comm: &dyn Communicator,
    x: &Tensor,
    labels: &[i64],
    weight: &Tensor,
    first_class: usize,
    head: &mut dyn Head,
    grad: bool,
    autocast: Option<DType>,
    pick: Option<Pick<'_>>,
) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
    let Device::Cuda(ctx) = x.device() else {
        return Err(Error::Device(format!("the sharded head on CUDA got embeddings on {:?}", x.device())));
    };
    let (b, dim) = x.shape().matrix("sharded head (embeddings)")?;
    let job = RankBatch::gather(comm, &x.to_vec::<f32>()?, labels, weight.numel(), first_class, dim, pick)?;
    let be = x.backend();
    let n = job.local.len();
    let x_all = Tensor::from_vec(job.x_all, [n, dim])?.to_device(&x.device())?;
    let w = match &job.rows {
        None => weight.clone(),
        Some(rows) => cuda::take_rows(&ctx, weight, rows)?,
    };
    let call = MarginHeadCall {
        x: &x_all,
        w: &w,
        labels: &job.local,
        head,
        grad,
        autocast,
        max_block_elems: MarginHeadCall::DEFAULT_BLOCK_ELEMS,
    };
    let out = cuda::sharded_margin_head(&ctx, call, comm)?;
    let Some((dx, dw)) = out.grads else { return Ok((out.loss, None)) };
    let dx = be.slice_rows(&dx, job.first_row, job.first_row + b)?;
    let dw = match &job.rows {
        None => dw,
        Some(rows) => cuda::put_rows(&ctx, &dw, rows, job.count)?,
    };
    Ok((out.loss, Some((dx, dw))))
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
