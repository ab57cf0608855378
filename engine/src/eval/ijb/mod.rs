//! The IJB-B / IJB-C protocols as the community runs them (insightface's
//! `recognition/arcface_torch/eval_ijbc.py` for 1:1, `recognition/_evaluation_/ijb/ijb_evals.py` for 1:N
//! over the separate galleries), on per-image features: the meta files, template pooling, the ROC as
//! scikit-learn's `roc_curve` builds it, TAR at FAR read as `eval_ijbc.py` reads it, and 1:N CMC and
//! TPIR at FPIR. Pure math on features; images and models are the caller's business.

pub mod identification;
pub mod meta;
pub mod numpy_sum;
pub mod roc_sklearn;
pub mod templates;
pub mod verification;
