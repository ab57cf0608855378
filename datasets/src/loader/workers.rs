//! Worker threads: batch b of an epoch is built by worker b mod T and handed over through that worker's
//! bounded queue, so batches arrive in order, at most `prefetch` are held ahead, and the result does not
//! depend on T (each sample's randomness comes from (seed, epoch, sample position)).

use super::batch::{Batch, PixelFormat, Pixels};
use super::normalize::extend_normalized;
use super::sampler::Sampler;
use crate::augment::{augment, AugmentConfig};
use crate::error::{DataError, Result};
use crate::faceset::FaceSet;
use crate::image::{decode_into, decode_into_checked, Image};
use crate::rng::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Drop the last incomplete batch of each epoch (as insightface does for training).
    pub drop_last: bool,
    pub rank: usize,
    pub world: usize,
    /// Decoding threads.
    pub threads: usize,
    /// Batches prepared ahead of the consumer, over all threads.
    pub prefetch: usize,
    pub augment: AugmentConfig,
    pub format: PixelFormat,
    /// Leave out records that fail to read or decode (listed in `Batch::skipped`) instead of failing.
    /// JPEGs are then checked strictly (`image::check_jpeg`: what libjpeg-turbo warns about is corrupt),
    /// at about twice the decoding cost.
    pub skip_corrupt: bool,
}

impl Default for LoaderConfig {
    /// insightface's training defaults: shuffled, drop-last, flip only.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        LoaderConfig {
            batch_size: 128,
            seed: 0,
            shuffle: true,
            drop_last: true,
            rank: 0,
            world: 1,
            threads,
            prefetch: 2 * threads,
            augment: AugmentConfig::flip_only(),
            format: PixelFormat::F32Normalized,
            skip_corrupt: false,
        }
    }
}

pub struct Loader {
    set: Arc<FaceSet>,
    cfg: LoaderConfig,
    sampler: Sampler,
    height: usize,
    width: usize,
}

impl Loader {
    /// Image size comes from `property`, or else from decoding the first image.
    pub fn new(set: Arc<FaceSet>, cfg: LoaderConfig) -> Result<Loader> {
        let invalid = |what: String| Err(DataError::Invalid { what });
        if cfg.batch_size == 0 || cfg.threads == 0 || cfg.world == 0 {
            return invalid(format!(
                "loader needs batch size, threads and world size > 0 (got {}, {}, {})",
                cfg.batch_size, cfg.threads, cfg.world
            ));
        }
        if cfg.rank >= cfg.world {
            return invalid(format!("rank {} outside world size {}", cfg.rank, cfg.world));
        }
        let (height, width) = match set.property() {
            Some(p) => (p.height as usize, p.width as usize),
            None => {
                let s = set.sample(0)?;
                let img =
                    crate::image::decode(&s.image).map_err(|detail| image_error(&set, s.key, detail))?;
                (img.height, img.width)
            }
        };
        let sampler = Sampler {
            len: set.len(),
            seed: cfg.seed,
            shuffle: cfg.shuffle,
            rank: cfg.rank,
            world: cfg.world,
            batch_size: cfg.batch_size,
            drop_last: cfg.drop_last,
        };
        Ok(Loader { set, cfg, sampler, height, width })
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.sampler.batches_per_epoch()
    }

    pub fn image_size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Starts the workers for `epoch`; dropping the iterator stops them.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        let order = Arc::new(self.sampler.order(epoch));
        let total = self.batches_per_epoch();
        let threads = self.cfg.threads.min(total.max(1));
        let depth = (self.cfg.prefetch / threads).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = sync_channel(depth);
            receivers.push(rx);
            let job = Job {
                set: self.set.clone(),
                cfg: self.cfg.clone(),
                order: order.clone(),
                epoch,
                height: self.height,
                width: self.width,
            };
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                let mut scratch = Vec::new();
                for b in (t..total).step_by(threads) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let batch = job.build(b, &mut scratch);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            }));
        }
        EpochBatches { receivers, handles, stop, next: 0, total }
    }
}

/// The batches of one epoch, in order.
pub struct EpochBatches {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    total: usize,
}

impl EpochBatches {
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        match rx.recv() {
            Ok(Err(e)) => {
                self.next = self.total; // the epoch cannot continue in order past a failed batch
                Some(Err(e))
            }
            Ok(b) => Some(b),
            Err(_) => {
                self.next = self.total;
                Some(Err(DataError::Invalid { what: "a loader worker thread died".into() }))
            }
        }
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting to send.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn image_error(set: &FaceSet, key: u64, detail: String) -> DataError {
    DataError::Image { path: set.path().to_path_buf(), record: format!("record {key}"), detail }
}

struct Job {
    set: Arc<FaceSet>,
    cfg: LoaderConfig,
    order: Arc<Vec<usize>>,
    epoch: u64,
    height: usize,
    width: usize,
}

impl Job {
    fn build(&self, b: usize, scratch: &mut Vec<u8>) -> Result<Batch> {
        let bs = self.cfg.batch_size;
        let positions = &self.order[b * bs..((b + 1) * bs).min(self.order.len())];
        let (h, w) = (self.height, self.width);
        let plane = h * w * 3;
        let mut batch = Batch {
            epoch: self.epoch,
            index: b,
            height: h,
            width: w,
            pixels: match self.cfg.format {
                PixelFormat::F32Normalized => Pixels::F32(Vec::with_capacity(positions.len() * plane)),
                PixelFormat::U8 => Pixels::U8(Vec::with_capacity(positions.len() * plane)),
            },
            labels: Vec::with_capacity(positions.len()),
            keys: Vec::with_capacity(positions.len()),
            information: Vec::with_capacity(positions.len()),
            skipped: Vec::new(),
        };
        for &pos in positions {
            let key = self.set.image_keys()[pos];
            let (label, flip, information) = match self.load(pos, scratch) {
                Ok(v) => v,
                Err(e) if self.cfg.skip_corrupt => {
                    batch.skipped.push((key, e.to_string()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let row = w * 3;
            match &mut batch.pixels {
                Pixels::F32(out) => extend_normalized(out, scratch, row, flip),
                Pixels::U8(out) => {
                    for src in scratch.chunks_exact(row) {
                        if flip {
                            out.extend(src.chunks_exact(3).rev().flatten());
                        } else {
                            out.extend_from_slice(src);
                        }
                    }
                }
            }
            batch.labels.push(label);
            batch.keys.push(key);
            batch.information.push(information);
        }
        Ok(batch)
    }

    /// Reads, decodes and augments sample `pos` into `scratch`; returns (label, flip, information).
    fn load(&self, pos: usize, scratch: &mut Vec<u8>) -> Result<(u32, bool, f32)> {
        let sample = self.set.sample(pos)?;
        let key = sample.key;
        // Under skip_corrupt a JPEG's scan data is checked as strictly as libjpeg-turbo does (about
        // twice the decoding time); a clean set keeps the fast decoder alone.
        let decode = if self.cfg.skip_corrupt { decode_into_checked } else { decode_into };
        let (h, w) = decode(&sample.image, scratch).map_err(|d| image_error(&self.set, key, d))?;
        if (h, w) != (self.height, self.width) {
            return Err(image_error(
                &self.set,
                key,
                format!("image is {h}x{w}, the set's images are {}x{}", self.height, self.width),
            ));
        }
        let mut rng = Rng::derive(&[self.cfg.seed, self.epoch, pos as u64]);
        let mut img = Image { height: h, width: w, data: std::mem::take(scratch) };
        let applied = augment(&mut img, &self.cfg.augment, &mut rng);
        *scratch = img.data;
        Ok((sample.label, applied.flip, applied.information))
    }
}
