// Must match engine::backend::cpu::elementwise::{binary, unary} and CpuBackend::affine (f32), plus the
// dtype casts of engine::tensor::CpuStorage::cast (round to nearest even) and residual adds in bf16/f16.
// Op codes follow the order of engine::backend::{BinaryOp, UnaryOp}. The broadcasts below must match
// engine::backend::cpu::CpuBackend::{add_channels, mul_channels, scale_rows} (channels::per_channel and
// channels::scale_rows): one f32 operation per element, so results agree exactly.

extern "C" __global__ void binary_f32(int op, long long n, const float* __restrict__ a,
                                      const float* __restrict__ b, float* __restrict__ out) {
    GRID_STRIDE(i, n) {
        float x = a[i], y = b[i], r;
        switch (op) {
            case 0: r = x + y; break;
            case 1: r = x - y; break;
            case 2: r = x * y; break;
            default: r = x / y; break;
        }
        out[i] = r;
    }
}

extern "C" __global__ void unary_f32(int op, long long n, const float* __restrict__ a, float* __restrict__ out) {
    GRID_STRIDE(i, n) {
        float x = a[i], r;
        switch (op) {
            case 0: r = -x; break;
            case 1: r = expf(x); break;
            case 2: r = logf(x); break;
            case 3: r = sqrtf(x); break;
            case 4: r = x * x; break;
            default: r = 1.0f / x; break;
        }
        out[i] = r;
    }
}

extern "C" __global__ void affine_f32(long long n, float alpha, float beta, const float* __restrict__ a,
                                      float* __restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = fmaf(alpha, a[i], beta); }
}

extern "C" __global__ void fill_f32(long long n, float v, float* __restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = v; }
}

// out = a + b in the activation dtype, summed in f32 (the residual connection of IResNet blocks).
#define RESIDUAL_ADD(SUF, T)                                                                       \
    extern "C" __global__ void residual_add_##SUF(long long n, const T* __restrict__ a,           \
                                                  const T* __restrict__ b, T* __restrict__ out) { \
        GRID_STRIDE(i, n) { out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i])); }                  \
    }
RESIDUAL_ADD(f32, float)
RESIDUAL_ADD(bf16, bf16_t)
RESIDUAL_ADD(f16, f16_t)

#define CAST(NAME, TI, TO)                                                                              \
    extern "C" __global__ void NAME(long long n, const TI* __restrict__ a, TO* __restrict__ out) {     \
        GRID_STRIDE(i, n) { out[i] = from_f32<TO>(to_f32(a[i])); }                                     \
    }
CAST(cast_f32_bf16, float, bf16_t)
CAST(cast_f32_f16, float, f16_t)
CAST(cast_bf16_f32, bf16_t, float)
CAST(cast_f16_f32, f16_t, float)

// y[r, c] = x[r, c] + v[c] (op 0) or x[r, c] * v[c] (op 1) over the last dim of C channels (bias, per-channel
// scale). The index split costs one integer division per element; these are not on the conv hot path.
extern "C" __global__ void per_channel_f32(int op, long long n, int C, const float* __restrict__ x,
                                           const float* __restrict__ v, float* __restrict__ out) {
    GRID_STRIDE(i, n) {
        float b = v[i % C];
        out[i] = op == 0 ? x[i] + b : x[i] * b;
    }
}

// y[r, k] = x[r, k] * s[r] for rows of `cols` elements (per-sample scaling).
extern "C" __global__ void scale_rows_f32(long long n, long long cols, const float* __restrict__ x,
                                          const float* __restrict__ s, float* __restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = x[i] * s[i / cols]; }
}
