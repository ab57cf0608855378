//! `engine-train`: one binary for training, evaluation, data preparation and head checks.
//! Each subcommand lives in `commands/<name>.rs` and returns a `Result`; errors print one sentence and
//! exit with status 2, never a panic.

mod aligned;
mod backbone_io;
mod commands;
mod device_choice;
mod run_plots;
mod signals;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "engine-train", version, about = "Train face recognition models with margin-softmax heads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the engine's devices and a backbone's parameter count and GFLOPs.
    Info(commands::info::Args),
    /// Run a margin-softmax head on a batch from a safetensors file; write the loss and gradients.
    Head(Box<commands::head::Args>),
    /// Train a backbone and head; with no --data, on the generated demo set.
    Train(Box<commands::train::Args>),
    /// Evaluate a checkpoint: verification (.bin), identification, quality plots.
    Eval(Box<commands::eval::Args>),
    /// Write embeddings and norms of a RecordIO set or image list.
    Embed(commands::embed::Args),
    /// Statistics and figures of embeddings from `embed`: MagFace margins, angles to the class centres.
    Analyze(Box<commands::analyze::Args>),
    /// Write a checkpoint's or a model file's backbone as safetensors (PyTorch layout, insightface names)
    /// or ONNX.
    Export(commands::export::Args),
    /// Inspect and pack face data sets (RecordIO, .bin verification sets).
    Data(commands::data::Args),
    /// Check every device op, head and training step against the CPU (and PyTorch's fixtures); write a
    /// markdown report. Needs a GPU.
    Check(Box<check::gpu_check::CheckArgs>),
    /// Time training steps, the head or the demo on a GPU; write a markdown report.
    Bench(Box<check::bench::BenchArgs>),
    /// `check`, or a `bench` with --bench-train / --bench-head / --train-demo (the earlier command's name
    /// and flags, kept for scripts).
    GpuCheck(Box<check::gpu_check::GpuCheckArgs>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Head(a) => commands::head::run(*a),
        Command::Train(a) => commands::train::run(*a),
        Command::Eval(a) => commands::eval::run(*a),
        Command::Embed(a) => commands::embed::run(a),
        Command::Analyze(a) => commands::analyze::run(*a),
        Command::Export(a) => commands::export::run(a),
        Command::Data(a) => commands::data::run(a),
        Command::Check(a) => check::gpu_check::run(&a),
        Command::Bench(a) => check::bench::run(&a),
        Command::GpuCheck(a) => check::gpu_check::run_gpu_check(&a),
    };
    if let Err(e) = result {
        eprintln!("engine-train: {e}");
        std::process::exit(2);
    }
}
