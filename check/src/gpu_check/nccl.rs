//! NCCL on this one device: a communicator of one rank, whose all-reduce (mean), all-gather and
//! broadcast must give back their input. What it checks on a card is the part no emulation can: that
//! the machine's libnccl loads, its entry points take the arguments as `backend/cuda/nccl.rs` declares
//! them, and collectives run on the engine's streams. A machine without NCCL reports the section as
//! skipped (training then takes `--collectives host`).

use super::{vals, Run, R};
use engine::backend::cuda::nccl::{self, NcclComm, NcclOp};
use engine::{DType, Device};

pub(super) fn one_rank(r: &mut Run) -> R<()> {
    let Device::Cuda(ctx) = r.dev.clone() else { return Err("NCCL needs a CUDA device".into()) };
    let version = match nccl::version() {
        Ok(v) => v,
        Err(e) => {
            println!("nccl: skipped: {e}");
            return Ok(());
        }
    };
    println!("nccl: version {version}");
    let comm = NcclComm::init(&ctx, 0, 1, nccl::unique_id()?)?;
    let a = r.rand(&[3001], 1.0)?;
    let b = r.rand(&[64, 7], 1.0)?.to_dtype(DType::BF16)?;
    let (ga, gb) = (r.up(&a)?, r.up(&b)?);
    let out = comm.all_reduce(vec![ga.clone(), gb.clone()], NcclOp::Avg)?;
    r.record("nccl all-reduce mean, one rank (f32)", &vals(&out[0])?, &vals(&a)?, 0.0, "its input");
    r.record("nccl all-reduce mean, one rank (bf16)", &vals(&out[1])?, &vals(&b)?, 0.0, "its input");
    let gathered = comm.all_gather(&ga)?;
    r.record("nccl all-gather, one rank", &vals(&gathered)?, &vals(&a)?, 0.0, "its input");
    let sent = comm.broadcast(gb, 0)?;
    r.record("nccl broadcast, one rank", &vals(&sent)?, &vals(&b)?, 0.0, "its input");
    Ok(())
}
