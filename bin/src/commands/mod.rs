//! One module per subcommand.

pub mod analyze;
pub mod data;
pub mod embed;
pub mod eval;
pub mod eval_flags;
pub mod eval_ijb;
pub mod eval_protocols;
pub mod eval_quality;
pub mod eval_summary;
pub mod eval_tinyface;
pub mod export;
pub mod head;
pub mod head_flags;
pub mod head_plots;
pub mod info;
pub mod train;
pub mod trajectories;

/// The error every subcommand returns: a sentence for the user.
pub type CmdResult = Result<(), Box<dyn std::error::Error>>;
