//! One module per subcommand.

pub mod data;
pub mod info;

/// The error every subcommand returns: a sentence for the user.
pub type CmdResult = Result<(), Box<dyn std::error::Error>>;
