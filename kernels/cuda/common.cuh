// Shared by every kernel source (prepended by the kernels crate; NVRTC sees one translation unit per
// source). No CUDA headers: 16-bit types are plain bit patterns converted with PTX cvt instructions,
// so NVRTC needs no include path. bf16 conversion needs sm_80 or newer, which the engine requires.

typedef unsigned short bf16_t_bits;
struct bf16_t { unsigned short v; };
struct f16_t { unsigned short v; };

#define FT_INF __int_as_float(0x7f800000)
#define FT_PI 3.14159265358979323846f

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __uint_as_float(((unsigned int)x.v) << 16); }
#ifdef FT_HOST_EMU  // tests/cuda_emu: the same conversions (round to nearest even) on the host
__device__ __forceinline__ float to_f32(f16_t x) { return emu_f16_to_f32(x.v); }
#else
__device__ __forceinline__ float to_f32(f16_t x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.v));
    return f;
}
#endif

template <class T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
#ifdef FT_HOST_EMU
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) { return bf16_t{emu_f32_to_bf16(x)}; }
template <> __device__ __forceinline__ f16_t from_f32<f16_t>(float x) { return f16_t{emu_f32_to_f16(x)}; }
#else
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) {
    bf16_t r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ f16_t from_f32<f16_t>(float x) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
    return r;
}
#endif

// Grid-stride loop over n elements with 64-bit indices (activations exceed 2^31 elements at batch 512).
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over a 1-D block of at most 1024 threads; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : 0.0f;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    return scratch[0];
}

// Column-chunk reductions over a [rows, C] view use blocks of (32, 8): x walks 32 channels (coalesced),
// y walks rows of one chunk; blockIdx.y is the chunk.
#define COLS_X 32
#define ROWS_Y 8

// Multi-tensor launches (optim.cu, amp.cu): one launch works on up to a table's worth of tensors, the
// table passed by value as a kernel argument (no upload, as torch's multi_tensor_apply). Block b of a
// launch covers MT_CHUNK elements of the entry k with first_block[k] <= b < first_block[k + 1]
// (engine::backend::multi_tensor::plan makes the tables). Element types are tagged per tensor (DT_*).
#define MT_CHUNK 4096
#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2

__device__ __forceinline__ float load_tagged(const void* p, int dt, long long i) {
    if (dt == DT_BF16) return to_f32(((const bf16_t*)p)[i]);
    if (dt == DT_F16) return to_f32(((const f16_t*)p)[i]);
    return ((const float*)p)[i];
}
__device__ __forceinline__ void store_tagged(void* p, int dt, long long i, float v) {
    if (dt == DT_BF16) ((bf16_t*)p)[i] = from_f32<bf16_t>(v);
    else if (dt == DT_F16) ((f16_t*)p)[i] = from_f32<f16_t>(v);
    else ((float*)p)[i] = v;
}
// The entry block `b` works on: the last k < count with first_block[k] <= b (binary search).
__device__ __forceinline__ int mt_entry(const int* first_block, int count, int b) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (first_block[mid] <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}
