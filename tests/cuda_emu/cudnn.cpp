// Host emulation of cuDNN 9 (libcudnn.so): the legacy convolution API that cudarc 0.19's safe cudnn
// module calls (handle, tensor/filter/convolution descriptors, algorithm queries, workspace sizes,
// forward / backward-data / backward-filter). "Device" pointers are host pointers handed out by the
// emulated libcuda. Semantics follow NVIDIA's cuDNN API reference, not the caller's code, so that a
// caller's misreading of the API fails the tests instead of being mirrored here.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "driver_link.h"
#include "half.h"

// ---- enums with the real cuDNN 9 numeric values (cudarc's bindgen output, cudnn-09021) ----
typedef enum {
    CUDNN_STATUS_SUCCESS = 0,
    CUDNN_STATUS_NOT_INITIALIZED = 1001,
    CUDNN_STATUS_BAD_PARAM = 2000,
    CUDNN_STATUS_INVALID_VALUE = 2001,
    CUDNN_STATUS_BAD_PARAM_NULL_POINTER = 2002,
    CUDNN_STATUS_NOT_SUPPORTED = 3000,
    CUDNN_STATUS_INTERNAL_ERROR = 4000,
    CUDNN_STATUS_EXECUTION_FAILED = 5000,
} cudnnStatus_t;

enum { DT_FLOAT = 0, DT_DOUBLE = 1, DT_HALF = 2, DT_BF16 = 9, DT_LAST = 21 };
enum { FMT_NCHW = 0, FMT_NHWC = 1, FMT_NCHW_VECT_C = 2 };
enum { MODE_CONVOLUTION = 0, MODE_CROSS_CORRELATION = 1 };
enum { FWD_ALGO_COUNT = 8, BWD_DATA_ALGO_COUNT = 6, BWD_FILTER_ALGO_COUNT = 7 };
enum { MATH_DEFAULT = 0, MATH_FMA = 3 };
enum { NON_DETERMINISTIC = 0, DETERMINISTIC = 1 };

// Same layout as cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t (all three are identical).
struct AlgoPerf {
    int algo;
    int status;
    float time;
    size_t memory;
    int determinism;
    int mathType;
    int reserved[3];
};

// ---- descriptors ----
// A 4-d tensor: dims and strides (in elements) in N, C, H, W order; filters use the same with K, C, R, S.
struct Tensor {
    bool set = false;
    int dtype = 0;
    int dims[4] = {0, 0, 0, 0};
    int64_t strides[4] = {0, 0, 0, 0};
};
struct cudnnTensorStruct { Tensor t; };
struct cudnnFilterStruct { Tensor t; };
struct Conv {
    bool set = false;
    int pad[2] = {0, 0}, stride[2] = {1, 1}, dil[2] = {1, 1};
    int mode = MODE_CROSS_CORRELATION, compute = DT_FLOAT, math = MATH_DEFAULT;
};
struct cudnnConvolutionStruct { Conv c; };
struct cudnnContext { void* stream = nullptr; };

typedef cudnnContext* cudnnHandle_t;
typedef cudnnTensorStruct* cudnnTensorDescriptor_t;
typedef cudnnFilterStruct* cudnnFilterDescriptor_t;
typedef cudnnConvolutionStruct* cudnnConvolutionDescriptor_t;
typedef void* cudaStream_t;

static bool dtype_valid(int dt) { return dt >= 0 && dt <= DT_LAST; }
static int64_t numel(const Tensor& t) { return (int64_t)t.dims[0] * t.dims[1] * t.dims[2] * t.dims[3]; }

static cudnnStatus_t set_tensor(Tensor& t, int dt, const int* d, const int64_t* s) {
    if (!dtype_valid(dt)) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < 4; i++)
        if (d[i] <= 0 || s[i] <= 0) return CUDNN_STATUS_BAD_PARAM;
    t.dtype = dt;
    for (int i = 0; i < 4; i++) t.dims[i] = d[i], t.strides[i] = s[i];
    // cuDNN's legacy API limits tensors to 2^31 elements.
    if (numel(t) > INT32_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
    t.set = true;
    return CUDNN_STATUS_SUCCESS;
}

// Packed strides for dims (a, b, c, d) = (N, C, H, W) or (K, C, R, S): NCHW keeps that order in
// memory, NHWC puts the channel last (NHWC tensors, KRSC filters).
static cudnnStatus_t set_packed(Tensor& t, int format, int dt, const int* d) {
    if (format == FMT_NCHW_VECT_C) return CUDNN_STATUS_NOT_SUPPORTED;
    if (format != FMT_NCHW && format != FMT_NHWC) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < 4; i++)
        if (d[i] <= 0) return CUDNN_STATUS_BAD_PARAM;
    int64_t C = d[1], H = d[2], W = d[3], s[4];
    if (format == FMT_NCHW) {
        s[3] = 1, s[2] = W, s[1] = H * W, s[0] = C * H * W;
    } else {
        s[1] = 1, s[3] = C, s[2] = W * C, s[0] = H * W * C;
    }
    return set_tensor(t, dt, d, s);
}

extern "C" {

size_t cudnnGetVersion(void) { return 92100; }  // 9.21.0, the header version cudarc's bindings come from
size_t cudnnGetCudartVersion(void) { return 13000; }
cudnnStatus_t cudnnOpsVersionCheck(void) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnCnnVersionCheck(void) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnAdvVersionCheck(void) { return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnGraphVersionCheck(void) { return CUDNN_STATUS_SUCCESS; }

const char* cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
        case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
        case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
        case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
        case CUDNN_STATUS_INVALID_VALUE: return "CUDNN_STATUS_INVALID_VALUE";
        case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
        case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
        case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
        case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    *handle = new cudnnContext();
    return CUDNN_STATUS_SUCCESS;
}
// Queued work holds copies of everything it uses, so destroying the handle (or descriptors) right
// after a launch is safe, as with real cuDNN.
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    delete handle;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* stream) {
    if (!handle || !stream) return CUDNN_STATUS_BAD_PARAM;
    *stream = handle->stream;
    return CUDNN_STATUS_SUCCESS;
}

// ---- tensor descriptors ----
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnTensorStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, int format, int dataType, int n, int c,
                                         int h, int w) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    int dims[4] = {n, c, h, w};
    return set_packed(d->t, format, dataType, dims);
}
cudnnStatus_t cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t d, int dataType, int n, int c, int h, int w,
                                           int nStride, int cStride, int hStride, int wStride) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    int dims[4] = {n, c, h, w};
    int64_t s[4] = {nStride, cStride, hStride, wStride};
    return set_tensor(d->t, dataType, dims, s);
}
// Real cuDNN accepts 3 to 8 dims; the emulation only has 2-d convolutions, so only 4.
cudnnStatus_t cudnnSetTensorNdDescriptor(cudnnTensorDescriptor_t d, int dataType, int nbDims, const int* dimA,
                                         const int* strideA) {
    if (!d || !dimA || !strideA || nbDims < 3) return CUDNN_STATUS_BAD_PARAM;
    if (nbDims != 4) return CUDNN_STATUS_NOT_SUPPORTED;
    int64_t s[4] = {strideA[0], strideA[1], strideA[2], strideA[3]};
    return set_tensor(d->t, dataType, dimA, s);
}
cudnnStatus_t cudnnGetTensor4dDescriptor(cudnnTensorDescriptor_t d, int* dataType, int* n, int* c, int* h,
                                         int* w, int* ns, int* cs, int* hs, int* ws) {
    if (!d || !d->t.set) return CUDNN_STATUS_BAD_PARAM;
    const Tensor& t = d->t;
    if (dataType) *dataType = t.dtype;
    int* dd[4] = {n, c, h, w};
    int* ss[4] = {ns, cs, hs, ws};
    for (int i = 0; i < 4; i++) {
        if (dd[i]) *dd[i] = t.dims[i];
        if (ss[i]) *ss[i] = (int)t.strides[i];
    }
    return CUDNN_STATUS_SUCCESS;
}

// ---- filter descriptors ----
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnFilterStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
// Note the argument order: dataType before format (unlike cudnnSetTensor4dDescriptor).
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, int dataType, int format, int k, int c, int h,
                                         int w) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    int dims[4] = {k, c, h, w};
    return set_packed(d->t, format, dataType, dims);
}
// filterDimA is K, C, R, S whatever the format; the format only fixes the memory layout.
cudnnStatus_t cudnnSetFilterNdDescriptor(cudnnFilterDescriptor_t d, int dataType, int format, int nbDims,
                                         const int* filterDimA) {
    if (!d || !filterDimA || nbDims < 3) return CUDNN_STATUS_BAD_PARAM;
    if (nbDims != 4) return CUDNN_STATUS_NOT_SUPPORTED;
    return set_packed(d->t, format, dataType, filterDimA);
}

// ---- convolution descriptors ----
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    *d = new cudnnConvolutionStruct();
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
    delete d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, int mode, int computeType) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    if (mode != MODE_CONVOLUTION && mode != MODE_CROSS_CORRELATION) return CUDNN_STATUS_BAD_PARAM;
    if (!dtype_valid(computeType)) return CUDNN_STATUS_BAD_PARAM;
    Conv& c = d->c;
    c.pad[0] = pad_h, c.pad[1] = pad_w, c.stride[0] = u, c.stride[1] = v;
    c.dil[0] = dilation_h, c.dil[1] = dilation_w, c.mode = mode, c.compute = computeType;
    c.set = true;
    return CUDNN_STATUS_SUCCESS;
}
// arrayLength is the number of spatial dimensions; only 2 exists here.
cudnnStatus_t cudnnSetConvolutionNdDescriptor(cudnnConvolutionDescriptor_t d, int arrayLength, const int* padA,
                                              const int* strideA, const int* dilationA, int mode, int computeType) {
    if (!d || !padA || !strideA || !dilationA || arrayLength <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (arrayLength != 2) return CUDNN_STATUS_NOT_SUPPORTED;
    return cudnnSetConvolution2dDescriptor(d, padA[0], padA[1], strideA[0], strideA[1], dilationA[0], dilationA[1],
                                           mode, computeType);
}
// The math type only picks among GPU kernels; the emulation always computes in full compute-type precision.
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, int mathType) {
    if (!d || mathType < MATH_DEFAULT || mathType > MATH_FMA) return CUDNN_STATUS_BAD_PARAM;
    d->c.math = mathType;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groupCount) {
    if (!d || groupCount < 1) return CUDNN_STATUS_BAD_PARAM;
    return groupCount == 1 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
}

}  // extern "C"

// ---- problem validation ----
// One convolution: x (N,C,H,W), w (K,C,R,S), y (N,K,P,Q). For the backward passes x is dx / y is dy / w is dw.
struct Problem {
    Tensor x, w, y;
    Conv cv;
    int N, C, H, W, K, R, S, P, Q;
};

static int out_dim(int in, int pad, int filt, int dil, int stride) {
    int span = in + 2 * pad - ((filt - 1) * dil + 1);
    return span < 0 ? -1 : 1 + span / stride;
}

// The checks cuDNN documents for these calls: everything set, same data type throughout, a supported
// data/compute type configuration, and y's shape equal to what the convolution produces.
static cudnnStatus_t validate(cudnnHandle_t h, cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd,
                              cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd, Problem& p) {
    if (!h || !xd || !wd || !cd || !yd) return CUDNN_STATUS_BAD_PARAM;
    if (!xd->t.set || !wd->t.set || !cd->c.set || !yd->t.set) return CUDNN_STATUS_BAD_PARAM;
    p.x = xd->t, p.w = wd->t, p.y = yd->t, p.cv = cd->c;
    int dt = p.x.dtype;
    if (p.w.dtype != dt || p.y.dtype != dt) return CUDNN_STATUS_BAD_PARAM;
    // FLOAT_CONFIG, DOUBLE_CONFIG, PSEUDO_HALF_CONFIG, PSEUDO_BFLOAT16_CONFIG. TRUE_HALF_CONFIG (half
    // compute) and the integer configs are not emulated.
    if (dt == DT_DOUBLE) {
        if (p.cv.compute != DT_DOUBLE) return CUDNN_STATUS_NOT_SUPPORTED;
    } else if (dt == DT_FLOAT || dt == DT_HALF || dt == DT_BF16) {
        if (p.cv.compute != DT_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    } else {
        return CUDNN_STATUS_NOT_SUPPORTED;
    }
    p.N = p.x.dims[0], p.C = p.x.dims[1], p.H = p.x.dims[2], p.W = p.x.dims[3];
    p.K = p.w.dims[0], p.R = p.w.dims[2], p.S = p.w.dims[3];
    if (p.w.dims[1] != p.C) return CUDNN_STATUS_BAD_PARAM;
    p.P = out_dim(p.H, p.cv.pad[0], p.R, p.cv.dil[0], p.cv.stride[0]);
    p.Q = out_dim(p.W, p.cv.pad[1], p.S, p.cv.dil[1], p.cv.stride[1]);
    if (p.P <= 0 || p.Q <= 0) return CUDNN_STATUS_BAD_PARAM;
    const int* yd4 = p.y.dims;
    if (yd4[0] != p.N || yd4[1] != p.K || yd4[2] != p.P || yd4[3] != p.Q) return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

// ---- algorithms and workspace ----
enum Op { OP_FWD, OP_BWD_DATA, OP_BWD_FILTER };
static const int kAlgoCount[3] = {FWD_ALGO_COUNT, BWD_DATA_ALGO_COUNT, BWD_FILTER_ALGO_COUNT};
static const size_t kWorkspace = 1024;

// All algorithms compute the same thing here. Algorithm 0 (IMPLICIT_GEMM / ALGO_0) needs no workspace;
// the others ask for a little so that callers' workspace handling is exercised.
static size_t workspace_for(int algo) { return algo == 0 ? 0 : kWorkspace; }

// What cudnnGet*_v7 reports, best first: IMPLICIT_PRECOMP_GEMM / ALGO_1 as cuDNN's heuristics
// usually do. Determinism flags as NVIDIA documents them (BWD_DATA_ALGO_0, BWD_FILTER_ALGO_0/3 are not).
static int algo_list(int op, int* algos, int* determ) {
    static const int fwd[] = {1, 0, 2}, fwd_d[] = {DETERMINISTIC, DETERMINISTIC, DETERMINISTIC};
    static const int bd[] = {1, 0}, bd_d[] = {DETERMINISTIC, NON_DETERMINISTIC};
    static const int bf[] = {1, 0, 3}, bf_d[] = {DETERMINISTIC, NON_DETERMINISTIC, NON_DETERMINISTIC};
    const int* a = op == OP_FWD ? fwd : op == OP_BWD_DATA ? bd : bf;
    const int* d = op == OP_FWD ? fwd_d : op == OP_BWD_DATA ? bd_d : bf_d;
    int n = op == OP_BWD_DATA ? 2 : 3;
    for (int i = 0; i < n; i++) algos[i] = a[i], determ[i] = d[i];
    return n;
}

static cudnnStatus_t fill_perf(int op, const Problem& p, int requested, int* returned, void* perf,
                               size_t max_workspace) {
    if (requested <= 0 || !returned || !perf) return CUDNN_STATUS_BAD_PARAM;
    int algos[8], determ[8];
    int n = algo_list(op, algos, determ), out = 0;
    AlgoPerf* r = (AlgoPerf*)perf;
    for (int i = 0; i < n && out < requested; i++) {
        if (workspace_for(algos[i]) > max_workspace) continue;
        AlgoPerf e;
        memset(&e, 0, sizeof e);
        e.algo = algos[i];
        e.status = CUDNN_STATUS_SUCCESS;
        e.time = 0.01f * (float)(i + 1);
        e.memory = workspace_for(algos[i]);
        e.determinism = determ[i];
        e.mathType = p.cv.math;
        r[out++] = e;
    }
    *returned = out;
    return CUDNN_STATUS_SUCCESS;
}

// ---- compute ----
template <class T>
static T load(const void* base, int dt, int64_t i) {
    switch (dt) {
        case DT_FLOAT: return (T)((const float*)base)[i];
        case DT_DOUBLE: return (T)((const double*)base)[i];
        case DT_HALF: return (T)emu_f16_to_f32(((const uint16_t*)base)[i]);
        default: return (T)emu_bf16_to_f32(((const uint16_t*)base)[i]);
    }
}
template <class T>
static void store(void* base, int dt, int64_t i, T v) {
    switch (dt) {
        case DT_FLOAT: ((float*)base)[i] = (float)v; break;
        case DT_DOUBLE: ((double*)base)[i] = (double)v; break;
        case DT_HALF: ((uint16_t*)base)[i] = emu_f32_to_f16((float)v); break;
        default: ((uint16_t*)base)[i] = emu_f32_to_bf16((float)v); break;
    }
}

// Runs f(lo, hi) on several threads, each taking one contiguous part of [0, n). Callers make every
// result depend on the problem's shape only, never on the split, so any thread count gives the same bits.
template <class F>
static void parallel_for(int64_t n, int64_t work, F f) {
    int64_t nt = std::min<unsigned>(std::max(1u, std::thread::hardware_concurrency()), 16u);
    if (work < (1 << 18)) nt = 1;  // not worth a thread
    nt = std::max<int64_t>(1, std::min(nt, n));
    std::vector<std::thread> th;
    for (int64_t t = 1; t < nt; t++) th.emplace_back([=] { f(n * t / nt, n * (t + 1) / nt); });
    f(0, n / nt);
    for (auto& t : th) t.join();
}

struct Job {
    Problem p;
    int op;
    const void* a;  // x (fwd, bwd filter) or w (bwd data)
    const void* b;  // w (fwd) or dy (bwd data, bwd filter)
    void* out;      // y, dx or dw
    double alpha, beta;
    void* workspace;
    size_t workspace_used;
};

// The strides (in elements) of tensor t walked in `order` (a permutation of 0..3, outermost first) and
// the offset of its first element. `flip` reverses dims 2 and 3, which turns a CUDNN_CONVOLUTION filter
// into the cross-correlation one.
static int64_t walk(const Tensor& t, const int order[4], bool flip, int64_t e[4], int64_t s[4]) {
    int64_t o = 0;
    for (int k = 0; k < 4; k++) {
        e[k] = t.dims[order[k]], s[k] = t.strides[order[k]];
        if (flip && order[k] >= 2) o += (e[k] - 1) * s[k], s[k] = -s[k];
    }
    return o;
}

// Copies a 4-d tensor into a packed buffer ordered by `order`, widening to T.
template <class T>
static std::vector<T> gather(const Tensor& t, const void* base, const int order[4], bool flip) {
    std::vector<T> buf((size_t)numel(t));
    int64_t e[4], s[4], o = walk(t, order, flip, e, s), i = 0;
    for (int64_t a = 0; a < e[0]; a++)
        for (int64_t b = 0; b < e[1]; b++)
            for (int64_t c = 0; c < e[2]; c++)
                for (int64_t d = 0, at = o + a * s[0] + b * s[1] + c * s[2]; d < e[3]; d++, at += s[3])
                    buf[i++] = load<T>(base, t.dtype, at);
    return buf;
}

// out = alpha * acc + beta * out, acc packed in `order` like gather(). With beta == 0 the old output is
// not read (it may be uninitialised or NaN), as cuDNN documents.
template <class T>
static void scatter(const Tensor& t, void* base, const int order[4], bool flip, const std::vector<T>& acc,
                    T alpha, T beta) {
    int64_t e[4], s[4], o = walk(t, order, flip, e, s), i = 0;
    for (int64_t a = 0; a < e[0]; a++)
        for (int64_t b = 0; b < e[1]; b++)
            for (int64_t c = 0; c < e[2]; c++)
                for (int64_t d = 0, at = o + a * s[0] + b * s[1] + c * s[2]; d < e[3]; d++, at += s[3]) {
                    T v = alpha * acc[i++];
                    if (beta != T(0)) v += beta * load<T>(base, t.dtype, at);
                    store<T>(base, t.dtype, at, v);
                }
}

// Whether t is already a packed T array in `order` (dims of extent 1 may have any stride).
template <class T>
static bool is_packed(const Tensor& t, const int order[4]) {
    if (t.dtype != (sizeof(T) == 8 ? DT_DOUBLE : DT_FLOAT)) return false;
    int64_t s = 1;
    for (int k = 3; k >= 0; k--) {
        if (t.dims[order[k]] > 1 && t.strides[order[k]] != s) return false;
        s *= t.dims[order[k]];
    }
    return true;
}

// An input as a packed T array in `order`: the caller's memory itself when it already is one (the
// engine's f32 NHWC tensors: no copy), else a converted copy.
template <class T>
struct In {
    std::vector<T> copy;
    const T* p;
    In(const Tensor& t, const void* base, const int order[4], bool flip) {
        if (!flip && is_packed<T>(t, order)) {
            p = (const T*)base;
        } else {
            copy = gather<T>(t, base, order, flip);
            p = copy.data();
        }
    }
};

// Where a result packed in `order` is computed: straight into the output when it is such an array and
// alpha = 1, beta = 0 (the engine's calls), else into a buffer that done() scatters with alpha and beta.
template <class T>
struct Out {
    const Tensor& t;
    void* base;
    const int* order;
    bool flip, direct;
    T alpha, beta;
    std::vector<T> buf;
    T* p;
    Out(const Tensor& t_, void* base_, const int order_[4], bool flip_, T alpha_, T beta_)
        : t(t_), base(base_), order(order_), flip(flip_), alpha(alpha_), beta(beta_) {
        direct = !flip && alpha == T(1) && beta == T(0) && is_packed<T>(t, order);
        if (!direct) buf.resize((size_t)numel(t));
        p = direct ? (T*)base : buf.data();
    }
    void done() {
        if (!direct) scatter<T>(t, base, order, flip, buf, alpha, beta);
    }
};

// The packed layouts the compute works in. Cross-correlation throughout; CUDNN_CONVOLUTION is handled
// by flipping the filter in gather/scatter.
static const int NHWC[4] = {0, 2, 3, 1};  // tensors as [N][H][W][C]
static const int KRSC[4] = {0, 2, 3, 1};  // filters as [K][R][S][C]
static const int RSCK[4] = {2, 3, 1, 0};  // filters as [R][S][C][K]

// ---- GEMM: every convolution is an implicit GEMM over (n,p,q) x (k) x (r,s,c) here. The former loop
// nest ran at ~5 GFLOP/s, which made convolutions half of an emulated training step; this register-
// blocked kernel reaches ~25 GFLOP/s a core with SSE2 vectors and ~45 with AVX2 where the CPU has it
// (chosen at run time, so the library still runs on any x86-64).
//
// Each output is one sequential sum in T (f32, or f64 for double data) over the reduced index in
// increasing order, continued across calls with acc = true. Vector lanes are independent outputs and
// the multiply and add are rounded separately (no FMA contraction: build.sh passes -ffp-contract=off),
// so the vector width, the blocking and the thread count never change a result's bits.
static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
template <class T> constexpr int64_t kNR = 64 / sizeof(T);  // tile columns: one cache line of B

// C (+)= A B for an m x kd matrix A (element (i, kk) at a[i * sam + kk * sak]), B a kd x n matrix with row
// stride ldb, readable to round_up(n, kNR) columns (padding), and C an m x n matrix with row stride ldc.
// Tiles of MR x kNR outputs in VB-byte vectors: 8 accumulator registers whatever VB.
template <class T, int VB>
static inline __attribute__((always_inline)) void gemm_v(int64_t m, int64_t n, int64_t kd, const T* a, int64_t sam,
                                                         int64_t sak, const T* b, int64_t ldb, T* c, int64_t ldc,
                                                         bool acc) {
    typedef T V __attribute__((vector_size(VB)));
    constexpr int L = VB / sizeof(T), NV = 64 / VB, MR = 8 / NV, NR = kNR<T>;
    for (int64_t j = 0; j < n; j += NR)  // one B panel at a time stays in L1 across all rows
        for (int64_t i = 0; i < m; i += MR) {
            const T* ar[MR];
            for (int r = 0; r < MR; r++) ar[r] = a + std::min(i + r, m - 1) * sam;
            // A tile over C's edge goes through a full-size one, of which only the part inside C is used.
            bool edge = i + MR > m || j + NR > n;
            int64_t mi = std::min<int64_t>(MR, m - i), nj = std::min<int64_t>(NR, n - j);
            T tile[MR * NR];
            T* ct = edge ? tile : c + i * ldc + j;
            int64_t ld = edge ? NR : ldc;
            if (edge && acc) {
                std::fill(tile, tile + MR * NR, T(0));
                for (int64_t r = 0; r < mi; r++) std::copy_n(c + (i + r) * ldc + j, nj, tile + r * NR);
            }
            V sum[MR][NV];
            for (int r = 0; r < MR; r++)
                for (int h = 0; h < NV; h++) {
                    if (acc) memcpy(&sum[r][h], ct + r * ld + h * L, VB);
                    else sum[r][h] = V{};
                }
            const T* bp = b + j;
            for (int64_t kk = 0; kk < kd; kk++, bp += ldb) {
                V bv[NV];
                for (int h = 0; h < NV; h++) memcpy(&bv[h], bp + h * L, VB);
                for (int r = 0; r < MR; r++) {
                    V av = V{} + ar[r][kk * sak];
                    for (int h = 0; h < NV; h++) sum[r][h] += av * bv[h];
                }
            }
            for (int r = 0; r < MR; r++)
                for (int h = 0; h < NV; h++) memcpy(ct + r * ld + h * L, &sum[r][h], VB);
            if (edge)
                for (int64_t r = 0; r < mi; r++) std::copy_n(tile + r * NR, nj, c + (i + r) * ldc + j);
        }
}
#define GEMM_ARGS                                                                                                 \
    int64_t m, int64_t n, int64_t kd, const T *a, int64_t sam, int64_t sak, const T *b, int64_t ldb, T *c, int64_t ldc, \
        bool acc
#define GEMM_PASS m, n, kd, a, sam, sak, b, ldb, c, ldc, acc
template <class T> static void gemm_sse2(GEMM_ARGS) { gemm_v<T, 16>(GEMM_PASS); }
template <class T> __attribute__((target("avx2"))) static void gemm_avx2(GEMM_ARGS) { gemm_v<T, 32>(GEMM_PASS); }
template <class T>
static void gemm(GEMM_ARGS) {
    static void (*const f)(GEMM_ARGS) = __builtin_cpu_supports("avx2") ? gemm_avx2<T> : gemm_sse2<T>;
    f(GEMM_PASS);
}
#undef GEMM_ARGS
#undef GEMM_PASS

// A packed rows x cols matrix with its rows padded with zeros to ld >= cols.
template <class T>
static std::vector<T> pad_cols(const std::vector<T>& v, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<T> out((size_t)(rows * ld), T(0));
    for (int64_t r = 0; r < rows; r++) std::copy(&v[r * cols], &v[r * cols] + cols, &out[r * ld]);
    return out;
}

// Row m = (n, p, q) of the implicit-GEMM matrix: the input taps under output pixel (p, q) of image n, in
// (r, s, c) order, with 0 where the filter hangs over the padding; then zeros up to ld.
template <class T>
static void im2col_row(const Problem& p, const T* x, int64_t m, T* out, int64_t ld) {
    const int C = p.C;
    int64_t n = m / ((int64_t)p.P * p.Q), pq = m % ((int64_t)p.P * p.Q), pp = pq / p.Q, q = pq % p.Q;
    T* o = out;
    for (int r = 0; r < p.R; r++) {
        int64_t h = pp * p.cv.stride[0] - p.cv.pad[0] + r * p.cv.dil[0];
        for (int s = 0; s < p.S; s++, o += C) {
            int64_t w = q * p.cv.stride[1] - p.cv.pad[1] + s * p.cv.dil[1];
            if (h < 0 || h >= p.H || w < 0 || w >= p.W)
                std::fill(o, o + C, T(0));
            else
                std::copy_n(x + ((n * p.H + h) * p.W + w) * C, C, o);
        }
    }
    std::fill(o, out + ld, T(0));
}

template <class T>
static void run(const Job& j) {
    const Problem& p = j.p;
    const int64_t N = p.N, C = p.C, H = p.H, W = p.W, K = p.K, P = p.P, Q = p.Q;
    const int64_t RSC = (int64_t)p.R * p.S * C, M = N * P * Q;  // the GEMM's reduced and row extents
    const int64_t RSCp = round_up(RSC, kNR<T>), Kp = round_up(K, kNR<T>);
    const bool flip = p.cv.mode == MODE_CONVOLUTION;
    const int64_t work = M * K * RSC;
    const int64_t rb = round_up(std::max<int64_t>(8192 / RSCp, 8), 8);  // im2col rows per block: ~32 KiB
    // Real cuDNN scribbles on its workspace; doing the same catches callers that free or share it too early.
    if (j.workspace_used) memset(j.workspace, 0xA5, j.workspace_used);

    if (j.op == OP_FWD) {
        // y[m][k] = sum_{rsc} col(m)[rsc] * w[rsc][k]
        In<T> x(p.x, j.a, NHWC, false);
        std::vector<T> w = pad_cols(gather<T>(p.w, j.b, RSCK, flip), RSC, K, Kp);
        Out<T> y(p.y, j.out, NHWC, false, (T)j.alpha, (T)j.beta);
        parallel_for((M + rb - 1) / rb, work, [&](int64_t lo, int64_t hi) {
            std::vector<T> col((size_t)(rb * RSCp));
            for (int64_t blk = lo; blk < hi; blk++) {
                int64_t m0 = blk * rb, m1 = std::min(M, m0 + rb);
                for (int64_t m = m0; m < m1; m++) im2col_row(p, x.p, m, &col[(m - m0) * RSCp], RSCp);
                gemm<T>(m1 - m0, K, RSC, col.data(), RSCp, 1, w.data(), Kp, y.p + m0 * K, K, false);
            }
        });
        y.done();
    } else if (j.op == OP_BWD_DATA) {
        // dcol[m][rsc] = sum_k dy[m][k] * w[k][rsc], then each dcol element is added to the dx pixel it
        // was taken from (col2im), image by image and row by row in order.
        std::vector<T> w = pad_cols(gather<T>(p.w, j.a, KRSC, flip), K, RSC, RSCp);
        In<T> dy(p.y, j.b, NHWC, false);
        Out<T> dx(p.x, j.out, NHWC, false, (T)j.alpha, (T)j.beta);
        parallel_for(N, work, [&](int64_t lo, int64_t hi) {
            std::fill(dx.p + lo * H * W * C, dx.p + hi * H * W * C, T(0));
            std::vector<T> dcol((size_t)(rb * RSCp));
            for (int64_t m0 = lo * P * Q, m1; m0 < hi * P * Q; m0 = m1) {
                m1 = std::min(hi * P * Q, m0 + rb);
                gemm<T>(m1 - m0, RSC, K, dy.p + m0 * K, K, 1, w.data(), RSCp, dcol.data(), RSCp, false);
                for (int64_t m = m0; m < m1; m++) {
                    int64_t n = m / (P * Q), pq = m % (P * Q), pp = pq / Q, q = pq % Q;
                    const T* d = &dcol[(m - m0) * RSCp];
                    for (int r = 0; r < p.R; r++) {
                        int64_t h = pp * p.cv.stride[0] - p.cv.pad[0] + r * p.cv.dil[0];
                        for (int s = 0; s < p.S; s++, d += C) {
                            int64_t x = q * p.cv.stride[1] - p.cv.pad[1] + s * p.cv.dil[1];
                            if (h < 0 || h >= H || x < 0 || x >= W) continue;
                            T* o = dx.p + ((n * H + h) * W + x) * C;
                            for (int64_t c = 0; c < C; c++) o[c] += d[c];
                        }
                    }
                }
            }
        });
        dx.done();
    } else {
        // dw[k][rsc] = sum_m dy[m][k] * col(m)[rsc]: the rows m split into a fixed number of chunks (from
        // the shape, not the thread count), each summed in order, then the chunks' sums added in order.
        In<T> x(p.x, j.a, NHWC, false), dy(p.y, j.b, NHWC, false);
        const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>({16, (M + 255) / 256, (16 << 20) / (K * RSC)}));
        const int64_t per = (M + chunks - 1) / chunks;
        std::vector<T> part((size_t)(chunks * K * RSC));
        parallel_for(chunks, work, [&](int64_t lo, int64_t hi) {
            std::vector<T> col((size_t)(rb * RSCp));
            for (int64_t ch = lo; ch < hi; ch++) {
                int64_t end = std::min(M, (ch + 1) * per);
                for (int64_t m0 = ch * per; m0 < end; m0 += rb) {
                    int64_t m1 = std::min(end, m0 + rb);
                    for (int64_t m = m0; m < m1; m++) im2col_row(p, x.p, m, &col[(m - m0) * RSCp], RSCp);
                    gemm<T>(K, RSC, m1 - m0, dy.p + m0 * K, 1, K, col.data(), RSCp, &part[ch * K * RSC], RSC,
                            m0 != ch * per);
                }
            }
        });
        // The gradient was taken w.r.t. the cross-correlation filter; flip back for CUDNN_CONVOLUTION.
        Out<T> dw(p.w, j.out, KRSC, flip, (T)j.alpha, (T)j.beta);
        std::copy_n(part.data(), K * RSC, dw.p);
        for (int64_t ch = 1; ch < chunks; ch++)
            for (int64_t i = 0; i < K * RSC; i++) dw.p[i] += part[ch * K * RSC + i];
        dw.done();
    }
}

static void run_job(void* arg) {
    Job* j = (Job*)arg;
    if (j->p.x.dtype == DT_DOUBLE)
        run<double>(*j);
    else
        run<float>(*j);
    delete j;
}

// Validates the call-time arguments that cuDNN checks, then runs the job in stream order: as a host
// function on the handle's stream when the driver is present, else at once.
static cudnnStatus_t launch(cudnnHandle_t h, int op, const Problem& p, int algo, const void* a, const void* b,
                            void* out, const void* alpha, const void* beta, void* ws, size_t ws_bytes) {
    if (algo < 0 || algo >= kAlgoCount[op]) return CUDNN_STATUS_BAD_PARAM;
    if (!a || !b || !out || !alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    size_t need = workspace_for(algo);
    if (ws_bytes < need || (need && !ws)) return CUDNN_STATUS_BAD_PARAM;
    Job* j = new Job{p, op, a, b, out, 0.0, 0.0, ws, need};
    // alpha/beta are host pointers to double for double data, to float otherwise.
    if (p.x.dtype == DT_DOUBLE) {
        j->alpha = *(const double*)alpha, j->beta = *(const double*)beta;
    } else {
        j->alpha = *(const float*)alpha, j->beta = *(const float*)beta;
    }
    if (EmuLaunchHostFunc f = emu_launch_host_func()) {
        if (f(h->stream, run_job, j) != 0) {
            delete j;
            return CUDNN_STATUS_EXECUTION_FAILED;
        }
        return CUDNN_STATUS_SUCCESS;
    }
    run_job(j);
    return CUDNN_STATUS_SUCCESS;
}

extern "C" {

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t xd,
                                                    cudnnFilterDescriptor_t wd, int* n, int* c, int* h, int* w) {
    if (!cd || !xd || !wd || !n || !c || !h || !w) return CUDNN_STATUS_BAD_PARAM;
    if (!cd->c.set || !xd->t.set || !wd->t.set || xd->t.dims[1] != wd->t.dims[1]) return CUDNN_STATUS_BAD_PARAM;
    const Conv& cv = cd->c;
    int P = out_dim(xd->t.dims[2], cv.pad[0], wd->t.dims[2], cv.dil[0], cv.stride[0]);
    int Q = out_dim(xd->t.dims[3], cv.pad[1], wd->t.dims[3], cv.dil[1], cv.stride[1]);
    if (P <= 0 || Q <= 0) return CUDNN_STATUS_BAD_PARAM;
    *n = xd->t.dims[0], *c = wd->t.dims[0], *h = P, *w = Q;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t h, int* count) {
    if (!h || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = FWD_ALGO_COUNT;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnnHandle_t h, int* count) {
    if (!h || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = BWD_DATA_ALGO_COUNT;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnnHandle_t h, int* count) {
    if (!h || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = BWD_FILTER_ALGO_COUNT;
    return CUDNN_STATUS_SUCCESS;
}

// ---- forward ----
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                     cudnnFilterDescriptor_t wd, cudnnConvolutionDescriptor_t cd,
                                                     cudnnTensorDescriptor_t yd, int requested, int* returned,
                                                     AlgoPerf* perf) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, wd, cd, yd, p);
    return st ? st : fill_perf(OP_FWD, p, requested, returned, perf, SIZE_MAX);
}
// The Find variants would time every algorithm; here they report the same list without running anything.
cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                   cudnnFilterDescriptor_t wd, cudnnConvolutionDescriptor_t cd,
                                                   cudnnTensorDescriptor_t yd, int requested, int* returned,
                                                   AlgoPerf* perf) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd, const void* x,
                                                     cudnnFilterDescriptor_t wd, const void* w,
                                                     cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd,
                                                     void* y, int requested, int* returned, AlgoPerf* perf,
                                                     void* ws, size_t ws_bytes) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, wd, cd, yd, p);
    if (st) return st;
    if (!x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    return fill_perf(OP_FWD, p, requested, returned, perf, ws ? ws_bytes : 0);
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                      cudnnFilterDescriptor_t wd, cudnnConvolutionDescriptor_t cd,
                                                      cudnnTensorDescriptor_t yd, int algo, size_t* size) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, wd, cd, yd, p);
    if (st) return st;
    if (!size || algo < 0 || algo >= FWD_ALGO_COUNT) return CUDNN_STATUS_BAD_PARAM;
    *size = workspace_for(algo);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd, const void* x,
                                      cudnnFilterDescriptor_t wd, const void* w, cudnnConvolutionDescriptor_t cd,
                                      int algo, void* ws, size_t ws_bytes, const void* beta,
                                      cudnnTensorDescriptor_t yd, void* y) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, wd, cd, yd, p);
    return st ? st : launch(h, OP_FWD, p, algo, x, w, y, alpha, beta, ws, ws_bytes);
}

// ---- backward data ----
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t h, cudnnFilterDescriptor_t wd,
                                                          cudnnTensorDescriptor_t dyd,
                                                          cudnnConvolutionDescriptor_t cd,
                                                          cudnnTensorDescriptor_t dxd, int requested, int* returned,
                                                          AlgoPerf* perf) {
    Problem p;
    cudnnStatus_t st = validate(h, dxd, wd, cd, dyd, p);
    return st ? st : fill_perf(OP_BWD_DATA, p, requested, returned, perf, SIZE_MAX);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(cudnnHandle_t h, cudnnFilterDescriptor_t wd,
                                                        cudnnTensorDescriptor_t dyd, cudnnConvolutionDescriptor_t cd,
                                                        cudnnTensorDescriptor_t dxd, int requested, int* returned,
                                                        AlgoPerf* perf) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, wd, dyd, cd, dxd, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t h, cudnnFilterDescriptor_t wd,
                                                          const void* w, cudnnTensorDescriptor_t dyd, const void* dy,
                                                          cudnnConvolutionDescriptor_t cd,
                                                          cudnnTensorDescriptor_t dxd, void* dx, int requested,
                                                          int* returned, AlgoPerf* perf, void* ws, size_t ws_bytes) {
    Problem p;
    cudnnStatus_t st = validate(h, dxd, wd, cd, dyd, p);
    if (st) return st;
    if (!w || !dy || !dx) return CUDNN_STATUS_BAD_PARAM;
    return fill_perf(OP_BWD_DATA, p, requested, returned, perf, ws ? ws_bytes : 0);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t h, cudnnFilterDescriptor_t wd,
                                                           cudnnTensorDescriptor_t dyd,
                                                           cudnnConvolutionDescriptor_t cd,
                                                           cudnnTensorDescriptor_t dxd, int algo, size_t* size) {
    Problem p;
    cudnnStatus_t st = validate(h, dxd, wd, cd, dyd, p);
    if (st) return st;
    if (!size || algo < 0 || algo >= BWD_DATA_ALGO_COUNT) return CUDNN_STATUS_BAD_PARAM;
    *size = workspace_for(algo);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void* alpha, cudnnFilterDescriptor_t wd,
                                           const void* w, cudnnTensorDescriptor_t dyd, const void* dy,
                                           cudnnConvolutionDescriptor_t cd, int algo, void* ws, size_t ws_bytes,
                                           const void* beta, cudnnTensorDescriptor_t dxd, void* dx) {
    Problem p;
    cudnnStatus_t st = validate(h, dxd, wd, cd, dyd, p);
    return st ? st : launch(h, OP_BWD_DATA, p, algo, w, dy, dx, alpha, beta, ws, ws_bytes);
}

// ---- backward filter ----
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                            cudnnTensorDescriptor_t dyd,
                                                            cudnnConvolutionDescriptor_t cd,
                                                            cudnnFilterDescriptor_t dwd, int requested,
                                                            int* returned, AlgoPerf* perf) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, dwd, cd, dyd, p);
    return st ? st : fill_perf(OP_BWD_FILTER, p, requested, returned, perf, SIZE_MAX);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                          cudnnTensorDescriptor_t dyd,
                                                          cudnnConvolutionDescriptor_t cd,
                                                          cudnnFilterDescriptor_t dwd, int requested, int* returned,
                                                          AlgoPerf* perf) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, xd, dyd, cd, dwd, requested, returned, perf);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                            const void* x, cudnnTensorDescriptor_t dyd,
                                                            const void* dy, cudnnConvolutionDescriptor_t cd,
                                                            cudnnFilterDescriptor_t dwd, void* dw, int requested,
                                                            int* returned, AlgoPerf* perf, void* ws,
                                                            size_t ws_bytes) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, dwd, cd, dyd, p);
    if (st) return st;
    if (!x || !dy || !dw) return CUDNN_STATUS_BAD_PARAM;
    return fill_perf(OP_BWD_FILTER, p, requested, returned, perf, ws ? ws_bytes : 0);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t h, cudnnTensorDescriptor_t xd,
                                                             cudnnTensorDescriptor_t dyd,
                                                             cudnnConvolutionDescriptor_t cd,
                                                             cudnnFilterDescriptor_t dwd, int algo, size_t* size) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, dwd, cd, dyd, p);
    if (st) return st;
    if (!size || algo < 0 || algo >= BWD_FILTER_ALGO_COUNT) return CUDNN_STATUS_BAD_PARAM;
    *size = workspace_for(algo);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void* alpha, cudnnTensorDescriptor_t xd,
                                             const void* x, cudnnTensorDescriptor_t dyd, const void* dy,
                                             cudnnConvolutionDescriptor_t cd, int algo, void* ws, size_t ws_bytes,
                                             const void* beta, cudnnFilterDescriptor_t dwd, void* dw) {
    Problem p;
    cudnnStatus_t st = validate(h, xd, dwd, cd, dyd, p);
    return st ? st : launch(h, OP_BWD_FILTER, p, algo, x, dy, dw, alpha, beta, ws, ws_bytes);
}

}  // extern "C"
