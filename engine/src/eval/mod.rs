//! eval: see the module files.
