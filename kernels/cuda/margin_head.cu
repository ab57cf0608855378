// The chunked margin-softmax classifier (spec heads.md §0 and §13). Must match the CPU heads'
// classifier, engine::heads::classifier::run (the per-head logit z(c) of engine::heads::maps::target_logit
// and non_target_logit, its slope z'(c), the log-sum-exp and G = dL/dcos), with the fixed parameters
// decoded by engine::heads::kernel_plan::MarginParams::target_map. The batch x classes logits never
// exist: for each block of classes cuBLAS writes the cosines cos[B, nb] (f32, bf16 or fp16; math here is
// f32), then
//   margin_target      once per step (fixed parameters): z_y, z'_y and tau_i from the pre-gathered c_y
//                      (per-row plans compute these on the host with the head's own code);
//   margin_fwd_block   per block: running (M, S) per row (online log-sum-exp), and with F_PLAIN_SUM the
//                      running (M_d, S_d) of the margin-free non-target logits s*c_j (QCFace's p_d);
//   margin_finish      once (fixed parameters): LSE and loss_i (per-row plans finish on the host);
//   margin_bwd_block   per block (cosines recomputed): G_ij = (1/B)*st_i*(P_ij - d_jy)*z'_ij.
// Rows with label < 0 (a shard that does not own the class) contribute nothing here.

// Target flags (margin_target); without any, z_y = s*(cos(m1*theta + m2) - m3).
#define F_FALLBACK 1  // ArcFace: m1*theta + m2 >= pi -> s*(c - m2*sin m2 - m3), slope s
#define F_EASY 2      // easy margin: c <= 0 -> s*c
#define F_STE 4       // arcface_torch: slope s on the target, no fallback
#define F_PLAIN_SUM 8 // margin_fwd_block also sums the margin-free non-target logits s*c_j
// Non-target kinds.
#define NT_PLAIN 0
#define NT_CURRICULAR 1  // c > tau: s*c*(t + c), slope s*(t + 2c)
#define NT_MV_ADAPTIVE 2 // c > tau: s*((1+t)*c + t), slope s*(1+t)
#define NT_MV_FIXED 3    // c > tau: s*(c + t), slope s
#define NT_QAM 4         // s*(2pi - theta)^2

// Mirrors engine::heads::kernel_plan::MarginParams (#[repr(C)], all 4-byte fields).
struct MarginParams {
    float s, m1, m2, m3;
    float eps;        // c is clamped to [-1+eps, 1-eps]; gradient only strictly inside
    float t;          // CurricularFace t (the running buffer) or MV t
    float inv_batch;  // 1/B of the mean over the global batch
    int flags, nontarget_kind;
};

struct Clamped { float c; float inside; };

__device__ __forceinline__ Clamped clamp_c(float c, float eps) {
    float lo = -1.0f + eps, hi = 1.0f - eps;
    Clamped r;
    r.c = fminf(fmaxf(c, lo), hi);
    r.inside = (c > lo && c < hi) ? 1.0f : 0.0f;
    return r;
}

__device__ __forceinline__ float sin_theta(float c) { return sqrtf(fmaxf(0.0f, 1.0f - c * c)); }

// Logit and slope of a non-target column given the row's tau.
__device__ __forceinline__ void nontarget(const MarginParams& hp, float c_raw, float tau, float* z, float* zp) {
    Clamped k = clamp_c(c_raw, hp.eps);
    float c = k.c, s = hp.s;
    switch (hp.nontarget_kind) {
        case NT_CURRICULAR:
            if (c > tau) { *z = s * c * (hp.t + c); *zp = s * (hp.t + 2.0f * c); }
            else { *z = s * c; *zp = s; }
            break;
        case NT_MV_ADAPTIVE:
            if (c > tau) { *z = s * ((1.0f + hp.t) * c + hp.t); *zp = s * (1.0f + hp.t); }
            else { *z = s * c; *zp = s; }
            break;
        case NT_MV_FIXED:
            *z = s * (c > tau ? c + hp.t : c);
            *zp = s;
            break;
        case NT_QAM: {
            float a = 2.0f * FT_PI - acosf(c);
            float st = sin_theta(c);
            *z = s * a * a;
            *zp = st > 0.0f ? 2.0f * s * a / st : 0.0f;
            break;
        }
        default:
            *z = s * c;
            *zp = s;
    }
    *zp *= k.inside;
}

// Per row: target logit zy, slope zpy and the hard-negative threshold tau (the raw cos(m1*theta+m2) - m3,
// no easy margin, no fallback: CurricularFace's tau and MV's f_y).
extern "C" __global__ void margin_target(int B, const float* __restrict__ cy, MarginParams hp,
                                         float* __restrict__ zy, float* __restrict__ zpy,
                                         float* __restrict__ tau) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    Clamped k = clamp_c(cy[i], hp.eps);
    float c = k.c, s = hp.s, m2 = hp.m2, m3 = hp.m3;
    float theta = acosf(c), st = sin_theta(c);
    float arg = hp.m1 * theta + m2;
    float z, zp;
    tau[i] = cosf(arg) - m3;
    if ((hp.flags & F_EASY) && c <= 0.0f) {
        z = s * c;
        zp = s;
    } else if (hp.flags & F_STE) {
        z = s * (cosf(arg) - m3);
        zp = s;
    } else if ((hp.flags & F_FALLBACK) && arg >= FT_PI) {
        z = s * (c - m2 * sinf(m2) - m3);
        zp = s;
    } else {
        z = s * (cosf(arg) - m3);
        // sin(m1*theta)/sin(theta) -> m1 as theta -> 0 (SphereFace with m2 = 0).
        if (st > 0.0f) zp = s * hp.m1 * sinf(arg) / st;
        else zp = (m2 == 0.0f) ? s * hp.m1 * hp.m1 : 0.0f;
    }
    zy[i] = z;
    zpy[i] = zp * k.inside;
}

__device__ __forceinline__ void lse_push(float z, float& m, float& sum) {
    if (z > m) { sum = sum * __expf(m - z) + 1.0f; m = z; }
    else sum += __expf(z - m);
}

// (m, s) merged with (m2, s2): the result keeps the larger max; an empty pair (-inf, 0) changes nothing.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
    if (m2 == -FT_INF) return;
    if (m == -FT_INF) { m = m2; s = s2; return; }
    float mx = fmaxf(m, m2);
    s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
    m = mx;
}

// One block per row; the block's threads stride over the nb columns of this class block and merge their
// (max, sum) into M, S and, with F_PLAIN_SUM, the (max, sum) of s*c_j over the non-targets into M_d, S_d
// (all initialised to -inf, 0 by the host).
#define MARGIN_FWD(SUF, T)                                                                                \
    extern "C" __global__ void margin_fwd_block_##SUF(                                                    \
        int B, int nb, long long j0, long long ldc, const T* __restrict__ cosv, const long long* __restrict__ labels, \
        const float* __restrict__ tau, const float* __restrict__ zy, MarginParams hp, float* __restrict__ M, \
        float* __restrict__ S, float* __restrict__ M_d, float* __restrict__ S_d) {                          \
        __shared__ float sm[32], ss[32], smd[32], ssd[32];                                                \
        int i = blockIdx.x;                                                                               \
        if (i >= B) return;                                                                               \
        long long y = labels[i];                                                                          \
        if (y < 0) return;                                                                                \
        const T* row = cosv + (long long)i * ldc;                                                         \
        float ti = tau[i];                                                                                \
        bool plain_sum = (hp.flags & F_PLAIN_SUM) != 0;                                                   \
        float m = -FT_INF, s = 0.0f, md = -FT_INF, sd = 0.0f;                                             \
        for (int jj = threadIdx.x; jj < nb; jj += blockDim.x) {                                           \
            float z, zp;                                                                                  \
            if (j0 + jj == y) z = zy[i];                                                                  \
            else {                                                                                        \
                float c = to_f32(row[jj]);                                                                \
                nontarget(hp, c, ti, &z, &zp);                                                            \
                if (plain_sum) lse_push(hp.s * clamp_c(c, hp.eps).c, md, sd);                             \
            }                                                                                             \
            lse_push(z, m, s);                                                                            \
        }                                                                                                 \
        /* warp merge, then across warps through shared memory */                                         \
        for (int o = 16; o > 0; o >>= 1) {                                                                \
            float m2 = __shfl_xor_sync(0xffffffffu, m, o);                                                \
            float s2 = __shfl_xor_sync(0xffffffffu, s, o);                                                \
            float md2 = __shfl_xor_sync(0xffffffffu, md, o);                                              \
            float sd2 = __shfl_xor_sync(0xffffffffu, sd, o);                                              \
            lse_merge(m, s, m2, s2);                                                                      \
            lse_merge(md, sd, md2, sd2);                                                                  \
        }                                                                                                 \
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;                                             \
        if (lane == 0) { sm[warp] = m; ss[warp] = s; smd[warp] = md; ssd[warp] = sd; }                    \
        __syncthreads();                                                                                  \
        if (threadIdx.x == 0) {                                                                           \
            int nw = (blockDim.x + 31) >> 5;                                                              \
            for (int w = 1; w < nw; w++) {                                                                \
                lse_merge(m, s, sm[w], ss[w]);                                                            \
                lse_merge(md, sd, smd[w], ssd[w]);                                                        \
            }                                                                                             \
            float Mi = M[i], Si = S[i], Mdi = M_d[i], Sdi = S_d[i];                                       \
            lse_merge(Mi, Si, m, s);                                                                      \
            lse_merge(Mdi, Sdi, md, sd);                                                                  \
            M[i] = Mi; S[i] = Si; M_d[i] = Mdi; S_d[i] = Sdi;                                             \
        }                                                                                                 \
    }
MARGIN_FWD(f32, float)
MARGIN_FWD(bf16, bf16_t)
MARGIN_FWD(f16, f16_t)

// insightface clamps p_y >= 1e-30 in the loss value only (the CPU classifier's CE_MAX); G is unclamped.
#define CE_MAX 69.07755278982137f

// Per row of a fixed-parameter head (unit sample weights): lse = M + log S and loss_i = min(CE_i, CE_MAX).
extern "C" __global__ void margin_finish(int B, const long long* __restrict__ labels, const float* __restrict__ M,
                                         const float* __restrict__ S, const float* __restrict__ zy,
                                         float* __restrict__ lse, float* __restrict__ loss) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    if (labels[i] < 0) {
        lse[i] = 0.0f; loss[i] = 0.0f;
        return;
    }
    float l = M[i] + logf(S[i]);
    lse[i] = l;
    loss[i] = fminf(l - zy[i], CE_MAX);  // -log p_y, never the log of an exp
}

// G for one class block, recomputing the logits from the cosines; G is written in the GEMM dtype with
// leading dimension ldg. st (the per-row gradient factor of weighted heads) may be null: unit weights.
// Rows with label < 0 get zeros.
#define MARGIN_BWD(SUF, T, TG)                                                                             \
    extern "C" __global__ void margin_bwd_block_##SUF(                                                     \
        int B, int nb, long long j0, long long ldc, const T* __restrict__ cosv, const long long* __restrict__ labels, \
        const float* __restrict__ tau, const float* __restrict__ zy, const float* __restrict__ zpy,        \
        const float* __restrict__ lse, const float* __restrict__ st, MarginParams hp, long long ldg,         \
        TG* __restrict__ grad) {                                                                           \
        int i = blockIdx.y;                                                                                \
        int jj = blockIdx.x * blockDim.x + threadIdx.x;                                                    \
        if (i >= B || jj >= nb) return;                                                                    \
        long long y = labels[i];                                                                           \
        float g = 0.0f;                                                                                    \
        if (y >= 0) {                                                                                      \
            float z, zp;                                                                                   \
            bool is_target = (j0 + jj == y);                                                               \
            if (is_target) { z = zy[i]; zp = zpy[i]; }                                                     \
            else nontarget(hp, to_f32(cosv[(long long)i * ldc + jj]), tau[i], &z, &zp);                    \
            float P = __expf(z - lse[i]);                                                                  \
            g = hp.inv_batch * (st ? st[i] : 1.0f) * (P - (is_target ? 1.0f : 0.0f)) * zp;                               \
        }                                                                                                  \
        grad[(long long)i * ldg + jj] = from_f32<TG>(g);                                                   \
    }
MARGIN_BWD(f32, float, float)
MARGIN_BWD(bf16, bf16_t, bf16_t)
MARGIN_BWD(f16, f16_t, f16_t)

// c_y = xhat_i . what_{y_i}: one warp per row, before the main pass (CurricularFace/MV need tau).
#define GATHER_DOT(SUF, T)                                                                                 \
    extern "C" __global__ void margin_gather_cy_##SUF(int B, int D, long long j0, long long nb,            \
                                                      const T* __restrict__ xhat, const T* __restrict__ what, \
                                                      const float* __restrict__ wnorms, float eps,          \
                                                      const long long* __restrict__ labels, float* __restrict__ cy) { \
        int i = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);                                       \
        int lane = threadIdx.x & 31;                                                                       \
        if (i >= B) return;                                                                                \
        long long y = labels[i] - j0;                                                                      \
        if (labels[i] < 0 || y < 0 || y >= nb) return;                                                     \
        const T* xr = xhat + (long long)i * D;                                                             \
        const T* wr = what + y * D;                                                                        \
        /* wnorms: `what` holds raw rows, normalized here as l2norm_fwd does (the same bits). */          \
        float inv = wnorms != nullptr ? 1.0f / fmaxf(wnorms[y], eps) : 1.0f;                               \
        float s = 0.0f;                                                                                    \
        for (int k = lane; k < D; k += 32) {                                                               \
            float w = wnorms != nullptr ? to_f32(wr[k]) * inv : to_f32(wr[k]);                             \
            s += to_f32(xr[k]) * w;                                                                        \
        }                                                                                                  \
        s = warp_sum(s);                                                                                   \
        if (lane == 0) cy[i] = s;                                                                          \
    }
GATHER_DOT(f32, float)
GATHER_DOT(bf16, bf16_t)
GATHER_DOT(f16, f16_t)

// Partial FC's rows of a class shard (engine::heads::sharded::run_rank_cuda; the CPU's run_rank copies
// the same rows): dst[to[k]] = src[from[k]] for k < n, rows of D floats; a null index is the
// identity (the chosen rows gathered: to null; their gradients put among zeros: from null).
extern "C" __global__ void margin_copy_rows(long long n, int D, const long long* __restrict__ from,
                                            const long long* __restrict__ to, const float* __restrict__ src,
                                            float* __restrict__ dst) {
    GRID_STRIDE(i, n * D) {
        long long k = i / D, j = i - k * D;
        long long a = from ? from[k] : k, b = to ? to[k] : k;
        dst[b * D + j] = src[a * D + j];
    }
}
