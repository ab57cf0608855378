//! The embedded default's settings (`engine-train train` with no `--data`), in one place so that the
//! flags' defaults, the trainer and the honesty tests use the same numbers. Tuned on the 2-core CPU
//! machine to pass 95% verification within 5 minutes of training (bench/demo/run.sh measures it).

use datasets::synth::SynthConfig;

/// 32 px: the smallest image the generator makes; about 4x the throughput of 64 px.
pub const SIZE: usize = 32;
pub const IDENTITIES: usize = 600;
pub const IMAGES_PER_IDENTITY: usize = 20;
pub const HELDOUT_IDENTITIES: usize = 200;
pub const PAIRS: usize = 2000;

pub const BACKBONE: &str = "small";
pub const HEAD: &str = "cosface";
/// CosFace's scale for the demo (the head's own default, 64, barely trains a 128-d small net here).
pub const HEAD_S: f64 = 30.0;
pub const OPTIMIZER: &str = "adamw";
pub const LR: f64 = 3e-3;
pub const SCHEDULE: &str = "cosine";
pub const BATCH_SIZE: usize = 128;
pub const EPOCHS: f64 = 18.0;
/// Steps between verification runs (each costs a few seconds on 2 cores).
pub const EVAL_EVERY: u64 = 200;

/// The generated set the demo trains and verifies on.
pub fn synth_config() -> SynthConfig {
    SynthConfig {
        identities: IDENTITIES,
        images_per_identity: IMAGES_PER_IDENTITY,
        heldout_identities: HELDOUT_IDENTITIES,
        pairs: PAIRS,
        size: SIZE,
        seed: 0,
    }
}
