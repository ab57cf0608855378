//! optim: see the module files.
