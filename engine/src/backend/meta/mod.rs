//! The meta device: tensors with a shape and a dtype but no elements, on a backend that runs no kernel
//! and records, for every method, the launches the CUDA backend makes for it (names, FLOPs and bytes by
//! the ledger's counting rules). A training step run on it is a dry run of the same step on a GPU: the
//! step's own code (model, head, optimizer) drives it, so IR-50 at batch 512 costs nothing on a CPU.
//!
//! This backend mirrors `backend/cuda` launch for launch; the opt-in emulated test in `check`
//! (`gpu_a_dry_run_launches_what_a_real_step_launches`) holds the two lists equal. Values read back to the
//! host are zeros: control flow that depends on them takes its usual path (finite loss, no clipping).

mod kernels;

use super::ledger::{Launch, Ledger};
use super::{
    AdamWParam, AdamWStep, Backend, BatchNormSaved, BinaryOp, BnSums, Conv2dParams, MarginHeadCall,
    MarginHeadOutput, RunningStats, SgdParam, SgdStep, ShortcutNorm, UnaryOp, Updated, UpstreamBn,
};
use crate::tensor::{CpuStorage, DType, Shape, Storage, Tensor};
use crate::{Error, Result};
use kernels::{bytes, suffix};
use std::sync::{Arc, Weak};

/// Multiprocessors the dry run assumes (H100/H200 SXM: 132), which fixes the partial-reduction geometry.
const SMS: usize = 132;

pub struct MetaContext {
    this: Weak<MetaContext>,
    ledger: Ledger,
}

/// A tensor's dtype and element count, and the context it lives on.
pub struct MetaStorage {
    ctx: Arc<MetaContext>,
    dtype: DType,
    len: usize,
    /// The (rows, channels) whose per-channel statistics the kernel that wrote it gathered
    /// (cuda/storage.rs `moments`).
    gathered: Option<(usize, usize)>,
}

impl MetaStorage {
    pub fn context(&self) -> &Arc<MetaContext> {
        &self.ctx
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// A device-side copy (what copy-on-write does on a device).
    pub fn copy(&self) -> MetaStorage {
        self.ctx.rec(Launch::memory(
            "memcpy_dtod",
            "copy",
            2.0 * (self.len * self.dtype.size_in_bytes()) as f64,
        ));
        MetaStorage { ctx: self.ctx.clone(), dtype: self.dtype, len: self.len, gathered: None }
    }
}

impl MetaContext {
    pub fn new() -> Arc<MetaContext> {
        Arc::new_cyclic(|this| MetaContext { this: this.clone(), ledger: Ledger::default() })
    }

    fn arc(&self) -> Arc<MetaContext> {
        self.this.upgrade().expect("a meta context outlives its tensors")
    }

    /// A new tensor of this device.
    fn out(&self, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        let len = shape.numel();
        Tensor::from_storage(
            shape,
            Storage::Meta(MetaStorage { ctx: self.arc(), dtype, len, gathered: None }),
        )
    }

    /// As `out`, with the per-channel statistics of the tensor as `[rows, channels]` gathered by the
    /// kernel that writes it.
    fn out_gathered(
        &self,
        shape: impl Into<Shape>,
        dtype: DType,
        rows: usize,
        channels: usize,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let len = shape.numel();
        let gathered = Some((rows, channels));
        Tensor::from_storage(shape, Storage::Meta(MetaStorage { ctx: self.arc(), dtype, len, gathered }))
    }

    fn rec(&self, l: Launch) {
        self.ledger.record(l);
    }

    /// A host tensor's shape and dtype on this device (one host-to-device copy).
    pub fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.rec(Launch::memory("memcpy_htod", "copy", bytes(t)));
        self.out(t.shape().clone(), t.dtype())
    }

    /// Zeros of the tensor's shape and dtype on the host (one device-to-host copy).
    pub fn download(&self, t: &Tensor) -> Result<Tensor> {
        self.rec(Launch::memory("memcpy_dtoh", "copy", bytes(t)));
        Tensor::from_cpu(t.shape().clone(), CpuStorage::zeros(t.dtype(), t.numel()))
    }
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!("{op}: {} and {}", a.shape(), b.shape())));
    }
    Ok(())
}

impl Backend for MetaContext {
    fn name(&self) -> String {
        "meta".into()
    }

    fn describe(&self) -> String {
        "meta (a dry run of the CUDA backend: shapes only, launches recorded)".into()
    }

    fn zeros(&self, shape: &Shape, dtype: DType) -> Result<Tensor> {
        self.rec(Launch::memory("memset", "copy", (shape.numel() * dtype.size_in_bytes()) as f64));
        self.out(shape.clone(), dtype)
    }

    fn start_ledger(&self) {
        self.ledger.start();
    }

    fn take_ledger(&self) -> Vec<Launch> {
        self.ledger.take()
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let (ar, ac) = a.shape().matrix("matmul")?;
        let (br, bc) = b.shape().matrix("matmul")?;
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
        if k != k2 || a.dtype() != b.dtype() {
            return Err(Error::Shape(format!("matmul: {} and {}", a.shape(), b.shape())));
        }
        let out = self.out([m, n], a.dtype())?;
        if m * n > 0 {
            self.rec(kernels::gemm(m, n, k, a.dtype()));
        }
        Ok(out)
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_shape("binary", a, b)?;
        let name = if op == BinaryOp::Add && matches!(a.dtype(), DType::BF16 | DType::F16) {
            format!("residual_add_{}", suffix(a.dtype())?)
        } else {
            "binary_f32".to_string()
        };
        self.rec(Launch::memory(name, "elementwise", 3.0 * bytes(a)));
        self.out(a.shape().clone(), a.dtype())
    }

    fn unary(&self, _op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        self.rec(Launch::memory("unary_f32", "elementwise", 2.0 * bytes(a)));
        self.out(a.shape().clone(), a.dtype())
    }

    fn affine(&self, a: &Tensor, _alpha: f64, _beta: f64) -> Result<Tensor> {
        self.rec(Launch::memory("affine_f32", "elementwise", 2.0 * bytes(a)));
        self.out(a.shape().clone(), a.dtype())
    }

    fn sum_rows(&self, a: &Tensor) -> Result<Tensor> {
        let c = *a.dims().last().ok_or_else(|| Error::Shape("sum_rows of a scalar".into()))?;
        let rows = a.numel() / c.max(1);
        kernels::column_sum(
            self,
            &format!("sum_rows_partial_{}", suffix(a.dtype())?),
            "reduction",
            rows,
            c,
            bytes(a),
        );
        self.out([c], DType::F32)
    }

    fn sum_all(&self, a: &Tensor) -> Result<Tensor> {
        let parts = kernels::grid_blocks(a.numel());
        self.rec(Launch::memory("sum_all_partial_f32", "reduction", bytes(a) + 8.0 * parts as f64));
        self.rec(Launch::memory("sum_all_final_f32", "reduction", 8.0 * parts as f64 + 4.0));
        self.out(Shape(vec![]), DType::F32)
    }

    fn broadcast_scalar(&self, s: &Tensor, shape: &Shape) -> Result<Tensor> {
        let ones = self.affine(&self.zeros(&[1, shape.numel()].into(), s.dtype())?, 0.0, 1.0)?;
        self.scale_rows(&ones, &s.reshape([1])?)?.reshape(shape.clone())
    }

    fn scale_by_scalar(&self, t: &Tensor, s: &Tensor) -> Result<Tensor> {
        let n = t.numel();
        self.scale_rows(&t.reshape([1, n])?, &s.reshape([1])?)?.reshape(t.shape().clone())
    }

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        let y = kernels::conv_out_shape(x.dims(), w.dims(), p)?;
        let out = self.out(y.clone(), x.dtype())?;
        self.rec(kernels::conv("cudnn_conv_fwd", x, w, &out));
        Ok(out)
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: &Shape,
        _p: Conv2dParams,
    ) -> Result<Tensor> {
        let dx = self.out(x_shape.clone(), dy.dtype())?;
        self.rec(kernels::conv("cudnn_conv_bwd_data", &dx, w, dy));
        Ok(dx)
    }

    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_shape: &Shape,
        _p: Conv2dParams,
    ) -> Result<Tensor> {
        let dw = self.out(w_shape.clone(), dy.dtype())?;
        self.rec(kernels::conv("cudnn_conv_bwd_filter", x, &dw, dy));
        Ok(dw)
    }

    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        _eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let (saved, applied) = kernels::bn_stats(self, x, running.is_some(), true)?;
        kernels::replace_running(self, running)?;
        let y = match applied {
            Some(y) => y,
            None => kernels::bn_apply(self, x, false, None, false)?,
        };
        Ok((y, saved))
    }

    fn batch_norm_add_forward_train(
        &self,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        _eps: f64,
        running: Option<RunningStats<'_>>,
        shortcut: &Tensor,
        shortcut_norm: Option<ShortcutNorm<'_>>,
    ) -> Result<(Tensor, BatchNormSaved, Option<BatchNormSaved>)> {
        same_shape("batch_norm_add", x, shortcut)?;
        let (saved, _) = kernels::bn_stats(self, x, running.is_some(), false)?;
        kernels::replace_running(self, running)?;
        let norm = shortcut_norm.is_some();
        let saved_s = match shortcut_norm {
            Some(n) => {
                let (s, _) = kernels::bn_stats(self, shortcut, n.running.is_some(), false)?;
                kernels::replace_running(self, n.running)?;
                Some(s)
            }
            None => None,
        };
        Ok((kernels::bn_apply(self, x, false, Some((shortcut, norm)), true)?, saved, saved_s))
    }

    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        _running_mean: &Tensor,
        _running_var: &Tensor,
        _eps: f64,
    ) -> Result<Tensor> {
        let c = kernels::channels(x)?;
        self.rec(Launch::memory("bn_eval_fold", "batch norm", 24.0 * c as f64));
        kernels::bn_apply(self, x, false, None, false)
    }

    fn batch_norm_backward_gathering(
        &self,
        dy: &Tensor,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _saved: &BatchNormSaved,
        residual: Option<&Tensor>,
        upstream: &[UpstreamBn<'_>],
    ) -> Result<((Tensor, Tensor, Tensor), Option<Vec<BnSums>>)> {
        let (own, sums) = kernels::batch_norm_backward_gathering(self, dy, x, residual, upstream)?;
        Ok((own, Some(sums)))
    }

    fn batch_norm_dx_from_sums(
        &self,
        _dy: &Tensor,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        alpha: Option<&Tensor>,
        _saved: &BatchNormSaved,
        _sums: &BnSums,
    ) -> Result<Tensor> {
        kernels::bwd_dx(self, x, alpha.is_some(), None)
    }

    fn batch_norm_dx_from_sums_pair(
        &self,
        dy: &Tensor,
        a: (&UpstreamBn<'_>, &BnSums),
        b: (&UpstreamBn<'_>, &BnSums),
    ) -> Result<(Tensor, Tensor)> {
        kernels::bwd_dx_pair(self, dy, [a.0, b.0])
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _saved: &BatchNormSaved,
        residual: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (dx, dg, db, _) = kernels::batch_norm_backward(self, dy, x, false, residual)?;
        Ok((dx, dg, db))
    }

    fn prelu_forward(&self, x: &Tensor, _alpha: &Tensor) -> Result<Tensor> {
        let name = format!("prelu_fwd_{}", suffix(x.dtype())?);
        self.rec(Launch::memory(name, "prelu", 2.0 * bytes(x)));
        self.out(x.shape().clone(), x.dtype())
    }

    fn prelu_backward(&self, dy: &Tensor, x: &Tensor, _alpha: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = kernels::channels(x)?;
        let rows = x.numel() / c;
        self.rec(Launch::memory(format!("prelu_bwd_dx_{}", suffix(x.dtype())?), "prelu", 3.0 * bytes(x)));
        let name = format!("prelu_dalpha_partial_{}", suffix(x.dtype())?);
        kernels::column_sum(self, &name, "prelu", rows, c, bytes(dy) + bytes(x));
        Ok((self.out(x.shape().clone(), x.dtype())?, self.out([c], DType::F32)?))
    }

    fn dropout(&self, x: &Tensor, _p: f64, _seed: u64) -> Result<(Tensor, Tensor)> {
        let name = format!("dropout_{}", suffix(x.dtype())?);
        self.rec(Launch::memory(name, "elementwise", 2.0 * bytes(x) + 4.0 * x.numel() as f64));
        Ok((self.out(x.shape().clone(), x.dtype())?, self.out(x.shape().clone(), DType::F32)?))
    }

    fn l2_normalize_rows(&self, x: &Tensor, _eps: f64) -> Result<(Tensor, Tensor)> {
        let (rows, _) = x.shape().matrix("l2_normalize_rows")?;
        let name = format!("l2norm_fwd_{}", suffix(x.dtype())?);
        self.rec(Launch::memory(name, "normalize", 2.0 * bytes(x) + 4.0 * rows as f64));
        Ok((self.out(x.shape().clone(), x.dtype())?, self.out([rows], DType::F32)?))
    }

    fn l2_normalize_rows_backward(&self, dy: &Tensor, y: &Tensor, norms: &Tensor) -> Result<Tensor> {
        self.l2_normalize_rows_backward_eps(dy, y, norms, 0.0)
    }

    fn l2_normalize_rows_backward_eps(
        &self,
        dy: &Tensor,
        y: &Tensor,
        norms: &Tensor,
        _eps: f64,
    ) -> Result<Tensor> {
        self.rec(Launch::memory("l2norm_bwd_f32", "normalize", 3.0 * bytes(y) + bytes(norms)));
        let _ = dy;
        self.out(y.shape().clone(), DType::F32)
    }

    fn mul_channels(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        self.rec(Launch::memory("per_channel_f32", "elementwise", 2.0 * bytes(x) + bytes(s)));
        self.out(x.shape().clone(), DType::F32)
    }

    fn add_channels(&self, x: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.mul_channels(x, b)
    }

    fn scale_rows(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        if x.numel() > 0 {
            self.rec(Launch::memory("scale_rows_f32", "elementwise", 2.0 * bytes(x) + bytes(s)));
        }
        self.out(x.shape().clone(), DType::F32)
    }

    fn slice_rows(&self, t: &Tensor, r0: usize, r1: usize) -> Result<Tensor> {
        let rows = *t.dims().first().ok_or_else(|| Error::Shape("slice_rows of a scalar".into()))?;
        if r0 > r1 || r1 > rows {
            return Err(Error::Shape(format!("slice_rows {r0}..{r1} of {}", t.shape())));
        }
        let mut dims = t.dims().to_vec();
        dims[0] = r1 - r0;
        let out = self.out(dims, t.dtype())?;
        if r1 > r0 {
            self.rec(Launch::memory("memcpy_dtod", "copy", 2.0 * bytes(&out)));
        }
        Ok(out)
    }

    fn concat_rows(&self, parts: &[Tensor]) -> Result<Tensor> {
        let dims = super::stacked_dims(parts)?;
        for p in parts.iter().filter(|p| p.numel() > 0) {
            self.rec(Launch::memory("memcpy_dtod", "copy", 2.0 * bytes(p)));
        }
        self.out(dims, parts[0].dtype())
    }

    fn cast(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        if t.dtype() == dtype {
            return Ok(t.clone());
        }
        let name = format!("cast_{}_{}", suffix(t.dtype())?, suffix(dtype)?);
        let out = self.out(t.shape().clone(), dtype)?;
        self.rec(Launch::memory(name, "cast", bytes(t) + bytes(&out)));
        Ok(out)
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
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        _alpha: &Tensor,
        _eps: f64,
        running: Option<RunningStats<'_>>,
    ) -> Result<(Tensor, BatchNormSaved)> {
        let (saved, _) = kernels::bn_stats(self, x, running.is_some(), false)?;
        kernels::replace_running(self, running)?;
        Ok((kernels::bn_apply(self, x, true, None, false)?, saved))
    }

    fn batch_norm_prelu_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        _gamma: Option<&Tensor>,
        _beta: Option<&Tensor>,
        _alpha: &Tensor,
        _saved: &BatchNormSaved,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        kernels::batch_norm_backward(self, dy, x, true, None)
    }

    fn sgd_update(&self, params: &mut [SgdParam<'_>], h: &SgdStep) -> Result<Updated> {
        kernels::sgd_update(self, params, h)
    }

    fn adamw_update(&self, params: &mut [AdamWParam<'_>], h: &AdamWStep) -> Result<Updated> {
        kernels::adamw_update(self, params, h)
    }

    fn first_flagged(&self, flags: &Tensor) -> Result<Option<usize>> {
        if flags.numel() > 0 {
            self.rec(Launch::memory("memcpy_dtoh", "copy", bytes(flags)));
        }
        Ok(None)
    }

    fn first_nonfinite(&self, ts: &[&Tensor]) -> Result<Option<usize>> {
        if ts.is_empty() {
            return Ok(None);
        }
        self.rec(Launch::memory("memset", "checks", 4.0 * ts.len() as f64));
        kernels::checks(self, "nonfinite_multi", ts, false);
        self.rec(Launch::memory("memcpy_dtoh", "copy", 4.0 * ts.len() as f64));
        Ok(None)
    }

    fn scale_and_check(&self, ts: &mut [&mut Tensor], _factor: f32) -> Result<Option<usize>> {
        if ts.is_empty() {
            return Ok(None);
        }
        self.rec(Launch::memory("memset", "checks", 4.0 * ts.len() as f64));
        let all: Vec<&Tensor> = ts.iter().map(|t| &**t).collect();
        kernels::checks(self, "scale_multi", &all, true);
        for t in ts.iter_mut() {
            **t = self.out(t.shape().clone(), DType::F32)?;
        }
        self.rec(Launch::memory("memcpy_dtoh", "copy", 4.0 * ts.len() as f64));
        Ok(None)
    }

    fn sum_of_squares(&self, ts: &[&Tensor]) -> Result<f64> {
        let blocks: usize =
            ts.iter().map(|t| t.numel().div_ceil(crate::backend::multi_tensor::MT_CHUNK)).sum();
        if blocks == 0 {
            return Ok(0.0);
        }
        kernels::checks(self, "sumsq_multi", ts, false);
        self.rec(Launch::memory("memcpy_dtoh", "copy", 8.0 * blocks as f64));
        Ok(0.0)
    }

    fn images_to_nhwc(
        &self,
        images: &[u8],
        shape: [usize; 4],
        flip: &[bool],
        dtype: DType,
    ) -> Result<Tensor> {
        self.rec(Launch::memory("memcpy_htod", "copy", images.len() as f64));
        self.rec(Launch::memory("memcpy_htod", "copy", flip.len() as f64));
        let out = self.out(shape, dtype)?;
        self.rec(Launch::memory(
            format!("u8_to_nhwc_{}", suffix(dtype)?),
            "input",
            images.len() as f64 + bytes(&out),
        ));
        Ok(out)
    }

    fn margin_head(&self, call: MarginHeadCall<'_>) -> Result<MarginHeadOutput> {
        kernels::margin_head(self, call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Device;

    #[test]
    fn meta_tensors_have_shapes_but_no_elements_and_record_launches() {
        let dev = Device::meta();
        let be = crate::backend::for_device(&dev);
        let a = Tensor::from_vec(vec![1.0f32; 6], [2, 3]).unwrap().to_device(&dev).unwrap();
        be.start_ledger();
        let y = be.affine(&a, 2.0, 1.0).unwrap();
        assert_eq!((y.dims(), y.dtype()), (&[2, 3][..], DType::F32));
        assert!(y.device().same(&dev));
        // Read back as zeros, with the copy counted.
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 6]);
        let l = be.take_ledger();
        let names: Vec<&str> = l.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(names, ["affine_f32", "memcpy_dtoh"]);
        assert_eq!(l[0].bytes, 48.0);
        assert!(y.as_slice::<f32>().is_err(), "a meta tensor has no host elements");
    }

    /// The counting rules on one convolution, one GEMM and one batch norm, by hand: every tensor read
    /// plus every tensor written, once each, at its stored type; FLOPs 2 x multiply-adds.
    #[test]
    fn a_convolution_a_gemm_and_a_batch_norm_count_what_hands_count() {
        use crate::backend::{Conv2dParams, RunningStats};
        let dev = Device::meta();
        let be = crate::backend::for_device(&dev);
        let meta = |dims: &[usize], dt: DType| {
            let n: usize = dims.iter().product();
            Tensor::from_vec(vec![0f32; n], dims.to_vec())
                .unwrap()
                .to_dtype(dt)
                .unwrap()
                .to_device(&dev)
                .unwrap()
        };
        // 3x3 stride 2 pad 1, bf16: x [2, 8, 8, 16], w [32, 3, 3, 16] -> y [2, 4, 4, 32]; f32 [5, 7] x [7, 3];
        // bf16 [100, 8] with gamma, beta and running statistics. Uploads before the ledger starts.
        let (x, w) = (meta(&[2, 8, 8, 16], DType::BF16), meta(&[32, 3, 3, 16], DType::BF16));
        let (a, bm) = (meta(&[5, 7], DType::F32), meta(&[7, 3], DType::F32));
        let (xb, g, b) = (meta(&[100, 8], DType::BF16), meta(&[8], DType::F32), meta(&[8], DType::F32));
        let (mut rm, mut rv) = (meta(&[8], DType::F32), meta(&[8], DType::F32));
        be.start_ledger();
        let y = be.conv2d_forward(&x, &w, Conv2dParams { kernel: 3, stride: 2, padding: 1 }).unwrap();
        assert_eq!(y.dims(), &[2, 4, 4, 32]);
        be.matmul(&a, &bm, false, false).unwrap();
        let running = Some(RunningStats { mean: &mut rm, var: &mut rv, momentum: 0.1 });
        be.batch_norm_forward_train(&xb, Some(&g), Some(&b), 1e-5, running).unwrap();
        let l = be.take_ledger();
        let got: Vec<(&str, f64, f64)> = l.iter().map(|l| (l.kernel.as_str(), l.bytes, l.flops)).collect();
        let conv_bytes = 2.0 * (2 * 8 * 8 * 16 + 32 * 3 * 3 * 16 + 2 * 4 * 4 * 32) as f64;
        let conv_flops = 2.0 * (2 * 4 * 4 * 32) as f64 * (3 * 3 * 16) as f64;
        let gemm_bytes = 4.0 * (5 * 7 + 7 * 3 + 5 * 3) as f64;
        // Statistics: x once; the 2 chunks' partial mean and M2 written and read back; per channel gamma,
        // beta, the running mean and variance read, mean, var, invstd, scale, shift and the two updated
        // running statistics written.
        let x = 2.0 * 100.0 * 8.0;
        let stats = x + 2.0 * 2.0 * (2.0 * 8.0 * 4.0) + 11.0 * 8.0 * 4.0;
        // Apply: x read, y written, scale and shift read.
        let apply = 2.0 * x + 2.0 * 8.0 * 4.0;
        assert_eq!(
            got,
            vec![
                ("cudnn_conv_fwd", conv_bytes, conv_flops),
                ("cublas_gemm", gemm_bytes, 2.0 * 5.0 * 3.0 * 7.0),
                ("bn_stats_bf16", stats, 0.0),
                ("bn_apply_bf16", apply, 0.0),
            ]
        );
    }
}
