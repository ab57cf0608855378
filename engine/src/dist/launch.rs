//! Where this process sits in a job of several, read from the environment its launcher set: torchrun
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) or Slurm's srun
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, with `MASTER_ADDR`/`MASTER_PORT` from the job
//! script). torchrun's variables win when both are set (torchrun inside a Slurm allocation).

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Torchrun,
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Torchrun => "torchrun",
            Launcher::Slurm => "Slurm",
        })
    }
}

/// This process's place in a multi-process job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    pub launcher: Launcher,
    pub rank: usize,
    pub world: usize,
    /// The rank on this node (the GPU it takes), when the launcher says.
    pub local_rank: Option<usize>,
    pub local_world: Option<usize>,
    /// Rank 0's address for the rendezvous, when set.
    pub master: Option<(String, u16)>,
}

/// The job this process belongs to, from `var` (the environment: `|k| std::env::var(k).ok()`); `None`
/// when no launcher set its variables. A variable that is set but malformed is an error naming it.
pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<RankEnv>> {
    let (launcher, rank_var, world_var, local_var, local_world_var) =
        if var("RANK").is_some() || var("WORLD_SIZE").is_some() {
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK", Some("LOCAL_WORLD_SIZE"))
        } else if var("SLURM_PROCID").is_some() || var("SLURM_NTASKS").is_some() {
            (Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None)
        } else {
            return Ok(None);
        };
    let number = |k: &str| -> Result<Option<usize>> {
        var(k)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    Error::Invalid(format!(
                        "{launcher} set {k}={v:?}, which is not a non-negative whole number"
                    ))
                })
            })
            .transpose()
    };
    let required = |k: &str| -> Result<usize> {
        number(k)?.ok_or_else(|| {
            Error::Invalid(format!("{launcher}'s {k} is not set, though {rank_var} or {world_var} is"))
        })
    };
    let (rank, world) = (required(rank_var)?, required(world_var)?);
    if world == 0 || rank >= world {
        return Err(Error::Invalid(format!(
            "{launcher}: rank {rank} of a world of {world} ({rank_var}, {world_var})"
        )));
    }
    let master = match (var("MASTER_ADDR"), number("MASTER_PORT")?) {
        (Some(addr), Some(port)) if port <= u16::MAX as usize => Some((addr, port as u16)),
        (Some(_), Some(port)) => return Err(Error::Invalid(format!("MASTER_PORT={port} is not a port"))),
        _ => None,
    };
    Ok(Some(RankEnv {
        launcher,
        rank,
        world,
        local_rank: number(local_var)?,
        local_world: local_world_var.map(number).transpose()?.flatten(),
        master,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn torchrun_and_slurm_variables_are_read_and_torchrun_wins() {
        assert_eq!(from_env(env(&[("PATH", "/bin")])).unwrap(), None);
        let t = [
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ];
        let got = from_env(env(&t)).unwrap().unwrap();
        assert_eq!(
            got,
            RankEnv {
                launcher: Launcher::Torchrun,
                rank: 3,
                world: 8,
                local_rank: Some(1),
                local_world: Some(2),
                master: Some(("node0".into(), 29500)),
            }
        );
        let s =
            from_env(env(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1")])).unwrap();
        let s = s.unwrap();
        assert_eq!(
            (s.launcher, s.rank, s.world, s.local_rank, s.master),
            (Launcher::Slurm, 5, 16, Some(1), None)
        );
    }

    #[test]
    fn malformed_or_inconsistent_variables_are_errors_naming_them() {
        for (pairs, want) in [
            (&[("RANK", "0"), ("WORLD_SIZE", "two")][..], "WORLD_SIZE=\"two\""),
            (&[("RANK", "2"), ("WORLD_SIZE", "2")][..], "rank 2 of a world of 2"),
            (&[("RANK", "0")][..], "WORLD_SIZE is not set"),
            (&[("SLURM_PROCID", "-1"), ("SLURM_NTASKS", "4")][..], "SLURM_PROCID=\"-1\""),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "70000")][..],
                "MASTER_PORT=70000",
            ),
        ] {
            let e = from_env(env(pairs)).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
