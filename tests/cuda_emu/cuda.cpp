// A host stand-in for libcuda (the CUDA driver API) covering what cudarc and the engine call: one
// device, device memory that is host memory, streams that run work in order at the moment it is
// queued, events that read a clock, and modules that are the fake NVRTC's host-compiled kernels.
// Device allocations end at a guard page and start filled with 0xff bytes (NaN as f32/f16/bf16), so
// a kernel that overruns its buffer faults and one that reads memory nobody wrote sees NaN, as an
// uninitialised cudaMalloc buffer would show up in the numbers sooner or later on a GPU.
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <map>
#include <mutex>
#include <string>
#include <sys/mman.h>
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
    ERR_INVALID_DEVICE = 101,
    ERR_INVALID_IMAGE = 200,
    ERR_INVALID_CONTEXT = 201,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_FOUND = 500,
    ERR_LAUNCH_OUT_OF_RESOURCES = 701,
    ERR_LAUNCH_FAILED = 719,
    ERR_NOT_SUPPORTED = 801,
};

struct Ctx {
    int device;
};
struct Stream {
    int unused;
};
struct Event {
    double ms;
    bool recorded;
};
// Exported by every kernel library (emu_rt.h and the tail the fake NVRTC appends).
typedef void (*Trampoline)(void**);
typedef Trampoline (*FindFn)(const char*);
typedef int (*LaunchFn)(Trampoline, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void**, char*, size_t);
struct Module {
    void* dl;
    FindFn find;
    LaunchFn launch;
};
struct Function {
    Module* module;
    std::string name;
    Trampoline tramp;
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

static double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// ---- Memory: [base, base + map) with the last page PROT_NONE; the buffer ends at the guard page.
struct Alloc {
    char* base;
    size_t map;
    size_t size;
};
static std::mutex g_mem_mu;
static std::map<CUdeviceptr, Alloc> g_allocs;
static size_t g_used = 0;

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
    g_allocs[*out] = Alloc{base, map, size};
    g_used += size;
    return OK;
}

static CUresult mem_free(CUdeviceptr p) {
    if (!p) return OK;
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) {
        note("cuMemFree of %p, which is not an allocation", (void*)p);
        return ERR_INVALID_VALUE;
    }
    // The pages stay reserved but inaccessible, so a use after free faults instead of reading reused memory.
    madvise(it->second.base, it->second.map, MADV_DONTNEED);
    mprotect(it->second.base, it->second.map, PROT_NONE);
    g_used -= it->second.size;
    g_allocs.erase(it);
    return OK;
}

// Whether [p, p + n) lies inside one live allocation (copies are checked; kernels are not).
static bool in_device_memory(CUdeviceptr p, size_t n) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    return p >= it->first && p + n <= it->first + it->second.size;
}

static CUresult check_range(const char* what, CUdeviceptr p, size_t n) {
    if (n == 0 || in_device_memory(p, n)) return OK;
    note("%s: [%p, +%zu) is not inside one device allocation", what, (void*)p, n);
    return ERR_INVALID_VALUE;
}

extern "C" {

// ---- Initialisation, devices, contexts.
CUresult cuInit(unsigned flags) {
    g_init = true;
    return OK;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!g_init) return ERR_NOT_INITIALIZED;
    if (ordinal != 0) return ERR_INVALID_DEVICE;
    *d = 0;
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
    if (d != 0) return ERR_INVALID_DEVICE;
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
CUresult cuDevicePrimaryCtxRetain(Ctx** ctx, CUdevice d) {
    if (d != 0) return ERR_INVALID_DEVICE;
    *ctx = &g_ctx;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { return OK; }
CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) { return OK; }
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
    *d = 0;
    return OK;
}
CUresult cuCtxSynchronize() { return OK; }
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
        case ERR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
        case ERR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
        case ERR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case ERR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
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
    return r;
}

// ---- Memory.
CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) { return mem_alloc(p, bytes); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, Stream* s) { return mem_alloc(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) { return mem_free(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, Stream* s) { return mem_free(p); }
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::mutex> g(g_mem_mu);
    *free_bytes = TOTAL_MEM - g_used;
    *total = TOTAL_MEM;
    return OK;
}
CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
    *p = malloc(std::max<size_t>(bytes, 1));
    return *p ? OK : ERR_OUT_OF_MEMORY;
}
CUresult cuMemAllocHost_v2(void** p, size_t bytes) { return cuMemHostAlloc(p, bytes, 0); }
CUresult cuMemFreeHost(void* p) {
    free(p);
    return OK;
}
CUresult cuMemHostRegister_v2(void* p, size_t bytes, unsigned flags) { return OK; }
CUresult cuMemHostUnregister(void* p) { return OK; }

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    if (CUresult r = check_range("cuMemcpyHtoD", dst, n)) return r;
    memcpy((void*)dst, src, n);
    return OK;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, Stream* s) {
    return cuMemcpyHtoD_v2(dst, src, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    if (CUresult r = check_range("cuMemcpyDtoH", src, n)) return r;
    memcpy(dst, (const void*)src, n);
    return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, Stream* s) { return cuMemcpyDtoH_v2(dst, src, n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (CUresult r = check_range("cuMemcpyDtoD (destination)", dst, n)) return r;
    if (CUresult r = check_range("cuMemcpyDtoD (source)", src, n)) return r;
    memmove((void*)dst, (const void*)src, n);
    return OK;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, Stream* s) {
    return cuMemcpyDtoD_v2(dst, src, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    if (CUresult r = check_range("cuMemsetD8", dst, n)) return r;
    memset((void*)dst, v, n);
    return OK;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, Stream* s) { return cuMemsetD8_v2(dst, v, n); }
CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned v, size_t n) {
    if (CUresult r = check_range("cuMemsetD32", dst, n * 4)) return r;
    for (size_t i = 0; i < n; i++) memcpy((char*)dst + 4 * i, &v, 4);
    return OK;
}
CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned v, size_t n, Stream* s) { return cuMemsetD32_v2(dst, v, n); }
CUresult cuPointerGetAttribute(void* data, int attr, CUdeviceptr p) { return ERR_NOT_SUPPORTED; }

// ---- Streams and events: work runs when queued, so every stream is always idle.
CUresult cuStreamCreate(Stream** s, unsigned flags) {
    *s = new Stream{0};
    return OK;
}
CUresult cuStreamCreateWithPriority(Stream** s, unsigned flags, int priority) { return cuStreamCreate(s, flags); }
CUresult cuStreamDestroy_v2(Stream* s) {
    delete s;
    return OK;
}
CUresult cuStreamSynchronize(Stream* s) { return OK; }
CUresult cuStreamQuery(Stream* s) { return OK; }
CUresult cuStreamWaitEvent(Stream* s, Event* e, unsigned flags) {
    if (e && !e->recorded) note("cuStreamWaitEvent on an event never recorded");
    return OK;
}
CUresult cuStreamIsCapturing(Stream* s, int* status) {
    *status = 0;
    return OK;
}
typedef void (*HostFn)(void*);
CUresult cuLaunchHostFunc(Stream* s, HostFn fn, void* data) {
    fn(data);
    return OK;
}
CUresult cuEventCreate(Event** e, unsigned flags) {
    *e = new Event{0.0, false};
    return OK;
}
CUresult cuEventDestroy_v2(Event* e) {
    delete e;
    return OK;
}
CUresult cuEventRecord(Event* e, Stream* s) {
    if (!e) return ERR_INVALID_HANDLE;
    e->ms = now_ms();
    e->recorded = true;
    return OK;
}
CUresult cuEventRecordWithFlags(Event* e, Stream* s, unsigned flags) { return cuEventRecord(e, s); }
CUresult cuEventSynchronize(Event* e) { return OK; }
CUresult cuEventQuery(Event* e) { return OK; }
CUresult cuEventElapsedTime(float* ms, Event* a, Event* b) {
    if (!a || !b || !a->recorded || !b->recorded) return ERR_INVALID_HANDLE;
    *ms = (float)(b->ms - a->ms);
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
    *m = new Module{dl, find, launch};
    return OK;
}
CUresult cuModuleLoad(Module** m, const char* path) { return ERR_NOT_SUPPORTED; }
CUresult cuModuleUnload(Module* m) {
    // Kept loaded: the kernel library's helper threads live for the process.
    return OK;
}
CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
    if (!m) return ERR_INVALID_HANDLE;
    Trampoline t = m->find(name);
    if (!t) return ERR_NOT_FOUND;
    *f = new Function{m, name, t};
    return OK;
}
CUresult cuModuleGetGlobal_v2(CUdeviceptr* p, size_t* bytes, Module* m, const char* name) { return ERR_NOT_FOUND; }
CUresult cuFuncGetAttribute(int* v, int attr, Function* f) {
    *v = attr == 0 ? 1024 : 0;  // CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    return OK;
}
CUresult cuFuncSetAttribute(Function* f, int attr, int v) { return OK; }
CUresult cuFuncSetCacheConfig(Function* f, int c) { return OK; }

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
    if (trace()) note("launch %s grid (%u,%u,%u) block (%u,%u,%u)", f->name.c_str(), gx, gy, gz, bx, by, bz);
    char err[1024] = {0};
    if (f->module->launch(f->tramp, gx, gy, gz, bx, by, bz, params, err, sizeof err)) {
        note("kernel %s failed: %s", f->name.c_str(), err);
        return ERR_LAUNCH_FAILED;
    }
    return OK;
}

CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, Function* f, int block, size_t smem) {
    *n = std::max(1, 2048 / std::max(1, block));
    return OK;
}

}  // extern "C"
