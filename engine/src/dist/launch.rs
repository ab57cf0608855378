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
    /// torchrun's agent hosts its own store on `MASTER_PORT` (`TORCHELASTIC_USE_AGENT_STORE=True`).
    pub agent_store: bool,
}

impl RankEnv {
    /// Where rank 0 listens for the other ranks: `MASTER_ADDR:MASTER_PORT`, or `MASTER_PORT + 1` when a
    /// torchrun agent's store already holds `MASTER_PORT` on rank 0's machine.
    ///
    /// Decision: a port next to the agent's rather than speaking its store's protocol as a client. That
    /// protocol is c10d's internal wire format (it changed with the libuv server of torch 2.4); a client
    /// of it would tie each engine-train release to torch versions, for a few bytes of rendezvous. The
    /// cost is that `MASTER_PORT + 1` must be free on rank 0's machine; when it is not, rank 0's error
    /// names the port.
    pub fn rendezvous(&self) -> Result<(String, u16)> {
        let (host, port) = self.master.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "{}: rank {} of {} has no MASTER_ADDR/MASTER_PORT to meet rank 0 at{}",
                self.launcher,
                self.rank,
                self.world,
                match self.launcher {
                    Launcher::Slurm => " (export them in the job script, e.g. MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1))",
                    Launcher::Torchrun => "",
                }
            ))
        })?;
        if !self.agent_store {
            return Ok((host, port));
        }
        let next = port.checked_add(1).ok_or_else(|| {
            Error::Invalid(format!(
                "MASTER_PORT={port}: torchrun's store holds it and there is no port after it"
            ))
        })?;
        Ok((host, next))
    }
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
        agent_store: launcher == Launcher::Torchrun
            && var("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
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
                agent_store: false,
            }
        );
        assert_eq!(got.rendezvous().unwrap(), ("node0".into(), 29500));
        // Under a torchrun agent that hosts its store on MASTER_PORT, rank 0 listens on the next port.
        let agent = [&t[..], &[("TORCHELASTIC_USE_AGENT_STORE", "True")]].concat();
        let got = from_env(env(&agent)).unwrap().unwrap();
        assert_eq!(got.rendezvous().unwrap(), ("node0".into(), 29501));
        let s =
            from_env(env(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1")])).unwrap();
        let s = s.unwrap();
        assert_eq!(
            (s.launcher, s.rank, s.world, s.local_rank, s.master.clone()),
            (Launcher::Slurm, 5, 16, Some(1), None)
        );
        let e = s.rendezvous().unwrap_err().to_string();
        assert!(e.contains("no MASTER_ADDR/MASTER_PORT") && e.contains("job script"), "{e}");
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
