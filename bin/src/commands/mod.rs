//! One module per subcommand.

pub mod gpu_check;
pub mod info;

/// The error every subcommand returns: a sentence for the user.
pub type CmdResult = Result<(), Box<dyn std::error::Error>>;
