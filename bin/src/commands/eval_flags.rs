//! `eval`'s flags for the papers' benchmarks (IJB-B/C, TinyFace), precomputed features, the quality tools
//! and the summary table; `eval.rs` flattens them into its own.

use engine::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Default)]
pub struct BenchmarkFlags {
    /// IJB-B/IJB-C folder as insightface's eval_ijbc.py reads it: meta/ (ijbc_face_tid_mid.txt,
    /// ijbc_template_pair_label.txt, ijbc_name_5pts_score.txt; ijbb_* for IJB-B) and loose_crop/.
    /// 1:1 verification, and 1:N identification where the 1:N gallery/probe lists are in meta/.
    #[arg(long)]
    pub ijb: Option<PathBuf>,
    /// IJBB or IJBC.
    #[arg(long, default_value = "IJBC")]
    pub target: String,
    /// Precomputed per-image features (safetensors, tensor `features` [N, D] f32): with --ijb, row i is
    /// the flip-summed feature of row i of the 5pts file; with --tinyface, the rows follow the image list
    /// a model run writes (tinyface_images.txt). Evaluates without a model and without images.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// IJB and TinyFace with a model: embed the image alone, not image + flipped image (eval_ijbc.py's
    /// F test mode off).
    #[arg(long)]
    pub no_flip: bool,
    /// IJB: divide each image feature by its norm before pooling (test mode N0).
    #[arg(long)]
    pub no_norm: bool,
    /// IJB: do not weight image features by the detector score (test mode D0).
    #[arg(long)]
    pub no_detector_score: bool,
    /// TinyFace folder as AdaFace's evaluation reads it: tinyface/Testing_Set/{probe_img_ID_pairs.mat,
    /// gallery_match_img_ID_pairs.mat} and the aligned copy (--tinyface-aligned) with Probe/,
    /// Gallery_Match/ and Gallery_Distractor/. Rank-1, 5 and 20 with the distractors.
    #[arg(long)]
    pub tinyface: Option<PathBuf>,
    /// Name of the aligned TinyFace folder inside --tinyface.
    #[arg(long, default_value = "aligned_pad_0.1_pad_high")]
    pub tinyface_aligned: String,
    /// Fit QMagFace's alpha and beta on this verification set (.bin or pair list) with the model, report
    /// them, and use them for --score qmagface.
    #[arg(long)]
    pub fit_qmagface: Option<PathBuf>,
    /// Error-versus-reject curve: the false-match rate its threshold is set at (MagFace: 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    pub erc_fmr: f64,
    /// Error-versus-reject curve: the largest fraction of pairs rejected (MagFace: 0.95).
    #[arg(long, default_value_t = 0.95)]
    pub erc_max_reject: f64,
    /// Error-versus-reject curve: the step between reject fractions.
    #[arg(long, default_value_t = 0.05)]
    pub erc_step: f64,
    /// Combine report.json files of earlier runs into the summary table (no model needed).
    #[arg(long)]
    pub summarize: Vec<PathBuf>,
}

impl BenchmarkFlags {
    /// Whether a benchmark is asked for.
    pub fn any(&self) -> bool {
        self.ijb.is_some() || self.tinyface.is_some()
    }

    /// Whether the benchmarks asked for need a model (features given: no).
    pub fn needs_model(&self) -> bool {
        self.fit_qmagface.is_some() || (self.any() && self.features.is_none())
    }

    pub fn check(&self) -> Result<()> {
        if self.features.is_some() && self.ijb.is_some() == self.tinyface.is_some() {
            return Err(Error::Invalid("--features goes with exactly one of --ijb and --tinyface".into()));
        }
        if self.features.is_some() && self.no_flip {
            return Err(Error::Invalid(
                "--no-flip changes how a model's features are computed; --features are used as given".into(),
            ));
        }
        if !(self.erc_fmr > 0.0 && self.erc_fmr < 1.0) {
            return Err(Error::Invalid(format!("--erc-fmr {}: expected a rate in (0, 1)", self.erc_fmr)));
        }
        if !(self.erc_step > 0.0 && self.erc_max_reject >= 0.0 && self.erc_max_reject < 1.0) {
            return Err(Error::Invalid(format!(
                "--erc-step {} / --erc-max-reject {}: expected a positive step and a maximum in [0, 1)",
                self.erc_step, self.erc_max_reject
            )));
        }
        Ok(())
    }
}
