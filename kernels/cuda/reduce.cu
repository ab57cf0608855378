// Must match engine::backend::cpu::CpuBackend::{sum_rows, sum_all}. Both are two-stage and use a fixed
// grid, so results are deterministic run to run (no atomics); partials are summed in f64.

// Stage 1 of sum_rows over a [rows, C] view: partial[chunk, c] = sum of the chunk's rows.
#define SUM_ROWS_PARTIAL(SUF, T)                                                                          \
    extern "C" __global__ void sum_rows_partial_##SUF(long long rows, int C, long long rows_per_chunk,    \
                                                      const T* __restrict__ x, float* __restrict__ part) { \
        __shared__ float acc[ROWS_Y][COLS_X + 1];                                                       \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                      \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                          \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                  \
        float s = 0.0f;                                                                                 \
        if (c < C)                                                                                      \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) s += to_f32(x[r * C + c]);        \
        acc[threadIdx.y][threadIdx.x] = s;                                                              \
        __syncthreads();                                                                                \
        if (threadIdx.y == 0 && c < C) {                                                                \
            for (int k = 1; k < ROWS_Y; k++) s += acc[k][threadIdx.x];                                  \
            part[(long long)blockIdx.y * C + c] = s;                                                    \
        }                                                                                               \
    }
SUM_ROWS_PARTIAL(f32, float)
SUM_ROWS_PARTIAL(bf16, bf16_t)
SUM_ROWS_PARTIAL(f16, f16_t)

// Stage 2: out[c] = sum over chunks (one thread per channel).
extern "C" __global__ void sum_rows_final_f32(int nchunks, int C, const float* __restrict__ part,
                                              float* __restrict__ out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s = 0.0;
    for (int k = 0; k < nchunks; k++) s += part[(long long)k * C + c];
    out[c] = (float)s;
}

// Stage 1 of sum_all: one f64 partial per block (blockDim.x must be 256).
extern "C" __global__ void sum_all_partial_f32(long long n, const float* __restrict__ x, double* __restrict__ part) {
    __shared__ double scratch[32];
    double s = 0.0;
    GRID_STRIDE(i, n) { s += x[i]; }
    s = warp_sum_d(s);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = (lane < (int)(blockDim.x >> 5)) ? scratch[lane] : 0.0;
        s = warp_sum_d(s);
        if (lane == 0) part[blockIdx.x] = s;
    }
}

// Stage 2: one block of 32 threads sums the partials in a fixed order.
extern "C" __global__ void sum_all_final_f32(int nparts, const double* __restrict__ part, float* __restrict__ out) {
    double s = 0.0;
    for (int k = threadIdx.x; k < nparts; k += 32) s += part[k];
    s = warp_sum_d(s);
    if (threadIdx.x == 0) out[0] = (float)s;
}
