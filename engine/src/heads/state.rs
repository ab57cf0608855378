//! A head's running state (CurricularFace t, AdaFace/SMAFace μ and σ, QCFace phase) as named f64 values,
//! convertible to named scalar tensors for checkpoints. Names are prefixed by the caller if needed.

use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadState {
    pub values: Vec<(String, f64)>,
}

impl HeadState {
    pub fn new(values: &[(&str, f64)]) -> HeadState {
        HeadState { values: values.iter().map(|(n, v)| (n.to_string(), *v)).collect() }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The value `name`, or an error naming the head and what the state holds.
    pub fn require(&self, head: &str, name: &str) -> Result<f64> {
        let v = self.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{head}: state has no '{name}' (it holds: {})",
                self.values.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !v.is_finite() {
            return Err(Error::Invalid(format!("{head}: state '{name}' is {v}")));
        }
        Ok(v)
    }

    pub(crate) fn expect_empty(&self, head: &str) -> Result<()> {
        if self.values.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{head} has no running state, but {} values were given",
                self.values.len()
            )))
        }
    }

    /// Named f64 scalars (rank 0), for a checkpoint's tensor list.
    pub fn to_tensors(&self) -> Vec<(String, Tensor)> {
        self.values.iter().map(|(n, v)| (n.clone(), Tensor::scalar(*v))).collect()
    }

    /// Reads one-element tensors of any float dtype.
    pub fn from_tensors(tensors: &[(String, Tensor)]) -> Result<HeadState> {
        let mut values = Vec::with_capacity(tensors.len());
        for (n, t) in tensors {
            if !t.dtype().is_float() {
                return Err(Error::DType(format!("head state '{n}' is {}, expected a float", t.dtype())));
            }
            values.push((n.clone(), t.scalar_value()?));
        }
        Ok(HeadState { values })
    }
}

/// How the head's running state (CurricularFace t, AdaFace/SMAFace mean and std) moves over the ranks of
/// a data-parallel job: each rank moves it from its own batch, then the ranks' copies are made equal
/// after every step (the whole head: `Trainer::share_running_state`; the class-sharded head, which sees
/// the job's whole batch, moves every rank's copy to the same end in its step: `heads::sharded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunningState {
    /// Rank 0's copy replaces every rank's: what the papers' code gets under PyTorch DDP, whose buffers
    /// are broadcast from rank 0 before each forward (spec §0).
    #[default]
    Broadcast,
    /// The mean of every rank's copy.
    Reduce,
}

impl std::str::FromStr for RunningState {
    type Err = Error;
    fn from_str(s: &str) -> Result<RunningState> {
        match s {
            "broadcast" => Ok(RunningState::Broadcast),
            "reduce" => Ok(RunningState::Reduce),
            o => Err(Error::Invalid(format!("--running-state {o}: expected broadcast or reduce"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_tensors() {
        let s = HeadState::new(&[("mu", 20.5), ("sigma", 99.0)]);
        let back = HeadState::from_tensors(&s.to_tensors()).unwrap();
        assert_eq!(back, s);
        assert!(back.require("adaface", "t").unwrap_err().to_string().contains("mu, sigma"));
    }
}
