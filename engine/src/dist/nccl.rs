//! Data-parallel collectives on the GPUs: one NCCL communicator per rank, made over the job's TCP
//! rendezvous (rank 0's unique id travels on it), and a watchdog that turns a collective that never
//! finishes into a job failure instead of a hang.
//!
//! NCCL's collectives are queued on the compute stream and return at once; a peer that never arrives
//! (dead, stopped, out of memory) leaves them waiting on the device forever, and the host thread blocks
//! at its next synchronisation. Two things end such a wait: the TCP group hearing of the failure (its
//! heartbeats; [`TcpGroup::on_failure`] runs `abort` here), and the watchdog seeing a collective still
//! unfinished after the collective timeout (it fails the job through the TCP group, which tells every
//! rank). Either way the communicator is aborted, the stream drains, and the rank's next host-side
//! collective returns the failure naming the rank at fault.

use super::{Communicator, TcpGroup};
pub use crate::backend::cuda::nccl::NcclOp;
use crate::backend::cuda::nccl::{self, Fence, NcclComm};
use crate::backend::cuda::CudaContext;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watchdog looks at the oldest unfinished collective.
const WATCH_EVERY: Duration = Duration::from_millis(100);

pub struct DeviceGroup {
    comm: Arc<NcclComm>,
    version: String,
    /// Fences of queued collectives, to the watchdog; dropping it ends the watchdog.
    watch: Mutex<mpsc::Sender<Pending>>,
    /// The job's rendezvous, whose failure aborts the communicator.
    control: Arc<TcpGroup>,
}

struct Pending {
    fence: Fence,
    since: Instant,
    what: &'static str,
}

impl DeviceGroup {
    /// Every rank of `control` joins one NCCL communicator on its device `ctx`; a collective still
    /// unfinished after `timeout` fails the job.
    pub fn open(ctx: &Arc<CudaContext>, control: Arc<TcpGroup>, timeout: Duration) -> Result<DeviceGroup> {
        let rank = control.rank();
        // Every rank learns whether every rank has NCCL before any waits for the others in it.
        let loaded = nccl::version();
        let flags = control.all_gather(&[f64::from(u8::from(loaded.is_ok()))])?;
        let version = match (loaded, flags.iter().position(|f| f.first() != Some(&1.0))) {
            (Err(e), _) => return Err(e),
            (Ok(_), Some(r)) => return Err(Error::Device(format!("rank {r} could not load NCCL"))),
            (Ok(v), None) => v,
        };
        let mut id = match rank {
            0 => nccl::unique_id()?.map(f64::from).to_vec(),
            _ => vec![0.0; nccl::ID_BYTES],
        };
        control.broadcast(&mut id, 0)?;
        let id: [u8; nccl::ID_BYTES] = std::array::from_fn(|i| id[i] as u8);
        let comm = Arc::new(join(ctx, &control, id, timeout)?);
        let weak = Arc::downgrade(&comm);
        control.on_failure(Box::new(move |_| {
            if let Some(c) = weak.upgrade() {
                c.abort();
            }
        }));
        let (tx, rx) = mpsc::channel();
        let (c, ctl) = (comm.clone(), control.clone());
        std::thread::Builder::new()
            .name("nccl-watchdog".into())
            .spawn(move || watchdog(c, ctl, rx, timeout))
            .map_err(|e| Error::Io(format!("rank {rank}: cannot start the NCCL watchdog: {e}")))?;
        Ok(DeviceGroup { comm, version, watch: Mutex::new(tx), control })
    }

    /// The NCCL version in use ("2.28.3").
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Each tensor combined over the ranks by `op` (the mean of a whole head's gradients, the sum of a
    /// class-sharded head's backbone gradients, which are each rank's part of the job's loss), element by
    /// element, in place: one group of all-reduces on the compute stream; returns once they are queued.
    pub fn all_reduce(&self, tensors: Vec<Tensor>, op: NcclOp) -> Result<Vec<Tensor>> {
        let out = self.comm.all_reduce(tensors, op)?;
        self.watch("gradient all-reduce")?;
        Ok(out)
    }

    /// Every rank's `t` (one shape everywhere) stacked in rank order, `[world * n]` elements (the
    /// sharded head's embeddings and per-row values): queued on the compute stream.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let out = self.comm.all_gather(t)?;
        self.watch("all-gather")?;
        Ok(out)
    }

    /// Every rank's `t` (`[world * n]` elements) summed, this rank keeping its `n` (the sharded head's
    /// embedding gradients, each rank's part for every row, back to the rank of the row): queued on
    /// the compute stream.
    pub fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        let out = self.comm.reduce_scatter(t, NcclOp::Sum)?;
        self.watch("reduce-scatter")?;
        Ok(out)
    }

    pub fn rank(&self) -> usize {
        self.control.rank()
    }

    pub fn world(&self) -> usize {
        self.control.world()
    }

    /// `Err` with the job's failure when there is one: after reading back what a collective made.
    pub fn check(&self) -> Result<()> {
        match self.failure() {
            Some(why) => Err(Error::Invalid(why)),
            None => Ok(()),
        }
    }

    /// Buckets of gradients all-reduced by `op` on the communication stream as the backward pass makes
    /// them, each bucket once it holds `bytes` (PyTorch DDP's 25 MiB by default); `finish` sends the last
    /// one and makes the compute stream wait for them all.
    pub fn buckets(&self, bytes: usize, op: NcclOp) -> Buckets<'_> {
        Buckets { group: self, pending: Vec::new(), bytes: 0, limit: bytes.max(1), op }
    }

    /// The job's failure, which aborted the communicator: what the device computed since is not to be
    /// trusted (an aborted collective leaves its output unspecified), so a rank checks this after it
    /// reads results back and stops with the reason.
    pub fn failure(&self) -> Option<String> {
        self.control.failure()
    }

    /// Hands the collectives queued so far (on the compute stream) to the watchdog.
    fn watch(&self, what: &'static str) -> Result<()> {
        self.watch_fence(self.comm.fence()?, what)
    }

    fn watch_fence(&self, fence: Fence, what: &'static str) -> Result<()> {
        let tx =
            self.watch.lock().map_err(|_| Error::Device("the NCCL watchdog's channel is poisoned".into()))?;
        // A watchdog that ended has already failed the job: the next host collective says why.
        let _ = tx.send(Pending { fence, since: Instant::now(), what });
        Ok(())
    }
}

/// `NcclComm::init` on a thread of its own: it blocks until every rank has joined, and a rank that dies
/// first would leave it waiting forever, so this thread watches the job's health and the time meanwhile.
/// (A stuck init thread is left behind: the process is about to exit with the failure.)
fn join(
    ctx: &Arc<CudaContext>,
    control: &TcpGroup,
    id: [u8; nccl::ID_BYTES],
    timeout: Duration,
) -> Result<NcclComm> {
    let (rank, world) = (control.rank(), control.world());
    let (tx, rx) = mpsc::channel();
    let c = ctx.clone();
    std::thread::Builder::new()
        .name("nccl-init".into())
        .spawn(move || {
            crate::kill_point::reached("nccl-init");
            let _ = tx.send(NcclComm::init(&c, rank, world, id));
        })
        .map_err(|e| Error::Io(format!("rank {rank}: cannot start NCCL's initialisation: {e}")))?;
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(WATCH_EVERY) {
            Ok(r) => return r,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Device(format!("rank {rank}: NCCL's initialisation thread ended")))
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = control.failure() {
            // As the group's own collectives report it.
            return Err(Error::Invalid(format!("rank {rank}: {why}")));
        }
        if t0.elapsed() > timeout {
            return Err(Error::Device(format!(
                "rank {rank}: the NCCL communicator was not made within {:.0} s (--collective-timeout): a rank \
                 did not join it",
                timeout.as_secs_f64()
            )));
        }
    }
}

/// Watches queued collectives in order: one unfinished after `timeout`, or an error NCCL reports,
/// fails the job through `control` (whose failure hooks abort `comm`).
fn watchdog(comm: Arc<NcclComm>, control: Arc<TcpGroup>, rx: mpsc::Receiver<Pending>, timeout: Duration) {
    if let Err(e) = comm.bind_thread() {
        control.abort(&e.to_string());
        return;
    }
    let mut queue = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(WATCH_EVERY) {
            Ok(p) => queue.push_back(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if comm.is_aborted() {
            return;
        }
        if let Some(e) = comm.async_error() {
            control.abort(&format!("NCCL reported an error: {e}"));
            return;
        }
        while let Some(p) = queue.front() {
            match p.fence.done() {
                Ok(true) => {
                    queue.pop_front();
                }
                Ok(false) if p.since.elapsed() > timeout => {
                    control.abort(&format!(
                        "its {} did not finish within {:.0} s (--collective-timeout): a rank is hung, out of \
                         memory, or far slower than the others",
                        p.what,
                        timeout.as_secs_f64()
                    ));
                    return;
                }
                Ok(false) => break,
                Err(e) => {
                    control.abort(&e.to_string());
                    return;
                }
            }
        }
    }
}

/// See [`DeviceGroup::buckets`].
pub struct Buckets<'a> {
    group: &'a DeviceGroup,
    pending: Vec<Tensor>,
    bytes: usize,
    limit: usize,
    op: NcclOp,
}

impl Buckets<'_> {
    /// Takes a finished gradient: returns it (its storage made its own), to be read only after `finish`;
    /// its all-reduce starts once its bucket is full.
    pub fn push(&mut self, grad: Tensor) -> Result<Tensor> {
        let shape = grad.shape().clone();
        let own = Tensor::from_storage(shape, grad.into_storage()?)?;
        self.bytes += own.numel() * own.dtype().size_in_bytes();
        self.pending.push(own.clone());
        if self.bytes >= self.limit {
            self.flush()?;
        }
        Ok(own)
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // SAFETY: each storage was made the gradient's own in `push`; the only other holder is the
        // tensor `push` returned, which the trainer reads after `finish` (the compute stream then waits
        // for this collective) and keeps until the update.
        unsafe { self.group.comm.all_reduce_on_side(&self.pending, self.op)? };
        self.pending.clear();
        self.bytes = 0;
        Ok(())
    }

    /// Sends the last bucket; the compute stream waits for every bucket's all-reduce from here on.
    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        let fence = self.group.comm.side_fence()?;
        self.group.comm.rejoin()?;
        self.group.watch_fence(fence, "gradient all-reduce")
    }
}
