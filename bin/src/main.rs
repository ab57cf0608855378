//! `engine-train`: one binary for training, evaluation, data preparation and head checks.
//! Each subcommand lives in `commands/<name>.rs` and returns a `Result`; errors print one sentence and
//! exit with status 2, never a panic.

mod commands;

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
    /// Check every CUDA op against the CPU (needs a GPU) and write a markdown report.
    GpuCheck(commands::gpu_check::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::GpuCheck(a) => commands::gpu_check::run(a),
    };
    if let Err(e) = result {
        eprintln!("engine-train: {e}");
        std::process::exit(2);
    }
}
