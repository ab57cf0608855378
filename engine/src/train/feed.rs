//! How the loader's batches reach `Trainer::train_step`. On a device whose backend stages batches (a
//! GPU: `Backend::batch_stager`), the u8 pixels go through pinned double buffers: the loop stages batch
//! k+1 before it queues step k, so its host-to-device copy overlaps step k, and the device normalizes it
//! (the flip is already applied by the loader). Elsewhere (the CPU) the loader's f32 batch becomes a host
//! tensor when its step comes. Labels travel with their images; they stay on the host, where the heads'
//! own code reads them.

use crate::backend::{BatchStager, HostPixels, StagedBatch};
use crate::tensor::{DType, Device, Tensor};
use crate::{Error, Result};
use datasets::loader::{Batch, PixelFormat, Pixels};

/// A training batch as `train_step` takes it.
pub struct TrainBatch {
    /// NHWC normalized f32 images, on the trainer's device or the host.
    pub images: Tensor,
    /// One class per image.
    pub labels: Vec<i64>,
}

/// A batch on its way to the trainer: its pixels (a host tensor or a staged upload), labels and the
/// records the loader skipped while making it.
pub struct FedBatch {
    input: FedInput,
    pub labels: Vec<i64>,
    /// (record key, why) of each record skipped (`--skip-corrupt`).
    pub skipped: Vec<(u64, String)>,
}

enum FedInput {
    Host(Tensor),
    Staged(StagedBatch),
}

pub struct Feed {
    stager: Option<Box<dyn BatchStager>>,
}

impl Feed {
    pub fn new(device: &Device) -> Result<Feed> {
        Ok(Feed { stager: crate::backend::for_device(device).batch_stager()? })
    }

    /// What the loader should produce: u8 for a staging device (4x less to copy), else normalized f32.
    pub fn pixel_format(&self) -> PixelFormat {
        if self.stager.is_some() {
            PixelFormat::U8
        } else {
            PixelFormat::F32Normalized
        }
    }

    /// Whether the loop should stage the next batch before running the current step.
    pub fn stages_ahead(&self) -> bool {
        self.stager.is_some()
    }

    /// Starts moving `batch` to the device (or wraps it as a host tensor).
    pub fn prepare(&mut self, batch: Batch) -> Result<FedBatch> {
        let shape = [batch.labels.len(), batch.height, batch.width, 3];
        let input = match (batch.pixels, &mut self.stager) {
            (Pixels::F32(px), None) => FedInput::Host(Tensor::from_vec(px, shape)?),
            (Pixels::U8(px), Some(s)) => FedInput::Staged(s.stage(HostPixels::U8(&px), shape)?),
            (Pixels::F32(px), Some(s)) => FedInput::Staged(s.stage(HostPixels::F32(&px), shape)?),
            (Pixels::U8(_), None) => {
                return Err(Error::Invalid("loader returned u8 pixels; the CPU path expects f32".into()))
            }
        };
        let labels = batch.labels.iter().map(|&l| l as i64).collect();
        Ok(FedBatch { input, labels, skipped: batch.skipped })
    }

    /// The batch as the trainer takes it (on a staging device, queued after its copy).
    pub fn take(&mut self, fed: FedBatch) -> Result<TrainBatch> {
        let images = match (fed.input, &mut self.stager) {
            (FedInput::Host(x), _) => x,
            (FedInput::Staged(s), Some(stager)) => stager.take(s, DType::F32)?,
            (FedInput::Staged(_), None) => {
                return Err(Error::Invalid("a staged batch reached a feed that does not stage".into()))
            }
        };
        Ok(TrainBatch { images, labels: fed.labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_cpu_batches_are_host_tensors_with_their_labels() {
        let mut feed = Feed::new(&Device::Cpu).unwrap();
        assert_eq!(feed.pixel_format(), PixelFormat::F32Normalized);
        assert!(!feed.stages_ahead());
        let batch = |pixels, labels: Vec<u32>, skipped| Batch {
            epoch: 0,
            index: 0,
            height: 2,
            width: 3,
            pixels,
            keys: vec![0; labels.len()],
            information: vec![1.0; labels.len()],
            labels,
            skipped,
        };
        let f32_batch = batch(
            Pixels::F32((0..2 * 2 * 3 * 3).map(|v| v as f32).collect()),
            vec![4, 1],
            vec![(7, "bad jpeg".into())],
        );
        let fed = feed.prepare(f32_batch).unwrap();
        assert_eq!(fed.skipped, vec![(7, "bad jpeg".to_string())]);
        let b = feed.take(fed).unwrap();
        assert_eq!((b.images.dims(), b.labels.as_slice()), (&[2, 2, 3, 3][..], &[4i64, 1][..]));
        assert_eq!(b.images.to_vec::<f32>().unwrap()[17], 17.0);
        assert!(feed.prepare(batch(Pixels::U8(vec![0; 36]), vec![0, 1], vec![])).is_err());
    }
}
