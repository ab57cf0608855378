//! `engine-train info`: what the engine sees on this machine, and a backbone's size and cost.

use super::CmdResult;
use crate::backbone_io::parse_hw;
use engine::model::{IResNet, IResNetConfig};
use engine::rng::Rng;
use engine::{DType, Device};

#[derive(clap::Args)]
pub struct Args {
    /// Device to probe: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also print this backbone's parameter count and forward GFLOPs per image (r18 .. r200, small).
    #[arg(long)]
    backbone: Option<String>,
    /// Input size HxW for --backbone (default: its own).
    #[arg(long)]
    input: Option<String>,
}

pub fn run(a: Args) -> CmdResult {
    let dev = Device::parse(&a.device)?;
    println!("device: {dev:?}");
    println!("cpu threads: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if let Some(name) = &a.backbone {
        let mut cfg = IResNetConfig::by_name(name)?;
        if let Some(hw) = &a.input {
            cfg.input_hw = parse_hw(hw)?;
        }
        let model = IResNet::new(cfg)?;
        let params = model.init(&mut Rng::new(0), DType::F32)?;
        println!("{name}: {}", model.config.describe(params.parameter_count()));
    }
    Ok(())
}
