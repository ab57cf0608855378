// Host emulation of libcublas.so (CUDA 13) for the functions cudarc 0.19 calls: handle management,
// gemm (S/D/H, Ex, strided-batched), gemv and asum. "Device" pointers are host pointers (the fake
// libcuda hands out host memory). Work is ordered on the handle's stream by enqueueing it as a host
// function through the driver's cuLaunchHostFunc; without a loaded driver it runs at once.
#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "driver_link.h"
#include "half.h"

// Enum values as in cublas_api.h / library_types.h (CUDA 13).
typedef int cublasStatus_t;
enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16,
};
typedef int cublasOperation_t;
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
typedef int cublasPointerMode_t;
enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 };
typedef int cublasMath_t;
enum { CUBLAS_DEFAULT_MATH = 0 };
typedef int cudaDataType;
enum { CUDA_R_32F = 0, CUDA_R_64F = 1, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
typedef int cublasComputeType_t;
enum {
    CUBLAS_COMPUTE_16F = 64,
    CUBLAS_COMPUTE_16F_PEDANTIC = 65,
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_64F_PEDANTIC = 71,
    CUBLAS_COMPUTE_32F_FAST_16F = 74,
    CUBLAS_COMPUTE_32F_FAST_16BF = 75,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
    CUBLAS_COMPUTE_32F_EMULATED_16BFX9 = 78,
    CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT = 79,
};
typedef int cublasGemmAlgo_t;
typedef int libraryPropertyType;
enum { MAJOR_VERSION = 0, MINOR_VERSION = 1, PATCH_LEVEL = 2 };

// cuBLAS 13.0.0: CUBLAS_VERSION = major * 10000 + minor * 100 + patch.
static const int kMajor = 13, kMinor = 0, kPatch = 0;

struct cublasContext {
    void *stream = nullptr;
    int math_mode = CUBLAS_DEFAULT_MATH;
    int pointer_mode = CUBLAS_POINTER_MODE_HOST;
    void *workspace = nullptr;
    size_t workspace_size = 0;
};
typedef cublasContext *cublasHandle_t;

// ---------------------------------------------------------------------------------------------
// Stream ordering through the (fake) driver.

static std::atomic<EmuStreamSynchronize> g_sync{nullptr};

static void run_task(void *p) {
    auto *fn = (std::function<void()> *)p;
    (*fn)();
    delete fn;
}

// Runs `fn` in stream order on the handle's stream. `fn` must own copies of everything it needs
// (not the handle: it may be destroyed before the stream reaches the work).
static cublasStatus_t submit(cublasHandle_t h, std::function<void()> fn) {
    EmuLaunchHostFunc launch = emu_launch_host_func();
    if (!launch) {
        fn();
        return CUBLAS_STATUS_SUCCESS;
    }
    auto *task = new (std::nothrow) std::function<void()>(std::move(fn));
    if (!task) return CUBLAS_STATUS_ALLOC_FAILED;
    if (launch(h->stream, run_task, task) != 0) {
        delete task;
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

// Results written through host pointers must be there when the call returns, as in cuBLAS.
static cublasStatus_t wait_stream(cublasHandle_t h) {
    if (!emu_launch_host_func()) return CUBLAS_STATUS_SUCCESS;
    EmuStreamSynchronize sync = emu_cached_driver_sym(g_sync, "cuStreamSynchronize");
    if (sync && sync(h->stream) != 0) return CUBLAS_STATUS_EXECUTION_FAILED;
    return CUBLAS_STATUS_SUCCESS;
}

// alpha/beta: in HOST pointer mode the value is read at call time (the caller may reuse the memory
// right after); in DEVICE mode it is read when the work runs, since earlier work may write it.
struct Scalar {
    double value = 0;  // float, double and half all convert exactly
    const void *dev = nullptr;
    int type = CUDA_R_32F;
    double get() const { return dev ? load(dev, type) : value; }
    static double load(const void *p, int type) {
        switch (type) {
            case CUDA_R_64F: return *(const double *)p;
            case CUDA_R_16F: return emu_f16_to_f32(*(const uint16_t *)p);
            case CUDA_R_16BF: return emu_bf16_to_f32(*(const uint16_t *)p);
            default: return *(const float *)p;
        }
    }
};

static Scalar make_scalar(cublasHandle_t h, const void *p, int type) {
    Scalar s;
    s.type = type;
    if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE)
        s.dev = p;
    else
        s.value = Scalar::load(p, type);
    return s;
}

// ---------------------------------------------------------------------------------------------
// GEMM core.

static size_t elem_size(int type) {
    switch (type) {
        case CUDA_R_64F: return 8;
        case CUDA_R_16F: case CUDA_R_16BF: return 2;
        default: return 4;
    }
}

template <typename T>
static inline T load_elem(const void *p, int type, int64_t i) {
    switch (type) {
        case CUDA_R_64F: return (T)((const double *)p)[i];
        case CUDA_R_16F: return (T)emu_f16_to_f32(((const uint16_t *)p)[i]);
        case CUDA_R_16BF: return (T)emu_bf16_to_f32(((const uint16_t *)p)[i]);
        default: return (T)((const float *)p)[i];
    }
}

template <typename T>
static inline void store_elem(void *p, int type, int64_t i, T v) {
    switch (type) {
        case CUDA_R_64F: ((double *)p)[i] = (double)v; break;
        case CUDA_R_16F: ((uint16_t *)p)[i] = emu_f32_to_f16((float)v); break;
        case CUDA_R_16BF: ((uint16_t *)p)[i] = emu_f32_to_bf16((float)v); break;
        default: ((float *)p)[i] = (float)v; break;
    }
}

struct GemmJob {
    int ta, tb, m, n, k;
    const void *A; int atype, lda; long long strideA;
    const void *B; int btype, ldb; long long strideB;
    void *C; int ctype, ldc; long long strideC;
    int batch;
    Scalar alpha, beta;
};

// Acc is the compute type: products and sums in Acc, one rounding to C's type at the end.
template <typename Acc>
static void gemm_run(const GemmJob &j) {
    const Acc alpha = (Acc)j.alpha.get(), beta = (Acc)j.beta.get();
    const int m = j.m, n = j.n, k = j.k;
    // Reference BLAS: alpha == 0 or k == 0 leaves C = beta * C without reading A and B.
    const bool product = alpha != 0 && k > 0;
    // op(A) packed m x k and op(B) k x n, column-major and widened to Acc, so the inner loop is a
    // contiguous axpy whatever the transposes and storage types are.
    std::vector<Acc> ap(product ? (size_t)m * k : 0), bp(product ? (size_t)k * n : 0), acc(m);
    for (int b = 0; b < j.batch; b++) {
        const char *A = (const char *)j.A + b * j.strideA * (long long)elem_size(j.atype);
        const char *B = (const char *)j.B + b * j.strideB * (long long)elem_size(j.btype);
        char *C = (char *)j.C + b * j.strideC * (long long)elem_size(j.ctype);
        if (product) {
            for (int l = 0; l < k; l++)
                for (int i = 0; i < m; i++)
                    ap[(size_t)l * m + i] = load_elem<Acc>(
                        A, j.atype, j.ta == CUBLAS_OP_N ? i + (int64_t)l * j.lda : l + (int64_t)i * j.lda);
            for (int c = 0; c < n; c++)
                for (int l = 0; l < k; l++)
                    bp[(size_t)c * k + l] = load_elem<Acc>(
                        B, j.btype, j.tb == CUBLAS_OP_N ? l + (int64_t)c * j.ldb : c + (int64_t)l * j.ldb);
        }
        for (int c = 0; c < n; c++) {
            std::fill(acc.begin(), acc.end(), Acc(0));
            if (product) {
                Acc *out = acc.data();
                for (int l = 0; l < k; l++) {
                    const Acc s = bp[(size_t)c * k + l];
                    const Acc *col = &ap[(size_t)l * m];
                    for (int i = 0; i < m; i++) out[i] += col[i] * s;
                }
            }
            for (int i = 0; i < m; i++) {
                const int64_t at = i + (int64_t)c * j.ldc;
                Acc r = product ? alpha * acc[i] : Acc(0);
                // beta == 0: C is not read, so NaN/garbage there does not leak into the result.
                if (beta != 0) r += beta * load_elem<Acc>(C, j.ctype, at);
                store_elem<Acc>(C, j.ctype, at, r);
            }
        }
    }
}

static bool valid_op(int op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// Argument checks from the cuBLAS gemm documentation.
static cublasStatus_t check_gemm(cublasHandle_t h, int ta, int tb, int m, int n, int k, int lda, int ldb,
                                 int ldc, const void *alpha, const void *beta, int batch) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_op(ta) || !valid_op(tb) || m < 0 || n < 0 || k < 0 || batch < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    const int rows_a = ta == CUBLAS_OP_N ? m : k, rows_b = tb == CUBLAS_OP_N ? k : n;
    if (lda < std::max(1, rows_a) || ldb < std::max(1, rows_b) || ldc < std::max(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

// Shared by every gemm entry point. scale: type alpha/beta point to; wide: compute in f64.
static cublasStatus_t gemm_common(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha,
                                  const void *A, int atype, int lda, long long sa, const void *B, int btype,
                                  int ldb, long long sb, const void *beta, void *C, int ctype, int ldc,
                                  long long sc, int batch, int scale, bool wide) {
    cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, lda, ldb, ldc, alpha, beta, batch);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    GemmJob j{ta, tb, m, n, k, A, atype, lda, sa, B, btype, ldb, sb, C, ctype, ldc, sc, batch,
              make_scalar(h, alpha, scale), make_scalar(h, beta, scale)};
    try {
        if (wide) return submit(h, [j] { gemm_run<double>(j); });
        return submit(h, [j] { gemm_run<float>(j); });
    } catch (const std::bad_alloc &) {
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
}

// Type combinations of cublasGemmEx's documentation that are emulated. Sets the scale type
// (what alpha/beta point to) and whether to compute in f64. The 16F compute types accumulate in
// f32 here (exact products, fewer roundings than a GPU might do); the FAST_* / EMULATED types
// only permit reduced precision, so full f32 is a valid implementation of them.
static bool gemm_ex_types(int compute, int at, int bt, int ct, int *scale, bool *wide) {
    *wide = false;
    switch (compute) {
        case CUBLAS_COMPUTE_16F:
        case CUBLAS_COMPUTE_16F_PEDANTIC:
            *scale = CUDA_R_16F;
            return at == CUDA_R_16F && bt == CUDA_R_16F && ct == CUDA_R_16F;
        case CUBLAS_COMPUTE_32F:
        case CUBLAS_COMPUTE_32F_PEDANTIC:
        case CUBLAS_COMPUTE_32F_FAST_16F:
        case CUBLAS_COMPUTE_32F_FAST_16BF:
        case CUBLAS_COMPUTE_32F_FAST_TF32:
        case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:
            *scale = CUDA_R_32F;
            if (at != bt) return false;
            if (at == CUDA_R_16F || at == CUDA_R_16BF) return ct == at || ct == CUDA_R_32F;
            return at == CUDA_R_32F && ct == CUDA_R_32F;
        case CUBLAS_COMPUTE_64F:
        case CUBLAS_COMPUTE_64F_PEDANTIC:
        case CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT:
            *scale = CUDA_R_64F;
            *wide = true;
            return at == CUDA_R_64F && bt == CUDA_R_64F && ct == CUDA_R_64F;
        default:
            return false;
    }
}

static cublasStatus_t gemm_ex_common(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha,
                                     const void *A, int at, int lda, long long sa, const void *B, int bt, int ldb,
                                     long long sb, const void *beta, void *C, int ct, int ldc, long long sc,
                                     int batch, int compute) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    int scale;
    bool wide;
    if (!gemm_ex_types(compute, at, bt, ct, &scale, &wide)) return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm_common(h, ta, tb, m, n, k, alpha, A, at, lda, sa, B, bt, ldb, sb, beta, C, ct, ldc, sc, batch,
                       scale, wide);
}

// ---------------------------------------------------------------------------------------------
// gemv / asum.

// BLAS vector indexing: with inc < 0 the vector is traversed from its last stored element.
static inline int64_t vec_at(int i, int len, int inc) {
    return inc > 0 ? (int64_t)i * inc : (int64_t)(len - 1 - i) * -inc;
}

template <typename T>
static void gemv_run(int trans, int m, int n, Scalar sa, const T *A, int lda, const T *x, int incx, Scalar sb,
                     T *y, int incy) {
    const T alpha = (T)sa.get(), beta = (T)sb.get();
    const int lx = trans == CUBLAS_OP_N ? n : m, ly = trans == CUBLAS_OP_N ? m : n;
    std::vector<T> acc(ly, T(0));
    if (alpha != 0) {
        if (trans == CUBLAS_OP_N) {
            for (int c = 0; c < n; c++) {
                const T s = x[vec_at(c, lx, incx)];
                for (int i = 0; i < m; i++) acc[i] += A[i + (int64_t)c * lda] * s;
            }
        } else {
            for (int c = 0; c < n; c++)
                for (int i = 0; i < m; i++) acc[c] += A[i + (int64_t)c * lda] * x[vec_at(i, lx, incx)];
        }
    }
    for (int i = 0; i < ly; i++) {
        T &out = y[vec_at(i, ly, incy)];
        T r = alpha != 0 ? alpha * acc[i] : T(0);
        if (beta != 0) r += beta * out;
        out = r;
    }
}

template <typename T>
static cublasStatus_t gemv_common(cublasHandle_t h, int trans, int m, int n, const T *alpha, const T *A, int lda,
                                  const T *x, int incx, const T *beta, T *y, int incy, int type) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_op(trans) || m < 0 || n < 0 || lda < std::max(1, m) || incx == 0 || incy == 0 || !alpha ||
        !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    Scalar sa = make_scalar(h, alpha, type), sb = make_scalar(h, beta, type);
    try {
        return submit(h, [=] { gemv_run<T>(trans, m, n, sa, A, lda, x, incx, sb, y, incy); });
    } catch (const std::bad_alloc &) {
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
}

// Sums in double and rounds once: closer to the GPU's tree reduction than a long f32 running sum.
template <typename T>
static cublasStatus_t asum_common(cublasHandle_t h, int n, const T *x, int incx, T *result) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!result) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t st;
    try {
        st = submit(h, [=] {
            double s = 0;
            if (incx > 0)
                for (int i = 0; i < n; i++) s += std::fabs((double)x[(int64_t)i * incx]);
            *result = (T)s;
        });
    } catch (const std::bad_alloc &) {
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    if (st != CUBLAS_STATUS_SUCCESS || h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) return st;
    return wait_stream(h);
}

// ---------------------------------------------------------------------------------------------
// Exported API.

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new (std::nothrow) cublasContext();
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

// Queued work owns copies of its arguments, so the handle can go at once.
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetVersion_v2(cublasHandle_t handle, int *version) {
    if (!version) return CUBLAS_STATUS_INVALID_VALUE;
    *version = kMajor * 10000 + kMinor * 100 + kPatch;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
    if (!value) return CUBLAS_STATUS_INVALID_VALUE;
    switch (type) {
        case MAJOR_VERSION: *value = kMajor; return CUBLAS_STATUS_SUCCESS;
        case MINOR_VERSION: *value = kMinor; return CUBLAS_STATUS_SUCCESS;
        case PATCH_LEVEL: *value = kPatch; return CUBLAS_STATUS_SUCCESS;
        default: return CUBLAS_STATUS_INVALID_VALUE;
    }
}

const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "success";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
        case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
        case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
        default: return "unknown error";
    }
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, void *stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, void **stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

// The mode is only recorded: the emulation always computes at full precision, which every mode allows.
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t *mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void *workspace, size_t size) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (size > 0 && !workspace) return CUBLAS_STATUS_INVALID_VALUE;
    handle->workspace = workspace;
    handle->workspace_size = size;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t *mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->pointer_mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                              const float *beta, float *C, int ldc) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0, beta,
                       C, CUDA_R_32F, ldc, 0, 1, CUDA_R_32F, false);
}

cublasStatus_t cublasDgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                              int n, int k, const double *alpha, const double *A, int lda, const double *B,
                              int ldb, const double *beta, double *C, int ldc) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_64F, lda, 0, B, CUDA_R_64F, ldb, 0, beta,
                       C, CUDA_R_64F, ldc, 0, 1, CUDA_R_64F, true);
}

// __half is passed by pointer only, so uint16_t stands in for it.
cublasStatus_t cublasHgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const uint16_t *alpha, const uint16_t *A, int lda, const uint16_t *B, int ldb,
                           const uint16_t *beta, uint16_t *C, int ldc) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_16F, lda, 0, B, CUDA_R_16F, ldb, 0, beta,
                       C, CUDA_R_16F, ldc, 0, 1, CUDA_R_16F, false);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb, long long strideB,
                                         const float *beta, float *C, int ldc, long long strideC, int batchCount) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, strideA, B, CUDA_R_32F, ldb,
                       strideB, beta, C, CUDA_R_32F, ldc, strideC, batchCount, CUDA_R_32F, false);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const double *alpha, const double *A, int lda,
                                         long long strideA, const double *B, int ldb, long long strideB,
                                         const double *beta, double *C, int ldc, long long strideC,
                                         int batchCount) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_64F, lda, strideA, B, CUDA_R_64F, ldb,
                       strideB, beta, C, CUDA_R_64F, ldc, strideC, batchCount, CUDA_R_64F, true);
}

cublasStatus_t cublasHgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const uint16_t *alpha, const uint16_t *A, int lda,
                                         long long strideA, const uint16_t *B, int ldb, long long strideB,
                                         const uint16_t *beta, uint16_t *C, int ldc, long long strideC,
                                         int batchCount) {
    return gemm_common(handle, transa, transb, m, n, k, alpha, A, CUDA_R_16F, lda, strideA, B, CUDA_R_16F, ldb,
                       strideB, beta, C, CUDA_R_16F, ldc, strideC, batchCount, CUDA_R_16F, false);
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return gemm_ex_common(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C,
                          Ctype, ldc, 0, 1, computeType);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void *alpha, const void *A, cudaDataType Atype,
                                          int lda, long long strideA, const void *B, cudaDataType Btype, int ldb,
                                          long long strideB, const void *beta, void *C, cudaDataType Ctype, int ldc,
                                          long long strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo) {
    return gemm_ex_common(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB,
                          beta, C, Ctype, ldc, strideC, batchCount, computeType);
}

cublasStatus_t cublasSgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float *alpha,
                              const float *A, int lda, const float *x, int incx, const float *beta, float *y,
                              int incy) {
    return gemv_common<float>(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, CUDA_R_32F);
}

cublasStatus_t cublasDgemv_v2(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const double *alpha,
                              const double *A, int lda, const double *x, int incx, const double *beta, double *y,
                              int incy) {
    return gemv_common<double>(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, CUDA_R_64F);
}

cublasStatus_t cublasSasum_v2(cublasHandle_t handle, int n, const float *x, int incx, float *result) {
    return asum_common<float>(handle, n, x, incx, result);
}

cublasStatus_t cublasDasum_v2(cublasHandle_t handle, int n, const double *x, int incx, double *result) {
    return asum_common<double>(handle, n, x, incx, result);
}

}  // extern "C"
