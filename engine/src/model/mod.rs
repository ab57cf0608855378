//! model: see the module files.
