//! `engine-train export`: a checkpoint's backbone, or any model file we read (`--from`: PyTorch,
//! Lightning, ONNX), written as safetensors in PyTorch's layout with insightface's `iresnet` names
//! (conv weights OIHW, `num_batches_tracked` included; loadable with `strict=True`) or as an ONNX graph
//! (`--format onnx`, for ONNX Runtime and insightface's recognition model class). Both carry the
//! network's structure and input convention as metadata.

use super::CmdResult;
use crate::backbone_io::{self, ConventionFlags};
use engine::model::export::export_pytorch;
use engine::model::onnx_export::{export_onnx, OnnxOptions};
use engine::model::{IResNetConfig, ParamStore};
use engine::Error;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A training checkpoint.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A model file instead of --checkpoint: .pth/.pt, Lightning .ckpt, .onnx or a safetensors export.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Output file.
    #[arg(long)]
    output: PathBuf,
    /// safetensors or onnx (default: onnx for an output ending in .onnx, else safetensors).
    #[arg(long)]
    format: Option<String>,
    /// ONNX: take 0..255 RGB pixels and normalize inside the graph (first nodes Sub_, Mul_), instead
    /// of RGB already normalized as (x - 127.5) / 127.5.
    #[arg(long)]
    fold_normalization: bool,
    /// Input size of --from, HxW, where the file leaves it open.
    #[arg(long)]
    input: Option<String>,
    #[command(flatten)]
    convention: ConventionFlags,
}

fn source(a: &Args) -> Result<(IResNetConfig, ParamStore), Error> {
    match (&a.checkpoint, &a.from) {
        (Some(c), None) => backbone_io::from_checkpoint(c).map(|(m, p)| (m.config, p)),
        (None, Some(f)) => {
            let input = a.input.as_deref().map(backbone_io::parse_hw).transpose()?;
            let im = backbone_io::from_model_file(f, &a.convention.options(input)?)?;
            Ok((im.config, im.params))
        }
        _ => Err(Error::Invalid("give exactly one of --checkpoint and --from".into())),
    }
}

fn format_of(a: &Args) -> Result<&'static str, Error> {
    let by_name = a.output.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    match a.format.as_deref() {
        None if by_name => Ok("onnx"),
        None | Some("safetensors") => Ok("safetensors"),
        Some("onnx") => Ok("onnx"),
        Some(f) => Err(Error::Invalid(format!("--format {f}: expected safetensors or onnx"))),
    }
}

pub fn run(a: Args) -> CmdResult {
    let format = format_of(&a)?;
    if a.fold_normalization && format != "onnx" {
        return Err(Error::Invalid("--fold-normalization applies to --format onnx only".into()).into());
    }
    let (cfg, params) = source(&a)?;
    write(&a.output, format, &cfg, &params, a.fold_normalization)?;
    Ok(())
}

fn write(
    out: &Path,
    format: &str,
    cfg: &IResNetConfig,
    params: &ParamStore,
    fold: bool,
) -> Result<(), Error> {
    let (h, w) = cfg.input_hw;
    if format == "onnx" {
        export_onnx(out, cfg, params, &OnnxOptions { fold_normalization: fold })?;
        let input = if fold { "0..255 RGB pixels (normalized inside)" } else { "RGB as (x - 127.5) / 127.5" };
        eprintln!(
            "wrote {} (ONNX opset {}, input [batch, 3, {h}, {w}] {input}, output [batch, {}]; the model was trained on {})",
            out.display(),
            engine::model::onnx_export::OPSET,
            cfg.embedding_size,
            cfg.input.describe()
        );
    } else {
        export_pytorch(out, cfg, params)?;
        eprintln!(
            "wrote {} ({} parameters, PyTorch layout, input {h}x{w} {})",
            out.display(),
            params.parameter_count(),
            cfg.input.describe()
        );
    }
    Ok(())
}
