//! The class-sharded head across ranks (model parallel, as insightface's Partial FC without sampling):
//! each rank holds a contiguous range of the classes and its slice of the batch. The embeddings and labels
//! are all-gathered, every rank runs the classifier on its classes with the batch's target cosines and
//! log-sum-exp merged over the ranks (`classifier::run_sharded_over`, `merge_targets`, `merge_lse`), and
//! the embedding gradients, summed over the ranks, go back to the rank of each row. Every rank sees the
//! same job's batch, so the head's running state moves alike on every rank: from rank 0's rows, or as
//! the mean of each rank's move (`RunningState`, as whole heads under data parallelism), or from the
//! whole batch.

use super::classifier::{run_sharded_over, Output, RunOptions, Shard};
use super::maps::NonTarget;
use super::{BatchView, Head, HeadState, Needs, RowInput, RowPlan, RunningState, SampleWeight};
use crate::backend::cuda::{self, Ranks};
use crate::backend::MarginHeadCall;
use crate::dist::nccl::DeviceGroup;
use crate::dist::Communicator;
use crate::rng::Rng;
use crate::tensor::{DType, Device, Float, Tensor};
use crate::{Error, Result};
use std::ops::Range;

/// Which of a rank's class rows take part in a step, from the whole job's labels: sorted row indices
/// into its shard, every row whose class is some sample's label among them.
pub type Pick<'a> = &'a dyn Fn(&[i64]) -> Vec<usize>;

/// Who a rank of the sharded head steps with (`heads::sharded_loss`).
#[derive(Clone, Copy)]
pub struct RankGroup<'a> {
    /// The host's collectives: the labels, and everything on the CPU or without `gpus`.
    pub comm: &'a dyn Communicator,
    /// On GPUs, the job's NCCL group: the embeddings, the per-row merges, the embedding gradients.
    pub gpus: Option<&'a DeviceGroup>,
    /// How the head's running state moves (`RunningState`); `None`: from the job's whole batch, as one
    /// head over it would.
    pub running_state: Option<RunningState>,
}

/// One rank's step: its embeddings `x` `[b, dim]` with their global labels, and its classes
/// `first_class..first_class + C_r` (`weight` `[C_r, dim]`). Returns the loss of the whole batch (the
/// same on every rank), dL/dx and the row reports of this rank's samples, and dL/dW of its classes.
///
/// `pick` (insightface's Partial FC): this rank's classes cut to the rows it chooses from the job's labels
/// (`None`: all of them). The softmax then runs over the chosen classes of every rank; dL/dW is zero on
/// the rows left out, so an optimizer still decays them and moves their momentum.
///
/// `running_state`: how the head's running state moves (`ObserveByRank`); `None`: from the job's whole
/// batch.
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
    running_state: Option<RunningState>,
) -> Result<Output<T>> {
    let job = RankBatch::gather(comm, Some(x), labels, weight.len(), first_class, dim, pick)?;
    let head = &mut ObserveByRank { head, rows: job.all_rows(), how: running_state };
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
    let own = job.own_rows(comm.rank());
    let (first_row, b) = (own.start, own.len());
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
/// labels of every rank gathered through the host communicator, with the embeddings when asked
/// (B·world·dim values; a GPU rank with NCCL gathers them on the device instead), each label mapped to
/// its row among this rank's chosen classes.
struct RankBatch<T> {
    /// Every rank's embeddings `[B_job, dim]`, in rank order (empty when not gathered here).
    x_all: Vec<T>,
    /// Each job row's label as a row of this rank's chosen classes; -1 where another rank owns it.
    local: Vec<i64>,
    /// Partial FC's chosen rows of this rank's classes (sorted); `None`: all of them.
    rows: Option<Vec<usize>>,
    /// Each rank's rows of the job's batch.
    counts: Vec<usize>,
    /// This rank's classes (C_r).
    count: usize,
}

impl<T: Float> RankBatch<T> {
    /// One host collective: each rank's labels, then its embeddings `x` when given.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        comm: &dyn Communicator,
        x: Option<&[T]>,
        labels: &[i64],
        weight_len: usize,
        first_class: usize,
        dim: usize,
        pick: Option<Pick<'_>>,
    ) -> Result<RankBatch<T>> {
        let rank = comm.rank();
        if dim == 0 || x.is_some_and(|x| x.len() != labels.len() * dim) {
            return Err(Error::Shape(format!(
                "rank {rank}: {} embedding values and {} labels for rows of {dim}",
                x.map_or(0, <[T]>::len),
                labels.len()
            )));
        }
        if weight_len == 0 || !weight_len.is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "rank {rank}: class weight holds {weight_len} values, not [C, {dim}]"
            )));
        }
        let mut part: Vec<f64> = labels.iter().map(|&y| y as f64).collect();
        part.extend(x.unwrap_or_default().iter().map(|v| v.to_f64()));
        let parts = comm.all_gather(&part)?;
        // Each rank's part is its b labels and, when gathered, its b·dim embedding values.
        let per_row = if x.is_some() { 1 + dim } else { 1 };
        if let Some(r) = parts.iter().position(|p| !p.len().is_multiple_of(per_row)) {
            return Err(Error::Shape(format!(
                "rank {r} gave {} values, not rows of {per_row}",
                parts[r].len()
            )));
        }
        let counts: Vec<usize> = parts.iter().map(|p| p.len() / per_row).collect();
        let all_labels: Vec<i64> =
            parts.iter().zip(&counts).flat_map(|(p, &n)| p[..n].iter().map(|&y| y as i64)).collect();
        let x_all: Vec<T> =
            parts.iter().zip(&counts).flat_map(|(p, &n)| p[n..].iter().map(|&v| T::from_f64(v))).collect();
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
        Ok(RankBatch { x_all, local, rows, counts, count })
    }

    /// Each rank's rows of the job's batch.
    fn all_rows(&self) -> Vec<Range<usize>> {
        let mut first = 0;
        self.counts
            .iter()
            .map(|&n| {
                first += n;
                first - n..first
            })
            .collect()
    }

    /// This rank's rows of the job's batch.
    fn own_rows(&self, rank: usize) -> Range<usize> {
        self.all_rows()[rank].clone()
    }
}

/// `run_rank` with the classifier on a CUDA device (f32 tensors there; the whole job's loss, dL/dx of
/// this rank's embeddings and dL/dW of its classes, all on the device). The labels are gathered as on
/// the CPU (`RankBatch`, the host's collective). With the job's device group (`gpus`) and as many rows
/// on every rank, the embeddings are all-gathered, the per-row values merged and the embedding
/// gradients reduce-scattered by NCCL; otherwise all of it goes through the host. The chunked
/// classifier runs this rank's chosen classes (`backend::cuda::sharded_margin_head`); Partial FC's chosen
/// rows are taken, and their gradients put back among zeros, on the device.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_rank_cuda(
    group: RankGroup<'_>,
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
    let RankGroup { comm, gpus, running_state } = group;
    let (_, dim) = x.shape().matrix("sharded head (embeddings)")?;
    let host_x = if gpus.is_none() { Some(x.to_vec::<f32>()?) } else { None };
    let mut job = RankBatch::gather(comm, host_x.as_deref(), labels, weight.numel(), first_class, dim, pick)?;
    let n = job.local.len();
    let even = job.counts.iter().all(|&c| c == labels.len());
    let ranks = match gpus {
        Some(g) if even => Ranks::Gpus(g),
        _ => Ranks::Host(comm),
    };
    let x_all = match (ranks, gpus) {
        (Ranks::Gpus(g), _) => g.all_gather(x)?.reshape([n, dim])?,
        (host @ Ranks::Host(_), Some(_)) => {
            // Ranks of unequal batches, which NCCL's collectives cannot take: through the host.
            let all: Vec<f32> = host.gather(x)?.iter().flatten().map(|&v| v as f32).collect();
            Tensor::from_vec(all, [n, dim])?.to_device(&x.device())?
        }
        (Ranks::Host(_), None) => {
            Tensor::from_vec(std::mem::take(&mut job.x_all), [n, dim])?.to_device(&x.device())?
        }
    };
    let w = match &job.rows {
        None => weight.clone(),
        Some(rows) => cuda::take_rows(&ctx, weight, rows)?,
    };
    let head = &mut ObserveByRank { head, rows: job.all_rows(), how: running_state };
    let call = MarginHeadCall {
        x: &x_all,
        w: &w,
        labels: &job.local,
        head,
        grad,
        autocast,
        max_block_elems: MarginHeadCall::DEFAULT_BLOCK_ELEMS,
    };
    let out = cuda::sharded_margin_head(&ctx, call, ranks, job.own_rows(comm.rank()))?;
    let Some((dx, dw)) = out.grads else { return Ok((out.loss, None)) };
    let dw = match &job.rows {
        None => dw,
        Some(rows) => cuda::put_rows(&ctx, &dw, rows, job.count)?,
    };
    Ok((out.loss, Some((dx, dw))))
}

/// The head of a sharded rank, its running state moved as under data parallelism with a whole head on
/// each rank (`RunningState`): the head sees the job's batch, but its `observe` takes rank 0's rows alone
/// (`Broadcast`: where rank 0's copy, moved by its own batch, then replaces the others), or each rank's
/// rows from the same state and then the mean of the results (`Reduce`), so every rank's copy ends where
/// the whole heads' copies end after `Trainer::share_running_state`. (Within the step the whole heads
/// use each rank's own update for its rows, this one rank 0's or the mean for every row: a difference
/// of one running-average step, which the state's trajectory does not keep.)
/// `how` `None`: the head as it is, moved by the job's whole batch.
struct ObserveByRank<'h> {
    head: &'h mut dyn Head,
    rows: Vec<Range<usize>>,
    how: Option<RunningState>,
}

impl ObserveByRank<'_> {
    fn part<'v>(batch: &BatchView<'v>, r: &Range<usize>) -> Result<BatchView<'v>> {
        match (batch.c_y.get(r.clone()), batch.norms.get(r.clone())) {
            (Some(c_y), Some(norms)) => Ok(BatchView { c_y, norms }),
            _ => Err(Error::Shape(format!("a rank's rows {r:?} of a batch of {}", batch.c_y.len()))),
        }
    }
}

impl Head for ObserveByRank<'_> {
    fn name(&self) -> &'static str {
        self.head.name()
    }
    fn needs(&self) -> Needs {
        self.head.needs()
    }
    fn scale(&self) -> f64 {
        self.head.scale()
    }
    fn clamp_eps(&self) -> f64 {
        self.head.clamp_eps()
    }
    fn min_batch(&self) -> usize {
        self.head.min_batch()
    }
    fn set_training(&mut self, on: bool) {
        self.head.set_training(on)
    }
    fn observe(&mut self, batch: &BatchView) -> Result<()> {
        let first = self.rows.first().ok_or_else(|| Error::Invalid("a sharded head of no ranks".into()))?;
        match self.how {
            None => return self.head.observe(batch),
            Some(RunningState::Broadcast) => return self.head.observe(&Self::part(batch, first)?),
            Some(RunningState::Reduce) => {}
        }
        // Each rank's move from the same state, summed in rank order and divided, as the whole heads'
        // all-reduce does.
        let prior = self.head.state();
        let mut sum: Option<HeadState> = None;
        for r in &self.rows {
            self.head.load_state(&prior)?;
            self.head.observe(&Self::part(batch, r)?)?;
            let moved = self.head.state();
            sum = Some(match sum {
                None => moved,
                Some(mut acc) => {
                    for ((_, a), (_, v)) in acc.values.iter_mut().zip(&moved.values) {
                        *a += v;
                    }
                    acc
                }
            });
        }
        let mut mean = sum.unwrap_or(prior);
        let w = self.rows.len() as f64;
        mean.values.iter_mut().for_each(|(_, v)| *v /= w);
        self.head.load_state(&mean)
    }
    fn quality(&self, batch: &BatchView) -> Vec<f64> {
        self.head.quality(batch)
    }
    fn row(&self, r: &RowInput) -> RowPlan {
        self.head.row(r)
    }
    fn non_target(&self) -> NonTarget {
        self.head.non_target()
    }
    fn weight(&self, log_p: f64) -> SampleWeight {
        self.head.weight(log_p)
    }
    fn extra(&self, norm: f64, p_d: f64) -> (f64, f64) {
        self.head.extra(norm, p_d)
    }
    fn state(&self) -> HeadState {
        self.head.state()
    }
    fn load_state(&mut self, state: &HeadState) -> Result<()> {
        self.head.load_state(state)
    }
    fn warnings(&self) -> Vec<String> {
        self.head.warnings()
    }
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
    // A random score per class, the positives' above every draw: the top `want` scores, selected in
    // linear time (a shard of WebFace42M's classes holds 257,000 of them, every step).
    let mut score: Vec<(f64, usize)> = (0..count).map(|i| (rng.uniform(), i)).collect();
    for &p in &positive {
        score[p].0 = 2.0;
    }
    if want < count {
        score.select_nth_unstable_by(want, |a, b| b.0.total_cmp(&a.0));
    }
    let mut rows: Vec<usize> = score[..want].iter().map(|&(_, i)| i).collect();
    rows.sort_unstable();
    rows
}
