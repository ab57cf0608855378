//! `engine-train`: one binary for training, evaluation, data preparation and head checks.
//! Each subcommand lives in `commands/<name>.rs` and returns a `Result`; errors print one sentence and
//! exit with status 2, never a panic.

mod aligned;
mod backbone_io;
mod commands;
mod demo_defaults;
mod device_choice;
mod images;
mod pair_eval;
mod run_plots;

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
    Head(commands::head::Args),
    /// Train a backbone and head; with no --data, on the generated demo set.
    Train(Box<commands::train::Args>),
    /// Evaluate a checkpoint: verification (.bin), identification, quality plots.
    Eval(commands::eval::Args),
    /// Write embeddings and norms of a RecordIO set or image list.
    Embed(commands::embed::Args),
    /// Write a checkpoint's model in PyTorch layout with insightface names.
    Export(commands::export::Args),
    /// Inspect and pack face data sets (RecordIO, .bin verification sets).
    Data(commands::data::Args),
    /// Check every CUDA op against the CPU (needs a GPU) and write a markdown report.
    GpuCheck(commands::gpu_check::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Head(a) => commands::head::run(a),
        Command::Train(a) => commands::train::run(*a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Embed(a) => commands::embed::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Data(a) => commands::data::run(a),
        Command::GpuCheck(a) => commands::gpu_check::run(a),
    };
    if let Err(e) = result {
        eprintln!("engine-train: {e}");
        std::process::exit(2);
    }
}
