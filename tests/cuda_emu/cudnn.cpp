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
    int64_t off(int64_t a, int64_t b, int64_t c, int64_t d) const {
        return a * strides[0] + b * strides[1] + c * strides[2] + d * strides[3];
    }
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

// Runs f(i) for i in [0, n) on several threads, each taking a contiguous block. Every result is
// computed by exactly one thread in a fixed order, so the output does not depend on the split.
template <class F>
static void parallel_for(int n, int64_t work, F f) {
    int nt = (int)std::min<unsigned>(std::max(1u, std::thread::hardware_concurrency()), 16u);
    if (work < (1 << 18)) nt = 1;  // not worth a thread
    nt = std::max(1, std::min(nt, n));
    if (nt == 1) {
        for (int i = 0; i < n; i++) f(i);
        return;
    }
    std::vector<std::thread> th;
    for (int t = 0; t < nt; t++) {
        int lo = (int)((int64_t)n * t / nt), hi = (int)((int64_t)n * (t + 1) / nt);
        th.emplace_back([=] {
            for (int i = lo; i < hi; i++) f(i);
        });
    }
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

// Copies a 4-d tensor (dims d0..d3 with strides) into a packed buffer ordered by `order` (a permutation
// of 0..3 giving the buffer's dimension order, outermost first), widening to T. `flip` reverses dims 2
// and 3, which turns a CUDNN_CONVOLUTION filter into the cross-correlation one.
template <class T>
static std::vector<T> gather(const Tensor& t, const void* base, const int order[4], bool flip) {
    std::vector<T> buf((size_t)numel(t));
    const int* d = t.dims;
    int e[4] = {d[order[0]], d[order[1]], d[order[2]], d[order[3]]};
    int64_t idx[4], i = 0;
    for (idx[0] = 0; idx[0] < e[0]; idx[0]++)
        for (idx[1] = 0; idx[1] < e[1]; idx[1]++)
            for (idx[2] = 0; idx[2] < e[2]; idx[2]++)
                for (idx[3] = 0; idx[3] < e[3]; idx[3]++) {
                    int64_t l[4];
                    for (int k = 0; k < 4; k++) l[order[k]] = idx[k];
                    if (flip) l[2] = d[2] - 1 - l[2], l[3] = d[3] - 1 - l[3];
                    buf[i++] = load<T>(base, t.dtype, t.off(l[0], l[1], l[2], l[3]));
                }
    return buf;
}

// out = alpha * acc + beta * out, acc packed in `order` like gather(). With beta == 0 the old output is
// not read (it may be uninitialised or NaN), as cuDNN documents.
template <class T>
static void scatter(const Tensor& t, void* base, const int order[4], bool flip, const std::vector<T>& acc,
                    T alpha, T beta) {
    const int* d = t.dims;
    int e[4] = {d[order[0]], d[order[1]], d[order[2]], d[order[3]]};
    int64_t idx[4], i = 0;
    for (idx[0] = 0; idx[0] < e[0]; idx[0]++)
        for (idx[1] = 0; idx[1] < e[1]; idx[1]++)
            for (idx[2] = 0; idx[2] < e[2]; idx[2]++)
                for (idx[3] = 0; idx[3] < e[3]; idx[3]++) {
                    int64_t l[4];
                    for (int k = 0; k < 4; k++) l[order[k]] = idx[k];
                    if (flip) l[2] = d[2] - 1 - l[2], l[3] = d[3] - 1 - l[3];
                    int64_t o = t.off(l[0], l[1], l[2], l[3]);
                    T v = alpha * acc[i++];
                    if (beta != T(0)) v += beta * load<T>(base, t.dtype, o);
                    store<T>(base, t.dtype, o, v);
                }
}

// The kernels work on packed buffers with the reduced-over dimension arranged so that the innermost
// loop is a contiguous axpy (independent lanes: vectorisable without reassociating any sum).
// Cross-correlation throughout; CUDNN_CONVOLUTION is handled by flipping the filter in gather/scatter.
static const int NHWC[4] = {0, 2, 3, 1};  // tensors as [N][H][W][C]
static const int KRSC[4] = {0, 2, 3, 1};  // filters as [K][R][S][C]
static const int RSCK[4] = {2, 3, 1, 0};  // filters as [R][S][C][K]

template <class T>
static void run(const Job& j) {
    const Problem& p = j.p;
    const int N = p.N, C = p.C, H = p.H, W = p.W, K = p.K, R = p.R, S = p.S, P = p.P, Q = p.Q;
    const int ph = p.cv.pad[0], pw = p.cv.pad[1], u = p.cv.stride[0], v = p.cv.stride[1];
    const int dh = p.cv.dil[0], dw = p.cv.dil[1];
    const bool flip = p.cv.mode == MODE_CONVOLUTION;
    const int64_t work = (int64_t)N * P * Q * K * C * R * S;
    // Real cuDNN scribbles on its workspace; doing the same catches callers that free or share it too early.
    if (j.workspace_used) memset(j.workspace, 0xA5, j.workspace_used);

    if (j.op == OP_FWD) {
        // y[n,p,q,k] = sum_{r,s,c} x[n, p*u-ph+r*dh, q*v-pw+s*dw, c] * w[k,c,r,s]
        std::vector<T> x = gather<T>(p.x, j.a, NHWC, false), w = gather<T>(p.w, j.b, RSCK, flip);
        std::vector<T> y((size_t)N * P * Q * K, T(0));
        parallel_for(N * P, work, [&](int np) {
            int n = np / P, pp = np % P;
            for (int q = 0; q < Q; q++) {
                T* acc = &y[(((size_t)n * P + pp) * Q + q) * K];
                for (int r = 0; r < R; r++) {
                    int h = pp * u - ph + r * dh;
                    if (h < 0 || h >= H) continue;
                    for (int s = 0; s < S; s++) {
                        int ww = q * v - pw + s * dw;
                        if (ww < 0 || ww >= W) continue;
                        const T* xp = &x[(((size_t)n * H + h) * W + ww) * C];
                        const T* wp = &w[((size_t)r * S + s) * C * K];
                        for (int c = 0; c < C; c++) {
                            T xv = xp[c];
                            const T* wr = wp + (size_t)c * K;
                            for (int k = 0; k < K; k++) acc[k] += xv * wr[k];
                        }
                    }
                }
            }
        });
        scatter<T>(p.y, j.out, NHWC, false, y, (T)j.alpha, (T)j.beta);
    } else if (j.op == OP_BWD_DATA) {
        // dx[n,h,w,c] = sum over (p,q,r,s) with h = p*u-ph+r*dh, w = q*v-pw+s*dw of dy[n,p,q,k] * w[k,c,r,s]
        std::vector<T> w = gather<T>(p.w, j.a, KRSC, flip), dy = gather<T>(p.y, j.b, NHWC, false);
        std::vector<T> dx((size_t)N * H * W * C, T(0));
        parallel_for(N * H, work, [&](int nh) {
            int n = nh / H, h = nh % H;
            for (int ww = 0; ww < W; ww++) {
                T* acc = &dx[(((size_t)n * H + h) * W + ww) * C];
                for (int r = 0; r < R; r++) {
                    int t = h + ph - r * dh;
                    if (t < 0 || t % u) continue;
                    int pp = t / u;
                    if (pp >= P) continue;
                    for (int s = 0; s < S; s++) {
                        int t2 = ww + pw - s * dw;
                        if (t2 < 0 || t2 % v) continue;
                        int q = t2 / v;
                        if (q >= Q) continue;
                        const T* g = &dy[(((size_t)n * P + pp) * Q + q) * K];
                        for (int k = 0; k < K; k++) {
                            T gv = g[k];
                            const T* wr = &w[(((size_t)k * R + r) * S + s) * C];
                            for (int c = 0; c < C; c++) acc[c] += gv * wr[c];
                        }
                    }
                }
            }
        });
        scatter<T>(p.x, j.out, NHWC, false, dx, (T)j.alpha, (T)j.beta);
    } else {
        // dw[k,c,r,s] = sum_{n,p,q} dy[n,p,q,k] * x[n, p*u-ph+r*dh, q*v-pw+s*dw, c]
        std::vector<T> x = gather<T>(p.x, j.a, NHWC, false), dy = gather<T>(p.y, j.b, NHWC, false);
        std::vector<T> dwt((size_t)K * R * S * C, T(0));
        parallel_for(K, work, [&](int k) {
            T* acc = &dwt[(size_t)k * R * S * C];
            for (int n = 0; n < N; n++)
                for (int pp = 0; pp < P; pp++)
                    for (int q = 0; q < Q; q++) {
                        T gv = dy[(((size_t)n * P + pp) * Q + q) * K + k];
                        for (int r = 0; r < R; r++) {
                            int h = pp * u - ph + r * dh;
                            if (h < 0 || h >= H) continue;
                            for (int s = 0; s < S; s++) {
                                int ww = q * v - pw + s * dw;
                                if (ww < 0 || ww >= W) continue;
                                const T* xp = &x[(((size_t)n * H + h) * W + ww) * C];
                                T* ar = acc + ((size_t)r * S + s) * C;
                                for (int c = 0; c < C; c++) ar[c] += gv * xp[c];
                            }
                        }
                    }
        });
        // The gradient was taken w.r.t. the cross-correlation filter; flip back for CUDNN_CONVOLUTION.
        scatter<T>(p.w, j.out, KRSC, flip, dwt, (T)j.alpha, (T)j.beta);
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
