//! Synthetic face-like identities: the project's embedded default data set.
//!
//! Each identity is a parametric face ([`identity`]): head shape, skin tone, hair style and colour,
//! eye spacing/size/tilt and iris colour, brows, nose, mouth, ears, and sometimes a beard, glasses or a
//! mole. Each photo of it draws an independent nuisance ([`nuisance`]): shift, scale, roll and a
//! yaw-like turn; a directional light with strong side components, exposure and a colour cast;
//! smile, mouth opening, blinks, brow raise and gaze; a small elastic warp; clothes; and a cluttered
//! background. Identity lives in geometry and colour relations that stay put; nuisance dominates the
//! raw pixels, so cosine similarity of pixels is close to chance while a small CNN learns the task.
//!
//! Calibration choices. Raw-pixel cosine is driven by the luminance of large central areas (skin and
//! hair tone), so the nuisances that break it are spatial: shifts of up to ±12% of the frame, roll
//! up to ±17°, scale ±13%, a directional light from anywhere with a low ambient share, an uneven
//! brightness gradient over the whole frame, clutter and clothes of random colours. A CNN shrugs
//! these off. What would hide identity from a CNN is kept small: the light's peak brightness is
//! fixed (only its direction and ambient share vary) and exposure and colour casts stay within ±15%,
//! so skin and hair tone remain readable; identity parameters are many and wide, with discrete
//! attributes (six hair styles, ten hair colours, beard types, glasses, moles, birthmarks) so two
//! random people differ in several visible ways.
//!
//! Degradation model: every image draws a level `d = U1·U2` (two uniforms in [0, 1), so milder images
//! are more common) and is stored with it. After rendering, the capture chain applies a Gaussian blur
//! of sigma 1.2·d pixels (at 112 px, scaled with the image size), box down-scaling by 1 + 2·d and
//! bilinear up-scaling back, and Gaussian noise of (1 + 8·d)/255 per channel, then clips and rounds
//! to u8. `d = 0` is a sharp image; `d = 1` is 3x under-resolved, blurred and noisy.
//!
//! Verification pairs come only from identities held out of training (labels at and above
//! `identities`), half of them the same identity, alternating same/different so that every split into
//! ten folds stays balanced. Generation is parallel (rayon) and deterministic: every identity, image
//! and pair has its own random stream derived from the seed and its indices.

mod degrade;
mod identity;
mod nuisance;
mod pixel_baseline;
mod preview;
mod render;
mod rng;

pub use pixel_baseline::{best_threshold_accuracy, raw_pixel_accuracy, PixelBaseline};
pub use preview::{encode_png, write_preview};

use identity::Identity;
use nuisance::Nuisance;
use rayon::prelude::*;
use rng::{Stream, SynthRng};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfig {
    /// Training identities, labels 0..identities.
    pub identities: usize,
    pub images_per_identity: usize,
    /// Identities used only for verification pairs, labels identities..identities+heldout.
    pub heldout_identities: usize,
    /// Verification pairs, half same and half different (must be even).
    pub pairs: usize,
    /// Image side in pixels (square RGB), at least 32.
    pub size: usize,
    pub seed: u64,
}

impl SynthConfig {
    /// The size used for the CPU demo: 64 px, 600 training identities x 10 photos, 1,000 pairs
    /// from 100 held-out identities.
    pub fn cpu_demo(seed: u64) -> SynthConfig {
        SynthConfig {
            identities: 600,
            images_per_identity: 10,
            heldout_identities: 100,
            pairs: 1000,
            size: 64,
            seed,
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            identities: 600,
            images_per_identity: 10,
            heldout_identities: 200,
            pairs: 2000,
            size: 112,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthImage {
    pub label: u32,
    /// Degradation level in [0, 1] this image was made with (see the module docs).
    pub degradation: f32,
    /// `size` x `size` RGB, row-major, interleaved (HWC).
    pub rgb: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SynthSet {
    pub size: usize,
    /// Number of training classes (labels 0..classes).
    pub classes: usize,
    /// Ordered by label, then image index.
    pub train: Vec<SynthImage>,
    /// (first, second, same identity).
    pub pairs: Vec<(SynthImage, SynthImage, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthConfigError(pub String);

impl std::fmt::Display for SynthConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid synthetic data configuration: {}", self.0)
    }
}

impl std::error::Error for SynthConfigError {}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), SynthConfigError> {
        let fail = |m: String| Err(SynthConfigError(m));
        if self.size < 32 {
            return fail(format!("size {} is below the minimum of 32 pixels", self.size));
        }
        if self.size > 1024 {
            return fail(format!("size {} is above the maximum of 1024 pixels", self.size));
        }
        if self.identities == 0 || self.images_per_identity == 0 {
            return fail("identities and images_per_identity must both be at least 1".into());
        }
        if !self.pairs.is_multiple_of(2) {
            return fail(format!("pairs {} must be even (half same, half different)", self.pairs));
        }
        if self.pairs > 0 && self.heldout_identities < 2 {
            return fail(format!(
                "{} pairs need at least 2 held-out identities, got {}",
                self.pairs, self.heldout_identities
            ));
        }
        let total = self.identities as u64 + self.heldout_identities as u64;
        if total > u32::MAX as u64 {
            return fail(format!("{total} identities do not fit u32 labels"));
        }
        Ok(())
    }
}

/// The face of identity `label` under `seed` (training and held-out labels share one numbering).
fn identity(seed: u64, label: u32) -> Identity {
    Identity::sample(&mut SynthRng::stream(seed, Stream::Identity, label as u64, 0))
}

/// One photo: nuisance, rendering and degradation all from the stream `rng`.
fn photo(id: &Identity, label: u32, size: usize, mut rng: SynthRng) -> SynthImage {
    let nz = Nuisance::sample(&mut rng);
    let linear = render::render(id, &nz, size);
    let rgb = degrade::degrade(linear, size, nz.degradation, &mut rng);
    SynthImage { label, degradation: nz.degradation, rgb }
}

/// The `k`-th training image of training identity `label`.
pub fn train_image(cfg: &SynthConfig, label: u32, k: usize) -> SynthImage {
    let id = identity(cfg.seed, label);
    photo(&id, label, cfg.size, SynthRng::stream(cfg.seed, Stream::TrainImage, label as u64, k as u64))
}

/// Which held-out identities pair `p` compares; even pairs are the same identity.
fn pair_labels(cfg: &SynthConfig, p: usize) -> (u32, u32, bool) {
    let mut rng = SynthRng::stream(cfg.seed, Stream::PairChoice, p as u64, 0);
    let h = cfg.heldout_identities;
    let same = p.is_multiple_of(2);
    let a = rng.below(h);
    let b = if same { a } else { (a + 1 + rng.below(h - 1)) % h };
    let base = cfg.identities as u32;
    (base + a as u32, base + b as u32, same)
}

pub fn generate(cfg: &SynthConfig) -> Result<SynthSet, SynthConfigError> {
    cfg.validate()?;
    let total_ids = (cfg.identities + cfg.heldout_identities) as u32;
    let ids: Vec<Identity> = (0..total_ids).into_par_iter().map(|l| identity(cfg.seed, l)).collect();
    let n = cfg.images_per_identity;
    let train = (0..cfg.identities * n)
        .into_par_iter()
        .map(|i| {
            let (label, k) = ((i / n) as u32, i % n);
            photo(
                &ids[label as usize],
                label,
                cfg.size,
                SynthRng::stream(cfg.seed, Stream::TrainImage, label as u64, k as u64),
            )
        })
        .collect();
    let pairs = (0..cfg.pairs)
        .into_par_iter()
        .map(|p| {
            let (a, b, same) = pair_labels(cfg, p);
            let shot = |label: u32, side: u64| {
                photo(
                    &ids[label as usize],
                    label,
                    cfg.size,
                    SynthRng::stream(cfg.seed, Stream::PairImage, p as u64, side),
                )
            };
            (shot(a, 0), shot(b, 1), same)
        })
        .collect();
    Ok(SynthSet { size: cfg.size, classes: cfg.identities, train, pairs })
}

#[cfg(test)]
mod tests;
