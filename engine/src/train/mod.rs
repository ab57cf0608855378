//! train: see the module files.
