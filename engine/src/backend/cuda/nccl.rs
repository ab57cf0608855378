//! NCCL, loaded at run time: one communicator per rank, its collectives queued on the device's compute
//! stream so they fall in line with the step's kernels (the pooled allocator's stream-ordered reuse
//! stays sound).
//!
//! The library is opened here with `libloading` rather than through cudarc's `nccl` module: cudarc looks
//! for `libnccl.so` and `libnccl.so.{9..13}` but not `libnccl.so.2`, the soname every NCCL package
//! installs (the pip wheel and Debian's `libnccl2` ship only that), and it panics when it finds none.
//! The dozen entry points used are declared below from `nccl.h`.

use super::CudaContext;
use crate::tensor::{DType, Storage, Tensor};
use crate::{Error, Result};
use cudarc::driver::DevicePtr;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// `ncclUniqueId`: 128 opaque bytes made by rank 0 and handed to every rank.
pub const ID_BYTES: usize = 128;

#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; ID_BYTES],
}

type NcclResult = c_int;
type Comm = *mut c_void;
type Stream = *mut c_void;
const SUCCESS: NcclResult = 0;
const IN_PROGRESS: NcclResult = 7;

/// `ncclRedOp_t` values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcclOp {
    Sum = 0,
    Max = 2,
    /// The sum divided by the number of ranks.
    Avg = 4,
}

/// The entry points, resolved once per process.
struct Lib {
    _lib: libloading::Library,
    get_version: unsafe extern "C" fn(*mut c_int) -> NcclResult,
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> NcclResult,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> NcclResult,
    comm_abort: unsafe extern "C" fn(Comm) -> NcclResult,
    comm_get_async_error: unsafe extern "C" fn(Comm, *mut NcclResult) -> NcclResult,
    get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    get_last_error: unsafe extern "C" fn(Comm) -> *const c_char,
    all_reduce:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult,
    all_gather: unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, Comm, Stream) -> NcclResult,
    reduce_scatter:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult,
    broadcast:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult,
    group_start: unsafe extern "C" fn() -> NcclResult,
    group_end: unsafe extern "C" fn() -> NcclResult,
}

static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();

/// The candidates, most specific first: `$FACETRAIN_NCCL_DIR` (a folder, e.g. a pip wheel's
/// `nvidia/nccl/lib`), then the loader's path under the installed soname and the development name.
fn candidates() -> Vec<PathBuf> {
    let names = ["libnccl.so.2", "libnccl.so"];
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("FACETRAIN_NCCL_DIR") {
        out.extend(names.iter().map(|n| PathBuf::from(&dir).join(n)));
    }
    out.extend(names.iter().map(PathBuf::from));
    out
}

fn open() -> std::result::Result<Lib, String> {
    let mut tried = Vec::new();
    for path in candidates() {
        // SAFETY: loading NCCL runs its initialisers, which have no preconditions.
        match unsafe { libloading::Library::new(&path) } {
            Ok(lib) => return resolve(lib).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    Err(format!(
        "NCCL not found (tried {}): install it (apt's libnccl2, or pip's nvidia-nccl-cu12 with \
         FACETRAIN_NCCL_DIR set to its nvidia/nccl/lib folder), or pass --collectives host",
        tried.join(", ")
    ))
}

fn resolve(lib: libloading::Library) -> std::result::Result<Lib, String> {
    // SAFETY: each symbol is given its C signature from nccl.h.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes()).map_err(|e| format!("no symbol {}: {e}", $name))?
            };
        }
        Ok(Lib {
            get_version: sym!("ncclGetVersion"),
            get_unique_id: sym!("ncclGetUniqueId"),
            comm_init_rank: sym!("ncclCommInitRank"),
            comm_abort: sym!("ncclCommAbort"),
            comm_get_async_error: sym!("ncclCommGetAsyncError"),
            get_error_string: sym!("ncclGetErrorString"),
            get_last_error: sym!("ncclGetLastError"),
            all_reduce: sym!("ncclAllReduce"),
            all_gather: sym!("ncclAllGather"),
            reduce_scatter: sym!("ncclReduceScatter"),
            broadcast: sym!("ncclBroadcast"),
            group_start: sym!("ncclGroupStart"),
            group_end: sym!("ncclGroupEnd"),
            _lib: lib,
        })
    }
}

fn lib() -> Result<&'static Lib> {
    LIB.get_or_init(open).as_ref().map_err(|e| Error::Device(e.clone()))
}

/// NCCL's words for `r` (and the last error's text when `comm` is given).
fn describe(l: &Lib, r: NcclResult, comm: Option<Comm>) -> String {
    // SAFETY: both return static or library-owned NUL-terminated strings (or null).
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    let what = text(unsafe { (l.get_error_string)(r) });
    let last = comm.map(|c| text(unsafe { (l.get_last_error)(c) })).unwrap_or_default();
    if last.is_empty() {
        format!("{what} (ncclResult {r})")
    } else {
        format!("{what} (ncclResult {r}): {last}")
    }
}

fn check(l: &Lib, r: NcclResult, what: &str, comm: Option<Comm>) -> Result<()> {
    if r == SUCCESS {
        Ok(())
    } else {
        Err(Error::Device(format!("NCCL {what}: {}", describe(l, r, comm))))
    }
}

/// The loaded library's version, "2.28.3" (or why it cannot be loaded).
pub fn version() -> Result<String> {
    let l = lib()?;
    let mut v: c_int = 0;
    // SAFETY: writes one int.
    check(l, unsafe { (l.get_version)(&mut v) }, "version", None)?;
    // NCCL_VERSION_CODE: major*10000 + minor*100 + patch since 2.9 (major*1000 + minor*100 before).
    let (major, rest) = if v >= 10000 { (v / 10000, v % 10000) } else { (v / 1000, v % 1000) };
    Ok(format!("{major}.{}.{}", rest / 100, rest % 100))
}

/// A fresh unique id (rank 0 makes it; the others receive it over the rendezvous).
pub fn unique_id() -> Result<[u8; ID_BYTES]> {
    let l = lib()?;
    let mut id = UniqueId { internal: [0; ID_BYTES] };
    // SAFETY: writes the 128-byte id.
    check(l, unsafe { (l.get_unique_id)(&mut id) }, "unique id", None)?;
    Ok(id.internal.map(|c| c as u8))
}

/// One rank's NCCL communicator on one device. Collectives run on the device's compute stream and
/// return at once; `abort` (from any thread) makes queued and blocked ones finish so the stream drains.
pub struct NcclComm {
    ctx: Arc<CudaContext>,
    /// The communication stream: collectives queued here overlap the compute stream's work (the
    /// gradient buckets during the backward), ordered by events both ways.
    side: Arc<cudarc::driver::CudaStream>,
    /// None once aborted: every later call is an error instead of a use of a freed communicator.
    comm: Mutex<Option<CommHandle>>,
    world: usize,
}

struct CommHandle(Comm);
// SAFETY: an ncclComm_t may be used from any thread; calls are serialised by the mutex around it
// (NCCL only forbids concurrent calls on one communicator, which the mutex rules out).
unsafe impl Send for CommHandle {}

impl NcclComm {
    /// Joins the communicator `id` as `rank` of `world` on `ctx`'s device; blocks until every rank has.
    pub fn init(ctx: &Arc<CudaContext>, rank: usize, world: usize, id: [u8; ID_BYTES]) -> Result<NcclComm> {
        let l = lib()?;
        ctx.ctx.bind_to_thread().map_err(super::driver_err("binding the device for NCCL"))?;
        let id = UniqueId { internal: id.map(|b| b as c_char) };
        let mut comm: Comm = std::ptr::null_mut();
        let (w, r) = (c_int::try_from(world), c_int::try_from(rank));
        let (Ok(w), Ok(r)) = (w, r) else {
            return Err(Error::Invalid(format!("rank {rank} of {world} does not fit NCCL's int")));
        };
        let side = ctx.ctx.new_stream().map_err(super::driver_err("creating the NCCL stream"))?;
        // SAFETY: `comm` receives the handle; the id is passed by value as nccl.h declares.
        check(l, unsafe { (l.comm_init_rank)(&mut comm, w, id, r) }, "communicator init", None)?;
        Ok(NcclComm { ctx: ctx.clone(), side, comm: Mutex::new(Some(CommHandle(comm))), world })
    }

    /// Runs `f` with the live handle, or fails when the communicator was aborted.
    fn with<T>(&self, what: &str, f: impl FnOnce(&Lib, Comm, Stream) -> Result<T>) -> Result<T> {
        self.with_on(what, false, f)
    }

    /// `with` on the compute stream, or on the communication stream (`side`).
    fn with_on<T>(
        &self,
        what: &str,
        side: bool,
        f: impl FnOnce(&Lib, Comm, Stream) -> Result<T>,
    ) -> Result<T> {
        let l = lib()?;
        let guard =
            self.comm.lock().map_err(|_| Error::Device("the NCCL communicator's lock is poisoned".into()))?;
        let Some(CommHandle(c)) = guard.as_ref() else {
            return Err(Error::Device(format!("NCCL {what}: the communicator was aborted")));
        };
        let stream = if side { &self.side } else { &self.ctx.compute };
        f(l, *c, stream.cu_stream() as Stream)
    }

    /// Every rank's tensors combined by `op` element by element, in place, in one group (one launch
    /// per tensor on the compute stream, queued together). Tensors sharing storage with others are
    /// copied first (copy on write), so the inputs' other holders never see the result.
    pub fn all_reduce(&self, tensors: Vec<Tensor>, op: NcclOp) -> Result<Vec<Tensor>> {
        let own = tensors
            .into_iter()
            .map(|t| Tensor::from_storage(t.shape().clone(), t.into_storage()?))
            .collect::<Result<Vec<_>>>()?;
        self.group_all_reduce(&own, op, false)?;
        Ok(own)
    }

    /// `all_reduce` of `tensors` in their own storage, on the communication stream after everything
    /// queued on the compute stream so far; the compute stream does not wait for it until `rejoin`.
    ///
    /// # Safety
    /// Every holder of these storages must expect them to change: the caller makes each storage its
    /// own (the gradients of one backward pass), and reads them only on the compute stream after
    /// `rejoin`, keeping them alive until then.
    pub unsafe fn all_reduce_on_side(&self, tensors: &[Tensor], op: NcclOp) -> Result<()> {
        self.side.join(&self.ctx.compute).map_err(super::driver_err("ordering an NCCL bucket"))?;
        self.group_all_reduce(tensors, op, true)
    }

    /// The compute stream waits for the communication stream's collectives queued so far.
    pub fn rejoin(&self) -> Result<()> {
        self.ctx.compute.join(&self.side).map_err(super::driver_err("waiting for the NCCL stream"))
    }

    /// One group of in-place all-reduces of tensors of this rank's GPU, on the compute stream or the
    /// communication stream. The tensors' storages are written: each must be its own holders' only.
    fn group_all_reduce(&self, tensors: &[Tensor], op: NcclOp, side: bool) -> Result<()> {
        let storages = tensors.iter().map(|t| self.ctx.storage(t)).collect::<Result<Vec<_>>>()?;
        self.with_on("all-reduce", side, |l, comm, stream| {
            // SAFETY: a group brackets calls on one communicator; every pointer below is a live device
            // buffer of `len` elements of the dtype passed, used in place (sendbuff == recvbuff).
            check(l, unsafe { (l.group_start)() }, "group start", Some(comm))?;
            let mut queued = Ok(());
            for s in &storages {
                let dt = nccl_dtype(s.dtype());
                let len = s.len();
                self.ctx.kernels.note("nccl_all_reduce");
                let p = raw(s);
                let r = unsafe { (l.all_reduce)(p, p, len, dt, op as c_int, comm, stream) };
                if let Err(e) = check(l, r, "all-reduce", Some(comm)) {
                    queued = Err(e);
                    break;
                }
            }
            // The group is closed whatever happened inside it.
            let end = check(l, unsafe { (l.group_end)() }, "group end", Some(comm));
            queued.and(end)
        })
    }

    /// Rank `root`'s tensor into `t` on every rank (in place).
    pub fn broadcast(&self, t: Tensor, root: usize) -> Result<Tensor> {
        let shape = t.shape().clone();
        let Storage::Cuda(s) = t.into_storage()? else {
            return Err(Error::Device("NCCL broadcast of a tensor not on this rank's GPU".into()));
        };
        let root = c_int::try_from(root).map_err(|_| Error::Invalid(format!("root rank {root}")))?;
        self.with("broadcast", |l, comm, stream| {
            let dt = nccl_dtype(s.dtype());
            let len = s.len();
            self.ctx.kernels.note("nccl_broadcast");
            let p = raw(&s);
            // SAFETY: a live device buffer of `len` elements, in place.
            check(l, unsafe { (l.broadcast)(p, p, len, dt, root, comm, stream) }, "broadcast", Some(comm))
        })?;
        Tensor::from_storage(shape, Storage::Cuda(s))
    }

    /// Every rank's `t` (one shape everywhere) stacked in rank order: `[world * n]` elements.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let src = self.ctx.storage(t)?;
        let (len, dtype) = (src.len(), src.dtype());
        let out = self.ctx.alloc_storage(dtype, len * self.world)?;
        self.with("all-gather", |l, comm, stream| {
            let dt = nccl_dtype(dtype);
            self.ctx.kernels.note("nccl_all_gather");
            let (sp, dp) = (raw(src), raw(&out));
            // SAFETY: `src` holds `len` elements and `out` world * len, both live device buffers.
            let r = unsafe { (l.all_gather)(sp, dp, len, dt, comm, stream) };
            check(l, r, "all-gather", Some(comm))
        })?;
        Tensor::from_storage([self.world * len], Storage::Cuda(out))
    }

    /// Every rank's `t` (`[world * n]` elements, one shape everywhere) combined by `op` element by
    /// element, this rank keeping its `n`: the elements `rank * n..(rank + 1) * n` of the result.
    pub fn reduce_scatter(&self, t: &Tensor, op: NcclOp) -> Result<Tensor> {
        let src = self.ctx.storage(t)?;
        let (len, dtype) = (src.len(), src.dtype());
        if !len.is_multiple_of(self.world) {
            return Err(Error::Shape(format!(
                "NCCL reduce-scatter of {len} elements over {} ranks: not a whole part each",
                self.world
            )));
        }
        let n = len / self.world;
        let out = self.ctx.alloc_storage(dtype, n)?;
        self.with("reduce-scatter", |l, comm, stream| {
            let dt = nccl_dtype(dtype);
            self.ctx.kernels.note("nccl_reduce_scatter");
            let (sp, dp) = (raw(src), raw(&out));
            // SAFETY: `src` holds world * n elements and `out` n, both live device buffers.
            let r = unsafe { (l.reduce_scatter)(sp, dp, n, dt, op as c_int, comm, stream) };
            check(l, r, "reduce-scatter", Some(comm))
        })?;
        Tensor::from_storage([n], Storage::Cuda(out))
    }

    /// An error the communicator met while running queued work (a peer's failure on a network
    /// transport, a mismatched collective), or `None`. `ncclInProgress` is not an error.
    pub fn async_error(&self) -> Option<String> {
        self.with("error query", |l, comm, _| {
            let mut e: NcclResult = SUCCESS;
            // SAFETY: writes one result code.
            check(l, unsafe { (l.comm_get_async_error)(comm, &mut e) }, "error query", Some(comm))?;
            Ok((e != SUCCESS && e != IN_PROGRESS).then(|| describe(l, e, Some(comm))))
        })
        .ok()
        .flatten()
    }

    /// Aborts the communicator (from any thread; idempotent): its queued and blocked collectives end
    /// without waiting for peers, and every later call is an error.
    pub fn abort(&self) {
        let Ok(l) = lib() else { return };
        // A collective being queued holds the lock only for the queuing, never while it runs.
        if let Ok(mut g) = self.comm.lock() {
            if let Some(CommHandle(c)) = g.take() {
                // SAFETY: the handle is live and taken out, so nothing uses it after this.
                unsafe { (l.comm_abort)(c) };
            }
        }
    }

    /// A mark on the compute stream after everything queued so far (the collectives just queued), for
    /// a watchdog to see whether they finished.
    pub fn fence(&self) -> Result<Fence> {
        self.fence_on(&self.ctx.compute)
    }

    /// `fence` on the communication stream.
    pub fn side_fence(&self) -> Result<Fence> {
        self.fence_on(&self.side)
    }

    fn fence_on(&self, stream: &cudarc::driver::CudaStream) -> Result<Fence> {
        let event = self.ctx.ctx.new_event(None).map_err(super::driver_err("creating an NCCL fence"))?;
        event.record(stream).map_err(super::driver_err("recording an NCCL fence"))?;
        Ok(Fence(event))
    }

    /// Makes this device current on the calling thread (a watchdog's, before it queries fences).
    pub fn bind_thread(&self) -> Result<()> {
        self.ctx.ctx.bind_to_thread().map_err(super::driver_err("binding the device for the NCCL watchdog"))
    }

    pub fn is_aborted(&self) -> bool {
        self.comm.lock().map(|g| g.is_none()).unwrap_or(true)
    }
}

/// See [`NcclComm::fence`].
pub struct Fence(cudarc::driver::CudaEvent);

impl Fence {
    /// Whether the work before the fence has finished (an error: the device failed).
    pub fn done(&self) -> Result<bool> {
        self.0.try_is_complete().map_err(super::driver_err("querying an NCCL fence"))
    }
}

impl Drop for NcclComm {
    /// Abort rather than destroy: destroy waits for peers, which a failed job may never give.
    fn drop(&mut self) {
        self.abort();
    }
}

/// The device address of `s`'s elements. Event tracking is off for the engine's contexts
/// (`CudaContext::open`), so the guard cudarc returns with it records nothing and may be dropped; stream
/// order protects the buffer, which outlives the collectives queued on it (the pool frees in stream
/// order).
fn raw(s: &super::CudaStorage) -> *mut c_void {
    let v = s.bytes();
    let (p, _guard) = v.device_ptr(&s.context.compute);
    p as *mut c_void
}

/// `ncclDataType_t` of a dtype.
fn nccl_dtype(d: DType) -> c_int {
    match d {
        DType::F16 => 6,
        DType::F32 => 7,
        DType::F64 => 8,
        DType::BF16 => 9,
        DType::I64 => 4,
    }
}
