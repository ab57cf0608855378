// Must match engine::backend::cpu::CpuBackend::{l2_normalize_rows, l2_normalize_rows_backward}:
// y = x / max(||x||, eps) per row of [rows, D], norms = ||x||; dx = (dy - y*(dy.y)) / max(||x||, eps)
// (0 contribution through the norm when ||x|| <= eps, as torch's F.normalize clamp gives).
// A row of finite values whose squares overflow f32 (entries beyond ~1.8e19) is measured again scaled
// by its largest magnitude, so its norm is finite; every other row takes the plain sum (bit-identical).
// One block per row; the output dtype may differ so the class weights can be normalized straight
// into the bf16/fp16 copy the classifier GEMM reads.

// Largest magnitude over a 1-D block (every thread gets it); `scratch` holds 32 floats.
__device__ __forceinline__ float block_max_abs(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    return scratch[0];
}

// ||x|| of a row whose plain sum of squares overflowed: m * sqrt(sum((x/m)^2)), m = max |x|. A row with
// an infinite or NaN entry keeps an infinite or NaN norm.
template <typename TI>
__device__ float l2norm_rescaled(const TI* xr, int D, float* scratch) {
    float m = 0.0f;
    for (int k = threadIdx.x; k < D; k += blockDim.x) m = fmaxf(m, fabsf(to_f32(xr[k])));
    m = block_max_abs(m, scratch);
    if (!isfinite(m)) return m;
    float s = 0.0f;
    for (int k = threadIdx.x; k < D; k += blockDim.x) { float v = to_f32(xr[k]) / m; s += v * v; }
    return m * sqrtf(block_sum(s, scratch));
}

#define L2NORM_FWD(SUF, TI, TO)                                                                         \
    extern "C" __global__ void l2norm_fwd_##SUF(int rows, int D, float eps, const TI* __restrict__ x,  \
                                                TO* __restrict__ y, float* __restrict__ norms) {       \
        __shared__ float scratch[32];                                                                  \
        int r = blockIdx.x;                                                                            \
        if (r >= rows) return;                                                                         \
        const TI* xr = x + (long long)r * D;                                                           \
        float s = 0.0f;                                                                                \
        for (int k = threadIdx.x; k < D; k += blockDim.x) { float v = to_f32(xr[k]); s += v * v; }     \
        float nrm = sqrtf(block_sum(s, scratch));                                                      \
        if (isinf(nrm)) nrm = l2norm_rescaled<TI>(xr, D, scratch);                                     \
        float inv = 1.0f / fmaxf(nrm, eps);                                                            \
        TO* yr = y + (long long)r * D;                                                                 \
        for (int k = threadIdx.x; k < D; k += blockDim.x) yr[k] = from_f32<TO>(to_f32(xr[k]) * inv);   \
        if (threadIdx.x == 0 && norms != nullptr) norms[r] = nrm;                                      \
    }
L2NORM_FWD(f32, float, float)
L2NORM_FWD(f32_bf16, float, bf16_t)
L2NORM_FWD(f32_f16, float, f16_t)
L2NORM_FWD(bf16, bf16_t, bf16_t)

extern "C" __global__ void l2norm_bwd_f32(int rows, int D, float eps, const float* __restrict__ dy,
                                          const float* __restrict__ y, const float* __restrict__ norms,
                                          float* __restrict__ dx) {
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    long long o = (long long)r * D;
    float nrm = norms[r];
    float dot = 0.0f;
    for (int k = threadIdx.x; k < D; k += blockDim.x) dot += dy[o + k] * y[o + k];
    dot = block_sum(dot, scratch);
    float inv = 1.0f / fmaxf(nrm, eps);
    bool through_norm = nrm > eps;
    for (int k = threadIdx.x; k < D; k += blockDim.x) {
        float g = dy[o + k];
        if (through_norm) g -= y[o + k] * dot;
        dx[o + k] = g * inv;
    }
}

// The same backward from the raw rows x (f32) and the forward's norms instead of y, with dy in the type
// the classifier's weight-gradient GEMM wrote (bf16/fp16 widened here, or f32): y = x * inv is recomputed
// exactly as l2norm_fwd computed it, so dx has the bits l2norm_bwd_f32 gives on the widened dy and the
// stored y, without an f32 copy of y or of dy.
#define L2NORM_BWD_RAW(SUF, TD)                                                                          \
    extern "C" __global__ void l2norm_bwd_raw_##SUF(int rows, int D, float eps, const TD* __restrict__ dy, \
                                                    const float* __restrict__ x,                         \
                                                    const float* __restrict__ norms, float* __restrict__ dx) { \
        __shared__ float scratch[32];                                                                   \
        int r = blockIdx.x;                                                                             \
        if (r >= rows) return;                                                                          \
        long long o = (long long)r * D;                                                                 \
        float nrm = norms[r];                                                                           \
        float inv = 1.0f / fmaxf(nrm, eps);                                                             \
        float dot = 0.0f;                                                                               \
        for (int k = threadIdx.x; k < D; k += blockDim.x) {                                             \
            float y = x[o + k] * inv;                                                                   \
            dot += to_f32(dy[o + k]) * y;                                                               \
        }                                                                                               \
        dot = block_sum(dot, scratch);                                                                  \
        bool through_norm = nrm > eps;                                                                  \
        for (int k = threadIdx.x; k < D; k += blockDim.x) {                                             \
            float g = to_f32(dy[o + k]);                                                                \
            if (through_norm) {                                                                         \
                float y = x[o + k] * inv;                                                               \
                g -= y * dot;                                                                           \
            }                                                                                           \
            dx[o + k] = g * inv;                                                                        \
        }                                                                                               \
    }
L2NORM_BWD_RAW(f32, float)
L2NORM_BWD_RAW(bf16, bf16_t)
L2NORM_BWD_RAW(f16, f16_t)
