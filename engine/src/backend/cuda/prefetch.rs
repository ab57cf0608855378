//! Double-buffered batch upload: the next batch is copied to the GPU on the copy stream while the
//! compute stream runs the current step.
//!
//! `BatchUploader` owns two slots, each a pinned (page-locked) host buffer and a device buffer, reused
//! from step to step (they grow when a batch is larger than any before). `stage` copies the host batch
//! into the next slot's pinned buffer, queues the host-to-device copy on the copy stream and returns at
//! once; `take` makes the compute stream wait for that copy and turns the device bytes into the batch
//! tensor (u8 images are normalized by input.cu, f32 copied), a fresh pooled tensor that the step
//! then owns. Two events per slot keep the two streams and the host apart:
//!  - `copied` (recorded on the copy stream after the copy): `take` makes the compute stream wait on it
//!    before reading the device buffer, and `stage` synchronizes the host on it before it overwrites the
//!    pinned buffer the copy reads (a pinned copy reads host memory when it runs, not when queued).
//!  - `consumed` (recorded on the compute stream after `take`'s kernel, the device buffer's only
//!    reader): `stage` makes the copy stream wait on it before overwriting that device buffer.
//!
//! With the loop `x = take(b_k); b_k+1 = stage(next); step(x)`, the copy of batch k+1 is queued ahead of
//! step k's kernels and runs beside them; step k+1's conversion waits for it. At most two batches are in
//! flight: staging a third discards the oldest one not yet taken, whose handle `take` then refuses.

use super::alloc::DeviceBuffer;
use super::{driver_err, train_ops, CudaContext};
use crate::backend::{BatchStager, HostPixels, StagedBatch};
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::{CudaEvent, PinnedHostSlice};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

struct Slot {
    host: Option<PinnedHostSlice<u8>>,
    dev: Option<DeviceBuffer>,
    /// Bytes both buffers hold.
    capacity: usize,
    /// Recorded on the copy stream after each host-to-device copy from this slot.
    copied: CudaEvent,
    /// Recorded on the compute stream after the last read of `dev` (and when `dev` was allocated).
    consumed: CudaEvent,
    /// Whether `copied` has been recorded at least once.
    copy_queued: bool,
    /// The id of the staged batch the slot holds, until `take` consumes it.
    pending: Option<u64>,
}

impl Slot {
    fn new(ctx: &Arc<CudaContext>) -> Result<Slot> {
        let event = || ctx.ctx.new_event(None).map_err(driver_err("creating an upload event"));
        Ok(Slot {
            host: None,
            dev: None,
            capacity: 0,
            copied: event()?,
            consumed: event()?,
            copy_queued: false,
            pending: None,
        })
    }

    /// Makes both buffers hold at least `bytes`. The host must have synchronized on `copied` already.
    fn reserve(&mut self, ctx: &Arc<CudaContext>, bytes: usize) -> Result<()> {
        if bytes <= self.capacity && self.host.is_some() {
            return Ok(());
        }
        self.release(ctx);
        let bytes = bytes.max(1);
        // SAFETY: uninitialised host memory; `stage` writes the bytes it copies before queuing the copy.
        let host = unsafe { ctx.ctx.alloc_pinned::<u8>(bytes) }
            .map_err(driver_err("allocating pinned host memory"))?;
        let dev = ctx.pool.alloc(bytes)?;
        // The pooled buffer may still be in use by queued compute work: the first copy into it waits for that.
        self.consumed.record(&ctx.compute).map_err(driver_err("ordering an upload"))?;
        self.capacity = bytes;
        self.host = Some(host);
        self.dev = Some(dev);
        Ok(())
    }

    /// Gives both buffers back once nothing queued can still use them: the pooled device buffer goes back
    /// behind the last copy into it (the pool orders reuse on the compute stream), the pinned buffer is
    /// freed after that copy has read it.
    fn release(&mut self, ctx: &Arc<CudaContext>) {
        if self.copy_queued {
            ctx.ctx.record_err(ctx.compute.wait(&self.copied));
            ctx.ctx.record_err(self.copied.synchronize());
        }
        self.pending = None;
        self.dev = None;
        self.host = None;
        self.capacity = 0;
    }
}

/// Two slots of pinned host and device memory through which training batches reach the GPU; see the
/// module documentation.
pub struct BatchUploader {
    ctx: Arc<CudaContext>,
    slots: [Slot; 2],
    /// The slot the next `stage` fills.
    next: usize,
}

/// Ids of staged batches, unique in the process (a handle is only ever taken by the uploader that made it).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl BatchUploader {
    /// No memory is allocated until the first batch is staged.
    pub fn new(ctx: &Arc<CudaContext>) -> Result<BatchUploader> {
        Ok(BatchUploader { ctx: ctx.clone(), slots: [Slot::new(ctx)?, Slot::new(ctx)?], next: 0 })
    }
}

impl BatchStager for BatchUploader {
    /// The host blocks only if the slot's previous copy (two `stage` calls ago) has not run yet; the bytes
    /// are copied into pinned memory first, so `pixels` may be reused at once.
    fn stage(&mut self, pixels: HostPixels<'_>, shape: [usize; 4]) -> Result<StagedBatch> {
        let (bytes, u8_pixels): (&[u8], bool) = match pixels {
            HostPixels::U8(p) => (p, true),
            HostPixels::F32(p) => (bytemuck::cast_slice(p), false),
        };
        let elem = if u8_pixels { 1 } else { 4 };
        let numel: usize = shape.iter().product();
        if shape[3] != 3 || bytes.len() != numel * elem {
            return Err(Error::Shape(format!(
                "stage: {} bytes of {} for a batch of shape {shape:?} (NHWC with 3 channels)",
                bytes.len(),
                if u8_pixels { "u8" } else { "f32" }
            )));
        }
        let ctx = &self.ctx;
        let k = self.next;
        let slot = &mut self.slots[k];
        // A batch staged in this slot and never taken is discarded (its handle is refused by `take`).
        slot.pending = None;
        // Host: the slot's previous copy reads the pinned buffer when it runs; it must be done first.
        slot.copied.synchronize().map_err(driver_err("waiting for an earlier upload"))?;
        slot.reserve(ctx, bytes.len())?;
        let host = slot.host.as_mut().expect("reserved");
        host.as_mut_slice().map_err(driver_err("pinned host memory"))?[..bytes.len()].copy_from_slice(bytes);
        // Copy stream: the compute stream must be done reading the device buffer (the conversion in the
        // `take` of this slot's previous batch) before it is overwritten.
        ctx.copy.wait(&slot.consumed).map_err(driver_err("ordering an upload"))?;
        {
            // The source is pinned, so the copy is asynchronous and reads it when it runs; `copied`
            // (synchronized above before every rewrite, and before the buffer is freed) covers that.
            let src = &slot
                .host
                .as_ref()
                .expect("reserved")
                .as_slice()
                .map_err(driver_err("pinned host memory"))?[..bytes.len()];
            let mut dst = slot.dev.as_mut().expect("reserved").slice_mut().slice_mut(..bytes.len());
            ctx.copy.memcpy_htod(src, &mut dst).map_err(driver_err("host-to-device copy of a batch"))?;
        }
        slot.copied.record(&ctx.copy).map_err(driver_err("ordering an upload"))?;
        slot.copy_queued = true;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        slot.pending = Some(id);
        self.next = 1 - k;
        Ok(StagedBatch { slot: k, id, shape, u8_pixels })
    }

    /// u8 images are normalized by input.cu (as the CPU loader does), f32 values copied. Queued on the
    /// compute stream after the batch's copy; returns without waiting for either.
    fn take(&mut self, batch: StagedBatch, dtype: DType) -> Result<Tensor> {
        let ctx = &self.ctx;
        let slot = &mut self.slots[batch.slot];
        if slot.pending != Some(batch.id) {
            return Err(Error::Invalid(
                "take: this staged batch was discarded (two more were staged before it was taken) or is another uploader's"
                    .into(),
            ));
        }
        if batch.u8_pixels {
            train_ops::input_kernel(dtype)?;
        } else if dtype != DType::F32 {
            return Err(Error::Unsupported(format!(
                "take: an f32 batch as {dtype} (stage u8 images to convert)"
            )));
        }
        slot.pending = None;
        // Compute stream: wait for this batch's copy before reading the device buffer.
        ctx.compute.wait(&slot.copied).map_err(driver_err("ordering an upload"))?;
        let [n, h, w, _] = batch.shape;
        let numel = n * h * w * 3;
        let dev = slot.dev.as_ref().expect("a staged slot holds a device buffer");
        let out = match batch.u8_pixels {
            true => train_ops::u8_to_nhwc(ctx, &dev.slice().slice(..numel), None, n, h, w, dtype)?,
            false => {
                let mut out = ctx.alloc_storage(DType::F32, numel)?;
                let src = dev.slice().slice(..numel * 4);
                ctx.compute
                    .memcpy_dtod(&src, &mut out.bytes_mut())
                    .map_err(driver_err("device copy of a batch"))?;
                out
            }
        };
        // The device buffer has no other reader: the next copy into it may start once compute gets here.
        slot.consumed.record(&ctx.compute).map_err(driver_err("ordering an upload"))?;
        Tensor::from_storage(batch.shape, Storage::Cuda(out))
    }
}

impl Drop for BatchUploader {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            slot.release(&self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BinaryOp};
    use crate::tensor::Device;

    fn gpu() -> Arc<CudaContext> {
        match Device::parse("cuda").expect("this test needs a GPU") {
            Device::Cuda(c) => c,
            Device::Cpu => unreachable!(),
        }
    }

    /// Batch `i`: distinct bytes per batch and position; `n` images of 8x6.
    fn images(i: usize, n: usize) -> Vec<u8> {
        (0..n * 8 * 6 * 3).map(|j| ((j * 31 + i * 97 + (j >> 7) * 13) % 256) as u8).collect()
    }

    /// Batch sizes with a shrink and growths (as `--skip-corrupt` makes short batches).
    fn sizes(count: usize) -> Vec<usize> {
        (0..count)
            .map(|i| {
                if i % 7 == 5 {
                    3
                } else if i >= count / 2 {
                    6
                } else {
                    4
                }
            })
            .collect()
    }

    /// A step-like consumer: several kernels on the compute stream that read the batch, into one tensor.
    fn step(be: &CudaContext, x: &Tensor) -> Tensor {
        let mut y = be.affine(x, 0.75, 0.125).unwrap();
        for _ in 0..4 {
            let z = be.binary(BinaryOp::Mul, &y, x).unwrap();
            y = be.binary(BinaryOp::Add, &z, &y).unwrap();
        }
        let r = y.reshape([x.shape().dims()[0], 8 * 6 * 3]).unwrap();
        be.sum_rows(&r).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.to_f64_vec().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// Each batch uploaded synchronously (`images_to_nhwc`), then consumed: the reference.
    fn reference(ctx: &Arc<CudaContext>, batches: &[Vec<u8>]) -> Vec<(Vec<u64>, Vec<u64>)> {
        batches
            .iter()
            .map(|px| {
                let n = px.len() / (8 * 6 * 3);
                let x =
                    train_ops::images_to_nhwc(ctx, px, [n, 8, 6, 3], &vec![false; n], DType::F32).unwrap();
                let y = step(ctx, &x);
                (bits(&x), bits(&y))
            })
            .collect()
    }

    /// Many batches staged back to back, as the training loop does (take batch k, stage k+1, run step k)
    /// and with both slots full (stage k+1 before take k), nothing synchronized until the end: the batch
    /// tensors and the step's results are bit for bit those of synchronous uploads. Run it with
    /// FACETRAIN_EMU_JITTER=1 on tests/cuda_emu too: a missing wait then shows as wrong numbers.
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_staged_batches_match_synchronous_uploads() {
        let ctx = gpu();
        let batches: Vec<Vec<u8>> = sizes(40).into_iter().enumerate().map(|(i, n)| images(i, n)).collect();
        let want = reference(&ctx, &batches);
        let shape = |px: &Vec<u8>| [px.len() / (8 * 6 * 3), 8, 6, 3];
        for ahead in [1usize, 2] {
            let mut up = BatchUploader::new(&ctx).unwrap();
            let mut queue = std::collections::VecDeque::new();
            let mut outs = Vec::new();
            let mut fed = 0;
            while outs.len() < batches.len() {
                while queue.len() < ahead && fed < batches.len() {
                    // A scratch copy dropped right after staging: the uploader must not read it later.
                    let scratch = batches[fed].clone();
                    queue.push_back(up.stage(HostPixels::U8(&scratch), shape(&scratch)).unwrap());
                    drop(scratch);
                    fed += 1;
                }
                let x = up.take(queue.pop_front().unwrap(), DType::F32).unwrap();
                if fed < batches.len() && ahead == 1 {
                    let scratch = batches[fed].clone();
                    queue.push_back(up.stage(HostPixels::U8(&scratch), shape(&scratch)).unwrap());
                    fed += 1;
                }
                let y = step(&ctx, &x);
                outs.push((x, y));
            }
            for (k, ((x, y), (wx, wy))) in outs.iter().zip(&want).enumerate() {
                assert!(bits(x) == *wx, "{ahead} ahead: batch {k} differs from its synchronous upload");
                assert!(bits(y) == *wy, "{ahead} ahead: the step on batch {k} differs");
            }
        }
        ctx.synchronize().unwrap();
    }

    /// Holds the compute stream (a host function queued there) until opened, or for 30 s at most.
    struct Gate {
        open: std::sync::Mutex<bool>,
        cv: std::sync::Condvar,
        timed_out: std::sync::atomic::AtomicBool,
    }

    unsafe extern "C" fn hold(arg: *mut std::ffi::c_void) {
        let g = unsafe { &*(arg as *const Gate) };
        let open = g.open.lock().unwrap();
        let (_open, r) = g.cv.wait_timeout_while(open, std::time::Duration::from_secs(30), |o| !*o).unwrap();
        if r.timed_out() {
            g.timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The overlap itself: with the compute stream held busy (a host function standing in for a long
    /// step k), batch k+1's copy still completes, then step k+1 sees the right bytes. (`upload`, which
    /// joins the copy stream to the compute stream, would wait.)
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_the_next_copy_completes_while_the_compute_stream_is_busy() {
        let ctx = gpu();
        // tests/cuda_emu's synchronous debugging mode would run the holding host function on this thread
        // and never return: refuse rather than hang (and never pass without having run).
        assert!(
            !std::env::var("FACETRAIN_EMU_SYNC").is_ok_and(|v| !v.is_empty() && v != "0"),
            "this test needs concurrent streams; unset FACETRAIN_EMU_SYNC"
        );
        let batches: Vec<Vec<u8>> = (0..4).map(|i| images(i, 4)).collect();
        let want = reference(&ctx, &batches[2..]);
        let shape = [4, 8, 6, 3];
        let mut up = BatchUploader::new(&ctx).unwrap();
        // Warm-up: both slots allocated (a new buffer's first copy waits for the compute stream, see `reserve`).
        for px in &batches[..2] {
            let s = up.stage(HostPixels::U8(px), shape).unwrap();
            up.take(s, DType::F32).unwrap();
        }
        let s2 = up.stage(HostPixels::U8(&batches[2]), shape).unwrap();
        let x2 = up.take(s2, DType::F32).unwrap();
        let gate = Arc::new(Gate {
            open: std::sync::Mutex::new(false),
            cv: std::sync::Condvar::new(),
            timed_out: Default::default(),
        });
        ctx.ctx.bind_to_thread().unwrap();
        // SAFETY: `hold` calls no CUDA API; `gate` outlives it (the context is synchronized below).
        unsafe {
            cudarc::driver::result::stream::launch_host_function(
                ctx.compute.cu_stream(),
                hold,
                Arc::as_ptr(&gate) as *mut _,
            )
        }
        .unwrap();
        let y2 = step(&ctx, &x2); // queued behind the held compute stream
        let s3 = up.stage(HostPixels::U8(&batches[3]), shape).unwrap();
        let t0 = std::time::Instant::now();
        let mut copied = false;
        while !copied && t0.elapsed() < std::time::Duration::from_secs(20) {
            copied = up.slots[s3.slot].copied.is_complete();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        *gate.open.lock().unwrap() = true;
        gate.cv.notify_all();
        let x3 = up.take(s3, DType::F32).unwrap();
        let y3 = step(&ctx, &x3);
        ctx.synchronize().unwrap();
        assert!(
            !gate.timed_out.load(std::sync::atomic::Ordering::SeqCst),
            "the compute stream was held too long"
        );
        assert!(copied, "batch k+1's copy did not complete while the compute stream was busy");
        assert!(bits(&x2) == want[0].0 && bits(&y2) == want[0].1, "batch k");
        assert!(bits(&x3) == want[1].0 && bits(&y3) == want[1].1, "batch k+1");
    }

    /// f32 batches go through as they are (same bits as `Tensor::to_device`); u8 ones convert to bf16
    /// like `images_to_nhwc`; a handle discarded by staging a third batch is refused, and one taken twice
    /// cannot be (it is moved).
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_uploader_f32_bf16_and_discarded_handles() {
        let ctx = gpu();
        let dev = Device::Cuda(ctx.clone());
        let mut up = BatchUploader::new(&ctx).unwrap();
        for i in 0..6 {
            let v: Vec<f32> = (0..2 * 8 * 6 * 3).map(|j| (j as f32 - 100.0) * 0.37 + i as f32).collect();
            let staged = up.stage(HostPixels::F32(&v), [2, 8, 6, 3]).unwrap();
            let got = up.take(staged, DType::F32).unwrap();
            let want = Tensor::from_vec(v, [2, 8, 6, 3]).unwrap().to_device(&dev).unwrap();
            assert!(bits(&got) == bits(&want), "f32 batch {i}");
        }
        let px = images(3, 5);
        let staged = up.stage(HostPixels::U8(&px), [5, 8, 6, 3]).unwrap();
        let got = up.take(staged, DType::BF16).unwrap();
        let want = train_ops::images_to_nhwc(&ctx, &px, [5, 8, 6, 3], &[false; 5], DType::BF16).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert!(bits(&got) == bits(&want), "bf16 conversion");

        let a = up.stage(HostPixels::U8(&images(0, 2)), [2, 8, 6, 3]).unwrap();
        let b = up.stage(HostPixels::U8(&images(1, 2)), [2, 8, 6, 3]).unwrap();
        let c = up.stage(HostPixels::U8(&images(2, 2)), [2, 8, 6, 3]).unwrap();
        let e = up.take(a, DType::F32).unwrap_err().to_string();
        assert!(e.contains("discarded"), "{e}");
        for (h, i) in [(b, 1), (c, 2)] {
            let got = up.take(h, DType::F32).unwrap();
            let want = train_ops::images_to_nhwc(&ctx, &images(i, 2), [2, 8, 6, 3], &[false; 2], DType::F32)
                .unwrap();
            assert!(bits(&got) == bits(&want), "batch {i} after a discarded one");
        }
        let f = up.stage(HostPixels::F32(&[0.0; 10]), [1, 2, 2, 3]).unwrap_err().to_string();
        assert!(f.contains("shape"), "{f}");
        let s = up.stage(HostPixels::F32(&[1.5; 12]), [1, 2, 2, 3]).unwrap();
        let e = up.take(s, DType::BF16).unwrap_err().to_string();
        assert!(e.contains("f32 batch"), "{e}");
    }
}
