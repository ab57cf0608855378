// The CUDA kernel language on the host, for the emulated libnvrtc/libcuda: the fake NVRTC compiles a
// kernel source with g++ after this header, and the fake driver calls `__emu_launch` in the result.
// Every CUDA thread of a block is a fiber with its own stack; __syncthreads and the warp collectives
// switch fibers, so barrier and shuffle code runs with the GPU's semantics (exchanges happen only when
// every lane named in the mask has arrived). Blocks run one at a time per worker thread; __shared__
// variables are thread_local statics, so each worker has its own. What this cannot show: timing,
// memory coalescing, races between blocks of one launch (blocks run in some order, not concurrently on
// one worker), and the GPU's approximate intrinsics (__expf is expf here).
#pragma once
#define FT_HOST_EMU 1
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include "half.h"

#if !defined(__x86_64__)
#error "the CUDA host emulation switches fibers with x86-64 assembly"
#endif

// ---- Keywords. __global__ becomes a tag that survives preprocessing, so the fake NVRTC can find the
// kernels' names; it is defined to nothing before the real compile.
#define __global__ EMU_KERNEL_TAG
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __shared__ static thread_local
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// ---- Fibers.
extern "C" void __emu_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .globl __emu_switch
    .hidden __emu_switch
    .type __emu_switch,@function
__emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size __emu_switch, .-__emu_switch
    .globl __emu_fiber_start
    .hidden __emu_fiber_start
    .type __emu_fiber_start,@function
__emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size __emu_fiber_start, .-__emu_fiber_start
)");
extern "C" void __emu_fiber_start();

enum EmuState { EMU_RUNNABLE, EMU_AT_BARRIER, EMU_AT_WARP, EMU_DONE };
enum EmuWarpOp { EMU_SHFL, EMU_VOTE, EMU_SYNCWARP };

struct EmuFiber {
    void* sp;
    dim3 tid;
    int linear;
    EmuState state;
    // The warp collective this fiber waits in.
    EmuWarpOp op;
    unsigned mask;
    int src_lane;    // shuffles: the lane whose value this one receives
    uint64_t value;  // shuffles: this lane's value; votes: the predicate
    uint64_t result;
    unsigned grid_reads;  // gridDim reads so far (see __emu_grid_dim)
};

typedef void (*EmuTrampoline)(void**);

struct EmuBlock {
    std::vector<EmuFiber> fibers;
    void* sched_sp = nullptr;
    EmuFiber* cur = nullptr;
    char* stacks = nullptr;
    size_t nstacks = 0;
    EmuTrampoline tramp = nullptr;
    void** params = nullptr;
    dim3 block_idx, block_dim, grid_dim;
};

static thread_local EmuBlock* __emu_blk = nullptr;
static const size_t EMU_STACK = 64 << 10;

#define threadIdx (__emu_blk->cur->tid)
#define blockIdx (__emu_blk->block_idx)
#define blockDim (__emu_blk->block_dim)
#define gridDim (__emu_grid_dim())
#define warpSize 32

// Switches to the next runnable fiber of this pass over the block, or back to the scheduler after the
// last one. Handing over directly, rather than through the scheduler, keeps the return-address
// predictor right (every fiber resumes at the call site the previous one left from): ~5 ns a switch
// instead of ~35.
static inline void __emu_yield(EmuState s) {
    EmuBlock* b = __emu_blk;
    EmuFiber* f = b->cur;
    f->state = s;
    for (EmuFiber *g = f + 1, *end = b->fibers.data() + b->fibers.size(); g < end; g++)
        if (g->state == EMU_RUNNABLE) {
            b->cur = g;
            __emu_switch(&f->sp, g->sp);
            return;
        }
    __emu_switch(&f->sp, b->sched_sp);
}

// gridDim, read once per iteration of a grid-stride loop, is also where a thread lets the others of its
// block run (every 4th read; a GPU may interleave threads anywhere, so this changes no defined result).
// Run to completion one after another, each thread of a grid-stride loop would walk the whole tensor at
// a stride of gridDim.x * blockDim.x elements, a multiple of the page size: its lines all land in the
// same few cache sets, and whether a block's walk stayed in L2 hinged on the buffers' addresses (2-4x
// in time). Taking turns, the block sweeps the tensor in order, a few lines at a time, as a GPU would.
static inline const dim3& __emu_grid_dim() {
    EmuBlock* b = __emu_blk;
    if (++b->cur->grid_reads % 4 == 0) __emu_yield(EMU_RUNNABLE);
    return b->grid_dim;
}

static void __emu_fiber_main(void*) {
    __emu_blk->tramp(__emu_blk->params);
    __emu_yield(EMU_DONE);
}

// A fresh fiber's stack: the six callee-saved registers __emu_switch pops (r13 = entry, r12 = argument)
// and __emu_fiber_start as the return address, placed so the entry call sees the ABI's alignment.
static void* __emu_fiber_init(char* stack_top, EmuFiber* f) {
    uint64_t* s = (uint64_t*)(stack_top - 72);
    s[0] = s[1] = 0;                         // r15, r14
    s[2] = (uint64_t)(void*)&__emu_fiber_main;  // r13
    s[3] = (uint64_t)f;                      // r12
    s[4] = s[5] = 0;                         // rbx, rbp
    s[6] = (uint64_t)(void*)&__emu_fiber_start;
    return s;
}

// ---- Block barrier and warp collectives.
static inline void __syncthreads() { __emu_yield(EMU_AT_BARRIER); }

static inline int __emu_lane() { return __emu_blk->cur->linear & 31; }

template <class T> static inline T __emu_shfl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    EmuFiber* f = __emu_blk->cur;
    f->op = EMU_SHFL;
    f->mask = mask;
    f->src_lane = src;
    f->value = 0;
    memcpy(&f->value, &v, sizeof(T));
    __emu_yield(EMU_AT_WARP);
    T r;
    memcpy(&r, &f->result, sizeof(T));
    return r;
}

template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int lane = __emu_lane();
    int src = lane ^ lane_mask;
    if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
    return __emu_shfl(mask, v, src);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = __emu_lane();
    int src = lane + (int)delta;
    if ((src & ~(width - 1)) != (lane & ~(width - 1)) || src > 31) src = lane;
    return __emu_shfl(mask, v, src);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int lane = __emu_lane();
    int src = lane - (int)delta;
    if (src < (lane & ~(width - 1))) src = lane;
    return __emu_shfl(mask, v, src);
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    int lane = __emu_lane();
    return __emu_shfl(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}

static inline unsigned __ballot_sync(unsigned mask, int pred) {
    EmuFiber* f = __emu_blk->cur;
    f->op = EMU_VOTE;
    f->mask = mask;
    f->value = pred != 0;
    __emu_yield(EMU_AT_WARP);
    return (unsigned)f->result;
}
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
    return (__ballot_sync(mask, pred) & mask) == (__ballot_sync(mask, 1) & mask);
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    EmuFiber* f = __emu_blk->cur;
    f->op = EMU_SYNCWARP;
    f->mask = mask;
    __emu_yield(EMU_AT_WARP);
}

// ---- Intrinsics and math.
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
static inline double __longlong_as_double(long long i) { double d; memcpy(&d, &i, 8); return d; }
static inline long long __double_as_longlong(double d) { long long i; memcpy(&i, &d, 8); return i; }
// glibc declares these names itself (as aliases of expf and friends), hence macros.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(a, b) powf(a, b)
using std::isfinite;
using std::isinf;
using std::isnan;
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
static inline double rsqrt(double a) { return 1.0 / sqrt(a); }
static inline float __saturatef(float a) { return a != a ? 0.0f : fminf(fmaxf(a, 0.0f), 1.0f); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline unsigned __activemask() { return 0xffffffffu; }

// CUDA's min/max overloads, including the mixed integer ones (promoted as the GPU headers do).
#define EMU_MINMAX(T)                                         \
    static inline T min(T a, T b) { return a < b ? a : b; } \
    static inline T max(T a, T b) { return a > b ? a : b; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline long long min(int a, long long b) { return min((long long)a, b); }
static inline long long min(long long a, int b) { return min(a, (long long)b); }
static inline long long max(int a, long long b) { return max((long long)a, b); }
static inline long long max(long long a, int b) { return max(a, (long long)b); }
#undef EMU_MINMAX

// Atomics: blocks of one launch run on several workers, so these are real atomics.
template <class T> static inline T __emu_atomic_add(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, (T)(old + v), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline float atomicAdd(float* p, float v) {
    static_assert(sizeof(float) == sizeof(unsigned), "");
    unsigned* u = (unsigned*)p;
    unsigned old = __atomic_load_n(u, __ATOMIC_RELAXED), upd;
    do {
        upd = __float_as_uint(__uint_as_float(old) + v);
    } while (!__atomic_compare_exchange_n(u, &old, upd, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return __uint_as_float(old);
}
static inline double atomicAdd(double* p, double v) {
    unsigned long long* u = (unsigned long long*)p;
    unsigned long long old = __atomic_load_n(u, __ATOMIC_RELAXED), upd;
    do {
        upd = (unsigned long long)__double_as_longlong(__longlong_as_double((long long)old) + v);
    } while (!__atomic_compare_exchange_n(u, &old, upd, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return __longlong_as_double((long long)old);
}
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
static inline int atomicMax(int* p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
static inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
static inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
static inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
static inline int atomicCAS(int* p, int cmp, int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- The scheduler of one block.
struct EmuError {
    std::mutex mu;
    std::string msg;
    std::atomic<bool> failed{false};
    void set(const std::string& m) {
        std::lock_guard<std::mutex> g(mu);
        if (msg.empty()) msg = m;
        failed = true;
    }
};

static std::string __emu_states(const EmuBlock& b) {
    std::string s;
    for (const EmuFiber& f : b.fibers) {
        const char* n = f.state == EMU_DONE ? "done" : f.state == EMU_AT_BARRIER ? "__syncthreads" : "warp op";
        char buf[96];
        snprintf(buf, sizeof buf, " t(%u,%u,%u)=%s", f.tid.x, f.tid.y, f.tid.z, n);
        s += buf;
        if (s.size() > 600) {
            s += " ...";
            break;
        }
    }
    return s;
}

// Completes the warp collectives whose every masked lane has arrived. Returns false with `err` set when
// a masked lane can never arrive (exited, missing, or waiting at __syncthreads).
static bool __emu_resolve_warps(EmuBlock& b, bool& progressed, std::string& err) {
    size_t n = b.fibers.size();
    for (size_t w0 = 0; w0 < n; w0 += 32) {
        size_t w1 = std::min(n, w0 + 32);
        // Lanes of this warp waiting in a collective, grouped by mask (one group at a time).
        for (size_t i = w0; i < w1; i++) {
            EmuFiber& f = b.fibers[i];
            if (f.state != EMU_AT_WARP) continue;
            unsigned mask = f.mask;
            bool ready = true;
            for (int l = 0; l < 32; l++) {
                if (!(mask >> l & 1u)) continue;
                size_t j = w0 + l;
                if (j >= w1) {
                    err = "warp collective with mask " + std::to_string(mask) + " names lane " + std::to_string(l) +
                          ", which this block does not have (blockDim not a multiple of 32?)";
                    return false;
                }
                EmuFiber& g = b.fibers[j];
                if (g.state == EMU_AT_WARP && g.mask == mask && g.op == f.op) continue;
                if (g.state == EMU_RUNNABLE) {
                    ready = false;
                    continue;
                }
                char buf[200];
                snprintf(buf, sizeof buf, "warp collective by thread (%u,%u,%u) waits for lane %d, which %s", f.tid.x,
                         f.tid.y, f.tid.z, l,
                         g.state == EMU_DONE ? "has exited"
                         : g.state == EMU_AT_BARRIER ? "waits at __syncthreads"
                                                     : "is in a different warp collective");
                err = buf;
                return false;
            }
            if (!ready) continue;
            unsigned ballot = 0;
            for (int l = 0; l < 32; l++)
                if ((mask >> l & 1u) && b.fibers[w0 + l].value) ballot |= 1u << l;
            for (int l = 0; l < 32; l++) {
                if (!(mask >> l & 1u)) continue;
                EmuFiber& g = b.fibers[w0 + l];
                if (g.op == EMU_SHFL) {
                    int src = g.src_lane;
                    // A source outside the mask is undefined on the GPU; give the lane its own value.
                    bool ok = src >= 0 && src < 32 && (mask >> src & 1u);
                    g.result = ok ? b.fibers[w0 + src].value : g.value;
                } else {
                    g.result = ballot;
                }
            }
            for (int l = 0; l < 32; l++)
                if (mask >> l & 1u) b.fibers[w0 + l].state = EMU_RUNNABLE;
            progressed = true;
        }
    }
    return true;
}

// Runs one block to completion; false with `err` on a deadlock or a collective that cannot complete.
static bool __emu_run_block(EmuBlock& b, std::string& err) {
    size_t n = b.fibers.size();
    for (size_t i = 0; i < n; i++) {
        EmuFiber& f = b.fibers[i];
        f.state = EMU_RUNNABLE;
        f.grid_reads = 0;
        f.sp = __emu_fiber_init(b.stacks + (i + 1) * EMU_STACK, &f);
    }
    for (;;) {
        bool ran = false;
        for (size_t i = 0; i < n; i++) {
            EmuFiber& f = b.fibers[i];
            if (f.state != EMU_RUNNABLE) continue;
            b.cur = &f;
            __emu_switch(&b.sched_sp, f.sp);
            i = (size_t)(b.cur - b.fibers.data());  // the fibers after f it handed over to have run too
            ran = true;
        }
        bool progressed = false;
        if (!__emu_resolve_warps(b, progressed, err)) return false;
        if (progressed || ran) continue;
        size_t done = 0, barrier = 0;
        for (const EmuFiber& f : b.fibers) {
            done += f.state == EMU_DONE;
            barrier += f.state == EMU_AT_BARRIER;
        }
        if (done == n) return true;
        if (barrier + done == n) {
            // Exited threads count as arrived, as on the hardware since Volta.
            for (EmuFiber& f : b.fibers)
                if (f.state == EMU_AT_BARRIER) f.state = EMU_RUNNABLE;
            continue;
        }
        err = "deadlock: threads wait in warp collectives that cannot complete:" + __emu_states(b);
        return false;
    }
}

// One worker's block runner: fiber stacks (with a guard page below each) made once per thread.
static bool __emu_worker_run(EmuTrampoline tramp, void** params, dim3 grid, dim3 block, long long first,
                             std::atomic<long long>& next, long long nblocks, EmuError& error) {
    static thread_local EmuBlock b;
    size_t nthreads = (size_t)block.x * block.y * block.z;
    if (b.nstacks < nthreads) {
        if (b.stacks) munmap(b.stacks, (b.nstacks + 1) * EMU_STACK);
        size_t bytes = (nthreads + 1) * EMU_STACK;
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            error.set("cannot map fiber stacks");
            return false;
        }
        b.stacks = (char*)p;
        b.nstacks = nthreads;
        for (size_t i = 0; i < nthreads; i++) mprotect(b.stacks + i * EMU_STACK, 4096, PROT_NONE);
    }
    b.fibers.assign(nthreads, EmuFiber());
    for (size_t i = 0; i < nthreads; i++) {
        EmuFiber& f = b.fibers[i];
        f.linear = (int)i;
        f.tid.x = (unsigned)(i % block.x);
        f.tid.y = (unsigned)(i / block.x % block.y);
        f.tid.z = (unsigned)(i / ((size_t)block.x * block.y));
    }
    b.tramp = tramp;
    b.params = params;
    b.block_dim = block;
    b.grid_dim = grid;
    EmuBlock* saved = __emu_blk;
    __emu_blk = &b;
    bool ok = true;
    for (long long id = first; id < nblocks; id = next.fetch_add(1)) {
        if (error.failed) break;
        b.block_idx.x = (unsigned)(id % grid.x);
        b.block_idx.y = (unsigned)(id / grid.x % grid.y);
        b.block_idx.z = (unsigned)(id / ((long long)grid.x * grid.y));
        std::string err;
        if (!__emu_run_block(b, err)) {
            char where[96];
            snprintf(where, sizeof where, "block (%u,%u,%u): ", b.block_idx.x, b.block_idx.y, b.block_idx.z);
            error.set(where + err);
            ok = false;
            break;
        }
    }
    __emu_blk = saved;
    return ok;
}

static int __emu_workers() {
    static int n = [] {
        const char* e = getenv("FACETRAIN_EMU_THREADS");
        int v = e ? atoi(e) : (int)std::thread::hardware_concurrency();
        return std::max(1, std::min(v, 64));
    }();
    return n;
}

// Helper threads that live for the process (the fake driver never unloads a module): each launch
// hands them one job, and they and the caller's thread take blocks from one counter.
struct EmuPool {
    std::mutex mu;
    std::condition_variable wake, finished;
    std::function<void()> job;
    unsigned long long generation = 0;
    int busy = 0;
    int size = 0;

    void run(int helpers, const std::function<void()>& fn) {
        std::unique_lock<std::mutex> g(mu);
        while (size < helpers) {
            std::thread([this, seen = generation]() mutable {
                std::unique_lock<std::mutex> l(mu);
                for (;;) {
                    wake.wait(l, [&] { return generation != seen; });
                    seen = generation;
                    std::function<void()> f = job;
                    l.unlock();
                    f();
                    l.lock();
                    if (--busy == 0) finished.notify_all();
                }
            }).detach();
            size++;
        }
        job = fn;
        busy = size;
        generation++;
        wake.notify_all();
        g.unlock();
        fn();
        g.lock();
        finished.wait(g, [&] { return busy == 0; });
    }
};

static int __emu_run(EmuTrampoline tramp, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                     unsigned bz, void** params, char* err, size_t errlen) {
    static EmuPool* pool = new EmuPool();  // never freed: detached threads wait on it until exit
    static std::mutex one_launch;          // the pool serves one launch at a time
    dim3 grid{gx, gy, gz}, block{bx, by, bz};
    long long nblocks = (long long)gx * gy * gz;
    std::atomic<long long> next{0};
    EmuError error;
    auto work = [&] { __emu_worker_run(tramp, params, grid, block, next.fetch_add(1), next, nblocks, error); };
    int helpers = (int)std::min<long long>(__emu_workers(), nblocks) - 1;
    if (helpers > 0) {
        std::lock_guard<std::mutex> g(one_launch);
        pool->run(helpers, work);
    } else {
        work();
    }
    if (error.failed) {
        snprintf(err, errlen, "%s", error.msg.c_str());
        return 1;
    }
    return 0;
}

// Calls kernel `f` with its arguments unpacked from cuLaunchKernel's array of pointers.
template <class... A, size_t... I> static void __emu_call_impl(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <class... A> static void __emu_call(void (*f)(A...), void** p) {
    __emu_call_impl(f, p, std::index_sequence_for<A...>{});
}

// A launch's arguments copied out of cuLaunchKernel's array of pointers (which the caller may free
// as soon as the call returns), for a driver that runs the kernel later on a stream's worker thread:
// `params` points at the copies, in the layout the trampoline reads; `destroy` frees everything.
struct EmuPacked {
    void** params;
    void (*destroy)(EmuPacked*);
};
template <class... A> struct EmuPackedArgs : EmuPacked {
    std::tuple<std::remove_cv_t<std::remove_reference_t<A>>...> values;
    void* ptrs[sizeof...(A) + 1];
    template <size_t... I>
    EmuPackedArgs(void** p, std::index_sequence<I...>)
        : values(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...) {
        void* q[] = {(void*)&std::get<I>(values)..., nullptr};
        memcpy(ptrs, q, sizeof q);
        params = ptrs;
        destroy = [](EmuPacked* e) { delete static_cast<EmuPackedArgs*>(e); };
    }
};
typedef EmuPacked* (*EmuPacker)(void**);
// Copies each argument of kernel `f` by its real type.
template <class... A> static EmuPacked* __emu_pack(void (*f)(A...), void** p) {
    return new EmuPackedArgs<A...>(p, std::index_sequence_for<A...>{});
}

struct EmuKernelEntry {
    const char* name;
    EmuTrampoline tramp;
    EmuPacker pack;
};
