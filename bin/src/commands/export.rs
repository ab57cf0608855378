//! `engine-train export`: a model-only safetensors file in PyTorch's layout with insightface's `iresnet`
//! names (conv weights OIHW, `num_batches_tracked` included), loadable with `strict=True`.

use super::CmdResult;
use crate::backbone_io;
use engine::model::export::export_pytorch;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A training checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    output: PathBuf,
}

pub fn run(a: Args) -> CmdResult {
    let (model, params) = backbone_io::from_checkpoint(&a.checkpoint)?;
    export_pytorch(&a.output, &model.config, &params)?;
    eprintln!("wrote {} ({} parameters)", a.output.display(), params.parameter_count());
    Ok(())
}
