// Host emulation of margin_head.cu (target, tile-merged log-sum-exp with several blocks and pseudo-threads,
// finish, backward) compiled with g++: CUDA intrinsics are stubbed, 16-bit conversions are not used.
// Driven by check.py, which compares loss and G with an f64 NumPy reading of heads.md for 12 heads.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <algorithm>
using std::min; using std::max;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define asm(...) ((void)0)
#define __expf expf
struct D3 { unsigned x = 0, y = 0, z = 0; };
D3 threadIdx, blockIdx, blockDim, gridDim;
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }

template <class T> T __shfl_xor_sync(unsigned, T v, int) { return v; }
static void __syncthreads() {}
static bool __any_sync(unsigned, bool b) { return b; }
#include "../cuda/common.cuh"
#include "../cuda/margin_head.cu"

int main(int argc, char** argv) {
    // stdin: B C kind; then hp fields; then cos (B*C), labels (B); writes loss then G.
    int B, C; if (scanf("%d %d", &B, &C) != 2) return 1;
    HeadParams hp;
    scanf("%f %f %f %f %f %f %f %f %f %f %f %f %d %d %d %d %d", &hp.s, &hp.m1, &hp.m2, &hp.m3, &hp.eps, &hp.t,
          &hp.inv_batch, &hp.w_alpha, &hp.w_p0, &hp.w_c, &hp.w_beta, &hp.w_gamma, &hp.target_kind, &hp.flags,
          &hp.nontarget_kind, &hp.weight_kind, &hp.sma_variant);
    float* cosv = new float[B * C];
    long long* lab = new long long[B];
    for (int k = 0; k < B * C; k++) scanf("%f", &cosv[k]);
    for (int i = 0; i < B; i++) scanf("%lld", &lab[i]);
    float *cy = new float[B], *zy = new float[B], *zpy = new float[B], *tau = new float[B], *dm = new float[B];
    for (int i = 0; i < B; i++) cy[i] = cosv[i * C + lab[i]];
    blockDim.x = 1;
    for (int i = 0; i < B; i++) { blockIdx.x = i; threadIdx.x = 0; margin_target(B, cy, nullptr, nullptr, hp, zy, zpy, tau, dm); }
    // Forward: 3 column blocks, 4 pseudo-threads each, merged with the kernel's own functions.
    float *M = new float[B], *S = new float[B], *So = new float[B];
    for (int i = 0; i < B; i++) { M[i] = -FT_INF; S[i] = 0; So[i] = 0; }
    int nblk = 3, bs = (C + nblk - 1) / nblk;
    for (int i = 0; i < B; i++) {
        for (int j0 = 0; j0 < C; j0 += bs) {
            int nb = min(bs, C - j0);
            float bm = -FT_INF, bsum = 0, bso = 0;
            for (int t = 0; t < 4; t++) {
                float m = -FT_INF, s = 0, s_oth = 0;
                for (int jj = t; jj < nb; jj += 4) {
                    float z, zp;
                    bool is_target = (j0 + jj == lab[i]);
                    if (is_target) z = zy[i]; else nontarget(hp, cosv[i * C + j0 + jj], tau[i], &z, &zp);
                    float m_old = m;
                    lse_push(z, m, s);
                    if (m != m_old) s_oth *= __expf(m_old - m);
                    if (!is_target) s_oth += __expf(z - m);
                }
                lse_merge(bm, bsum, bso, m, s, s_oth);
            }
            lse_merge(M[i], S[i], So[i], bm, bsum, bso);
        }
    }
    float *lse = new float[B], *loss = new float[B], *py = new float[B], *st = new float[B], *da = new float[B];
    for (int i = 0; i < B; i++) { blockIdx.x = i; margin_finish(B, lab, M, S, zy, dm, 0.0f, hp, lse, loss, py, st, da); }
    float* G = new float[B * C];
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < C; j++) {
            blockIdx.y = i; blockIdx.x = j; blockDim.x = 1; threadIdx.x = 0;
            margin_bwd_block_f32(B, C, 0, C, cosv, lab, tau, zy, zpy, lse, st, hp, C, G);
        }
    }
    for (int i = 0; i < B; i++) printf("%.9g\n", loss[i]);
    for (int k = 0; k < B * C; k++) printf("%.9g\n", G[k]);
    for (int i = 0; i < B; i++) printf("%.9g\n", So[i]);
    return 0;
}
