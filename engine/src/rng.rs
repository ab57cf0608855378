//! The shared generator (crate `seeded-rng`, engine/rng): re-exported so engine code says `crate::rng::Rng`.

pub use rng::{splitmix, Rng};
