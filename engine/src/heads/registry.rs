//! Heads by command-line name (spec §15).

use super::adaface::AdaFace;
use super::arcface::ArcFace;
use super::combined::Combined;
use super::cosface::CosFace;
use super::curricularface::CurricularFace;
use super::focal::Focal;
use super::hm_softmax::HmSoftmax;
use super::magface::MagFace;
use super::mv_softmax::MvSoftmax;
use super::qamface::QamFace;
use super::qcface::{QcFace, SoftmaxPart};
use super::smaface::{SmaFace, SmaKind};
use super::softmax::Softmax;
use super::sphereface::SphereFace;
use super::{Head, HeadParams};
use crate::{Error, Result};

const NAMES: [&str; 23] = [
    "softmax",
    "sphereface",
    "cosface",
    "arcface",
    "combined",
    "curricularface",
    "mv-am",
    "mv-arc",
    "magface",
    "adaface",
    "qamface",
    "sm-cosface",
    "nsm-cosface-star",
    "smaface",
    "smaface-star",
    "nsmaface-star",
    "hm-softmax",
    "focal",
    "hm-adaface",
    "focal-adaface",
    "qcface",
    "qcface-cur",
    "qcface-mvs",
];

/// Every head name `from_name` accepts.
pub fn names() -> Vec<&'static str> {
    NAMES.to_vec()
}

/// Whether the head `name` has QCFace's two phases (`--phase warmup|planning`, the trainer's warm-up).
pub fn has_phases(name: &str) -> bool {
    [SoftmaxPart::Arc, SoftmaxPart::Cur, SoftmaxPart::Mvs].iter().any(|p| p.name() == name)
}

/// Builds a head with its defaults overridden by `p`; unknown names and invalid values are errors.
pub fn from_name(name: &str, p: &HeadParams) -> Result<Box<dyn Head>> {
    Ok(match name {
        "softmax" => Box::new(Softmax::new(p)?),
        "sphereface" => Box::new(SphereFace::new(p)?),
        "cosface" => Box::new(CosFace::new(p)?),
        "arcface" => Box::new(ArcFace::new(p)?),
        "combined" => Box::new(Combined::new(p)?),
        "curricularface" => Box::new(CurricularFace::new(p)?),
        "mv-am" => Box::new(MvSoftmax::new(p, false)?),
        "mv-arc" => Box::new(MvSoftmax::new(p, true)?),
        "magface" => Box::new(MagFace::new(p)?),
        "adaface" => Box::new(AdaFace::new(p)?),
        "qamface" => Box::new(QamFace::new(p)?),
        "sm-cosface" => Box::new(SmaFace::new(p, SmaKind::SmCosFace)?),
        "nsm-cosface-star" => Box::new(SmaFace::new(p, SmaKind::NsmCosFaceStar)?),
        "smaface" => Box::new(SmaFace::new(p, SmaKind::SmaFace)?),
        "smaface-star" => Box::new(SmaFace::new(p, SmaKind::SmaFaceStar)?),
        "nsmaface-star" => Box::new(SmaFace::new(p, SmaKind::NsmaFaceStar)?),
        "hm-softmax" => Box::new(HmSoftmax::new(p)?),
        "focal" => Box::new(Focal::new(p)?),
        "hm-adaface" => Box::new(SmaFace::new(p, SmaKind::HmAdaFace)?),
        "focal-adaface" => Box::new(SmaFace::new(p, SmaKind::FocalAdaFace)?),
        "qcface" => Box::new(QcFace::new(p, SoftmaxPart::Arc)?),
        "qcface-cur" => Box::new(QcFace::new(p, SoftmaxPart::Cur)?),
        "qcface-mvs" => Box::new(QcFace::new(p, SoftmaxPart::Mvs)?),
        "qqcface" | "qmagface" => {
            return Err(Error::Invalid(format!(
                "'{name}' is an evaluation score (heads::qqcface), not a training head; train with qcface or magface"
            )))
        }
        _ => {
            return Err(Error::Invalid(format!("unknown head '{name}'; known heads: {}", names().join(", "))))
        }
    })
}
