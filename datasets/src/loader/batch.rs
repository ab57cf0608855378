//! A batch as the trainer receives it: NHWC pixels (normalized f32 or raw u8), labels, and per-sample
//! bookkeeping.

/// What the pixels hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelFormat {
    /// f32 NHWC, ((x / 255) - 0.5) / 0.5 as insightface normalizes: in [-1, 1].
    #[default]
    F32Normalized,
    /// u8 NHWC as decoded (flip applied), for normalizing on the GPU after a 4x smaller copy.
    U8,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub epoch: u64,
    /// Position of this batch within the epoch (for this rank).
    pub index: usize,
    pub height: usize,
    pub width: usize,
    /// n x height x width x 3.
    pub pixels: Pixels,
    pub labels: Vec<u32>,
    /// Record keys of the samples, for tracing a sample back to the file.
    pub keys: Vec<u64>,
    /// AdaFace's information ratio per sample (1 when not cropped or down-scaled).
    pub information: Vec<f32>,
    /// Records left out under `skip_corrupt`: key and reason.
    pub skipped: Vec<(u64, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}
