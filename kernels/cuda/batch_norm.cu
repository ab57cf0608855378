// Must match engine::backend::cpu::CpuBackend::{batch_norm_forward_train, batch_norm_forward_eval,
// batch_norm_backward, batch_norm_add_forward_train} and, for the fused variants, those followed by
// CpuBackend::prelu_forward / preceded by prelu_backward. Statistics are per channel (last dim) over a
// [rows, C] view of NHWC data; arithmetic is f32 (merges f64) whatever the stored type.
//
// Forward (train): bn_stats -> bn_apply (PReLU, and a residual shortcut with or without its own batch
//                  norm, optional). bn_stats merges its chunks in the block that finishes last, which also
//                  updates the running statistics and folds gamma/beta: one launch per batch norm.
//                  bn_apply_stats also gathers the statistics of its output, so the batch norm that reads
//                  it next (the next block's first) starts from them (bn_stats_finish) without a pass;
//                  without PReLU that finish and the apply are one launch (bn_finish_apply).
// Forward (eval):  bn_eval_fold -> bn_apply.
// Backward:        bn_bwd_reduce (the last block finishes the sums) -> bn_bwd_dx (the PReLU input is
//                  recomputed when fused; a shortcut's gradient is added in the same pass).
//                  bn_bwd_dx_reduce also gathers the sums of the batch norms that wrote its input (the
//                  previous block's bn3 and shortcut batch norm, or the stem's), which then need only their
//                  dx pass: bn_bwd_dx, or bn_bwd_dx_pair for the two of a block that share one gradient.
// Statistics merge per-thread Welford states with Chan's formula: sums of squares would cancel
// catastrophically in f32 over millions of rows.
//
// The last-block pattern: each block writes its chunk's partials, fences, and takes a ticket from
// counters[blockIdx.x] (one counter per column block); the block with the last ticket reads every chunk's
// partials in chunk order (the same order whatever the schedule: deterministic) and resets the counter to
// zero for the next launch (the host zeroes the counters once).

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

// True in the block that took the last ticket of its column block (all threads see it).
__device__ __forceinline__ bool last_of_column(unsigned int* counters) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0) {
        unsigned int t = atomicAdd(&counters[blockIdx.x], 1u);
        last = (t == gridDim.y - 1);
        if (last) counters[blockIdx.x] = 0u;
    }
    __syncthreads();
    return last;
}

// Welford state of one thread over rows r0+threadIdx.y, r0+threadIdx.y+ROWS_Y, ... of channel c.
__device__ __forceinline__ void welford_add(Welford& w, float v) {
    w.n += 1.0f;
    float d = v - w.mean;
    w.mean += d / w.n;
    w.m2 += d * (v - w.mean);
}

// The chunk's merged state goes to the partials; the last block of the column merges every chunk in f64
// (chunk k holds min(rows_per_chunk, rows - k*rows_per_chunk) rows) and returns true in the threads that
// then hold channel c's count, mean and M2. Every thread of the block must call it.
__device__ __forceinline__ bool welford_columns(Welford w, long long rows, int C, long long rows_per_chunk,
                                                float* pmean, float* pm2, unsigned int* counters, int c,
                                                double* n_out, double* mu_out, double* m2_out) {
    __shared__ Welford st[ROWS_Y][COLS_X];
    st[threadIdx.y][threadIdx.x] = w;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int k = 1; k < ROWS_Y; k++) welford_merge(w, st[k][threadIdx.x]);
        pmean[(long long)blockIdx.y * C + c] = w.mean;
        pm2[(long long)blockIdx.y * C + c] = w.m2;
    }
    if (!last_of_column(counters) || threadIdx.y != 0 || c >= C) return false;
    const volatile float* vm = pmean;
    const volatile float* v2 = pm2;
    double n = 0.0, mu = 0.0, m2 = 0.0;
    for (int k = 0; k < (int)gridDim.y; k++) {
        double nb = (double)min(rows_per_chunk, rows - (long long)k * rows_per_chunk);
        if (nb <= 0.0) break;
        double mb = vm[(long long)k * C + c], m2b = v2[(long long)k * C + c];
        double nn = n + nb, d = mb - mu;
        mu += d * nb / nn;
        m2 += m2b + d * d * n * nb / nn;
        n = nn;
    }
    *n_out = n;
    *mu_out = mu;
    *m2_out = m2;
    return true;
}

// From channel c's count, mean and M2: mean, biased var, 1/sqrt(var+eps), scale = gamma*invstd and
// shift = beta - mean*scale (gamma/beta null: affine off) and, when rm_in is not null, the running
// statistics as torch updates them, (1-momentum)*r + momentum*stat with the unbiased variance.
// Channel c's biased variance, 1/std and the fold of gamma/beta (y = x*sc + sh) from its count, mean and M2.
struct BnFold { double v; float is, sc, sh; };
__device__ __forceinline__ BnFold bn_fold_moments(int c, double n, double mu, double m2, float eps,
                                                  const float* gamma, const float* beta) {
    BnFold f;
    f.v = m2 / n;
    f.is = (float)(1.0 / sqrt(f.v + (double)eps));
    float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
    f.sc = g * f.is;
    f.sh = b - (float)mu * f.sc;
    return f;
}

__device__ __forceinline__ void bn_finish(int c, double n, double mu, double m2, float eps, float momentum,
                                          const float* gamma, const float* beta, const float* rm_in,
                                          const float* rv_in, float* mean, float* var, float* invstd,
                                          float* scale, float* shift, float* rm_out, float* rv_out) {
    BnFold f = bn_fold_moments(c, n, mu, m2, eps, gamma, beta);
    double v = f.v;
    mean[c] = (float)mu;
    var[c] = (float)v;
    invstd[c] = f.is;
    scale[c] = f.sc;
    shift[c] = f.sh;
    if (rm_in != nullptr) {
        double unbiased = n > 1.0 ? m2 / (n - 1.0) : v;
        rm_out[c] = (float)((1.0 - momentum) * rm_in[c] + momentum * mu);
        rv_out[c] = (float)((1.0 - momentum) * rv_in[c] + momentum * unbiased);
    }
}

// One pass of statistics per batch norm: per chunk of rows the count, mean and M2 of each channel, merged
// by the column's last block, which finishes the channel (bn_finish).
#define BN_STATS(SUF, T)                                                                                  \
    extern "C" __global__ void bn_stats_##SUF(                                                            \
        long long rows, int C, long long rows_per_chunk, const T* __restrict__ x, float* pmean, float* pm2, \
        unsigned int* counters, float eps, float momentum, const float* __restrict__ gamma,               \
        const float* __restrict__ beta, const float* __restrict__ rm_in, const float* __restrict__ rv_in, \
        float* __restrict__ mean, float* __restrict__ var, float* __restrict__ invstd,                    \
        float* __restrict__ scale, float* __restrict__ shift, float* __restrict__ rm_out,                 \
        float* __restrict__ rv_out) {                                                                     \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                      \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                          \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                  \
        Welford w = {0.0f, 0.0f, 0.0f};                                                                 \
        if (c < C)                                                                                      \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) welford_add(w, to_f32(x[r * C + c])); \
        double n, mu, m2;                                                                               \
        if (!welford_columns(w, rows, C, rows_per_chunk, pmean, pm2, counters, c, &n, &mu, &m2)) return; \
        bn_finish(c, n, mu, m2, eps, momentum, gamma, beta, rm_in, rv_in, mean, var, invstd, scale, shift, \
                  rm_out, rv_out);                                                                      \
    }
BN_STATS(f32, float)
BN_STATS(bf16, bf16_t)
BN_STATS(f16, f16_t)

// A batch norm of a tensor whose producer already gathered its statistics (bn_apply_stats): finishes
// each channel from the stored count, mean and M2, as bn_stats would have from the tensor.
extern "C" __global__ void bn_stats_finish(int C, double n, const double* __restrict__ smean,
                                           const double* __restrict__ sm2, float eps, float momentum,
                                           const float* __restrict__ gamma, const float* __restrict__ beta,
                                           const float* __restrict__ rm_in, const float* __restrict__ rv_in,
                                           float* __restrict__ mean, float* __restrict__ var,
                                           float* __restrict__ invstd, float* __restrict__ scale,
                                           float* __restrict__ shift, float* __restrict__ rm_out,
                                           float* __restrict__ rv_out) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    bn_finish(c, n, smean[c], sm2[c], eps, momentum, gamma, beta, rm_in, rv_in, mean, var, invstd, scale, shift,
              rm_out, rv_out);
}

// bn_stats_finish (the same parameters first) and bn_apply (no PReLU, no shortcut) in one launch, for
// C <= BN_FINISH_APPLY_MAX: every block folds every channel from the gathered moments into shared memory
// (the same bits each time), block 0 also stores what bn_stats_finish stores, and the elements are
// applied as bn_apply applies them.
#define BN_FINISH_APPLY_MAX 1024
#define BN_FINISH_APPLY(SUF, T)                                                                              \
    extern "C" __global__ void bn_finish_apply_##SUF(                                                        \
        int C, double rows, const double* __restrict__ smean, const double* __restrict__ sm2, float eps,      \
        float momentum, const float* __restrict__ gamma, const float* __restrict__ beta,                     \
        const float* __restrict__ rm_in, const float* __restrict__ rv_in, float* __restrict__ mean,          \
        float* __restrict__ var, float* __restrict__ invstd, float* __restrict__ scale,                      \
        float* __restrict__ shift, float* __restrict__ rm_out, float* __restrict__ rv_out, long long n,      \
        const T* __restrict__ x, T* __restrict__ y) {                                                        \
        __shared__ float ssc[BN_FINISH_APPLY_MAX], ssh[BN_FINISH_APPLY_MAX];                                 \
        for (int c = threadIdx.x; c < C; c += blockDim.x) {                                                  \
            if (blockIdx.x == 0)                                                                             \
                bn_finish(c, rows, smean[c], sm2[c], eps, momentum, gamma, beta, rm_in, rv_in, mean, var,    \
                          invstd, scale, shift, rm_out, rv_out);                                             \
            BnFold f = bn_fold_moments(c, rows, smean[c], sm2[c], eps, gamma, beta);                         \
            ssc[c] = f.sc;                                                                                   \
            ssh[c] = f.sh;                                                                                   \
        }                                                                                                    \
        __syncthreads();                                                                                     \
        GRID_STRIDE(i, n) {                                                                                  \
            int c = (int)(i % C);                                                                            \
            y[i] = from_f32<T>(fmaf(to_f32(x[i]), ssc[c], ssh[c]));                                          \
        }                                                                                                    \
    }
BN_FINISH_APPLY(f32, float)
BN_FINISH_APPLY(bf16, bf16_t)
BN_FINISH_APPLY(f16, f16_t)

// Eval mode: scale and shift from the running statistics.
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

// y = x*scale[c] + shift[c]; then PReLU with alpha[c] when alpha is not null; then + the shortcut res when
// not null, itself normalized (res*r_scale[c] + r_shift[c]) when r_scale is not null. f32 throughout,
// rounded once to the output type.
#define BN_APPLY(SUF, T)                                                                                    \
    extern "C" __global__ void bn_apply_##SUF(long long n, int C, const T* __restrict__ x,                  \
                                              const float* __restrict__ scale, const float* __restrict__ shift, \
                                              const float* __restrict__ alpha, const T* __restrict__ res,    \
                                              const float* __restrict__ r_scale,                             \
                                              const float* __restrict__ r_shift, T* __restrict__ y) {        \
        GRID_STRIDE(i, n) {                                                                                \
            int c = (int)(i % C);                                                                          \
            float z = fmaf(to_f32(x[i]), scale[c], shift[c]);                                              \
            if (alpha != nullptr && z <= 0.0f) z *= alpha[c];                                              \
            if (res != nullptr) {                                                                          \
                float r = to_f32(res[i]);                                                                  \
                if (r_scale != nullptr) r = fmaf(r, r_scale[c], r_shift[c]);                               \
                z += r;                                                                                    \
            }                                                                                              \
            y[i] = from_f32<T>(z);                                                                         \
        }                                                                                                  \
    }
BN_APPLY(f32, float)
BN_APPLY(bf16, bf16_t)
BN_APPLY(f16, f16_t)

// bn_apply in bn_stats's geometry, gathering the statistics of the stored output as it goes (the same
// chunks, order and merge as bn_stats over y, so the same bits): the column's last block writes each
// channel's mean and M2 (f64) to smean/sm2 for a batch norm of y (bn_stats_finish) to start from.
#define BN_APPLY_STATS(SUF, T)                                                                              \
    extern "C" __global__ void bn_apply_stats_##SUF(                                                        \
        long long rows, int C, long long rows_per_chunk, const T* __restrict__ x,                           \
        const float* __restrict__ scale, const float* __restrict__ shift, const float* __restrict__ alpha,  \
        const T* __restrict__ res, const float* __restrict__ r_scale, const float* __restrict__ r_shift,   \
        T* __restrict__ y, float* pmean, float* pm2, unsigned int* counters, double* __restrict__ smean,    \
        double* __restrict__ sm2) {                                                                         \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                        \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                            \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                    \
        Welford w = {0.0f, 0.0f, 0.0f};                                                                   \
        if (c < C) {                                                                                      \
            float sc = scale[c], sh = shift[c];                                                           \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) {                                   \
                long long i = r * C + c;                                                                  \
                float z = fmaf(to_f32(x[i]), sc, sh);                                                     \
                if (alpha != nullptr && z <= 0.0f) z *= alpha[c];                                        \
                if (res != nullptr) {                                                                     \
                    float rv = to_f32(res[i]);                                                            \
                    if (r_scale != nullptr) rv = fmaf(rv, r_scale[c], r_shift[c]);                        \
                    z += rv;                                                                              \
                }                                                                                         \
                T out = from_f32<T>(z);                                                                   \
                y[i] = out;                                                                               \
                welford_add(w, to_f32(out));                                                              \
            }                                                                                             \
        }                                                                                                 \
        double n, mu, m2;                                                                                 \
        if (!welford_columns(w, rows, C, rows_per_chunk, pmean, pm2, counters, c, &n, &mu, &m2)) return;   \
        smean[c] = mu;                                                                                    \
        sm2[c] = m2;                                                                                      \
    }
BN_APPLY_STATS(f32, float)
BN_APPLY_STATS(bf16, bf16_t)
BN_APPLY_STATS(f16, f16_t)

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

// The forward's scale and shift of channel c (for the PReLU input), from mean, invstd, gamma and beta.
__device__ __forceinline__ void bn_fold_of(int c, const float* mean, const float* invstd, const float* gamma,
                                           const float* beta, float* sc, float* sh) {
    float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
    *sc = g * invstd[c];
    *sh = b - mean[c] * *sc;
}

// The last block of a column: the chunks' partial sums added in f64, in chunk order, into dbeta = sum dz,
// dgamma = sum dz*xhat and (when not null) dalpha.
__device__ __forceinline__ void bn_bwd_sums_finish(int c, int C, const float* p_dz, const float* p_dzx,
                                                   const float* p_da, float* dbeta, float* dgamma, float* dalpha) {
    const volatile float* va = p_dz;
    const volatile float* vb = p_dzx;
    const volatile float* vd = p_da;
    double a = 0.0, b = 0.0, d = 0.0;
    for (int k = 0; k < (int)gridDim.y; k++) {
        long long o = (long long)k * C + c;
        a += va[o];
        b += vb[o];
        d += vd[o];
    }
    dbeta[c] = (float)a;
    dgamma[c] = (float)b;
    if (dalpha != nullptr) dalpha[c] = (float)d;
}

// Per chunk: sum dz, sum dz*xhat and (fused) sum dalpha terms; the last block of a column adds the
// chunks in f64 and writes dbeta = sum dz, dgamma = sum dz*xhat and dalpha (null when not fused).
#define BN_BWD_REDUCE(SUF, T)                                                                                \
    extern "C" __global__ void bn_bwd_reduce_##SUF(                                                          \
        long long rows, int C, long long rows_per_chunk, const T* __restrict__ dy, const T* __restrict__ x, \
        const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ gamma,   \
        const float* __restrict__ beta, const float* __restrict__ alpha, float* p_dz, float* p_dzx,          \
        float* p_da, unsigned int* counters, float* __restrict__ dbeta, float* __restrict__ dgamma,          \
        float* __restrict__ dalpha) {                                                                        \
        __shared__ float acc[3][ROWS_Y][COLS_X + 1];                                                       \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                         \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                             \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                     \
        float s_dz = 0.0f, s_dzx = 0.0f, s_da = 0.0f;                                                      \
        if (c < C) {                                                                                       \
            float mu = mean[c], is = invstd[c], sc = 0.0f, sh = 0.0f;                                      \
            if (alpha != nullptr) bn_fold_of(c, mean, invstd, gamma, beta, &sc, &sh);                      \
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
        if (!last_of_column(counters) || threadIdx.y != 0 || c >= C) return;                               \
        bn_bwd_sums_finish(c, C, p_dz, p_dzx, p_da, dbeta, dgamma, dalpha);                                \
    }
BN_BWD_REDUCE(f32, float)
BN_BWD_REDUCE(bf16, bf16_t)
BN_BWD_REDUCE(f16, f16_t)

// dx = gamma*invstd/N * (N*dz - sum dz - xhat * sum dz*xhat) of one element, in f32 (dz from dy as
// bn_dz gives it); bn_bwd_dx and bn_bwd_dx_pair share it, so their values are the same bits.
__device__ __forceinline__ float bn_dx_of(float dyv, float xv, int c, const float* mean, const float* invstd,
                                          const float* gamma, const float* beta, const float* alpha,
                                          const float* sum_dz, const float* sum_dzx, float inv_n) {
    float sc = 0.0f, sh = 0.0f;
    if (alpha != nullptr) bn_fold_of(c, mean, invstd, gamma, beta, &sc, &sh);
    float da;
    float dz = bn_dz(dyv, xv, sc, sh, alpha, c, &da);
    float is = invstd[c], g = gamma ? gamma[c] : 1.0f;
    float xhat = (xv - mean[c]) * is;
    return g * is * (dz - sum_dz[c] * inv_n - xhat * sum_dzx[c] * inv_n);
}

// bn_dx_of plus res (the gradient the input already has from a shortcut) when not null; rounded once.
#define BN_BWD_DX(SUF, T)                                                                                    \
    extern "C" __global__ void bn_bwd_dx_##SUF(                                                              \
        long long n, int C, long long rows, const T* __restrict__ dy, const T* __restrict__ x,               \
        const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ gamma,   \
        const float* __restrict__ beta, const float* __restrict__ alpha, const float* __restrict__ sum_dz,   \
        const float* __restrict__ sum_dzx, const T* __restrict__ res, T* __restrict__ dx) {                 \
        float inv_n = 1.0f / (float)rows;                                                                    \
        GRID_STRIDE(i, n) {                                                                                  \
            int c = (int)(i % C);                                                                            \
            float v = bn_dx_of(to_f32(dy[i]), to_f32(x[i]), c, mean, invstd, gamma, beta, alpha, sum_dz,    \
                               sum_dzx, inv_n);                                                              \
            if (res != nullptr) v += to_f32(res[i]);                                                         \
            dx[i] = from_f32<T>(v);                                                                          \
        }                                                                                                    \
    }
BN_BWD_DX(f32, float)
BN_BWD_DX(bf16, bf16_t)
BN_BWD_DX(f16, f16_t)

// A batch norm upstream of this dx pass: the gradient at its output is exactly the dx written here (the
// previous block's bn3 and its shortcut's batch norm, or the stem's batch norm + PReLU, whose output only
// the next block's first batch norm reads after everything else). Its reduce is gathered from the values
// as stored, in bn_bwd_reduce's geometry and order, so the sums are the bits bn_bwd_reduce would give.
struct BnUp {
    const void* x;  // the upstream batch norm's input, of this pass's element type
    const float* mean;
    const float* invstd;
    const float* gamma;
    const float* beta;
    const float* alpha;  // its PReLU, or null
    float* p_dz;
    float* p_dzx;
    float* p_da;
    float* dbeta;
    float* dgamma;
    float* dalpha;  // null without PReLU
};

// bn_bwd_dx in bn_bwd_reduce's geometry, gathering the reduce of n_up (1 or 2) upstream batch norms.
#define BN_BWD_DX_REDUCE(SUF, T)                                                                                \
    extern "C" __global__ void bn_bwd_dx_reduce_##SUF(                                                          \
        long long rows, int C, long long rows_per_chunk, const T* __restrict__ dy, const T* __restrict__ x,    \
        const float* __restrict__ mean, const float* __restrict__ invstd, const float* __restrict__ gamma,      \
        const float* __restrict__ sum_dz, const float* __restrict__ sum_dzx, const T* __restrict__ res,        \
        T* __restrict__ dx, unsigned int* counters, int n_up, BnUp u0, BnUp u1) {                               \
        __shared__ float acc[6][ROWS_Y][COLS_X + 1];                                                          \
        int c = blockIdx.x * COLS_X + threadIdx.x;                                                            \
        long long r0 = (long long)blockIdx.y * rows_per_chunk;                                                \
        long long r1 = min(rows, r0 + rows_per_chunk);                                                        \
        BnUp up[2] = {u0, u1};                                                                                \
        float s[2][3] = {{0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f}};                                             \
        if (c < C) {                                                                                          \
            float inv_n = 1.0f / (float)rows;                                                                 \
            float mu = mean[c], is = invstd[c], g = gamma ? gamma[c] : 1.0f;                                  \
            float sdz = sum_dz[c], sdzx = sum_dzx[c];                                                         \
            float umu[2], uis[2], usc[2] = {0.0f, 0.0f}, ush[2] = {0.0f, 0.0f};                               \
            _Pragma("unroll") for (int u = 0; u < 2; u++) {                                                \
                if (u >= n_up) break;                                                                         \
                umu[u] = up[u].mean[c];                                                                       \
                uis[u] = up[u].invstd[c];                                                                     \
                if (up[u].alpha != nullptr)                                                                   \
                    bn_fold_of(c, up[u].mean, up[u].invstd, up[u].gamma, up[u].beta, &usc[u], &ush[u]);       \
            }                                                                                                 \
            for (long long r = r0 + threadIdx.y; r < r1; r += ROWS_Y) {                                       \
                long long i = r * C + c;                                                                      \
                float xv = to_f32(x[i]);                                                                      \
                float xhat = (xv - mu) * is;                                                                  \
                float v = g * is * (to_f32(dy[i]) - sdz * inv_n - xhat * sdzx * inv_n);                       \
                if (res != nullptr) v += to_f32(res[i]);                                                      \
                T out = from_f32<T>(v);                                                                       \
                dx[i] = out;                                                                                  \
                float o = to_f32(out);                                                                        \
                _Pragma("unroll") for (int u = 0; u < 2; u++) {                                            \
                    if (u >= n_up) break;                                                                     \
                    float xu = to_f32(((const T*)up[u].x)[i]), da;                                            \
                    float dz = bn_dz(o, xu, usc[u], ush[u], up[u].alpha, c, &da);                             \
                    s[u][0] += dz;                                                                            \
                    s[u][1] += dz * (xu - umu[u]) * uis[u];                                                   \
                    s[u][2] += da;                                                                            \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        _Pragma("unroll") for (int u = 0; u < 2; u++)                                                       \
            _Pragma("unroll") for (int q = 0; q < 3; q++) acc[u * 3 + q][threadIdx.y][threadIdx.x] = s[u][q];                   \
        __syncthreads();                                                                                      \
        if (threadIdx.y == 0 && c < C) {                                                                      \
            _Pragma("unroll") for (int u = 0; u < 2; u++) {                                                \
                if (u >= n_up) break;                                                                         \
                for (int k = 1; k < ROWS_Y; k++)                                                              \
                    _Pragma("unroll") for (int q = 0; q < 3; q++) s[u][q] += acc[u * 3 + q][k][threadIdx.x];                    \
                long long o = (long long)blockIdx.y * C + c;                                                  \
                up[u].p_dz[o] = s[u][0];                                                                      \
                up[u].p_dzx[o] = s[u][1];                                                                     \
                up[u].p_da[o] = s[u][2];                                                                      \
            }                                                                                                 \
        }                                                                                                     \
        if (!last_of_column(counters) || threadIdx.y != 0 || c >= C) return;                                  \
        _Pragma("unroll") for (int u = 0; u < 2; u++) {                                                    \
            if (u >= n_up) break;                                                                             \
            bn_bwd_sums_finish(c, C, up[u].p_dz, up[u].p_dzx, up[u].p_da, up[u].dbeta, up[u].dgamma,          \
                               up[u].dalpha);                                                                 \
        }                                                                                                     \
    }
BN_BWD_DX_REDUCE(f32, float)
BN_BWD_DX_REDUCE(bf16, bf16_t)
BN_BWD_DX_REDUCE(f16, f16_t)

// One batch norm of a bn_bwd_dx_pair: its input, statistics, affine parameters, PReLU (or null), sums
// and dx, all of the pass's element type.
struct BnDx {
    const void* x;
    const float* mean;
    const float* invstd;
    const float* gamma;
    const float* beta;
    const float* alpha;
    const float* sum_dz;
    const float* sum_dzx;
    void* dx;
};

// bn_bwd_dx of two batch norms whose outputs were summed (a residual block's bn3 and its shortcut's batch
// norm): one read of the gradient they share, the same bits as two bn_bwd_dx.
#define BN_BWD_DX_PAIR(SUF, T)                                                                               \
    extern "C" __global__ void bn_bwd_dx_pair_##SUF(long long n, int C, long long rows,                      \
                                                    const T* __restrict__ dy, BnDx a, BnDx b) {              \
        float inv_n = 1.0f / (float)rows;                                                                    \
        GRID_STRIDE(i, n) {                                                                                  \
            int c = (int)(i % C);                                                                            \
            float d = to_f32(dy[i]);                                                                         \
            float va = bn_dx_of(d, to_f32(((const T*)a.x)[i]), c, a.mean, a.invstd, a.gamma, a.beta, a.alpha, \
                                a.sum_dz, a.sum_dzx, inv_n);                                                 \
            float vb = bn_dx_of(d, to_f32(((const T*)b.x)[i]), c, b.mean, b.invstd, b.gamma, b.beta, b.alpha, \
                                b.sum_dz, b.sum_dzx, inv_n);                                                 \
            ((T*)a.dx)[i] = from_f32<T>(va);                                                                 \
            ((T*)b.dx)[i] = from_f32<T>(vb);                                                                 \
        }                                                                                                    \
    }
BN_BWD_DX_PAIR(f32, float)
BN_BWD_DX_PAIR(bf16, bf16_t)
BN_BWD_DX_PAIR(f16, f16_t)
