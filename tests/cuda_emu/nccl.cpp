// Host emulation of libnccl.so (the NCCL 2.28 API) for the emulated CUDA driver, written from NVIDIA's
// NCCL documentation (API reference, "Collective Operations", "In-place Operations", "Group Calls",
// "Fault tolerance") without reading any caller.
//
// Ranks are threads or processes on one host. A communicator's ranks meet in a POSIX shared-memory
// object named by the ncclUniqueId (a fresh name with the creator's pid and a 64-bit random nonce, so
// two jobs never collide); ncclCommInitRank blocks until all nranks ranks have joined, and the object's
// name is unlinked as soon as they have (nothing is left in /dev/shm; each rank keeps its mapping).
//
// Collectives are stream ordered: the call checks its arguments, queues one host function on the
// stream through the loaded libcuda's cuLaunchHostFunc and returns. When the stream reaches it, the
// host function exchanges the data with the peers through the shared object in steps: each rank
// copies (a chunk of) its input into its own slot (FACETRAIN_EMU_NCCL_SLOT bytes, default 4 MiB, as
// the rank that created the object read it), a barrier, each rank computes its output from the
// slots, a barrier. Reductions run in rank order, 16-bit floats rounded to the type after every
// operation (round to nearest even), so every rank gets identical bits. The first step also compares
// the ranks' descriptions of the collective (sequence number, kind, type, op, count, root): on a
// mismatch no rank touches its output, each prints one line to stderr, and the communicator's
// asynchronous error becomes ncclInvalidArgument (later calls on it return that error).
//
// Waiting (init, barriers) sleeps on a futex in the shared object with 50 ms timeouts and rechecks the
// rank's aborted flag: a peer that never calls a collective blocks the others' streams indefinitely, as
// on a GPU, until ncclCommAbort, which lets this rank's running and queued operations of the comm
// return promptly (outputs unspecified) and never waits for peers. An aborting rank withdraws from a
// barrier it had entered, so its peers keep waiting instead of proceeding with stale data. A peer
// process that dies is not detected: the others wait until aborted.
//
// Group calls: between ncclGroupStart and the outermost ncclGroupEnd collectives are recorded and
// queued at ncclGroupEnd, in call order; ncclCommInitRank inside a group joins at once but waits for the
// peers at ncclGroupEnd, which is how one thread creates several ranks (ncclCommInitAll does this).
// Not emulated: non-blocking communicators (ncclInvalidArgument), ncclSend/ncclRecv, ncclCommSplit and
// user-defined reduction ops (ncclInvalidUsage), fp8 types (ncclInvalidArgument).
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "driver_link.h"
#include "half.h"

// ---- ABI (nccl.h, 2.28).
typedef int ncclResult_t;
enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
};
typedef int ncclDataType_t;
enum {
    ncclInt8 = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclFloat32 = 7,
    ncclFloat64 = 8,
    ncclBfloat16 = 9,
    NUM_TYPES = 10,  // ncclFloat8e4m3 (10) and ncclFloat8e5m2 (11) are not emulated
};
typedef int ncclRedOp_t;
enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4, NUM_OPS = 5 };
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;
// The leading fields every version of ncclConfig_t shares.
struct ConfigHead {
    size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
};
static const int VERSION_CODE = 22803;  // NCCL_VERSION(2, 28, 3) = 2 * 10000 + 28 * 100 + 3
typedef void* cudaStream_t;

// ---- Errors: ncclGetLastError's text.
static std::mutex g_err_mu;
static char g_last_error[1024] = "";
static void set_error(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::lock_guard<std::mutex> g(g_err_mu);
    memcpy(g_last_error, buf, sizeof buf);
}
// Sets the last error and returns `r`.
#define FAIL(r, ...) (set_error(__VA_ARGS__), (r))

// ---- The shared object: a header page, then one slot per rank.
static const int MAX_RANKS = 1024;
static const uint32_t READY = 0x4e43434cu;  // "NCCL": the creator has initialised the header
struct Desc {                               // a rank's description of the collective it is running
    uint64_t seq;
    uint64_t count;
    int32_t kind, dtype, op, root;
};
struct Shared {
    std::atomic<uint32_t> ready;
    int32_t nranks;
    uint64_t slot_bytes;
    uint64_t header_bytes;
    // Barrier: the low 12 bits count arrivals, the rest is the generation. Also the futex word.
    std::atomic<uint32_t> bar;
    std::atomic<uint32_t> joined[MAX_RANKS];
    Desc desc[MAX_RANKS];
};
static const uint32_t ARRIVED_MASK = 0xfff;  // > MAX_RANKS
static_assert(MAX_RANKS < (int)ARRIVED_MASK, "arrival count must fit");

static long futex(std::atomic<uint32_t>* w, int op, uint32_t v, const struct timespec* ts) {
    return syscall(SYS_futex, (uint32_t*)w, op, v, ts, nullptr, 0);
}
static void wake_all(std::atomic<uint32_t>* w) { futex(w, FUTEX_WAKE, INT_MAX, nullptr); }
static void sleep_on(std::atomic<uint32_t>* w, uint32_t seen) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    futex(w, FUTEX_WAIT, seen, &ts);  // shared (not private): peers in other processes wake it
}

// ---- Communicators.
struct Comm {
    std::atomic<int> refs{1};  // the user's handle plus one per queued operation
    int rank = 0, nranks = 0, device = 0;
    Shared* sh = nullptr;
    size_t map_bytes = 0;
    char* slots = nullptr;
    std::string name;
    std::atomic<bool> aborted{false};
    std::atomic<int> async_err{ncclSuccess};
    uint64_t issued = 0;  // collectives queued so far (their sequence numbers)
    bool ready = false;   // has seen every rank join
    bool finalized = false;
    uint32_t join_gen = 0;
    std::mutex mu;
    std::condition_variable cv;
    int inflight = 0;  // queued operations not yet finished
};

static std::mutex g_live_mu;
static std::set<Comm*> g_live;  // communicators whose handle is valid
static bool live(Comm* c) {
    std::lock_guard<std::mutex> g(g_live_mu);
    return c && g_live.count(c);
}
static void release(Comm* c) {
    if (c->refs.fetch_sub(1) != 1) return;
    if (c->sh) munmap(c->sh, c->map_bytes);
    delete c;
}

// Arrives at the barrier; returns the generation to wait out (or the barrier completed: `done`).
static uint32_t arrive(Comm* c, bool* done) {
    std::atomic<uint32_t>& w = c->sh->bar;
    uint32_t v = w.load(std::memory_order_acquire);
    for (;;) {
        uint32_t gen = v >> 12, n = (v & ARRIVED_MASK) + 1;
        uint32_t nv = n == (uint32_t)c->nranks ? (gen + 1) << 12 : v + 1;
        if (w.compare_exchange_weak(v, nv, std::memory_order_acq_rel)) {
            *done = n == (uint32_t)c->nranks;
            if (*done) wake_all(&w);
            return gen;
        }
    }
}
// Waits until generation `gen` has completed. False if the rank was aborted first (its arrival is
// then withdrawn, so the peers go on waiting).
static bool wait_gen(Comm* c, uint32_t gen) {
    std::atomic<uint32_t>& w = c->sh->bar;
    for (;;) {
        uint32_t v = w.load(std::memory_order_acquire);
        if ((v >> 12) != gen) return true;
        if (c->aborted.load()) {
            if ((v & ARRIVED_MASK) > 0 && w.compare_exchange_strong(v, v - 1, std::memory_order_acq_rel))
                return false;
            continue;  // the word moved: re-read (the barrier may have completed meanwhile)
        }
        sleep_on(&w, v);
    }
}
static bool barrier(Comm* c) {
    bool done;
    uint32_t gen = arrive(c, &done);
    return done || wait_gen(c, gen);
}

static std::string id_name(const ncclUniqueId* id) {
    if (memcmp(id->internal, "ftemu-nccl:", 11) != 0) return "";
    const char* n = id->internal + 11;
    if (!memchr(n, 0, NCCL_UNIQUE_ID_BYTES - 11)) return "";
    return n;
}

static size_t slot_bytes_from_env() {
    const char* e = getenv("FACETRAIN_EMU_NCCL_SLOT");
    long long v = e ? atoll(e) : 0;
    if (v < 64) v = 4 << 20;
    return (size_t)(v + 63) / 64 * 64;
}

// Opens (or creates) the rendezvous object, checks nranks and rank, and arrives at the join barrier.
static ncclResult_t join_start(Comm* c, const ncclUniqueId* id) {
    c->name = id_name(id);
    if (c->name.empty()) return FAIL(ncclInvalidArgument, "ncclCommInitRank: the ncclUniqueId was not made by ncclGetUniqueId");
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t header = (sizeof(Shared) + page - 1) / page * page;
    int fd = shm_open(c->name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    bool creator = fd >= 0;
    if (!creator) {
        if (errno != EEXIST) return FAIL(ncclSystemError, "shm_open(%s): %s", c->name.c_str(), strerror(errno));
        fd = shm_open(c->name.c_str(), O_RDWR, 0600);
        if (fd < 0) return FAIL(ncclSystemError, "shm_open(%s): %s", c->name.c_str(), strerror(errno));
    }
    Shared* sh = nullptr;
    size_t total = 0;
    if (creator) {
        // At least 64 bytes per rank, so a ReduceScatter block holds an element of any type.
        size_t slot = std::max(slot_bytes_from_env(), (size_t)c->nranks * 64);
        total = header + slot * (size_t)c->nranks;
        if (ftruncate(fd, (off_t)total) != 0) {
            int e = errno;
            close(fd);
            shm_unlink(c->name.c_str());
            return FAIL(ncclSystemError, "ftruncate(%s): %s", c->name.c_str(), strerror(e));
        }
        sh = (Shared*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (sh != MAP_FAILED) {
            sh->nranks = c->nranks;
            sh->slot_bytes = slot;
            sh->header_bytes = header;
            sh->ready.store(READY, std::memory_order_release);
        }
    } else {
        // Wait for the creator to size and fill the header.
        struct stat st;
        for (;;) {
            if (fstat(fd, &st) != 0) break;
            if ((size_t)st.st_size >= header) {
                Shared* h = (Shared*)mmap(nullptr, header, PROT_READ, MAP_SHARED, fd, 0);
                if (h == MAP_FAILED) break;
                bool ok = h->ready.load(std::memory_order_acquire) == READY;
                int n = h->nranks;
                size_t slot = h->slot_bytes;
                munmap(h, header);
                if (ok) {
                    if (n != c->nranks) {
                        close(fd);
                        return FAIL(ncclInvalidUsage,
                                    "ncclCommInitRank: nranks %d, but the communicator's first rank said %d",
                                    c->nranks, n);
                    }
                    total = header + slot * (size_t)n;
                    break;
                }
            }
            usleep(1000);
        }
        sh = total ? (Shared*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : (Shared*)MAP_FAILED;
    }
    close(fd);
    if (sh == MAP_FAILED) return FAIL(ncclSystemError, "mmap of %s failed", c->name.c_str());
    c->sh = sh;
    c->map_bytes = total;
    c->slots = (char*)sh + sh->header_bytes;
    uint32_t expect = 0;
    if (!sh->joined[c->rank].compare_exchange_strong(expect, 1))
        return FAIL(ncclInvalidUsage, "ncclCommInitRank: rank %d joined the communicator twice", c->rank);
    bool done;
    c->join_gen = arrive(c, &done);
    if (done) shm_unlink(c->name.c_str());  // everyone has it mapped: the name is no longer needed
    return ncclSuccess;
}
static void join_wait(Comm* c) {
    wait_gen(c, c->join_gen);
    c->ready = true;
}

static int current_device() {
    typedef int (*GetDev)(int*);
    static std::atomic<GetDev> cache{nullptr};
    GetDev f = emu_cached_driver_sym(cache, "cuCtxGetDevice");
    int d = 0;
    if (f && f(&d) != 0) d = 0;
    return d;
}

// ---- Groups (per thread).
static thread_local int t_group_depth = 0;
static thread_local std::vector<Comm*> t_group_inits;
static thread_local std::vector<std::function<ncclResult_t()>> t_group_ops;

static ncclResult_t init_rank(Comm** out, int nranks, const ncclUniqueId* id, int rank, int device) {
    if (!out) return FAIL(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
    if (nranks < 1 || nranks > MAX_RANKS)
        return FAIL(ncclInvalidArgument, "ncclCommInitRank: nranks %d out of range (1..%d)", nranks, MAX_RANKS);
    if (rank < 0 || rank >= nranks)
        return FAIL(ncclInvalidArgument, "ncclCommInitRank: rank %d out of range for nranks %d", rank, nranks);
    Comm* c = new Comm();
    c->rank = rank;
    c->nranks = nranks;
    c->device = device;
    ncclResult_t r = join_start(c, id);
    if (r != ncclSuccess) {
        release(c);
        return r;
    }
    if (t_group_depth > 0)
        t_group_inits.push_back(c);
    else
        join_wait(c);
    {
        std::lock_guard<std::mutex> g(g_live_mu);
        g_live.insert(c);
    }
    *out = c;
    return ncclSuccess;
}

// ---- Reductions.
template <typename T>
struct Plain {  // integer and native floating types: T is both storage and arithmetic type
    typedef T S;
    static T load(S v) { return v; }
    static S store(T v) { return v; }
};
struct F16 {
    typedef uint16_t S;
    static float load(S v) { return emu_f16_to_f32(v); }
    static S store(float v) { return emu_f32_to_f16(v); }
};
struct BF16 {
    typedef uint16_t S;
    static float load(S v) { return emu_bf16_to_f32(v); }
    static S store(float v) { return emu_f32_to_bf16(v); }
};
// Wrapping integer arithmetic (computed unsigned: the native GPU add/mul wrap).
template <typename A>
static A add(A a, A b) {
    if constexpr (std::is_integral<A>::value) {
        typedef typename std::make_unsigned<A>::type U;
        return (A)(U)((U)a + (U)b);
    } else {
        return a + b;
    }
}
template <typename A>
static A mul(A a, A b) {
    if constexpr (std::is_integral<A>::value) {
        typedef typename std::make_unsigned<A>::type U;
        return (A)(U)((U)a * (U)b);
    } else {
        return a * b;
    }
}

// out[i] = op over ranks 0..n-1 of in[r][i], in rank order, rounded to the type after every step.
// `out` (the user's buffer) is the accumulator: rank by rank, so the inner loop vectorizes.
template <typename K>
static void reduce_typed(int op, int n, const char* const* in, char* out, size_t count) {
    typedef typename K::S S;
    typedef decltype(K::load(S())) A;
    memcpy(out, in[0], count * sizeof(S));
    for (int r = 1; r < n; r++) {
        const char* src = in[r];
        for (size_t i = 0; i < count; i++) {
            S acc_s, v_s;
            memcpy(&acc_s, out + i * sizeof(S), sizeof(S));
            memcpy(&v_s, src + i * sizeof(S), sizeof(S));
            A a = K::load(acc_s), v = K::load(v_s), res;
            switch (op) {
                case ncclProd: res = mul<A>(a, v); break;
                case ncclMax: res = v > a ? v : a; break;
                case ncclMin: res = v < a ? v : a; break;
                default: res = add<A>(a, v); break;  // sum, and avg's sum
            }
            acc_s = K::store(res);
            memcpy(out + i * sizeof(S), &acc_s, sizeof(S));
        }
    }
    if (op == ncclAvg)
        for (size_t i = 0; i < count; i++) {
            S acc_s;
            memcpy(&acc_s, out + i * sizeof(S), sizeof(S));
            acc_s = K::store((A)(K::load(acc_s) / (A)n));
            memcpy(out + i * sizeof(S), &acc_s, sizeof(S));
        }
}
static void reduce(int dtype, int op, int n, const char* const* in, char* out, size_t count) {
    switch (dtype) {
        case ncclInt8: reduce_typed<Plain<int8_t>>(op, n, in, out, count); break;
        case ncclUint8: reduce_typed<Plain<uint8_t>>(op, n, in, out, count); break;
        case ncclInt32: reduce_typed<Plain<int32_t>>(op, n, in, out, count); break;
        case ncclUint32: reduce_typed<Plain<uint32_t>>(op, n, in, out, count); break;
        case ncclInt64: reduce_typed<Plain<int64_t>>(op, n, in, out, count); break;
        case ncclUint64: reduce_typed<Plain<uint64_t>>(op, n, in, out, count); break;
        case ncclFloat16: reduce_typed<F16>(op, n, in, out, count); break;
        case ncclFloat32: reduce_typed<Plain<float>>(op, n, in, out, count); break;
        case ncclFloat64: reduce_typed<Plain<double>>(op, n, in, out, count); break;
        case ncclBfloat16: reduce_typed<BF16>(op, n, in, out, count); break;
    }
}
static size_t type_size(int dtype) {
    switch (dtype) {
        case ncclInt8: case ncclUint8: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        default: return 8;
    }
}
static const char* type_name(int dtype) {
    static const char* names[] = {"int8", "uint8", "int32", "uint32", "int64", "uint64",
                                  "float16", "float32", "float64", "bfloat16"};
    return dtype >= 0 && dtype < NUM_TYPES ? names[dtype] : "?";
}
static const char* op_name(int op) {
    static const char* names[] = {"sum", "prod", "max", "min", "avg"};
    return op >= 0 && op < NUM_OPS ? names[op] : "?";
}

// ---- Collectives.
enum Kind { ALL_REDUCE = 1, BROADCAST, REDUCE, ALL_GATHER, REDUCE_SCATTER };
static const char* kind_name(int k) {
    static const char* names[] = {"?", "AllReduce", "Broadcast", "Reduce", "AllGather", "ReduceScatter"};
    return k >= 1 && k <= 5 ? names[k] : "?";
}
struct Coll {
    Comm* comm;
    int kind, dtype, op, root;
    size_t count;  // AllGather: sendcount; ReduceScatter: recvcount; else count
    const char* send;
    char* recv;
    uint64_t seq;
};

static std::string describe(const Desc& d) {
    char buf[200];
    if (d.kind == ALL_REDUCE || d.kind == REDUCE_SCATTER)
        snprintf(buf, sizeof buf, "%s(count %llu, %s, %s)", kind_name(d.kind), (unsigned long long)d.count,
                 type_name(d.dtype), op_name(d.op));
    else if (d.kind == REDUCE)
        snprintf(buf, sizeof buf, "%s(count %llu, %s, %s, root %d)", kind_name(d.kind), (unsigned long long)d.count,
                 type_name(d.dtype), op_name(d.op), d.root);
    else if (d.kind == BROADCAST)
        snprintf(buf, sizeof buf, "%s(count %llu, %s, root %d)", kind_name(d.kind), (unsigned long long)d.count,
                 type_name(d.dtype), d.root);
    else
        snprintf(buf, sizeof buf, "%s(count %llu, %s)", kind_name(d.kind), (unsigned long long)d.count,
                 type_name(d.dtype));
    return buf;
}

// Runs one collective on the stream's worker thread.
static void run(Coll& o) {
    Comm* c = o.comm;
    if (c->aborted.load() || c->async_err.load() != ncclSuccess) return;
    Shared* sh = c->sh;
    const int n = c->nranks, me = c->rank;
    const size_t es = type_size(o.dtype), slot = sh->slot_bytes;
    char* mine = c->slots + slot * (size_t)me;
    std::vector<const char*> slots(n);
    for (int r = 0; r < n; r++) slots[r] = c->slots + slot * (size_t)r;
    sh->desc[me] = Desc{o.seq, o.count, o.kind, o.dtype, o.op, o.root};
    // Elements per step: ReduceScatter splits each slot into n blocks, one per destination rank.
    size_t per = o.kind == REDUCE_SCATTER ? slot / (size_t)n / es : slot / es;
    size_t steps = o.count == 0 ? 1 : (o.count + per - 1) / per;
    for (size_t s = 0; s < steps; s++) {
        size_t off = s * per, len = std::min(per, o.count - std::min(off, o.count));
        size_t bytes = len * es, at = off * es;
        // Publish this rank's part.
        switch (o.kind) {
            case ALL_REDUCE: case REDUCE: case ALL_GATHER:
                if (bytes) memcpy(mine, o.send + at, bytes);
                break;
            case BROADCAST:
                if (me == o.root && bytes) memcpy(mine, o.send + at, bytes);
                break;
            case REDUCE_SCATTER:
                for (int b = 0; b < n && bytes; b++)
                    memcpy(mine + (size_t)b * per * es, o.send + ((size_t)b * o.count + off) * es, bytes);
                break;
        }
        if (!barrier(c)) return;
        if (s == 0) {
            // Every rank compares everyone's description against rank 0's, so all reach the same verdict.
            for (int r = 1; r < n; r++) {
                const Desc &a = sh->desc[0], &b = sh->desc[r];
                bool same = a.seq == b.seq && a.kind == b.kind && a.dtype == b.dtype && a.count == b.count &&
                            a.op == b.op && a.root == b.root;
                if (!same) {
                    set_error("collective #%llu differs between ranks: rank 0 called %s, rank %d called %s",
                              (unsigned long long)a.seq, describe(a).c_str(), r, describe(b).c_str());
                    fprintf(stderr, "[nccl-emu] rank %d: collective #%llu differs between ranks: rank 0 called %s, rank %d called %s; nothing done, the communicator's async error is ncclInvalidArgument\n",
                            me, (unsigned long long)a.seq, describe(a).c_str(), r, describe(b).c_str());
                    c->async_err.store(ncclInvalidArgument);
                    barrier(c);
                    return;
                }
            }
        }
        // Consume.
        if (bytes) switch (o.kind) {
            case ALL_REDUCE:
                reduce(o.dtype, o.op, n, slots.data(), o.recv + at, len);
                break;
            case REDUCE:
                if (me == o.root) reduce(o.dtype, o.op, n, slots.data(), o.recv + at, len);
                break;
            case BROADCAST:
                memcpy(o.recv + at, slots[o.root], bytes);
                break;
            case ALL_GATHER:
                for (int r = 0; r < n; r++) memcpy(o.recv + ((size_t)r * o.count + off) * es, slots[r], bytes);
                break;
            case REDUCE_SCATTER: {
                std::vector<const char*> blocks(n);
                for (int r = 0; r < n; r++) blocks[r] = slots[r] + (size_t)me * per * es;
                reduce(o.dtype, o.op, n, blocks.data(), o.recv + at, len);
                break;
            }
        }
        if (!barrier(c)) return;
    }
}

static void host_fn(void* p) {
    Coll* o = (Coll*)p;
    Comm* c = o->comm;
    run(*o);
    {
        std::lock_guard<std::mutex> g(c->mu);
        c->inflight--;
    }
    c->cv.notify_all();
    release(c);
    delete o;
}

static ncclResult_t enqueue(Coll o, cudaStream_t stream) {
    Comm* c = o.comm;
    if (!live(c)) return FAIL(ncclInvalidArgument, "%s: the communicator was destroyed or aborted", kind_name(o.kind));
    if (int e = c->async_err.load())
        return FAIL(e, "%s: the communicator has an asynchronous error", kind_name(o.kind));
    EmuLaunchHostFunc launch = emu_launch_host_func();
    if (!launch) return FAIL(ncclUnhandledCudaError, "%s: no emulated libcuda is loaded", kind_name(o.kind));
    Coll* q = new Coll(o);
    {
        std::lock_guard<std::mutex> g(c->mu);
        q->seq = ++c->issued;
        c->inflight++;
    }
    c->refs++;
    int r = launch(stream, host_fn, q);
    if (r != 0) {
        {
            std::lock_guard<std::mutex> g(c->mu);
            c->issued--;
            c->inflight--;
        }
        c->refs--;
        delete q;
        return FAIL(ncclUnhandledCudaError, "%s: cuLaunchHostFunc failed with CUDA error %d", kind_name(o.kind), r);
    }
    return ncclSuccess;
}

// Checks what can be checked locally, then queues (or, inside a group, records) the collective.
static ncclResult_t collective(Coll o, cudaStream_t stream) {
    const char* what = kind_name(o.kind);
    Comm* c = o.comm;
    if (!c) return FAIL(ncclInvalidArgument, "%s: comm is NULL", what);
    if (!live(c)) return FAIL(ncclInvalidArgument, "%s: invalid communicator (destroyed or aborted?)", what);
    if (o.dtype < 0 || o.dtype >= NUM_TYPES)
        return FAIL(ncclInvalidArgument, "%s: invalid or unsupported datatype %d", what, o.dtype);
    if ((o.kind == ALL_REDUCE || o.kind == REDUCE || o.kind == REDUCE_SCATTER) && (o.op < 0 || o.op >= NUM_OPS))
        return FAIL(ncclInvalidArgument, "%s: invalid or unsupported reduction op %d", what, o.op);
    if ((o.kind == BROADCAST || o.kind == REDUCE) && (o.root < 0 || o.root >= c->nranks))
        return FAIL(ncclInvalidArgument, "%s: root %d out of range for %d ranks", what, o.root, c->nranks);
    if (c->finalized) return FAIL(ncclInvalidUsage, "%s: the communicator was finalized", what);
    // FACETRAIN_EMU_NCCL_TRACE: one line per accepted call, for tests that check which path ran.
    static const bool tracing = getenv("FACETRAIN_EMU_NCCL_TRACE") != nullptr;
    if (tracing) fprintf(stderr, "[nccl-emu] rank %d: %s count %llu\n", c->rank, what, (unsigned long long)o.count);
    if (o.count > 0) {
        bool need_send = o.kind != BROADCAST || c->rank == o.root;
        bool need_recv = o.kind != REDUCE || c->rank == o.root;
        if (need_send && !o.send) return FAIL(ncclInvalidArgument, "%s: sendbuff is NULL", what);
        if (need_recv && !o.recv) return FAIL(ncclInvalidArgument, "%s: recvbuff is NULL", what);
    }
    if (t_group_depth > 0) {
        t_group_ops.push_back([o, stream] { return enqueue(o, stream); });
        return ncclSuccess;
    }
    return enqueue(o, stream);
}

// Waits until the communicator's queued operations have finished.
static void drain(Comm* c) {
    std::unique_lock<std::mutex> l(c->mu);
    c->cv.wait(l, [&] { return c->inflight == 0; });
}

static Comm* unlive(Comm* c) {
    std::lock_guard<std::mutex> g(g_live_mu);
    return g_live.erase(c) ? c : nullptr;
}

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
    if (!version) return FAIL(ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = VERSION_CODE;
    return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
    switch (r) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
        case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
        case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
        case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
        case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
        case ncclRemoteError: return "remote process exited or there was a network error";
        case ncclInProgress: return "NCCL operation in progress";
        default: return "unknown result code";
    }
}

const char* ncclGetLastError(void* comm) {
    static thread_local char copy[sizeof g_last_error];
    std::lock_guard<std::mutex> g(g_err_mu);
    memcpy(copy, g_last_error, sizeof copy);
    return copy;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    if (!id) return FAIL(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    std::random_device rd;
    unsigned long long nonce = ((unsigned long long)rd() << 32) ^ rd() ^ (unsigned long long)time(nullptr);
    memset(id->internal, 0, sizeof id->internal);
    snprintf(id->internal, sizeof id->internal, "ftemu-nccl:/ftemu-nccl-%d-%016llx", (int)getpid(), nonce);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(Comm** comm, int nranks, ncclUniqueId id, int rank) {
    return init_rank(comm, nranks, &id, rank, current_device());
}

ncclResult_t ncclCommInitRankConfig(Comm** comm, int nranks, ncclUniqueId id, int rank, ConfigHead* config) {
    if (config) {
        if (config->magic != 0xcafebeefu)
            return FAIL(ncclInvalidArgument, "ncclCommInitRankConfig: config not set up with NCCL_CONFIG_INITIALIZER");
        if (config->blocking == 0)
            return FAIL(ncclInvalidArgument, "ncclCommInitRankConfig: non-blocking communicators are not emulated");
    }
    return init_rank(comm, nranks, &id, rank, current_device());
}

ncclResult_t ncclCommInitAll(Comm** comms, int ndev, const int* devlist) {
    if (!comms) return FAIL(ncclInvalidArgument, "ncclCommInitAll: comms is NULL");
    if (ndev < 1) return FAIL(ncclInvalidArgument, "ncclCommInitAll: ndev %d", ndev);
    ncclUniqueId id;
    ncclGetUniqueId(&id);
    t_group_depth++;
    ncclResult_t r = ncclSuccess;
    for (int i = 0; i < ndev && r == ncclSuccess; i++)
        r = init_rank(&comms[i], ndev, &id, i, devlist ? devlist[i] : i);
    t_group_depth--;
    if (r != ncclSuccess) {
        // The ranks that joined can never complete: give them back.
        for (Comm* c : t_group_inits) {
            unlive(c);
            release(c);
        }
        t_group_inits.clear();
        shm_unlink(id_name(&id).c_str());
        return r;
    }
    if (t_group_depth == 0) {
        for (Comm* c : t_group_inits) join_wait(c);
        t_group_inits.clear();
    }
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(Comm* comm) {
    if (!live(comm)) return FAIL(ncclInvalidArgument, "ncclCommFinalize: invalid communicator");
    drain(comm);
    comm->finalized = true;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(Comm* comm) {
    if (!comm) return ncclSuccess;
    if (!unlive(comm)) return FAIL(ncclInvalidArgument, "ncclCommDestroy: invalid communicator");
    drain(comm);
    release(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(Comm* comm) {
    if (!comm) return ncclSuccess;
    if (!unlive(comm)) return FAIL(ncclInvalidArgument, "ncclCommAbort: invalid communicator");
    comm->aborted.store(true);
    if (comm->sh) wake_all(&comm->sh->bar);  // waiters see the flag at once instead of at their timeout
    release(comm);  // the comm's queued operations hold their own references and return promptly
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(Comm* comm, ncclResult_t* err) {
    if (!live(comm)) return FAIL(ncclInvalidArgument, "ncclCommGetAsyncError: invalid communicator");
    if (!err) return FAIL(ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is NULL");
    *err = comm->async_err.load();
    return ncclSuccess;
}

ncclResult_t ncclCommCount(Comm* comm, int* count) {
    if (!live(comm) || !count) return FAIL(ncclInvalidArgument, "ncclCommCount: invalid argument");
    *count = comm->nranks;
    return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(Comm* comm, int* device) {
    if (!live(comm) || !device) return FAIL(ncclInvalidArgument, "ncclCommCuDevice: invalid argument");
    *device = comm->device;
    return ncclSuccess;
}
ncclResult_t ncclCommUserRank(Comm* comm, int* rank) {
    if (!live(comm) || !rank) return FAIL(ncclInvalidArgument, "ncclCommUserRank: invalid argument");
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, Comm* comm, cudaStream_t stream) {
    return collective(Coll{comm, ALL_REDUCE, datatype, op, 0, count, (const char*)sendbuff, (char*)recvbuff, 0},
                      stream);
}
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           Comm* comm, cudaStream_t stream) {
    return collective(Coll{comm, BROADCAST, datatype, 0, root, count, (const char*)sendbuff, (char*)recvbuff, 0},
                      stream);
}
ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root, Comm* comm, cudaStream_t stream) {
    return ncclBroadcast(buff, buff, count, datatype, root, comm, stream);
}
ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                        int root, Comm* comm, cudaStream_t stream) {
    return collective(Coll{comm, REDUCE, datatype, op, root, count, (const char*)sendbuff, (char*)recvbuff, 0},
                      stream);
}
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype, Comm* comm,
                           cudaStream_t stream) {
    return collective(Coll{comm, ALL_GATHER, datatype, 0, 0, sendcount, (const char*)sendbuff, (char*)recvbuff, 0},
                      stream);
}
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, Comm* comm, cudaStream_t stream) {
    return collective(
        Coll{comm, REDUCE_SCATTER, datatype, op, 0, recvcount, (const char*)sendbuff, (char*)recvbuff, 0}, stream);
}
ncclResult_t ncclSend(const void*, size_t, ncclDataType_t, int, Comm*, cudaStream_t) {
    return FAIL(ncclInvalidUsage, "ncclSend: point-to-point operations are not emulated");
}
ncclResult_t ncclRecv(void*, size_t, ncclDataType_t, int, Comm*, cudaStream_t) {
    return FAIL(ncclInvalidUsage, "ncclRecv: point-to-point operations are not emulated");
}

// Not emulated: fail cleanly instead of a missing symbol.
ncclResult_t ncclCommSplit(Comm*, int, int, Comm**, void*) {
    return FAIL(ncclInvalidUsage, "ncclCommSplit is not emulated");
}
ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t*, void*, ncclDataType_t, int, Comm*) {
    return FAIL(ncclInvalidUsage, "ncclRedOpCreatePreMulSum: user-defined reduction ops are not emulated");
}
ncclResult_t ncclRedOpDestroy(ncclRedOp_t, Comm*) {
    return FAIL(ncclInvalidArgument, "ncclRedOpDestroy: no user-defined reduction op exists in the emulation");
}

ncclResult_t ncclGroupStart() {
    t_group_depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
    if (t_group_depth == 0) return FAIL(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    if (--t_group_depth > 0) return ncclSuccess;
    std::vector<Comm*> inits;
    inits.swap(t_group_inits);
    std::vector<std::function<ncclResult_t()>> ops;
    ops.swap(t_group_ops);
    for (Comm* c : inits) join_wait(c);
    ncclResult_t first = ncclSuccess;
    for (auto& f : ops) {
        ncclResult_t r = f();
        if (r != ncclSuccess && first == ncclSuccess) first = r;
    }
    return first;
}

}  // extern "C"
