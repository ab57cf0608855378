//! 2-D convolutions through cuDNN on NHWC activations and OHWI weights (cuDNN's NHWC filter layout,
//! KRSC, is OHWI). f32 runs with FMA math (no TF32) so it matches the CPU; bf16/fp16 use the tensor
//! cores with f32 accumulation. The algorithm for each (direction, shapes, dtype) is chosen once, by
//! timing every algorithm cuDNN accepts on the first call's own tensors (cuDNN's heuristic choice when
//! none can be timed, or with FACETRAIN_CUDNN_HEURISTIC set), and cached; one workspace buffer grows to
//! the largest need.

use super::alloc::DeviceBuffer;
use super::{CudaContext, CudaStorage};
use crate::backend::Conv2dParams;
use crate::tensor::{DType, Shape, Storage, Tensor};
use crate::{Error, Result};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionFwdAlgo_t,
    cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use cudarc::cudnn::{ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn, CudnnDataType};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaStream;
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Direction {
    Forward,
    BackwardData,
    BackwardFilter,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    dir: Direction,
    x: [i32; 4],
    w: [i32; 4],
    params: (usize, usize, usize),
    dtype: DType,
}

#[derive(Clone, Copy)]
enum Algo {
    Fwd(cudnnConvolutionFwdAlgo_t),
    Data(cudnnConvolutionBwdDataAlgo_t),
    Filter(cudnnConvolutionBwdFilterAlgo_t),
}

/// cudarc's cuDNN handle is neither Send nor Sync; it is only touched while `Conv::handle`'s mutex is
/// held, which serialises every use (cuDNN allows a handle on any thread, one call at a time).
struct Handle(Arc<Cudnn>);
// SAFETY: see above; the handle and every descriptor made from it stay inside one locked call.
unsafe impl Send for Handle {}

pub struct Conv {
    stream: Arc<CudaStream>,
    handle: Mutex<Option<std::result::Result<Handle, String>>>,
    algos: Mutex<HashMap<Key, (Algo, usize)>>,
    workspace: Mutex<Option<DeviceBuffer>>,
}

impl Conv {
    pub fn new(stream: Arc<CudaStream>) -> Conv {
        Conv {
            stream,
            handle: Mutex::new(None),
            algos: Mutex::new(HashMap::new()),
            workspace: Mutex::new(None),
        }
    }

    /// How many (direction, shapes, dtype) cases chose each algorithm so far, e.g. ("FWD_ALGO_WINOGRAD", 3):
    /// for the benchmark reports (which algorithms cuDNN's timing favoured on this card).
    pub fn algorithm_counts(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        if let Ok(algos) = self.algos.lock() {
            for (algo, _) in algos.values() {
                let name = match algo {
                    Algo::Fwd(a) => format!("{a:?}"),
                    Algo::Data(a) => format!("{a:?}"),
                    Algo::Filter(a) => format!("{a:?}"),
                };
                *counts.entry(name.trim_start_matches("CUDNN_CONVOLUTION_").to_string()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    /// Runs `f` with the cuDNN handle (created on first use) while holding its lock.
    fn with_handle<R>(&self, f: impl FnOnce(&Arc<Cudnn>) -> Result<R>) -> Result<R> {
        let mut guard = self.handle.lock().map_err(|_| Error::Device("cuDNN lock poisoned".into()))?;
        let h = guard.get_or_insert_with(|| {
            // SAFETY: only tries to dlopen libcudnn.
            if !unsafe { cudarc::cudnn::sys::is_culib_present() } {
                return Err("libcudnn (9.x) not found on the loader path (LD_LIBRARY_PATH)".into());
            }
            let stream = self.stream.clone();
            std::panic::catch_unwind(move || Cudnn::new(stream))
                .map_err(|_| "cuDNN could not be loaded".to_string())?
                .map(Handle)
                .map_err(|e| format!("cannot create a cuDNN handle: {e:?}"))
        });
        match h {
            Ok(Handle(h)) => f(h),
            Err(msg) => Err(Error::Device(msg.clone())),
        }
    }
}

fn int(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Shape(format!("convolution dimension {v} exceeds cuDNN's int range")))
}

fn dims4(s: &Shape, what: &str) -> Result<[usize; 4]> {
    match s.dims() {
        [a, b, c, d] => Ok([*a, *b, *c, *d]),
        _ => Err(Error::Shape(format!("conv2d: {what} must be rank 4, got {s}"))),
    }
}

/// Checks the NHWC/OHWI shapes and returns (x as [N,C,H,W], w as [O,I,kh,kw], y NHWC shape).
fn geometry(x: &Shape, w: &Shape, p: Conv2dParams) -> Result<([i32; 4], [i32; 4], [usize; 4])> {
    let [n, h, wd, c] = dims4(x, "input (NHWC)")?;
    let [o, kh, kw, i] = dims4(w, "weight (OHWI)")?;
    if i != c
        || kh != p.kernel
        || kw != p.kernel
        || h + 2 * p.padding < kh
        || wd + 2 * p.padding < kw
        || p.stride == 0
    {
        return Err(Error::Shape(format!("conv2d: input {x}, weight {w}, {p:?} do not fit")));
    }
    let (ho, wo) = (p.out_size(h), p.out_size(wd));
    Ok(([int(n)?, int(c)?, int(h)?, int(wd)?], [int(o)?, int(i)?, int(kh)?, int(kw)?], [n, ho, wo, o]))
}

struct Descs<T: CudnnDataType> {
    x: cudarc::cudnn::TensorDescriptor<T>,
    y: cudarc::cudnn::TensorDescriptor<T>,
    w: cudarc::cudnn::FilterDescriptor<T>,
    conv: cudarc::cudnn::ConvDescriptor<f32>,
}

fn descs<T: CudnnDataType>(
    h: &Arc<Cudnn>,
    x: [i32; 4],
    w: [i32; 4],
    y: [usize; 4],
    p: Conv2dParams,
    dtype: DType,
) -> Result<Descs<T>> {
    let e = |e: cudarc::cudnn::result::CudnnError| Error::Device(format!("cuDNN descriptor: {e:?}"));
    let nhwc = cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
    let xd = h.create_4d_tensor::<T>(nhwc, x).map_err(e)?;
    let yd = h.create_4d_tensor::<T>(nhwc, [int(y[0])?, int(y[3])?, int(y[1])?, int(y[2])?]).map_err(e)?;
    let wd = h.create_4d_filter::<T>(nhwc, w).map_err(e)?;
    let (pad, stride) = (int(p.padding)?, int(p.stride)?);
    let mut conv = h
        .create_conv2d::<f32>(
            [pad, pad],
            [stride, stride],
            [1, 1],
            cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(e)?;
    let math = if dtype == DType::F32 {
        cudnnMathType_t::CUDNN_FMA_MATH
    } else {
        cudnnMathType_t::CUDNN_TENSOR_OP_MATH
    };
    conv.set_math_type(math).map_err(e)?;
    Ok(Descs { x: xd, y: yd, w: wd, conv })
}

/// Runs `dir` with typed views of the three tensors; `out` is written.
#[allow(clippy::too_many_arguments)]
fn run<T: CudnnDataType + Copy>(
    ctx: &Arc<CudaContext>,
    dir: Direction,
    xg: [i32; 4],
    wg: [i32; 4],
    yg: [usize; 4],
    p: Conv2dParams,
    dtype: DType,
    one: T,
    zero: T,
    a: &CudaStorage,
    b: &CudaStorage,
    out: &mut CudaStorage,
) -> Result<()> {
    ctx.conv.with_handle(|h| run_locked(ctx, h, dir, xg, wg, yg, p, dtype, one, zero, a, b, out))
}

#[allow(clippy::too_many_arguments)]
fn run_locked<T: CudnnDataType + Copy>(
    ctx: &Arc<CudaContext>,
    h: &Arc<Cudnn>,
    dir: Direction,
    xg: [i32; 4],
    wg: [i32; 4],
    yg: [usize; 4],
    p: Conv2dParams,
    dtype: DType,
    one: T,
    zero: T,
    a: &CudaStorage,
    b: &CudaStorage,
    out: &mut CudaStorage,
) -> Result<()> {
    let d = descs::<T>(h, xg, wg, yg, p, dtype)?;
    let e = |e: cudarc::cudnn::result::CudnnError| Error::Device(format!("cuDNN convolution: {e:?}"));
    let key = Key { dir, x: xg, w: wg, params: (p.kernel, p.stride, p.padding), dtype };
    let cached = ctx
        .conv
        .algos
        .lock()
        .map_err(|_| Error::Device("cuDNN cache lock poisoned".into()))?
        .get(&key)
        .copied();
    let fwd = ConvForward { conv: &d.conv, x: &d.x, w: &d.w, y: &d.y };
    let bwd_data = ConvBackwardData { conv: &d.conv, dx: &d.x, w: &d.w, dy: &d.y };
    let bwd_filter = ConvBackwardFilter { conv: &d.conv, x: &d.x, dw: &d.w, dy: &d.y };
    let (av, bv) = (a.view::<T>()?, b.view::<T>()?);
    let mut ov = out.view_mut::<T>()?;
    let mut ws_guard =
        ctx.conv.workspace.lock().map_err(|_| Error::Device("workspace lock poisoned".into()))?;
    let mut launch = |(algo, ws): (Algo, usize), ov: &mut cudarc::driver::CudaViewMut<'_, T>| -> Result<()> {
        if ws > 0 && ws_guard.as_ref().map(|b| b.bytes() < ws).unwrap_or(true) {
            *ws_guard = None; // back to the pool before the larger one is taken
            *ws_guard = Some(ctx.pool.alloc(ws)?);
        }
        let mut ws_view =
            if ws > 0 { ws_guard.as_mut().map(|b| b.slice_mut().slice_mut(..ws)) } else { None };
        // SAFETY: descriptors were built from the tensors' checked shapes and dtype; the workspace holds
        // at least the `ws` bytes cuDNN asked for this algorithm.
        unsafe {
            match algo {
                Algo::Fwd(al) => fwd.launch(al, ws_view.as_mut(), (one, zero), &av, &bv, ov),
                Algo::Data(al) => bwd_data.launch(al, ws_view.as_mut(), (one, zero), ov, &bv, &av),
                Algo::Filter(al) => bwd_filter.launch(al, ws_view.as_mut(), (one, zero), &bv, ov, &av),
            }
        }
        .map_err(e)
    };
    if let Some(choice) = cached {
        return launch(choice, &mut ov);
    }
    // First time for this shape: time every algorithm cuDNN accepts and keep the fastest.
    let measure = std::env::var_os("FACETRAIN_CUDNN_HEURISTIC").is_none();
    let mut candidates = Vec::new();
    match dir {
        _ if !measure => {}
        Direction::Forward => {
            for al in FWD_ALGOS {
                if let Ok(ws) = fwd.get_workspace_size(al) {
                    candidates.push((Algo::Fwd(al), ws));
                }
            }
        }
        Direction::BackwardData => {
            for al in DATA_ALGOS {
                if let Ok(ws) = bwd_data.get_workspace_size(al) {
                    candidates.push((Algo::Data(al), ws));
                }
            }
        }
        Direction::BackwardFilter => {
            for al in FILTER_ALGOS {
                if let Ok(ws) = bwd_filter.get_workspace_size(al) {
                    candidates.push((Algo::Filter(al), ws));
                }
            }
        }
    }
    let heuristic = || -> Result<(Algo, usize)> {
        Ok(match dir {
            Direction::Forward => {
                let a = fwd.pick_algorithm().map_err(e)?;
                (Algo::Fwd(a), fwd.get_workspace_size(a).map_err(e)?)
            }
            Direction::BackwardData => {
                let a = bwd_data.pick_algorithm().map_err(e)?;
                (Algo::Data(a), bwd_data.get_workspace_size(a).map_err(e)?)
            }
            Direction::BackwardFilter => {
                let a = bwd_filter.pick_algorithm().map_err(e)?;
                (Algo::Filter(a), bwd_filter.get_workspace_size(a).map_err(e)?)
            }
        })
    };
    let mut best: Option<((Algo, usize), f32)> = None;
    for &cand in candidates.iter().filter(|c| c.1 <= WORKSPACE_LIMIT) {
        // One untimed run (it also rejects algorithms that cannot run this case), then one timed.
        if launch(cand, &mut ov).is_err() {
            continue;
        }
        let timed = (|| -> Result<f32> {
            let err = super::driver_err("timing a cuDNN algorithm");
            let start = ctx.conv.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(&err)?;
            launch(cand, &mut ov)?;
            let end = ctx.conv.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(&err)?;
            start.elapsed_ms(&end).map_err(&err)
        })();
        if let Ok(ms) = timed {
            if best.is_none_or(|(_, b)| ms < b) {
                best = Some((cand, ms));
            }
        }
    }
    let choice = match best {
        Some((c, _)) => c,
        None => heuristic()?,
    };
    ctx.conv.algos.lock().map_err(|_| Error::Device("cuDNN cache lock poisoned".into()))?.insert(key, choice);
    launch(choice, &mut ov)
}

/// Algorithms whose workspace exceeds this are not tried (some FFT variants ask for gigabytes).
const WORKSPACE_LIMIT: usize = 512 << 20;

const FWD_ALGOS: [cudnnConvolutionFwdAlgo_t; 8] = {
    use cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
};

const DATA_ALGOS: [cudnnConvolutionBwdDataAlgo_t; 6] = {
    use cudnnConvolutionBwdDataAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
    ]
};

const FILTER_ALGOS: [cudnnConvolutionBwdFilterAlgo_t; 7] = {
    use cudnnConvolutionBwdFilterAlgo_t::*;
    [
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
    ]
};

fn dispatch(
    ctx: &Arc<CudaContext>,
    dir: Direction,
    xg: [i32; 4],
    wg: [i32; 4],
    yg: [usize; 4],
    p: Conv2dParams,
    a: &Tensor,
    b: &Tensor,
    out_shape: Shape,
) -> Result<Tensor> {
    let dtype = a.dtype();
    if b.dtype() != dtype {
        return Err(Error::DType(format!("conv2d: operands are {} and {}", dtype, b.dtype())));
    }
    let mut out = ctx.alloc_storage(dtype, out_shape.numel())?;
    let (sa, sb) = (ctx.storage(a)?, ctx.storage(b)?);
    ctx.kernels.note(match dir {
        Direction::Forward => "cudnn_conv_fwd",
        Direction::BackwardData => "cudnn_conv_bwd_data",
        Direction::BackwardFilter => "cudnn_conv_bwd_filter",
    });
    match dtype {
        DType::F32 => run::<f32>(ctx, dir, xg, wg, yg, p, dtype, 1.0, 0.0, sa, sb, &mut out)?,
        DType::BF16 => run::<bf16>(ctx, dir, xg, wg, yg, p, dtype, bf16::ONE, bf16::ZERO, sa, sb, &mut out)?,
        DType::F16 => run::<f16>(ctx, dir, xg, wg, yg, p, dtype, f16::ONE, f16::ZERO, sa, sb, &mut out)?,
        other => return Err(Error::Unsupported(format!("conv2d on CUDA does not take {other}"))),
    }
    Tensor::from_storage(out_shape, Storage::Cuda(out))
}

/// y = conv(x, w): `a` is the input, `b` the filter.
pub fn forward(ctx: &Arc<CudaContext>, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let (xg, wg, yg) = geometry(x.shape(), w.shape(), p)?;
    dispatch(ctx, Direction::Forward, xg, wg, yg, p, x, w, Shape(yg.to_vec()))
}

/// dx from dy: `a` is dy, `b` the filter.
pub fn backward_data(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    w: &Tensor,
    x_shape: &Shape,
    p: Conv2dParams,
) -> Result<Tensor> {
    let (xg, wg, yg) = geometry(x_shape, w.shape(), p)?;
    if dy.dims() != yg {
        return Err(Error::Shape(format!(
            "conv2d_backward_data: dy {} but the output is {:?}",
            dy.shape(),
            yg
        )));
    }
    dispatch(ctx, Direction::BackwardData, xg, wg, yg, p, dy, w, x_shape.clone())
}

/// dw from dy and x: `a` is dy, `b` the input.
pub fn backward_filter(
    ctx: &Arc<CudaContext>,
    dy: &Tensor,
    x: &Tensor,
    w_shape: &Shape,
    p: Conv2dParams,
) -> Result<Tensor> {
    let (xg, wg, yg) = geometry(x.shape(), w_shape, p)?;
    if dy.dims() != yg {
        return Err(Error::Shape(format!(
            "conv2d_backward_filter: dy {} but the output is {:?}",
            dy.shape(),
            yg
        )));
    }
    dispatch(ctx, Direction::BackwardFilter, xg, wg, yg, p, dy, x, w_shape.clone())
}
