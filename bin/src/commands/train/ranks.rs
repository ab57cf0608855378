//! A training run that is one rank of a job (torchrun, Slurm's srun, or the children of `--gpus N`): it
//! joins the others over TCP, takes its node-local GPU and its share of the node's cores.

use engine::dist::launch::RankEnv;
use engine::dist::{TcpGroup, TcpOptions};
use engine::Result;
use std::sync::Arc;
use std::time::Duration;

pub struct Rank {
    pub job: RankEnv,
    pub group: Arc<TcpGroup>,
    /// How long a collective may wait for the slowest rank (`--collective-timeout`).
    pub collective_timeout: Duration,
}

impl Rank {
    /// Joins `job`: every rank must arrive within `timeout`, which also bounds each collective.
    pub fn join(job: RankEnv, timeout: Duration) -> Result<Rank> {
        let (host, port) = job.rendezvous()?;
        let group = TcpGroup::join(job.rank, job.world, &host, port, TcpOptions::new(timeout, timeout))?;
        Ok(Rank { job, group: Arc::new(group), collective_timeout: timeout })
    }

    /// `--device` for this rank: `cuda` and `auto` mean its node-local GPU (`LOCAL_RANK`, else the
    /// global rank modulo the ranks on the node).
    pub fn device_name(&self, name: &str) -> String {
        let local = self.local_rank();
        match name {
            "cuda" => format!("cuda:{local}"),
            "auto" if local > 0 => format!("auto:{local}"),
            n => n.to_string(),
        }
    }

    fn local_rank(&self) -> usize {
        self.job.local_rank.unwrap_or(self.job.rank % self.job.local_world.unwrap_or(self.job.world).max(1))
    }

    /// Cores for this rank's threads when `--threads` is not given: the node's, shared by its ranks.
    pub fn threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let on_node = self.job.local_world.unwrap_or(self.job.world).max(1);
        (cores / on_node).max(1)
    }
}
