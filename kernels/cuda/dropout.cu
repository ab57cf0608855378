// Must match engine::backend::cpu::CpuBackend::dropout in distribution (inverted dropout: mask is 0 or
// 1/(1-p)); the bits match engine::backend::dropout_keep, the host mirror of this counter-based
// draw, so a mask can be checked exactly. Element i is kept when u(seed, i) >= p, where u is the top 24
// bits of a splitmix64 hash of (seed, i): no state, any launch shape gives the same mask.

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float uniform24(unsigned long long seed, unsigned long long i) {
    return (float)(mix64(seed ^ mix64(i)) >> 40) * (1.0f / 16777216.0f);
}

#define DROPOUT(SUF, T)                                                                                  \
    extern "C" __global__ void dropout_##SUF(long long n, float p, unsigned long long seed,             \
                                             const T* __restrict__ x, T* __restrict__ y,                \
                                             float* __restrict__ mask) {                                \
        float scale = 1.0f / (1.0f - p);                                                               \
        GRID_STRIDE(i, n) {                                                                            \
            float m = uniform24(seed, (unsigned long long)i) >= p ? scale : 0.0f;                      \
            mask[i] = m;                                                                               \
            y[i] = from_f32<T>(to_f32(x[i]) * m);                                                      \
        }                                                                                              \
    }
DROPOUT(f32, float)
DROPOUT(bf16, bf16_t)
DROPOUT(f16, f16_t)
