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
    /// Inspect and pack face data sets (RecordIO, .bin verification sets).
    Data(commands::data::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => commands::info::run(a),
        Command::Data(a) => commands::data::run(a),
    };
    if let Err(e) = result {
        eprintln!("engine-train: {e}");
        std::process::exit(2);
    }
}
