// Must match engine::backend::cpu::CpuBackend::{batch_norm_forward_train, batch_norm_forward_eval,
// batch_norm_backward} and, for the fused variants, those followed by CpuBackend::prelu_forward /
// preceded by prelu_backward. Statistics are per channel (last dim) over a [rows, C] view of NHWC data.
//
// Forward (train): bn_stats_partial -> bn_stats_final -> bn_fold -> channel_affine (PReLU optional).
// Forward (eval):  bn_eval_fold -> channel_affine.
// Backward:        bn_bwd_partial -> bn_bwd_final -> bn_bwd_dx (PReLU recomputed when fused).
// Statistics merge per-thread Welford states with Chan's formula: sums of squares would cancel
// catastrophically in f32 over millions of rows.

struct Welford { float n, mean, m2; };

__device__ __forceinline__ void welford_merge(Welford& a, const Welford& b) {
    if (b.n == 0.0f) return;
    float n = a.n + b.n;
    float d = b.mean - a.mean;
    float wb = b.n / n;
    a.mean += d * wb;
    a.m2 += b.m2 + d * d * a.n * wb;
    a.n = n;
}

// Per chunk of rows: count, mean and M2 of each channel.
#define BN_STATS_PARTIAL(SUF, T)                                                                          \
    extern "C" __global__ void bn_stats_partial_##SUF(long long rows, int C, long long rows_per_chunk,    \
                                                      const T* __restrict__ x, float* __restrict__ pmean, \
                                                      float* __restrict__ pm2) {                          \
        __shared__ Welford st[ROWS_Y][COLS_X];                                                          \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                      \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                          \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                  \
        Welford w = {0.0f, 0.0f, 0.0f};                                                                 \
        if (c < C)                                                                                      \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) {                                 \
                float v = to_f32(x[r * C + c]);                                                         \
                w.n += 1.0f;                                                                            \
                float d = v - w.mean;                                                                   \
                w.mean += d / w.n;                                                                      \
                w.m2 += d * (v - w.mean);                                                               \
            }                                                                                           \
        st[threadIdx.y][threadIdx.x] = w;                                                               \
        __syncthreads();                                                                                \
        if (threadIdx.y == 0 && c < C) {                                                                \
            for (int k = 1; k < ROWS_Y; k++) welford_merge(w, st[k][threadIdx.x]);                      \
            pmean[(long long)blockIdx.y * C + c] = w.mean;                                              \
            pm2[(long long)blockIdx.y * C + c] = w.m2;                                                  \
        }                                                                                               \
    }
BN_STATS_PARTIAL(f32, float)
BN_STATS_PARTIAL(bf16, bf16_t)
BN_STATS_PARTIAL(f16, f16_t)

// Merges the chunks in f64 (chunk k holds min(rows_per_chunk, rows - k*rows_per_chunk) rows), writes
// mean, biased var and 1/sqrt(var+eps), and when running_mean is not null updates the running
// statistics as torch does: r = (1-momentum)*r + momentum*stat, with the unbiased variance.
extern "C" __global__ void bn_stats_final(int nchunks, long long rows, long long rows_per_chunk, int C,
                                          const float* __restrict__ pmean, const float* __restrict__ pm2,
                                          float eps, float momentum, float* __restrict__ mean,
                                          float* __restrict__ var, float* __restrict__ invstd,
                                          float* __restrict__ running_mean, float* __restrict__ running_var) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double n = 0.0, mu = 0.0, m2 = 0.0;
    for (int k = 0; k < nchunks; k++) {
        double nb = (double)min(rows_per_chunk, rows - (long long)k * rows_per_chunk);
        if (nb <= 0.0) break;
        double mb = pmean[(long long)k * C + c], m2b = pm2[(long long)k * C + c];
        double nn = n + nb, d = mb - mu;
        mu += d * nb / nn;
        m2 += m2b + d * d * n * nb / nn;
        n = nn;
    }
    double v = m2 / n;
    mean[c] = (float)mu;
    var[c] = (float)v;
    invstd[c] = (float)(1.0 / sqrt(v + (double)eps));
    if (running_mean != nullptr) {
        double unbiased = n > 1.0 ? m2 / (n - 1.0) : v;
        running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mu);
        running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
}

// scale = gamma * invstd, shift = beta - mean * scale (gamma/beta null when affine is off).
extern "C" __global__ void bn_fold(int C, const float* __restrict__ mean, const float* __restrict__ invstd,
                                   const float* __restrict__ gamma, const float* __restrict__ beta,
                                   float* __restrict__ scale, float* __restrict__ shift) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
    float sc = g * invstd[c];
    scale[c] = sc;
    shift[c] = b - mean[c] * sc;
}

// Eval mode: the same fold from running statistics.
extern "C" __global__ void bn_eval_fold(int C, const float* __restrict__ rmean, const float* __restrict__ rvar,
                                        const float* __restrict__ gamma, const float* __restrict__ beta, float eps,
                                        float* __restrict__ scale, float* __restrict__ shift) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
    float sc = g * rsqrtf(rvar[c] + eps);
    scale[c] = sc;
    shift[c] = b - rmean[c] * sc;
}

// y = x*scale[c] + shift[c], then PReLU with alpha[c] when alpha is not null.
#define CHANNEL_AFFINE(SUF, TI, TO)                                                                        \
    extern "C" __global__ void channel_affine_##SUF(long long n, int C, const TI* __restrict__ x,          \
                                                    const float* __restrict__ scale,                       \
                                                    const float* __restrict__ shift,                       \
                                                    const float* __restrict__ alpha, TO* __restrict__ y) { \
        GRID_STRIDE(i, n) {                                                                              \
            int c = (int)(i % C);                                                                        \
            float z = fmaf(to_f32(x[i]), scale[c], shift[c]);                                            \
            if (alpha != nullptr && z <= 0.0f) z *= alpha[c];                                            \
            y[i] = from_f32<TO>(z);                                                                      \
        }                                                                                                \
    }
CHANNEL_AFFINE(f32, float, float)
CHANNEL_AFFINE(bf16, bf16_t, bf16_t)
CHANNEL_AFFINE(f16, f16_t, f16_t)

// dz: the gradient at the batch-norm output. When alpha is set the PReLU that followed is undone here:
// z is recomputed from x, dz = dy (z > 0) or alpha*dy, and dalpha gathers dy*z over z <= 0.
__device__ __forceinline__ float bn_dz(float dy, float x, float sc, float sh, const float* alpha, int c,
                                       float* dalpha_term) {
    if (alpha == nullptr) { *dalpha_term = 0.0f; return dy; }
    float z = fmaf(x, sc, sh);
    if (z > 0.0f) { *dalpha_term = 0.0f; return dy; }
    *dalpha_term = dy * z;
    return alpha[c] * dy;
}

// Per chunk: sum dz, sum dz*xhat and (fused) sum dalpha terms.
#define BN_BWD_PARTIAL(SUF, T)                                                                               \
    extern "C" __global__ void bn_bwd_partial_##SUF(                                                         \
        long long rows, int C, long long rows_per_chunk, const T* __restrict__ dy, const T* __restrict__ x, \
        const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ scale,   \
        const float* __restrict__ shift, const float* __restrict__ alpha, float* __restrict__ p_dz,          \
        float* __restrict__ p_dzx, float* __restrict__ p_da) {                                               \
        __shared__ float acc[3][ROWS_Y][COLS_X + 1];                                                       \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                         \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                             \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                     \
        float s_dz = 0.0f, s_dzx = 0.0f, s_da = 0.0f;                                                      \
        if (c < C) {                                                                                       \
            float mu = mean[c], is = invstd[c], sc = scale[c], sh = shift[c];                              \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) {                                    \
                float xv = to_f32(x[r * C + c]), da;                                                       \
                float dz = bn_dz(to_f32(dy[r * C + c]), xv, sc, sh, alpha, c, &da);                        \
                s_dz += dz;                                                                                \
                s_dzx += dz * (xv - mu) * is;                                                              \
                s_da += da;                                                                                \
            }                                                                                              \
        }                                                                                                  \
        acc[0][threadIdx.y][threadIdx.x] = s_dz;                                                           \
        acc[1][threadIdx.y][threadIdx.x] = s_dzx;                                                          \
        acc[2][threadIdx.y][threadIdx.x] = s_da;                                                           \
        __syncthreads();                                                                                   \
        if (threadIdx.y == 0 && c < C) {                                                                   \
            for (int k = 1; k < ROWS_Y; k++) {                                                             \
                s_dz += acc[0][k][threadIdx.x];                                                            \
                s_dzx += acc[1][k][threadIdx.x];                                                           \
                s_da += acc[2][k][threadIdx.x];                                                            \
            }                                                                                              \
            long long o = (long long)blockIdx.y * C + c;                                                   \
            p_dz[o] = s_dz;                                                                                \
            p_dzx[o] = s_dzx;                                                                              \
            p_da[o] = s_da;                                                                                \
        }                                                                                                  \
    }
BN_BWD_PARTIAL(f32, float)
BN_BWD_PARTIAL(bf16, bf16_t)
BN_BWD_PARTIAL(f16, f16_t)

// dbeta = sum dz, dgamma = sum dz*xhat, dalpha = sum of the PReLU terms (dalpha may be null).
extern "C" __global__ void bn_bwd_final(int nchunks, int C, const float* __restrict__ p_dz,
                                        const float* __restrict__ p_dzx, const float* __restrict__ p_da,
                                        float* __restrict__ dbeta, float* __restrict__ dgamma,
                                        float* __restrict__ dalpha) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a = 0.0, b = 0.0, d = 0.0;
    for (int k = 0; k < nchunks; k++) {
        long long o = (long long)k * C + c;
        a += p_dz[o];
        b += p_dzx[o];
        d += p_da[o];
    }
    dbeta[c] = (float)a;
    dgamma[c] = (float)b;
    if (dalpha != nullptr) dalpha[c] = (float)d;
}

// dx = gamma*invstd/N * (N*dz - sum dz - xhat * sum dz*xhat).
#define BN_BWD_DX(SUF, T)                                                                                    \
    extern "C" __global__ void bn_bwd_dx_##SUF(                                                              \
        long long n, int C, long long rows, const T* __restrict__ dy, const T* __restrict__ x,               \
        const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ gamma,   \
        const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ alpha,   \
        const float* __restrict__ sum_dz, const float* __restrict__ sum_dzx, T* __restrict__ dx) {          \
        float inv_n = 1.0f / (float)rows;                                                                    \
        GRID_STRIDE(i, n) {                                                                                  \
            int c = (int)(i % C);                                                                            \
            float xv = to_f32(x[i]), da;                                                                     \
            float dz = bn_dz(to_f32(dy[i]), xv, scale[c], shift[c], alpha, c, &da);                          \
            float is = invstd[c], g = gamma ? gamma[c] : 1.0f;                                               \
            float xhat = (xv - mean[c]) * is;                                                                \
            dx[i] = from_f32<T>(g * is * (dz - sum_dz[c] * inv_n - xhat * sum_dzx[c] * inv_n));             \
        }                                                                                                    \
    }
BN_BWD_DX(f32, float)
BN_BWD_DX(bf16, bf16_t)
BN_BWD_DX(f16, f16_t)
