//! QQCFace / QMagFace (spec §12) is an evaluation score, not a training head: score = c12 +
//! min(0, β·c12 − α)·min(q1, q2) with α, β fitted per model. Its one implementation, tested against a
//! re-derivation of QMagFace's fitting code, is `crate::eval::qmagface`; it is named here beside the heads.

pub use crate::eval::qmagface::{fit, pair_min, Fit, FitOptions, QualityWeight};
