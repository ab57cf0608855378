// Mixed precision support; must match engine::backend::cpu::amp::first_nonfinite (any element of the
// tensor is NaN or +-inf). flag is this tensor's int, which the host zeroes before a step; any non-finite
// element sets it to 1 (concurrent stores of the same value need no atomics).

#define NONFINITE(SUF, T)                                                                             \
    extern "C" __global__ void nonfinite_##SUF(long long n, const T* __restrict__ x,                 \
                                               int* __restrict__ flag) {                             \
        bool bad = false;                                                                           \
        GRID_STRIDE(i, n) { bad |= !isfinite(to_f32(x[i])); }                                       \
        if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *flag = 1;                     \
    }
NONFINITE(f32, float)
NONFINITE(bf16, bf16_t)
NONFINITE(f16, f16_t)
