//! The CUDA backend, through cudarc with dynamic loading: nothing CUDA is needed to build or to run on the
//! CPU. Opening a device checks that each library can be loaded first, because cudarc panics when it
//! cannot. One context holds the compute stream (kernels, cuBLAS, cuDNN), a copy stream for
//! host-to-device transfers, the NVRTC-compiled kernel modules and the caching allocator. Training
//! batches reach the device through `prefetch::BatchUploader`, whose copies overlap the compute stream
//! (ordered by events); `upload` is the simple synchronous path for everything else.

/// The kernel `<stem>_<dtype suffix>` as a static name (f32, bf16, f16).
macro_rules! kname {
    ($stem:literal, $dt:expr, $op:expr) => {
        match $dt {
            crate::tensor::DType::F32 => concat!($stem, "_f32"),
            crate::tensor::DType::BF16 => concat!($stem, "_bf16"),
            crate::tensor::DType::F16 => concat!($stem, "_f16"),
            other => {
                return Err(crate::Error::Unsupported(format!("{} on CUDA does not take {other}", $op)));
            }
        }
    };
}

pub mod alloc;
mod batch_norm;
mod blas;
pub mod compile;
mod conv;
mod head;
/// The class-sharded head's rank step (`heads::sharded`).
pub(crate) use head::{put_rows, sharded_margin_head, take_rows, Ranks};
mod input;
mod launch;
pub mod libs;
mod multi_tensor;
pub mod nccl;
mod ops;
mod prefetch;
mod storage;

pub use batch_norm::FINISH_APPLY_MAX;
pub use storage::CudaStorage;

use super::{
    AdamWParam, AdamWStep, Backend, BatchNormSaved, BatchStager, BinaryOp, BnSums, Conv2dParams,
    DeviceCounters, MarginHeadCall, MarginHeadOutput, RunningStats, SgdParam, SgdStep, ShortcutNorm, UnaryOp,
    Updated, UpstreamBn,
};
use crate::tensor::{CpuStorage, DType, Shape, Storage, Tensor};
use crate::{Error, Result};
use alloc::{Pool, PoolStats};
use cudarc::driver::CudaStream;
use std::sync::{Arc, Weak};

/// Whether libcuda can be loaded (no symbol is called): false on machines without an NVIDIA driver.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// One GPU and everything the backend keeps for it.
pub struct CudaContext {
    /// This context's own Arc, so `&self` methods (the Backend trait) can hand it to new storage.
    this: Weak<CudaContext>,
    ordinal: usize,
    ctx: Arc<cudarc::driver::CudaContext>,
    pub(crate) compute: Arc<CudaStream>,
    copy: Arc<CudaStream>,
    arch: u32,
    name: String,
    kernels: launch::Kernels,
    pool: Arc<Pool>,
    blas: blas::Blas,
    conv: conv::Conv,
    /// Zeroed counters for the kernels whose last block finishes a reduction (batch_norm.cu), each left
    /// at zero again by the block that used it.
    counters: alloc::DeviceBuffer,
}

/// Maps a driver error to an engine error naming what was being done.
pub(crate) fn driver_err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Device(format!("CUDA error during {what}: {e}"))
}

impl CudaContext {
    /// Opens GPU `ordinal`, compiles (or loads from the cache) every kernel for its architecture, or
    /// explains why it cannot.
    pub fn open(ordinal: usize) -> Result<Arc<CudaContext>> {
        // SAFETY: only tries to dlopen libcuda; no symbol is called.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Device(
                "no CUDA driver found (libcuda.so could not be loaded): this machine has no usable GPU; \
                 use --device cpu"
                    .into(),
            ));
        }
        let ctx = std::panic::catch_unwind(|| cudarc::driver::CudaContext::new(ordinal))
            .map_err(|_| Error::Device("the CUDA driver library is present but could not be used".into()))?
            .map_err(|e| Error::Device(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let (major, minor) =
            ctx.compute_capability().map_err(driver_err("reading the compute capability"))?;
        if major < 8 {
            return Err(Error::Device(format!(
                "CUDA device {ordinal} has compute capability {major}.{minor}; the engine needs 8.0 or newer (bf16)"
            )));
        }
        let arch = (major * 10 + minor) as u32;
        // Stream order is managed here (one compute stream; the copy stream joins it both ways, or is
        // ordered by prefetch.rs's events), so cudarc's per-launch event recording is pure overhead. Must
        // precede every allocation.
        // SAFETY: buffers are only freed when the context drops (after a synchronize), never used on the
        // copy stream before it has joined the compute stream (or waited for an event recorded there
        // after their last use), and never written by two streams at once.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute = ctx.new_stream().map_err(driver_err("creating the compute stream"))?;
        let copy = ctx.new_stream().map_err(driver_err("creating the copy stream"))?;
        libs::ensure_nvrtc()?;
        let kernels = launch::Kernels::load(&ctx, arch)?;
        let pool = Pool::new(compute.clone());
        let mut counters = pool.alloc(4 << 16)?;
        compute.memset_zeros(counters.slice_mut()).map_err(driver_err("zeroing the reduction counters"))?;
        Ok(Arc::new_cyclic(|this| CudaContext {
            this: this.clone(),
            ordinal,
            ctx,
            compute: compute.clone(),
            copy,
            arch,
            name,
            kernels,
            pool,
            blas: blas::Blas::new(compute.clone()),
            conv: conv::Conv::new(compute),
            counters,
        }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// Compute capability as one number (90 for sm_90).
    pub fn arch(&self) -> u32 {
        self.arch
    }
    pub fn device_name(&self) -> &str {
        &self.name
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Uninitialised storage for `len` elements.
    pub(crate) fn alloc_storage(self: &Arc<Self>, dtype: DType, len: usize) -> Result<CudaStorage> {
        let buf = self.pool.alloc(len * dtype.size_in_bytes())?;
        Ok(CudaStorage { context: self.clone(), dtype, len, buf, moments: None })
    }

    /// The CUDA storage of `t`, which must live on this device.
    pub(crate) fn storage<'a>(&self, t: &'a Tensor) -> Result<&'a CudaStorage> {
        match t.storage() {
            Storage::Cuda(s) if s.context().ordinal == self.ordinal => Ok(s),
            Storage::Cuda(s) => Err(Error::Device(format!(
                "tensor is on cuda:{} but the op runs on cuda:{}",
                s.context().ordinal,
                self.ordinal
            ))),
            _ => Err(Error::Device(format!(
                "tensor {} is on {:?} but the op runs on cuda:{}",
                t.shape(),
                t.device(),
                self.ordinal
            ))),
        }
    }

    /// Copies a CPU tensor onto this device. The copy runs on the copy stream, which first waits for
    /// the compute stream (the pooled buffer may have been in use there); the compute stream then waits
    /// for the copy.
    pub fn upload(self: &Arc<Self>, t: &Tensor) -> Result<Tensor> {
        let host = t.cpu_storage()?;
        let bytes = host.to_le_bytes();
        let mut out = self.alloc_storage(host.dtype(), host.len())?;
        self.copy.join(&self.compute).map_err(driver_err("ordering an upload"))?;
        self.kernels.note("memcpy_htod");
        {
            let mut dst = out.buf.slice_mut().slice_mut(..bytes.len());
            self.copy.memcpy_htod(bytes.as_slice(), &mut dst).map_err(driver_err("host-to-device copy"))?;
        }
        self.compute.join(&self.copy).map_err(driver_err("ordering an upload"))?;
        Tensor::from_storage(t.shape().clone(), Storage::Cuda(out))
    }

    /// Copies a tensor of this device to the CPU (waits for the compute stream).
    pub fn download(&self, t: &Tensor) -> Result<Tensor> {
        let s = self.storage(t)?;
        let nbytes = s.len * s.dtype.size_in_bytes();
        let mut host = vec![0u8; nbytes];
        let src = s.buf.slice().slice(..nbytes);
        self.kernels.note("memcpy_dtoh");
        self.compute.memcpy_dtoh(&src, host.as_mut_slice()).map_err(driver_err("device-to-host copy"))?;
        self.compute.synchronize().map_err(driver_err("device-to-host copy"))?;
        let cpu = CpuStorage::from_le_bytes(s.dtype, &host)
            .ok_or_else(|| Error::Device("downloaded byte count does not fit the dtype".into()))?;
        Tensor::from_cpu(t.shape().clone(), cpu)
    }

    /// The Arc of this context (ops need it to allocate outputs); `t` must live here.
    fn me(&self, t: &Tensor) -> Result<Arc<CudaContext>> {
        self.storage(t)?;
        self.arc()
    }

    fn arc(&self) -> Result<Arc<CudaContext>> {
        self.this.upgrade().ok_or_else(|| Error::Device("CUDA context already dropped".into()))
    }
}

impl Drop for CudaContext {
    fn drop(&mut self) {
        // Pooled buffers are freed after this; no queued kernel may still use them.
        let _ = self.synchronize();
    }
}

impl Backend for CudaContext {
    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }

    fn describe(&self) -> String {
        format!("cuda:{} ({}, sm_{})", self.ordinal, self.name, self.arch)
    }

    fn synchronize(&self) -> Result<()> {
        self.compute.synchronize().map_err(driver_err("synchronize"))?;
        self.copy.synchronize().map_err(driver_err("synchronize"))
    }

    fn counters(&self) -> DeviceCounters {
        let pool = self.pool.stats();
        DeviceCounters {
            kernel_launches: self.kernels.lookups(),
            driver_allocs: pool.driver_allocs,
            reuses: pool.reuses,
            bytes_held: pool.bytes_held as u64,
            conv_algorithms: self.conv.algorithm_counts(),
        }
    }

    fn start_ledger(&self) {
        self.kernels.ledger.start();
    }

    fn take_ledger(&self) -> Vec<super::ledger::Launch> {
        self.kernels.ledger.take()
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor> {
        self.kernels.note("memset");
        let mut out = self.arc()?.alloc_storage(dtype, shape.numel())?;
        let bytes = shape.numel() * dtype.size_in_bytes();
        {
            let mut v = out.buf.slice_mut().slice_mut(..bytes);
            self.compute.memset_zeros(&mut v).map_err(driver_err("zeroing"))?;
        }
        Tensor::from_storage(shape.clone(), Storage::Cuda(out))
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        blas::matmul(&self.me(a)?, a, b, trans_a, trans_b)
    }
    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        ops::binary(&self.me(a)?, op, a, b)
    }
    fn unary(&self, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        ops::unary(&self.me(a)?, op, a)
    }
    fn affine(&self, a: &Tensor, alpha: f64, beta: f64) -> Result<Tensor> {
        ops::affine(&self.me(a)?, a, alpha, beta)
    }
    fn sum_rows(&self, a: &Tensor) -> Result<Tensor> {
        ops::sum_rows(&self.me(a)?, a)
    }
    fn sum_all(&self, a: &Tensor) -> Result<Tensor> {
        ops::sum_all(&self.me(a)?, a)
    }
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        conv::forward(&self.me(x)?, x, w, p)
    }
    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        conv::backward_data(&self.me(dy)?, dy, w, x_shape, p)
    }
    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_shape: &Shape,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        conv::backward_filter(&self.me(dy)?, dy, x, w_shape, p)
    }
    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        batch_norm::batch_norm_train(&self.me(x)?, x, gamma, beta, None, eps, running)
    }
    fn batch_norm_add_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        eps: f64,
        running: Option<RunningStats<'_>>,
        shortcut: &Tensor,
        shortcut_norm: Option<ShortcutNorm<'_>>,
    ) -> Result<(Tensor, BatchNormSaved, Option<BatchNormSaved>)> {
        batch_norm::batch_norm_add_train(&self.me(x)?, x, gamma, beta, eps, running, shortcut, shortcut_norm)
    }
    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        batch_norm::batch_norm_eval(&self.me(x)?, x, gamma, beta, running_mean, running_var, eps)
    }
    fn batch_norm_backward_gathering(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
        residual: Option<&Tensor>,
        upstream: &[UpstreamBn<'_>],
    ) -> Result<((Tensor, Tensor, Tensor), Option<Vec<BnSums>>)> {
        let ctx = self.me(x)?;
        let (own, sums) =
            batch_norm::batch_norm_backward_gathering(&ctx, dy, x, gamma, saved, residual, upstream)?;
        Ok((own, Some(sums)))
    }

    fn batch_norm_dx_from_sums(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: Option<&Tensor>,
        saved: &BatchNormSaved,
        sums: &BnSums,
    ) -> Result<Tensor> {
        batch_norm::bwd_dx(&self.me(x)?, dy, x, gamma, beta, alpha, saved, sums, None)
    }

    fn batch_norm_dx_from_sums_pair(
        &self,
        dy: &Tensor,
        a: (&UpstreamBn<'_>, &BnSums),
        b: (&UpstreamBn<'_>, &BnSums),
    ) -> Result<(Tensor, Tensor)> {
        batch_norm::bwd_dx_pair(&self.me(dy)?, dy, [a, b])
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        saved: &BatchNormSaved,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (dx, dg, db, _) =
            batch_norm::batch_norm_backward(&self.me(x)?, dy, x, gamma, None, None, saved, residual)?;
        Ok((dx, dg, db))
    }
    fn prelu_forward(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        ops::prelu_forward(&self.me(x)?, x, alpha)
    }
    fn prelu_backward(&self, dy: &Tensor, x: &Tensor, alpha: &Tensor) -> Result<(Tensor, Tensor)> {
        ops::prelu_backward(&self.me(x)?, dy, x, alpha)
    }
    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)> {
        ops::dropout(&self.me(x)?, x, p, seed)
    }
    fn l2_normalize_rows(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
        ops::l2_normalize_rows(&self.me(x)?, x, eps)
    }
    fn l2_normalize_rows_backward(&self, dy: &Tensor, y: &Tensor, norms: &Tensor) -> Result<Tensor> {
        ops::l2_normalize_rows_backward(&self.me(y)?, dy, y, norms)
    }
    fn l2_normalize_rows_backward_eps(
        &self,
        dy: &Tensor,
        y: &Tensor,
        norms: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        ops::l2_normalize_rows_backward_eps(&self.me(y)?, dy, y, norms, eps)
    }
    fn mul_channels(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        ops::per_channel_op(&self.me(x)?, x, s, true)
    }
    fn add_channels(&self, x: &Tensor, b: &Tensor) -> Result<Tensor> {
        ops::per_channel_op(&self.me(x)?, x, b, false)
    }
    fn scale_rows(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        ops::scale_rows(&self.me(x)?, x, s)
    }

    fn broadcast_scalar(&self, s: &Tensor, shape: &Shape) -> Result<Tensor> {
        // A one-row scale of ones: the value is never read on the host.
        let ones = self.affine(&self.zeros(&[1, shape.numel()].into(), s.dtype())?, 0.0, 1.0)?;
        self.scale_rows(&ones, &s.reshape([1])?)?.reshape(shape.clone())
    }

    fn scale_by_scalar(&self, t: &Tensor, s: &Tensor) -> Result<Tensor> {
        let n = t.numel();
        self.scale_rows(&t.reshape([1, n])?, &s.reshape([1])?)?.reshape(t.shape().clone())
    }

    fn slice_rows(&self, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
        ops::slice_rows(&self.me(t)?, t, r0, r1)
    }

    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        let first = parts.first().ok_or_else(|| Error::Shape("concat_rows of nothing".into()))?;
        ops::concat_rows(&self.me(first)?, parts)
    }

    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        ops::cast(&self.me(t)?, t, dtype)
    }

    fn half_operand(&self, t: &Tensor, half: DType) -> Result<Tensor> {
        self.cast(t, half)
    }

    fn store_half(&self, t: Tensor, half: DType) -> Result<Tensor> {
        if t.dtype() == DType::F32 {
            self.cast(&t, half)
        } else {
            Ok(t)
        }
    }

    fn widen(&self, t: &Tensor) -> Result<Tensor> {
        match t.dtype() {
            DType::BF16 | DType::F16 => self.cast(t, DType::F32),
            _ => Ok(t.clone()),
        }
    }

    fn batch_norm_prelu_forward_train(
        &self,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: &Tensor,
        eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        batch_norm::batch_norm_train(&self.me(x)?, x, gamma, beta, Some(alpha), eps, running)
    }

    fn batch_norm_prelu_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: Option<&Tensor>,
        beta: Option<&Tensor>,
        alpha: &Tensor,
        saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (dx, dg, db, da) =
            batch_norm::batch_norm_backward(&self.me(x)?, dy, x, gamma, beta, Some(alpha), saved, None)?;
        let da =
            da.ok_or_else(|| Error::Device("fused batch norm backward gave no PReLU gradient".into()))?;
        Ok((dx, dg, db, da))
    }

    fn sgd_update(&self, params: &mut [SgdParam<'_>], h: &SgdStep) -> Result<Updated> {
        multi_tensor::sgd_update(&self.arc()?, params, h)
    }

    fn adamw_update(&self, params: &mut [AdamWParam<'_>], h: &AdamWStep) -> Result<Updated> {
        multi_tensor::adamw_update(&self.arc()?, params, h)
    }

    fn first_flagged(&self, flags: &Tensor) -> Result<Option<usize>> {
        multi_tensor::first_flagged(&self.me(flags)?, flags)
    }

    fn first_nonfinite(&self, ts: &[&Tensor]) -> Result<Option<usize>> {
        multi_tensor::first_nonfinite(&self.arc()?, ts)
    }

    fn scale_and_check(&self, ts: &mut [&mut Tensor], factor: f32) -> Result<Option<usize>> {
        multi_tensor::scale_and_check(&self.arc()?, ts, factor)
    }

    fn sum_of_squares(&self, ts: &[&Tensor]) -> Result<f64> {
        multi_tensor::sum_of_squares(&self.arc()?, ts)
    }

    fn images_to_nhwc(
        &self,
        images: &[u8],
        shape: [usize; 4],
        flip: &[bool],
        dtype: DType,
    ) -> Result<Tensor> {
        input::images_to_nhwc(&self.arc()?, images, shape, flip, dtype)
    }

    fn batch_stager(&self) -> Result<Option<Box<dyn BatchStager>>> {
        Ok(Some(Box::new(prefetch::BatchUploader::new(&self.arc()?)?)))
    }

    fn margin_head(&self, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
        head::margin_head(&self.me(call.x)?, call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::tensor::Device;

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        num / b.iter().map(|y| y * y).sum::<f64>().sqrt()
    }

    /// Opt-in (needs a GPU): `cargo test -p engine -- --ignored gpu_`. Without one it is reported as
    /// ignored, never as passed. `engine-train gpu-check` covers every op; this is the quick smoke test.
    #[test]
    #[ignore = "needs a CUDA GPU; run with --ignored on a GPU machine"]
    fn gpu_elementwise_reduction_and_matmul_match_the_cpu() {
        let dev = Device::parse("cuda").expect("this test needs a GPU");
        let a: Vec<f32> = (0..64 * 48).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let b: Vec<f32> = (0..48 * 32).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
        let (ta, tb) = (Tensor::from_vec(a, [64, 48]).unwrap(), Tensor::from_vec(b, [48, 32]).unwrap());
        let (ga, gb) = (ta.to_device(&dev).unwrap(), tb.to_device(&dev).unwrap());
        let be = ga.backend();
        let cpu = CpuBackend;
        let pairs = [
            (be.matmul(&ga, &gb, false, false).unwrap(), cpu.matmul(&ta, &tb, false, false).unwrap()),
            (be.sum_rows(&ga).unwrap(), cpu.sum_rows(&ta).unwrap()),
            (be.affine(&ga, 0.5, 2.0).unwrap(), cpu.affine(&ta, 0.5, 2.0).unwrap()),
            (be.binary(BinaryOp::Mul, &ga, &ga).unwrap(), cpu.binary(BinaryOp::Mul, &ta, &ta).unwrap()),
        ];
        for (g, c) in pairs {
            let e = rel(&g.to_f64_vec().unwrap(), &c.to_f64_vec().unwrap());
            assert!(e < 1e-5, "relative error {e}");
        }
    }
}
