// Must match engine::backend::cpu::CpuBackend::{prelu_forward, prelu_backward}: y = x (x > 0) else
// alpha[c]*x over the last dim. dalpha = sum over rows of dy*x where x <= 0 (prelu_dalpha_partial, then
// reduce.cu's sum_rows_final_f32).

#define PRELU_FWD(SUF, T)                                                                             \
    extern "C" __global__ void prelu_fwd_##SUF(long long n, int C, const T* __restrict__ x,          \
                                               const float* __restrict__ alpha, T* __restrict__ y) { \
        GRID_STRIDE(i, n) {                                                                         \
            float v = to_f32(x[i]);                                                                 \
            y[i] = from_f32<T>(v > 0.0f ? v : alpha[(int)(i % C)] * v);                             \
        }                                                                                           \
    }
PRELU_FWD(f32, float)
PRELU_FWD(bf16, bf16_t)
PRELU_FWD(f16, f16_t)

#define PRELU_BWD_DX(SUF, T)                                                                           \
    extern "C" __global__ void prelu_bwd_dx_##SUF(long long n, int C, const T* __restrict__ dy,       \
                                                  const T* __restrict__ x,                             \
                                                  const float* __restrict__ alpha, T* __restrict__ dx) { \
        GRID_STRIDE(i, n) {                                                                          \
            float g = to_f32(dy[i]);                                                                 \
            dx[i] = from_f32<T>(to_f32(x[i]) > 0.0f ? g : alpha[(int)(i % C)] * g);                  \
        }                                                                                            \
    }
PRELU_BWD_DX(f32, float)
PRELU_BWD_DX(bf16, bf16_t)
PRELU_BWD_DX(f16, f16_t)

#define PRELU_DALPHA_PARTIAL(SUF, T)                                                                       \
    extern "C" __global__ void prelu_dalpha_partial_##SUF(long long rows, int C, long long rows_per_chunk, \
                                                          const T* __restrict__ dy, const T* __restrict__ x, \
                                                          float* __restrict__ part) {                     \
        __shared__ float acc[ROWS_Y][COLS_X + 1];                                                        \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                       \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                           \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                   \
        float s = 0.0f;                                                                                  \
        if (c < C)                                                                                       \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) {                                  \
                float v = to_f32(x[r * C + c]);                                                          \
                if (v <= 0.0f) s += to_f32(dy[r * C + c]) * v;                                           \
            }                                                                                            \
        acc[threadIdx.y][threadIdx.x] = s;                                                               \
        __syncthreads();                                                                                 \
        if (threadIdx.y == 0 && c < C) {                                                                 \
            for (int k = 1; k < ROWS_Y; k++) s += acc[k][threadIdx.x];                                   \
            part[(long long)blockIdx.y * C + c] = s;                                                     \
        }                                                                                                \
    }
PRELU_DALPHA_PARTIAL(f32, float)
PRELU_DALPHA_PARTIAL(bf16, bf16_t)
PRELU_DALPHA_PARTIAL(f16, f16_t)
