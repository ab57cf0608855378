//! Ranks as threads of one process: each collective is a meeting point where every rank leaves its
//! values and takes everyone's. A rank that never arrives makes the others fail after `timeout` with an
//! error naming the ranks missing, instead of hanging.

use super::{reduce_in_order, Communicator, ReduceOp};
use crate::{Error, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

struct Meeting {
    /// Collectives completed so far: a rank waits for this to move past the one it joined.
    round: u64,
    /// This round's contributions, by rank.
    left: Vec<Option<Vec<f64>>>,
    /// The last round's contributions, until every rank has taken them.
    done: Option<Arc<Vec<Vec<f64>>>>,
    taken: usize,
}

struct Shared {
    world: usize,
    timeout: Duration,
    meeting: Mutex<Meeting>,
    moved: Condvar,
}

/// One rank's handle on an in-process group (`InProcess::group`).
#[derive(Clone)]
pub struct InProcess {
    rank: usize,
    shared: Arc<Shared>,
}

impl InProcess {
    /// `world` handles, one per rank, to move into their threads; collectives give up after `timeout`.
    pub fn group(world: usize, timeout: Duration) -> Result<Vec<InProcess>> {
        if world == 0 {
            return Err(Error::Invalid("a communicator needs at least one rank".into()));
        }
        let shared = Arc::new(Shared {
            world,
            timeout,
            meeting: Mutex::new(Meeting { round: 0, left: vec![None; world], done: None, taken: 0 }),
            moved: Condvar::new(),
        });
        Ok((0..world).map(|rank| InProcess { rank, shared: shared.clone() }).collect())
    }

    /// Leaves `mine` and returns every rank's contribution to this collective, in rank order.
    fn exchange(&self, mine: Vec<f64>) -> Result<Arc<Vec<Vec<f64>>>> {
        let s = &*self.shared;
        let deadline = Instant::now() + s.timeout;
        let poisoned = |_| Error::Invalid(format!("rank {}: a rank panicked inside a collective", self.rank));
        let mut m = s.meeting.lock().map_err(poisoned)?;
        // The previous collective's values must be taken by every rank before this one starts.
        while m.done.is_some() {
            m = self.wait(m, deadline)?;
        }
        m.left[self.rank] = Some(mine);
        let round = m.round;
        if m.left.iter().all(Option::is_some) {
            let all: Vec<Vec<f64>> = m.left.iter_mut().map(|v| v.take().unwrap_or_default()).collect();
            m.done = Some(Arc::new(all));
            m.round += 1;
            s.moved.notify_all();
        }
        while m.round == round {
            m = self.wait(m, deadline)?;
        }
        let all = m.done.clone().ok_or_else(|| Error::Invalid("a collective's values vanished".into()))?;
        m.taken += 1;
        if m.taken == s.world {
            m.done = None;
            m.taken = 0;
            s.moved.notify_all();
        }
        Ok(all)
    }

    fn wait<'a>(
        &self,
        m: std::sync::MutexGuard<'a, Meeting>,
        deadline: Instant,
    ) -> Result<std::sync::MutexGuard<'a, Meeting>> {
        let now = Instant::now();
        if now >= deadline {
            let missing: Vec<usize> = (0..self.shared.world).filter(|&r| m.left[r].is_none()).collect();
            return Err(Error::Invalid(format!(
                "rank {}: a collective timed out after {:?} waiting for ranks {missing:?}",
                self.rank, self.shared.timeout
            )));
        }
        let (m, _) = self.shared.moved.wait_timeout(m, deadline - now).map_err(|_| {
            Error::Invalid(format!("rank {}: a rank panicked inside a collective", self.rank))
        })?;
        Ok(m)
    }
}

impl Communicator for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn all_reduce(&self, v: &mut [f64], op: ReduceOp) -> Result<()> {
        let all = self.exchange(v.to_vec())?;
        if let Some((r, p)) = all.iter().enumerate().find(|(_, p)| p.len() != v.len()) {
            return Err(Error::Shape(format!(
                "rank {}: all-reduce of {} values, rank {r} gave {}",
                self.rank,
                v.len(),
                p.len()
            )));
        }
        v.copy_from_slice(&reduce_in_order(&all, op));
        Ok(())
    }
    fn all_gather(&self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(self.exchange(v.to_vec())?.as_ref().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn on_ranks<R: Send + 'static>(
        world: usize,
        f: impl Fn(InProcess) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let f = Arc::new(f);
        let handles: Vec<_> = InProcess::group(world, Duration::from_secs(20))
            .unwrap()
            .into_iter()
            .map(|c| {
                let f = f.clone();
                thread::spawn(move || f(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_give_every_rank_the_same_values_round_after_round() {
        let out = on_ranks(4, |c| {
            let r = c.rank() as f64;
            let mut seen = Vec::new();
            for round in 0..50 {
                let mut v = vec![r + round as f64, -r];
                c.all_reduce(&mut v, ReduceOp::Sum).unwrap();
                let mut m = vec![r * (round % 3) as f64];
                c.all_reduce(&mut m, ReduceOp::Max).unwrap();
                let g = c.all_gather(&vec![r; c.rank() + 1]).unwrap();
                seen.push((v, m, g));
            }
            seen
        });
        for (round, (v, m, g)) in out[0].iter().enumerate() {
            assert_eq!(v, &vec![6.0 + 4.0 * round as f64, -6.0]);
            assert_eq!(m, &vec![3.0 * (round % 3) as f64]);
            assert_eq!(g, &(0..4).map(|r| vec![r as f64; r + 1]).collect::<Vec<_>>());
        }
        assert!(out.iter().all(|o| o == &out[0]), "every rank saw the same");
    }

    #[test]
    fn a_rank_that_never_arrives_is_an_error_naming_it_not_a_hang() {
        let group = InProcess::group(3, Duration::from_millis(200)).unwrap();
        let waiting: Vec<_> = group
            .into_iter()
            .take(2)
            .map(|c| thread::spawn(move || c.all_reduce(&mut [1.0], ReduceOp::Sum)))
            .collect();
        for h in waiting {
            let e = h.join().unwrap().unwrap_err().to_string();
            assert!(e.contains("timed out") && e.contains("[2]"), "{e}");
        }
    }

    #[test]
    fn a_length_mismatch_is_an_error_on_every_rank() {
        let out = on_ranks(2, |c| c.all_reduce(&mut vec![0.0; 1 + c.rank()], ReduceOp::Sum).is_err());
        assert_eq!(out, vec![true, true]);
    }
}
