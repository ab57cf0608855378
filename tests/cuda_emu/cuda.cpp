// A host stand-in for libcuda (the CUDA driver API) covering what cudarc and the engine call: one
// device, device memory that is host memory, asynchronous streams, events, and modules that are the
// fake NVRTC's host-compiled kernels.
// Device allocations end at a guard page and start filled with 0xff bytes (NaN as f32/f16/bf16), so
// a kernel that overruns its buffer faults and one that reads memory nobody wrote sees NaN, as an
// uninitialised cudaMalloc buffer would show up in the numbers sooner or later on a GPU.
//
// Streams run their work the way the driver does, so that ordering bugs show up as wrong numbers:
// every stream (the legacy default stream, handle 0 or CU_STREAM_LEGACY; the per-thread default
// stream CU_STREAM_PER_THREAD; and each created stream) has a FIFO of operations that a worker thread
// of its own executes in order: kernels (their arguments copied at launch through the kernel library's
// `__emu_find_pack`), copies, memsets, host functions, event records, waits on events and
// cuMemFreeAsync. The API calls return as the CUDA documentation says they may:
//  - cuMemcpyHtoDAsync from pageable memory stages the source at call time; from pinned memory
//    (cuMemHostAlloc/cuMemAllocHost/cuMemHostRegister) it reads the host memory when the copy runs.
//  - cuMemcpyDtoHAsync to pageable memory returns when the copy has run; to pinned memory at once.
//  - The synchronous cuMemcpy*/cuMemset* are work on the legacy default stream: HtoD and DtoH return
//    once the copy has run (so after everything the legacy stream waits for); DtoD and the memsets
//    return at once, as the docs allow. None of them waits for non-blocking streams.
//  - Legacy default stream: an operation queued on it waits for all work queued before it on every
//    blocking stream (created without CU_STREAM_NON_BLOCKING, and per-thread default streams), and an
//    operation queued on a blocking stream waits for all work queued before it on the legacy stream.
//    cuStreamSynchronize(0) queues an empty operation there and waits for it.
//  - cuMemFree, cuMemFreeHost synchronize the device first; cuMemFreeAsync frees when its stream
//    reaches it (the pointer is invalid for work queued after the call); cuMemAllocAsync allocates at
//    once.
//  - A kernel that fails (see emu_rt.h) prints why and sets the context's sticky error
//    CUDA_ERROR_LAUNCH_FAILED: its launch has already returned, so the next synchronizing call
//    (stream/event/context synchronize, queries, copies) and every later launch or copy report it,
//    as after an illegal address on a GPU, until cuDevicePrimaryCtxReset. Work still queued then is
//    skipped (host functions are not called), except stream-ordered frees. A copy whose device memory
//    was freed before the copy ran gives CUDA_ERROR_ILLEGAL_ADDRESS the same way.
//  - Host functions run on the stream's worker thread, in order, and must not call this API.
// FACETRAIN_EMU_SYNC=1 restores running every operation at the moment it is queued (errors then come
// back from the launch itself). FACETRAIN_EMU_JITTER=1 makes each worker sleep a random 0-2 ms before
// about half of its operations (=N: up to N microseconds), so that unordered streams really
// interleave. FACETRAIN_EMU_TRACE=1 logs launches.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <mutex>
#include <random>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_NOT_INITIALIZED = 3,
    ERR_NO_DEVICE = 100,
    ERR_INVALID_DEVICE = 101,
    ERR_INVALID_IMAGE = 200,
    ERR_INVALID_CONTEXT = 201,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_FOUND = 500,
    ERR_NOT_READY = 600,
    ERR_ILLEGAL_ADDRESS = 700,
    ERR_LAUNCH_OUT_OF_RESOURCES = 701,
    ERR_HOST_MEMORY_ALREADY_REGISTERED = 712,
    ERR_HOST_MEMORY_NOT_REGISTERED = 713,
    ERR_LAUNCH_FAILED = 719,
    ERR_NOT_SUPPORTED = 801,
};

struct Ctx {
    int device;
};
// Exported by every kernel library (emu_rt.h and the tail the fake NVRTC appends).
typedef void (*Trampoline)(void**);
typedef Trampoline (*FindFn)(const char*);
typedef int (*LaunchFn)(Trampoline, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void**, char*, size_t);
struct Packed {  // EmuPacked: a launch's argument values, copied
    void** params;
    void (*destroy)(Packed*);
};
typedef Packed* (*PackFn)(void**);
typedef PackFn (*FindPackFn)(const char*);
struct Module {
    void* dl;
    FindFn find;
    LaunchFn launch;
    FindPackFn find_pack;  // null in a library built before asynchronous launches
    std::string path;
};
struct Function {
    Module* module;
    std::string name;
    Trampoline tramp;
    PackFn pack;
};

static Ctx g_ctx{0};
static bool g_init = false;
static thread_local Ctx* t_current = nullptr;
static const size_t TOTAL_MEM = 64ull << 30;
static const int SMS = 4;  // few SMs: the engine sizes grid-stride grids by SM count, and the host is slow

static bool trace() {
    static int t = getenv("FACETRAIN_EMU_TRACE") ? 1 : 0;
    return t;
}
static void note(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[cuda-emu] ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}
static bool env_on(const char* name) {
    const char* e = getenv(name);
    return e && *e && strcmp(e, "0") != 0;
}
// FACETRAIN_EMU_SYNC=1: every operation runs at the moment it is queued, on the caller's thread.
static bool sync_mode() {
    static bool v = env_on("FACETRAIN_EMU_SYNC");
    return v;
}
// FACETRAIN_EMU_JITTER: the longest sleep before an operation, in microseconds (0: none).
static long jitter_max_us() {
    static long v = [] {
        if (!env_on("FACETRAIN_EMU_JITTER")) return 0L;
        long n = atol(getenv("FACETRAIN_EMU_JITTER"));
        return n > 1 ? n : 2000L;
    }();
    return v;
}

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// ---- Memory: [base, base + map) with the last page PROT_NONE; the buffer ends at the guard page.
struct Alloc {
    char* base;
    size_t map;
    size_t size;
    bool freeing;  // cuMemFreeAsync was called: invalid for new work, freed when its stream gets there
};
// Never destroyed: stream workers may still run queued frees and copies while the process exits.
static std::mutex& g_mem_mu = *new std::mutex();
static std::map<CUdeviceptr, Alloc>& g_allocs = *new std::map<CUdeviceptr, Alloc>();
static size_t g_used = 0;
static std::map<uintptr_t, size_t>& g_pinned = *new std::map<uintptr_t, size_t>();  // page-locked host ranges

static CUresult mem_alloc(CUdeviceptr* out, size_t bytes) {
    if (!out) return ERR_INVALID_VALUE;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;  // cudaMalloc aligns to 256 bytes
    size_t map = (size + page - 1) / page * page + page;
    std::lock_guard<std::mutex> g(g_mem_mu);
    if (g_used + size > TOTAL_MEM) return ERR_OUT_OF_MEMORY;
    void* p = mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return ERR_OUT_OF_MEMORY;
    char* base = (char*)p;
    mprotect(base + map - page, page, PROT_NONE);
    char* buf = base + map - page - size;
    memset(buf, 0xff, size);
    *out = (CUdeviceptr)buf;
    g_allocs[*out] = Alloc{base, map, size, false};
    g_used += size;
    return OK;
}

// Frees now. `async_pending`: the allocation was marked by cuMemFreeAsync (else it must not be).
static CUresult mem_free_now(CUdeviceptr p, bool async_pending) {
    if (!p) return OK;
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end() || it->second.freeing != async_pending) {
        note("cuMemFree of %p, which is not an allocation%s", (void*)p,
             it == g_allocs.end() ? "" : " (cuMemFreeAsync already called on it)");
        return ERR_INVALID_VALUE;
    }
    // The pages stay reserved but inaccessible, so a use after free faults instead of reading reused memory.
    madvise(it->second.base, it->second.map, MADV_DONTNEED);
    mprotect(it->second.base, it->second.map, PROT_NONE);
    g_used -= it->second.size;
    g_allocs.erase(it);
    return OK;
}

// Whether [p, p + n) lies inside one allocation (copies are checked; kernels are not). `pending_ok`:
// an allocation cuMemFreeAsync was called on counts (work queued before the free may still use it).
static bool in_device_memory_locked(CUdeviceptr p, size_t n, bool pending_ok) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    return p >= it->first && p + n <= it->first + it->second.size && (pending_ok || !it->second.freeing);
}

static CUresult check_range(const char* what, CUdeviceptr p, size_t n) {
    if (n == 0) return OK;
    std::lock_guard<std::mutex> g(g_mem_mu);
    if (in_device_memory_locked(p, n, false)) return OK;
    note("%s: [%p, +%zu) is not inside one device allocation%s", what, (void*)p, n,
         in_device_memory_locked(p, n, true) ? " (cuMemFreeAsync was already called on it)" : "");
    return ERR_INVALID_VALUE;
}

static bool is_pinned(const void* p, size_t n) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it == g_pinned.begin()) return false;
    --it;
    return (uintptr_t)p + n <= it->first + it->second;
}

// A copy or memset as its stream executes it. The device ranges are checked again: an unordered free
// may have run since the call, which a GPU would meet as an illegal address.
static int exec_copy(const char* what, void* dst, const void* src, size_t n, bool dst_dev, bool src_dev) {
    if (n == 0) return OK;
    std::lock_guard<std::mutex> g(g_mem_mu);
    for (int k = 0; k < 2; k++) {
        bool dev = k == 0 ? dst_dev : src_dev;
        CUdeviceptr p = (CUdeviceptr)(k == 0 ? dst : src);
        if (dev && !in_device_memory_locked(p, n, true)) {
            note("%s ran after its %s [%p, +%zu) was freed (missing stream ordering?)", what,
                 k == 0 ? "destination" : "source", (void*)p, n);
            return ERR_ILLEGAL_ADDRESS;
        }
    }
    memmove(dst, src, n);
    return OK;
}
static int exec_memset(const char* what, CUdeviceptr dst, unsigned v, size_t elem, size_t count) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    if (count && !in_device_memory_locked(dst, elem * count, true)) {
        note("%s ran after its destination [%p, +%zu) was freed (missing stream ordering?)", what, (void*)dst,
             elem * count);
        return ERR_ILLEGAL_ADDRESS;
    }
    if (elem == 1)
        memset((void*)dst, (int)(v & 0xff), count);
    else
        for (size_t i = 0; i < count; i++) memcpy((char*)dst + elem * i, &v, elem);
    return OK;
}

// ---- Streams. One mutex guards every queue and counter; `progress` is signalled whenever an
// operation completes (what every waiter, host or worker, waits for).
struct Stream;
struct Dep {  // satisfied once `s` has completed its first `seq` operations
    std::shared_ptr<Stream> s;
    uint64_t seq;
};
struct Op {
    const char* what;
    std::vector<Dep> deps;
    std::function<int()> fn;  // null: only waits for deps; a non-zero result becomes the sticky error
    bool even_if_failed;      // runs after a sticky error too (frees); other work is then skipped
};
enum StreamKind { KIND_CREATED, KIND_LEGACY, KIND_PER_THREAD };
struct Stream : std::enable_shared_from_this<Stream> {
    StreamKind kind = KIND_CREATED;
    unsigned flags = 0;
    std::deque<Op> q;
    uint64_t enq = 0, done = 0;  // operations queued and completed so far
    bool destroyed = false;
    std::condition_variable work;
    // Blocking streams synchronize with the legacy default stream; CU_STREAM_NON_BLOCKING ones do not.
    bool blocking() const { return kind != KIND_LEGACY && !(flags & 1u); }
};
// The record of a cuEventRecord: the point `seq` of stream `s`, and when the stream got there.
struct Rec {
    std::shared_ptr<Stream> s;
    uint64_t seq = 0;
    double ms = 0;
};
struct Event {
    unsigned flags;
    std::shared_ptr<Rec> rec;  // the latest record; null if never recorded
};

struct Driver {
    std::mutex mu;
    std::condition_variable progress;
    std::condition_variable idle_cv;
    std::deque<std::shared_ptr<Stream>> unserved;  // streams waiting for a worker thread
    int idle = 0;                                  // worker threads waiting for a stream
    std::vector<std::shared_ptr<Stream>> streams;  // live streams, and destroyed ones still draining
    std::shared_ptr<Stream> legacy;
    CUresult sticky = OK;
};
// Never freed: detached workers wait on it until the process exits.
static Driver& D() {
    static Driver* d = new Driver();
    return *d;
}

static void jitter() {
    long max_us = jitter_max_us();
    if (max_us <= 0) return;
    static thread_local std::minstd_rand rng(
        (unsigned)(std::hash<std::thread::id>()(std::this_thread::get_id()) ^ (size_t)(now_ms() * 1000)));
    if (rng() & 1) std::this_thread::sleep_for(std::chrono::microseconds(rng() % (unsigned long)max_us));
}

static bool deps_met(const std::vector<Dep>& deps) {
    for (const Dep& d : deps)
        if (d.s->done < d.seq) return false;
    return true;
}

// Runs one stream's operations in order until it is destroyed and drained.
static void serve(const std::shared_ptr<Stream>& s, std::unique_lock<std::mutex>& l) {
    Driver& d = D();
    for (;;) {
        s->work.wait(l, [&] { return !s->q.empty() || s->destroyed; });
        if (s->q.empty()) break;
        Op op = std::move(s->q.front());
        s->q.pop_front();
        d.progress.wait(l, [&] { return deps_met(op.deps); });
        // After a sticky error a GPU context runs nothing more (and calls no host function).
        bool run = op.fn && (d.sticky == OK || op.even_if_failed);
        l.unlock();
        jitter();
        int r = run ? op.fn() : OK;
        op = Op();  // the operation's captures (staged copies) go before its completion is seen
        l.lock();
        if (r != OK && d.sticky == OK) d.sticky = r;
        s->done++;
        d.progress.notify_all();
    }
    d.streams.erase(std::remove(d.streams.begin(), d.streams.end(), s), d.streams.end());
    d.progress.notify_all();
}

// Worker threads serve one stream at a time and are reused after it is destroyed (a kernel library
// keeps per-thread state such as fiber stacks, so threads are not thrown away).
static void worker_main() {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    for (;;) {
        d.idle++;
        d.idle_cv.wait(l, [&] { return !d.unserved.empty(); });
        d.idle--;
        std::shared_ptr<Stream> s = std::move(d.unserved.front());
        d.unserved.pop_front();
        serve(s, l);
    }
}

// At exit, lets queued work finish (for at most a minute) before the process tears down: a CUDA program
// may exit with work pending, and workers must not run while libraries are being finalized.
static void drain_at_exit() {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    std::vector<Dep> all;
    for (const auto& s : d.streams) all.push_back(Dep{s, s->enq});
    if (!d.progress.wait_for(l, std::chrono::seconds(60), [&] { return deps_met(all); }))
        note("exiting with stream work still running");
}

static std::shared_ptr<Stream> new_stream_locked(StreamKind kind, unsigned flags) {
    Driver& d = D();
    static bool drain_registered = atexit(drain_at_exit) == 0;
    (void)drain_registered;
    auto s = std::make_shared<Stream>();
    s->kind = kind;
    s->flags = flags;
    d.streams.push_back(s);
    if (!sync_mode()) {
        d.unserved.push_back(s);
        if (d.idle >= (int)d.unserved.size())
            d.idle_cv.notify_one();
        else
            std::thread(worker_main).detach();
    }
    return s;
}

static void destroy_stream_locked(const std::shared_ptr<Stream>& s) {
    s->destroyed = true;  // pending work still runs; the worker then moves on
    if (sync_mode()) {
        Driver& d = D();
        d.streams.erase(std::remove(d.streams.begin(), d.streams.end(), s), d.streams.end());
    }
    s->work.notify_all();
}

// The per-thread default stream of the calling thread, destroyed (after its work) when the thread ends.
struct PerThreadStream {
    std::shared_ptr<Stream> s;
    ~PerThreadStream() {
        if (!s) return;
        std::lock_guard<std::mutex> g(D().mu);
        destroy_stream_locked(s);
    }
};
static thread_local PerThreadStream t_per_thread;

static std::shared_ptr<Stream> resolve_locked(Stream* h) {
    Driver& d = D();
    if (!h || h == (Stream*)0x1) {  // null and CU_STREAM_LEGACY
        if (!d.legacy) d.legacy = new_stream_locked(KIND_LEGACY, 0);
        return d.legacy;
    }
    if (h == (Stream*)0x2) {  // CU_STREAM_PER_THREAD
        if (!t_per_thread.s) t_per_thread.s = new_stream_locked(KIND_PER_THREAD, 0);
        return t_per_thread.s;
    }
    return h->shared_from_this();
}

// Queues `op` on `s` with the legacy default stream's implicit ordering added; its sequence number.
static uint64_t push_locked(const std::shared_ptr<Stream>& s, Op op) {
    Driver& d = D();
    if (s->kind == KIND_LEGACY) {
        for (const auto& o : d.streams)
            if (o != s && o->blocking() && o->done < o->enq) op.deps.push_back(Dep{o, o->enq});
    } else if (s->blocking() && d.legacy && d.legacy->done < d.legacy->enq) {
        op.deps.push_back(Dep{d.legacy, d.legacy->enq});
    }
    s->q.push_back(std::move(op));
    s->work.notify_one();
    return ++s->enq;
}

struct Queued {
    std::shared_ptr<Stream> s;
    uint64_t seq = 0;
};

// Queues `fn` on stream handle `h` after `deps`. Returns the sticky error if there is one (and then
// queues nothing, unless `even_if_failed`). In FACETRAIN_EMU_SYNC mode runs `fn` at once and returns
// its result. `where`: the stream and position of the operation, for waiting on it.
static CUresult submit(Stream* h, const char* what, std::function<int()> fn, std::vector<Dep> deps = {},
                       Queued* where = nullptr, bool even_if_failed = false) {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    if (d.sticky != OK && !even_if_failed) return d.sticky;
    std::shared_ptr<Stream> s = resolve_locked(h);
    if (sync_mode()) {
        uint64_t seq = ++s->enq;
        if (where) *where = Queued{s, seq};
        l.unlock();
        int r = fn ? fn() : OK;
        l.lock();
        s->done++;
        d.progress.notify_all();
        return r;
    }
    uint64_t seq = push_locked(s, Op{what, std::move(deps), std::move(fn), even_if_failed});
    if (where) *where = Queued{s, seq};
    return OK;
}

// Waits until the operation at `q` has completed; then the sticky error, if any.
static CUresult wait_queued(const Queued& q) {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    if (q.s) d.progress.wait(l, [&] { return q.s->done >= q.seq; });
    return d.sticky;
}

// Waits for everything queued so far on every stream.
static void device_sync() {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    std::vector<Dep> all;
    for (const auto& s : d.streams) all.push_back(Dep{s, s->enq});
    d.progress.wait(l, [&] { return deps_met(all); });
}

static CUresult stream_sync(Stream* h) {
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    std::shared_ptr<Stream> s = resolve_locked(h);
    uint64_t target = s->enq;
    // On the legacy stream an (empty) operation also waits for the blocking streams' earlier work.
    if (s->kind == KIND_LEGACY && !sync_mode()) target = push_locked(s, Op{"synchronize", {}, nullptr, false});
    d.progress.wait(l, [&] { return s->done >= target; });
    return d.sticky;
}

extern "C" {

// ---- Initialisation, devices, contexts.
// The devices: FACETRAIN_EMU_DEVICES (1 to 16, default 1) of them, all the same host emulation. Each
// process should use one of them: they share this process's memory and context (a job's ranks, one
// process per device, are what several are for).
static int emu_devices() {
    const char* v = getenv("FACETRAIN_EMU_DEVICES");
    int n = v ? atoi(v) : 1;
    return n < 1 ? 1 : (n > 16 ? 16 : n);
}

// CUDA_VISIBLE_DEVICES as the driver reads it: a comma-separated list of ordinals, read up to the first
// entry that names no device (an empty list hides them all: cuInit then reports no device). The
// emulation takes the list's length as the count; entries keep their own ordinals' identity only in
// name, which one device per process never sees.
static int visible_devices() {
    const char* v = getenv("CUDA_VISIBLE_DEVICES");
    int all = emu_devices();
    if (!v) return all;
    int count = 0;
    while (*v) {
        while (*v == ' ' || *v == ',') v++;
        if (*v < '0' || *v > '9') break;
        int ordinal = 0;
        while (*v >= '0' && *v <= '9') ordinal = ordinal * 10 + (*v++ - '0');
        if (ordinal >= all || count >= all) break;
        count++;
    }
    return count;
}

CUresult cuInit(unsigned flags) {
    if (visible_devices() == 0) return ERR_NO_DEVICE;
    g_init = true;
    return OK;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = visible_devices();
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!g_init) return ERR_NOT_INITIALIZED;
    if (ordinal < 0 || ordinal >= visible_devices()) return ERR_INVALID_DEVICE;
    *d = ordinal;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    snprintf(name, (size_t)len, "facetrain host emulation (sm_90, no GPU)");
    return OK;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    *bytes = TOTAL_MEM;
    return OK;
}
CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) {
    memset(uuid, 0x5e, 16);
    return OK;
}
CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (d < 0 || d >= visible_devices()) return ERR_INVALID_DEVICE;
    switch (attr) {
        case 1: *v = 1024; break;                // max threads per block
        case 2: case 3: *v = 1024; break;        // max block dim x, y
        case 4: *v = 64; break;                  // max block dim z
        case 5: *v = 2147483647; break;          // max grid x
        case 6: case 7: *v = 65535; break;       // max grid y, z
        case 8: *v = 49152; break;               // shared memory per block
        case 10: *v = 32; break;                 // warp size
        case 16: *v = SMS; break;                // multiprocessors
        case 75: *v = 9; break;                  // compute capability major
        case 76: *v = 0; break;                  // minor
        case 115: *v = 1; break;                 // memory pools supported
        default: *v = 0; break;
    }
    return OK;
}
// The device whose primary context this process took last (what cuCtxGetDevice reports).
static int g_ctx_device = 0;
CUresult cuDevicePrimaryCtxRetain(Ctx** ctx, CUdevice d) {
    if (d < 0 || d >= visible_devices()) return ERR_INVALID_DEVICE;
    g_ctx_device = d;
    *ctx = &g_ctx;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return OK; }
CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) {
    // Waits for queued work and clears a sticky error (the emulation keeps allocations and modules).
    device_sync();
    std::lock_guard<std::mutex> g(D().mu);
    D().sticky = OK;
    return OK;
}
CUresult cuCtxSetCurrent(Ctx* c) {
    t_current = c;
    return OK;
}
CUresult cuCtxGetCurrent(Ctx** c) {
    *c = t_current;
    return OK;
}
CUresult cuCtxPushCurrent_v2(Ctx* c) { return cuCtxSetCurrent(c); }
CUresult cuCtxPopCurrent_v2(Ctx** c) {
    if (c) *c = t_current;
    return OK;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = g_ctx_device;
    return OK;
}
CUresult cuCtxSynchronize() {
    device_sync();
    return D().sticky;
}
CUresult cuCtxGetStreamPriorityRange(int* least, int* greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return OK;
}
CUresult cuCtxGetLimit(size_t* v, int limit) {
    *v = 0;
    return OK;
}
CUresult cuCtxSetLimit(int limit, size_t v) { return OK; }
CUresult cuCtxSetFlags(unsigned flags) { return OK; }
CUresult cuCtxGetCacheConfig(int* c) {
    *c = 0;
    return OK;
}
CUresult cuCtxSetCacheConfig(int c) { return OK; }

// ---- Errors.
CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case OK: *s = "CUDA_SUCCESS"; break;
        case ERR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case ERR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case ERR_NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case ERR_NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; break;
        case ERR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
        case ERR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
        case ERR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case ERR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case ERR_NOT_READY: *s = "CUDA_ERROR_NOT_READY"; break;
        case ERR_ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
        case ERR_HOST_MEMORY_ALREADY_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"; break;
        case ERR_HOST_MEMORY_NOT_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"; break;
        case ERR_LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
        case ERR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case ERR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN"; return ERR_INVALID_VALUE;
    }
    return OK;
}
CUresult cuGetErrorString(CUresult e, const char** s) {
    CUresult r = cuGetErrorName(e, s);
    if (e == ERR_LAUNCH_FAILED) *s = "kernel failed in the host emulation (see stderr)";
    if (e == ERR_ILLEGAL_ADDRESS) *s = "a copy ran after its device memory was freed (see stderr)";
    return r;
}

// ---- Memory.
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return mem_alloc(p, bytes); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, Stream* s) { return mem_alloc(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) {
    device_sync();
    return mem_free_now(p, false);
}
CUresult cuMemFreeAsync(CUdeviceptr p, Stream* s) {
    if (!p) return OK;
    {
        std::lock_guard<std::mutex> g(g_mem_mu);
        auto it = g_allocs.find(p);
        if (it == g_allocs.end() || it->second.freeing) {
            note("cuMemFreeAsync of %p, which is not an allocation%s", (void*)p,
                 it == g_allocs.end() ? "" : " (cuMemFreeAsync already called on it)");
            return ERR_INVALID_VALUE;
        }
        it->second.freeing = true;
    }
    return submit(s, "cuMemFreeAsync", [p] { return (int)mem_free_now(p, true); }, {}, nullptr, true);
}
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    *free_bytes = TOTAL_MEM - g_used;
    *total = TOTAL_MEM;
    return OK;
}
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
    *p = malloc(std::max<size_t>(bytes, 1));
    if (!*p) return ERR_OUT_OF_MEMORY;
    std::lock_guard<std::mutex> g(g_mem_mu);
    g_pinned[(uintptr_t)*p] = std::max<size_t>(bytes, 1);
    return OK;
}
CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }
CUresult cuMemFreeHost(void* p) {
    if (!p) return OK;
    device_sync();  // as cudaFreeHost: queued copies may still read or write it
    {
        std::lock_guard<std::mutex> g(g_mem_mu);
        if (!g_pinned.erase((uintptr_t)p)) {
            note("cuMemFreeHost of %p, which cuMemHostAlloc did not return", p);
            return ERR_INVALID_VALUE;
        }
    }
    free(p);
    return OK;
}
CUresult cuMemHostRegister_v2(void* p, size_t bytes, unsigned flags) {
    if (!p || !bytes) return ERR_INVALID_VALUE;
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_pinned.upper_bound((uintptr_t)p);
    if (it != g_pinned.end() && it->first < (uintptr_t)p + bytes) return ERR_HOST_MEMORY_ALREADY_REGISTERED;
    if (it != g_pinned.begin() && std::prev(it)->first + std::prev(it)->second > (uintptr_t)p)
        return ERR_HOST_MEMORY_ALREADY_REGISTERED;
    g_pinned[(uintptr_t)p] = bytes;
    return OK;
}
CUresult cuMemHostUnregister(void* p) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    return g_pinned.erase((uintptr_t)p) ? OK : ERR_HOST_MEMORY_NOT_REGISTERED;
}

// Asynchronous copies. The device range is checked at call time, and again when the copy runs.
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, Stream* s) {
    if (CUresult r = check_range("cuMemcpyHtoD", dst, n)) return r;
    const char* what = "cuMemcpyHtoDAsync";
    if (sync_mode() || is_pinned(src, n))  // pinned: read when the copy runs
        return submit(s, what, [=] { return exec_copy(what, (void*)dst, src, n, true, false); });
    // Pageable: staged now, so the caller may reuse its buffer as soon as this returns.
    std::shared_ptr<char> staged(new (std::nothrow) char[std::max<size_t>(n, 1)], std::default_delete<char[]>());
    if (!staged) return ERR_OUT_OF_MEMORY;
    memcpy(staged.get(), src, n);
    return submit(s, what, [=] { return exec_copy(what, (void*)dst, staged.get(), n, true, false); });
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, Stream* s) {
    if (CUresult r = check_range("cuMemcpyDtoH", src, n)) return r;
    const char* what = "cuMemcpyDtoHAsync";
    Queued q;
    if (CUresult r = submit(s, what, [=] { return exec_copy(what, dst, (const void*)src, n, false, true); }, {}, &q))
        return r;
    if (is_pinned(dst, n)) return OK;
    return wait_queued(q);  // pageable: returns once the data is there
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Stream* s) {
    if (CUresult r = check_range("cuMemcpyDtoD (destination)", dst, n)) return r;
    if (CUresult r = check_range("cuMemcpyDtoD (source)", src, n)) return r;
    const char* what = "cuMemcpyDtoDAsync";
    return submit(s, what, [=] { return exec_copy(what, (void*)dst, (const void*)src, n, true, true); });
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, Stream* s) {
    if (CUresult r = check_range("cuMemsetD8", dst, n)) return r;
    return submit(s, "cuMemsetD8Async", [=] { return exec_memset("cuMemsetD8Async", dst, v, 1, n); });
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, Stream* s) {
    if (CUresult r = check_range("cuMemsetD32", dst, n * 4)) return r;
    return submit(s, "cuMemsetD32Async", [=] { return exec_memset("cuMemsetD32Async", dst, v, 4, n); });
}

// Synchronous copies and memsets: work on the legacy default stream (see the top of the file).
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    if (CUresult r = check_range("cuMemcpyHtoD", dst, n)) return r;
    const char* what = "cuMemcpyHtoD";
    Queued q;
    if (CUresult r = submit(nullptr, what, [=] { return exec_copy(what, (void*)dst, src, n, true, false); }, {}, &q))
        return r;
    return wait_queued(q);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    if (CUresult r = check_range("cuMemcpyDtoH", src, n)) return r;
    const char* what = "cuMemcpyDtoH";
    Queued q;
    if (CUresult r = submit(nullptr, what, [=] { return exec_copy(what, dst, (const void*)src, n, false, true); }, {}, &q))
        return r;
    return wait_queued(q);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr); }
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { return cuMemsetD8Async(dst, v, n, nullptr); }
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) { return cuMemsetD32Async(dst, v, n, nullptr); }
CUresult cuPointerGetAttribute(void* data, int attr, CUdeviceptr p) { return ERR_NOT_SUPPORTED; }

// ---- Streams and events.
CUresult cuStreamCreate(Stream** s, unsigned flags) {
    if (!s) return ERR_INVALID_VALUE;
    std::lock_guard<std::mutex> g(D().mu);
    std::shared_ptr<Stream> st = new_stream_locked(KIND_CREATED, flags);
    *s = st.get();  // kept alive by the driver's list until destroyed and drained
    return OK;
}
CUresult cuStreamCreateWithPriority(Stream** s, unsigned flags, int priority) { return cuStreamCreate(s, flags); }
CUresult cuStreamDestroy_v2(Stream* s) {
    if (!s || s == (Stream*)0x1 || s == (Stream*)0x2) return ERR_INVALID_HANDLE;
    std::lock_guard<std::mutex> g(D().mu);
    destroy_stream_locked(s->shared_from_this());
    return OK;
}
CUresult cuStreamGetFlags(Stream* s, unsigned* flags) {
    if (!flags) return ERR_INVALID_VALUE;
    std::lock_guard<std::mutex> g(D().mu);
    *flags = resolve_locked(s)->flags;
    return OK;
}
CUresult cuStreamSynchronize(Stream* s) { return stream_sync(s); }
CUresult cuStreamQuery(Stream* h) {
    Driver& d = D();
    std::lock_guard<std::mutex> g(d.mu);
    if (d.sticky != OK) return d.sticky;
    std::shared_ptr<Stream> s = resolve_locked(h);
    return s->done >= s->enq ? OK : ERR_NOT_READY;
}
CUresult cuStreamWaitEvent(Stream* s, Event* e, unsigned flags) {
    if (!e) return ERR_INVALID_HANDLE;
    std::shared_ptr<Rec> rec;
    {
        std::lock_guard<std::mutex> g(D().mu);
        rec = e->rec;
    }
    if (!rec) {  // as in CUDA, waiting for an event never recorded waits for nothing
        note("cuStreamWaitEvent on an event never recorded");
        return OK;
    }
    return submit(s, "cuStreamWaitEvent", nullptr, {Dep{rec->s, rec->seq}});
}
CUresult cuStreamIsCapturing(Stream* s, int* status) {
    *status = 0;
    return OK;
}
typedef void (*HostFn)(void*);
CUresult cuLaunchHostFunc(Stream* s, HostFn fn, void* data) {
    if (!fn) return ERR_INVALID_VALUE;
    return submit(s, "cuLaunchHostFunc", [fn, data] {
        fn(data);
        return OK;
    });
}
CUresult cuEventCreate(Event** e, unsigned flags) {
    if (!e) return ERR_INVALID_VALUE;
    *e = new Event{flags, nullptr};
    return OK;
}
CUresult cuEventDestroy_v2(Event* e) {
    if (!e) return ERR_INVALID_HANDLE;
    // Waits already queued on it hold their own copy of its record.
    std::lock_guard<std::mutex> g(D().mu);
    delete e;
    return OK;
}
CUresult cuEventRecord(Event* e, Stream* s) {
    if (!e) return ERR_INVALID_HANDLE;
    auto rec = std::make_shared<Rec>();
    Queued q;
    if (CUresult r = submit(s, "cuEventRecord", [rec] {
            rec->ms = now_ms();
            return OK;
        }, {}, &q))
        return r;
    std::lock_guard<std::mutex> g(D().mu);
    rec->s = q.s;
    rec->seq = q.seq;
    e->rec = rec;
    return OK;
}
CUresult cuEventRecordWithFlags(Event* e, Stream* s, unsigned flags) { return cuEventRecord(e, s); }
static bool rec_done(const std::shared_ptr<Rec>& r) { return !r || r->s->done >= r->seq; }
CUresult cuEventSynchronize(Event* e) {
    if (!e) return ERR_INVALID_HANDLE;
    Driver& d = D();
    std::unique_lock<std::mutex> l(d.mu);
    std::shared_ptr<Rec> rec = e->rec;
    d.progress.wait(l, [&] { return rec_done(rec); });
    return d.sticky;
}
CUresult cuEventQuery(Event* e) {
    if (!e) return ERR_INVALID_HANDLE;
    Driver& d = D();
    std::lock_guard<std::mutex> g(d.mu);
    if (d.sticky != OK) return d.sticky;
    return rec_done(e->rec) ? OK : ERR_NOT_READY;
}
CUresult cuEventElapsedTime(float* ms, Event* a, Event* b) {
    if (!ms || !a || !b) return ERR_INVALID_HANDLE;
    std::lock_guard<std::mutex> g(D().mu);
    if (!a->rec || !b->rec || ((a->flags | b->flags) & 0x2u)) return ERR_INVALID_HANDLE;  // 0x2: DISABLE_TIMING
    if (!rec_done(a->rec) || !rec_done(b->rec)) return ERR_NOT_READY;
    *ms = (float)(b->rec->ms - a->rec->ms);
    return OK;
}
CUresult cuEventElapsedTime_v2(float* ms, Event* a, Event* b) { return cuEventElapsedTime(ms, a, b); }

// ---- Modules: the "PTX" from the fake NVRTC names the host-compiled kernel library.
CUresult cuModuleLoadData(Module** m, const void* image) {
    const char* text = (const char*)image;
    const char* tag = strstr(text, ".emu_so ");
    if (!tag) {
        note("cuModuleLoadData: not a module of the fake NVRTC (was real PTX cached? clear the kernel cache)");
        return ERR_INVALID_IMAGE;
    }
    std::string path(tag + 8, strcspn(tag + 8, "\n"));
    void* dl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        note("cuModuleLoadData: %s", dlerror());
        return ERR_INVALID_IMAGE;
    }
    FindFn find = (FindFn)dlsym(dl, "__emu_find");
    LaunchFn launch = (LaunchFn)dlsym(dl, "__emu_launch");
    if (!find || !launch) return ERR_INVALID_IMAGE;
    FindPackFn find_pack = (FindPackFn)dlsym(dl, "__emu_find_pack");
    if (!find_pack && !sync_mode())
        note("%s was built before asynchronous launches (a stale kernel cache?): its kernels run synchronously",
             path.c_str());
    *m = new Module{dl, find, launch, find_pack, path};
    return OK;
}
CUresult cuModuleLoad(Module** m, const char* path) { return ERR_NOT_SUPPORTED; }
CUresult cuModuleUnload(Module* m) {
    // Kept loaded: the kernel library's helper threads live for the process, and queued launches use it.
    return OK;
}
CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
    if (!m) return ERR_INVALID_HANDLE;
    Trampoline t = m->find(name);
    if (!t) return ERR_NOT_FOUND;
    *f = new Function{m, name, t, m->find_pack ? m->find_pack(name) : nullptr};
    return OK;
}
CUresult cuModuleGetGlobal_v2(CUdeviceptr* p, size_t* bytes, Module* m, const char* name) { return ERR_NOT_FOUND; }
CUresult cuFuncGetAttribute(int* v, int attr, Function* f) {
    *v = attr == 0 ? 1024 : 0;  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    return OK;
}
CUresult cuFuncSetAttribute(Function* f, int attr, int v) { return OK; }
CUresult cuFuncSetCacheConfig(Function* f, int c) { return OK; }

// Runs a kernel to completion on the calling thread; a failure is printed and is LAUNCH_FAILED.
static int run_kernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                      void** params) {
    char err[1024] = {0};
    if (f->module->launch(f->tramp, gx, gy, gz, bx, by, bz, params, err, sizeof err)) {
        note("kernel %s failed: %s", f->name.c_str(), err);
        return ERR_LAUNCH_FAILED;
    }
    return OK;
}

CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, Stream* s, void** params, void** extra) {
    if (!f) return ERR_INVALID_HANDLE;
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || threads == 0 || gy > 65535 || gz > 65535 || bz > 64) {
        note("launch of %s with grid (%u,%u,%u) block (%u,%u,%u): invalid dimensions", f->name.c_str(), gx, gy, gz,
             bx, by, bz);
        return ERR_INVALID_VALUE;
    }
    if (threads > 1024) {
        note("launch of %s with %llu threads per block (at most 1024)", f->name.c_str(), threads);
        return ERR_INVALID_VALUE;
    }
    if (smem > 49152) return ERR_INVALID_VALUE;
    if (extra) return ERR_NOT_SUPPORTED;
    if (trace()) note("launch %s grid (%u,%u,%u) block (%u,%u,%u) on stream %p", f->name.c_str(), gx, gy, gz, bx, by, bz, (void*)s);
    if (sync_mode())
        return submit(s, "cuLaunchKernel", [=] { return run_kernel(f, gx, gy, gz, bx, by, bz, params); });
    if (!f->pack) {
        // A library without argument packing: wait for the stream, then run here.
        if (CUresult r = stream_sync(s)) return r;
        return run_kernel(f, gx, gy, gz, bx, by, bz, params);
    }
    {
        std::lock_guard<std::mutex> g(D().mu);
        if (D().sticky != OK) return D().sticky;
    }
    Packed* pk = f->pack(params);  // the caller may free the argument values once this returns
    CUresult r = submit(s, "cuLaunchKernel", [=] {
        int e = run_kernel(f, gx, gy, gz, bx, by, bz, pk->params);
        pk->destroy(pk);
        return e;
    });
    if (r != OK) pk->destroy(pk);
    return r;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, Function* f, int block, size_t smem) {
    *n = std::max(1, 2048 / std::max(1, block));
    return OK;
}

}  // extern "C"
