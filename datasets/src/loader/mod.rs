//! The training loader: a per-epoch shuffled, rank-sharded order of samples, cut into batches that worker
//! threads decode, augment and normalize ahead of the trainer through bounded queues.

mod batch;
mod normalize;
mod sampler;
mod workers;

pub use batch::{Batch, PixelFormat, Pixels};
pub use normalize::{extend_normalized, normalize_table};
pub use sampler::Sampler;
pub use workers::{EpochBatches, Loader, LoaderConfig};

#[cfg(test)]
mod tests;
