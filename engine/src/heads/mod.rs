//! heads: see the module files.
