//! Evaluation: pure math on embeddings and scores (no tape, no device). insightface's verification
//! protocol, ROC/TAR@FAR, the QMagFace quality-aware score, identification ranks, magnitude-as-quality
//! analysis, an SVG writer for the plots, the IJB-B/C and TinyFace protocols and the summary table.

pub mod folds;
pub mod identification;
pub mod ijb;
pub mod plots;
pub mod qmagface;
pub mod quality;
pub mod roc;
pub mod summary;
pub mod svg;
pub mod tinyface;
pub mod verification;
