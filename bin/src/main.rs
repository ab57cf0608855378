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
    /// Run a margin-softmax head on a batch from a safetensors file; write the loss and gradients.
    Head(Box<commands::head::Args>),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Head(a) => commands::head::run(*a),
    };
    if let Err(e) = result {
        eprintln!("engine-train: {e}");
        std::process::exit(2);
    }
}
