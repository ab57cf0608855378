//! `engine-train info`: what the engine sees on this machine.

use super::CmdResult;
use engine::Device;

#[derive(clap::Args)]
pub struct Args {
    /// Device to probe: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: Args) -> CmdResult {
    let dev = Device::parse(&a.device)?;
    println!("device: {dev:?}");
    println!("cpu threads: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    Ok(())
}
