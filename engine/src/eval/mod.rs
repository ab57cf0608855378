//! Evaluation: pure math on embeddings and scores (no tape, no device). insightface's verification
//! protocol, ROC/TAR@FAR, the QMagFace quality-aware score, identification ranks, magnitude-as-quality
//! analysis, and an SVG writer for the plots.

pub mod folds;
pub mod identification;
pub mod ijb;
pub mod plots;
pub mod qmagface;
pub mod quality;
pub mod roc;
pub mod svg;
pub mod verification;
