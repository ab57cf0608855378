//! Training batches on their way to a device whose copies can overlap compute (`Backend::batch_stager`):
//! the loop stages batch k+1 before it queues step k, then takes it when its turn comes.

use crate::tensor::{DType, Tensor};
use crate::Result;

/// A host batch to stage: u8 HWC images (normalized on the device by `take`) or f32 values as they are.
#[derive(Clone, Copy)]
pub enum HostPixels<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

/// A batch whose copy to the device is queued; only the stager that made it can take it.
#[must_use = "a staged batch is only used through BatchStager::take"]
#[derive(Debug)]
pub struct StagedBatch {
    /// Which of the stager's buffers holds it.
    pub(crate) slot: usize,
    /// Unique in the process, so a handle is never taken twice or by another stager.
    pub(crate) id: u64,
    pub(crate) shape: [usize; 4],
    pub(crate) u8_pixels: bool,
}

impl StagedBatch {
    /// NHWC shape of the batch.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
}

pub trait BatchStager: Send {
    /// Starts copying a batch of shape `[n, h, w, 3]` (NHWC) to the device and returns without waiting
    /// for the copy; `pixels` may be reused at once.
    fn stage(&mut self, pixels: HostPixels<'_>, shape: [usize; 4]) -> Result<StagedBatch>;

    /// The staged batch as a device tensor: u8 images normalized to `dtype` ((x / 255 - 0.5) / 0.5),
    /// f32 values as they are (`dtype` must then be f32). Queued after the batch's copy.
    fn take(&mut self, batch: StagedBatch, dtype: DType) -> Result<Tensor>;
}
