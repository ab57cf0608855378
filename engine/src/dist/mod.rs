//! Collectives between the ranks of a multi-GPU or multi-process run, behind one interface: the
//! class-sharded head (`heads::sharded`) and the data-parallel step call a `Communicator` and never name
//! what carries the data. `InProcess` runs the ranks as threads of one process (tests, and the reference
//! an NCCL communicator is checked against); `TcpGroup` joins processes over TCP (the rendezvous, and the
//! host-side collectives); a run on one device uses `Single`.
//!
//! Every collective is called by every rank in the same order. Values travel as f64 (exact for the f32
//! and f64 they carry), and reductions add the ranks' contributions in rank order, so every rank gets the
//! same bits.

mod in_process;
pub mod launch;
pub mod nccl;
mod tcp;

pub use in_process::InProcess;
pub use tcp::{FailureHook, TcpGroup, TcpOptions};

use crate::Result;

/// How `all_reduce` combines the ranks' values, element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

pub trait Communicator: Send + Sync {
    /// This rank, in 0..world.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world(&self) -> usize;
    /// Every rank's `v` (of one length everywhere) combined by `op`, into `v` on every rank.
    fn all_reduce(&self, v: &mut [f64], op: ReduceOp) -> Result<()>;
    /// Every rank's `v` (lengths may differ), in rank order, on every rank.
    fn all_gather(&self, v: &[f64]) -> Result<Vec<Vec<f64>>>;
    /// Rank `root`'s `v` into `v` on every rank (lengths equal everywhere).
    fn broadcast(&self, v: &mut [f64], root: usize) -> Result<()> {
        broadcast_by_gather(self, v, root)
    }
}

/// `broadcast` through `all_gather`: every rank sends its values and keeps `root`'s.
pub(crate) fn broadcast_by_gather<C: Communicator + ?Sized>(c: &C, v: &mut [f64], root: usize) -> Result<()> {
    let all = c.all_gather(v)?;
    let theirs = all.get(root).filter(|p| p.len() == v.len()).ok_or_else(|| {
        crate::Error::Shape(format!(
            "broadcast of {} values from rank {root}: it gave another length",
            v.len()
        ))
    })?;
    v.copy_from_slice(theirs);
    Ok(())
}

/// Text as values for a collective, one byte each (a path, a reason), and back.
pub fn text_values(s: &str) -> Vec<f64> {
    s.bytes().map(f64::from).collect()
}

/// The text `text_values` made (bytes that are not UTF-8 are replaced).
pub fn values_text(v: &[f64]) -> String {
    String::from_utf8_lossy(&v.iter().map(|&b| b as u8).collect::<Vec<u8>>()).into_owned()
}

/// The one rank of a run on one device: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce(&self, _v: &mut [f64], _op: ReduceOp) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![v.to_vec()])
    }
}

/// `parts` combined by `op` in rank order (what `all_reduce` gives every rank).
pub(crate) fn reduce_in_order(parts: &[Vec<f64>], op: ReduceOp) -> Vec<f64> {
    let mut out = parts[0].clone();
    for p in &parts[1..] {
        for (o, &v) in out.iter_mut().zip(p) {
            *o = match op {
                ReduceOp::Sum => *o + v,
                ReduceOp::Max => o.max(v),
            };
        }
    }
    out
}
