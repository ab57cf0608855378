// Host emulation of the block-level kernels (shared memory, __syncthreads, warp shuffles): every CUDA
// thread of a block is a std::thread, __syncthreads is a barrier and a shuffle is an exchange through a
// buffer between two barriers (valid because these kernels call shuffles uniformly across the block).
// Runs the f32 kernels of batch_norm.cu (fused PReLU too), reduce.cu, prelu.cu, l2norm.cu, dropout.cu,
// optim.cu, input.cu, amp.cu and margin_head.cu's block forward, and compares with double formulas.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdint>
#include <algorithm>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
using std::max;
using std::min;
using std::isfinite;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define asm(...) ((void)0)
#define __expf expf
struct D3 { unsigned x = 0, y = 0, z = 0; };
thread_local D3 threadIdx;
D3 blockIdx, blockDim, gridDim;
static std::barrier<>* g_bar = nullptr;
static std::vector<std::barrier<>*> g_warp_bar;  // shuffles synchronise one warp, like the hardware
static uint64_t g_xch[1024];
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static int tid() { return threadIdx.x + threadIdx.y * blockDim.x; }
static void __syncthreads() { g_bar->arrive_and_wait(); }
template <class T> T __shfl_xor_sync(unsigned, T v, int o) {
    uint64_t bits = 0; memcpy(&bits, &v, sizeof(T));
    g_xch[tid()] = bits;
    g_warp_bar[tid() >> 5]->arrive_and_wait();
    uint64_t other = g_xch[tid() ^ o];
    g_warp_bar[tid() >> 5]->arrive_and_wait();
    T r; memcpy(&r, &other, sizeof(T));
    return r;
}
static bool __any_sync(unsigned, bool b) {
    g_xch[tid()] = b;
    g_warp_bar[tid() >> 5]->arrive_and_wait();
    bool any = false;
    int w0 = tid() & ~31;
    for (int l = 0; l < 32; l++) any |= g_xch[w0 + l] != 0;
    g_warp_bar[tid() >> 5]->arrive_and_wait();
    return any;
}
#include "../cuda/common.cuh"
#include "../cuda/elementwise.cu"
#include "../cuda/reduce.cu"
#include "../cuda/batch_norm.cu"
#include "../cuda/prelu.cu"
#include "../cuda/dropout.cu"
#include "../cuda/l2norm.cu"
#include "../cuda/optim.cu"
#include "../cuda/amp.cu"
#include "../cuda/input.cu"
#include "../cuda/margin_head.cu"

static void launch(D3 grid, D3 block, const std::function<void()>& f) {
    gridDim = grid; blockDim = block;
    int n = block.x * max(1u, block.y);
    for (unsigned by = 0; by < max(1u, grid.y); by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx.x = bx; blockIdx.y = by;
            std::barrier<> bar(n);
            g_bar = &bar;
            std::vector<std::unique_ptr<std::barrier<>>> wb;
            g_warp_bar.clear();
            for (int w = 0; w < (n + 31) / 32; w++) {
                wb.push_back(std::make_unique<std::barrier<>>(min(32, n - 32 * w)));
                g_warp_bar.push_back(wb.back().get());
            }
            std::vector<std::thread> ts;
            for (int t = 0; t < n; t++)
                ts.emplace_back([&, t] { threadIdx.x = t % block.x; threadIdx.y = t / block.x; f(); });
            for (auto& t : ts) t.join();
        }
}
static D3 d3(unsigned x, unsigned y = 1) { D3 d; d.x = x; d.y = y; d.z = 1; return d; }

static uint64_t lcg = 12345;
static double urand() { lcg = lcg * 6364136223846793005ull + 1442695040888963407ull; return (lcg >> 11) * (1.0 / 9007199254740992.0); }
static double nrand() { return sqrt(-2 * log(urand() + 1e-300)) * cos(2 * M_PI * urand()); }
static int failures = 0;
static void report(const char* name, const std::vector<double>& got, const std::vector<double>& want, double tol) {
    double num = 0, den = 0;
    bool finite = true;
    for (size_t i = 0; i < want.size(); i++) {
        finite &= std::isfinite(got[i]);
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    bool ok = finite && e <= tol;
    failures += !ok;
    printf("%-34s %.2e %s\n", name, e, ok ? "ok" : "FAIL");
}
template <class T> static std::vector<double> d(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }

int main() {
    // Batch norm + fused PReLU, forward and backward, with the chunked geometry the backend uses.
    const long long rows = 203; const int C = 40; const float eps = 1e-5f;
    std::vector<float> x(rows * C), dy(rows * C), g(C), b(C), a(C);
    for (auto& v : x) v = 1.5 * nrand() + 0.3;
    for (auto& v : dy) v = nrand();
    for (int c = 0; c < C; c++) { g[c] = 1 + 0.2 * nrand(); b[c] = 0.3 * nrand(); a[c] = 0.25 + 0.05 * nrand(); }
    long long rpc = 64; int chunks = (rows + rpc - 1) / rpc; int cb = (C + 31) / 32;
    std::vector<float> pmean(chunks * C), pm2(chunks * C), mean(C), var(C), inv(C), sc(C), sh(C), y(rows * C);
    launch(d3(cb, chunks), d3(32, 8), [&] { bn_stats_partial_f32(rows, C, rpc, x.data(), pmean.data(), pm2.data()); });
    launch(d3(1), d3(256), [&] { bn_stats_final(chunks, rows, rpc, C, pmean.data(), pm2.data(), eps, 0.0f, mean.data(), var.data(), inv.data(), nullptr, nullptr); });
    launch(d3(1), d3(256), [&] { bn_fold(C, mean.data(), inv.data(), g.data(), b.data(), sc.data(), sh.data()); });
    launch(d3(4), d3(256), [&] { channel_affine_f32(rows * C, C, x.data(), sc.data(), sh.data(), a.data(), y.data()); });
    std::vector<double> rm(C), rv(C), yr(rows * C), xh(rows * C), z(rows * C), dz(rows * C), sdz(C), sdzx(C), dar(C), dxr(rows * C);
    for (long long i = 0; i < rows * C; i++) rm[i % C] += x[i] / (double)rows;
    for (long long i = 0; i < rows * C; i++) rv[i % C] += (x[i] - rm[i % C]) * (x[i] - rm[i % C]) / rows;
    for (long long i = 0; i < rows * C; i++) {
        int c = i % C;
        xh[i] = (x[i] - rm[c]) / sqrt(rv[c] + eps);
        z[i] = xh[i] * g[c] + b[c];
        yr[i] = z[i] > 0 ? z[i] : a[c] * z[i];
        dz[i] = z[i] > 0 ? dy[i] : a[c] * dy[i];
        if (z[i] <= 0) dar[c] += dy[i] * z[i];
    }
    for (long long i = 0; i < rows * C; i++) { sdz[i % C] += dz[i]; sdzx[i % C] += dz[i] * xh[i]; }
    for (long long i = 0; i < rows * C; i++) {
        int c = i % C;
        dxr[i] = g[c] / sqrt(rv[c] + eps) / rows * (rows * dz[i] - sdz[c] - xh[i] * sdzx[c]);
    }
    report("bn mean", d(mean), rm, 1e-6);
    report("bn biased var", d(var), rv, 1e-5);
    report("bn+prelu fwd", d(y), yr, 1e-6);
    std::vector<float> p1(chunks * C), p2(chunks * C), p3(chunks * C), db(C), dg(C), da(C), dx(rows * C);
    launch(d3(cb, chunks), d3(32, 8), [&] { bn_bwd_partial_f32(rows, C, rpc, dy.data(), x.data(), mean.data(), inv.data(), sc.data(), sh.data(), a.data(), p1.data(), p2.data(), p3.data()); });
    launch(d3(1), d3(256), [&] { bn_bwd_final(chunks, C, p1.data(), p2.data(), p3.data(), db.data(), dg.data(), da.data()); });
    launch(d3(4), d3(256), [&] { bn_bwd_dx_f32(rows * C, C, rows, dy.data(), x.data(), mean.data(), inv.data(), g.data(), sc.data(), sh.data(), a.data(), db.data(), dg.data(), dx.data()); });
    report("bn+prelu bwd dbeta", d(db), sdz, 1e-5);
    report("bn+prelu bwd dgamma", d(dg), sdzx, 1e-5);
    report("bn+prelu bwd dalpha", d(da), dar, 1e-5);
    report("bn+prelu bwd dx", d(dx), dxr, 1e-5);

    // sum_rows and sum_all.
    std::vector<float> part(chunks * C), srow(C);
    launch(d3(cb, chunks), d3(32, 8), [&] { sum_rows_partial_f32(rows, C, rpc, x.data(), part.data()); });
    launch(d3(1), d3(256), [&] { sum_rows_final_f32(chunks, C, part.data(), srow.data()); });
    std::vector<double> srr(C);
    for (long long i = 0; i < rows * C; i++) srr[i % C] += x[i];
    report("sum_rows", d(srow), srr, 1e-6);
    std::vector<double> parts(3); float total = 0;
    launch(d3(3), d3(256), [&] { sum_all_partial_f32(rows * C, x.data(), parts.data()); });
    launch(d3(1), d3(32), [&] { sum_all_final_f32(3, parts.data(), &total); });
    double tr = 0; for (auto v : x) tr += v;
    report("sum_all", {total}, {tr}, 1e-6);

    // PReLU backward dalpha through its partial + reduce.cu's final stage.
    std::vector<float> pd(chunks * C), dal(C), dxp(rows * C);
    launch(d3(cb, chunks), d3(32, 8), [&] { prelu_dalpha_partial_f32(rows, C, rpc, dy.data(), x.data(), pd.data()); });
    launch(d3(1), d3(256), [&] { sum_rows_final_f32(chunks, C, pd.data(), dal.data()); });
    std::vector<double> dalr(C);
    for (long long i = 0; i < rows * C; i++) if (x[i] <= 0) dalr[i % C] += dy[i] * x[i];
    report("prelu dalpha", d(dal), dalr, 1e-6);

    // L2 normalize rows, forward and backward.
    int R = 7, D = 300;
    std::vector<float> lx(R * D), ly(R * D), ln(R), ldy(R * D), ldx(R * D);
    for (auto& v : lx) v = nrand();
    for (auto& v : ldy) v = nrand();
    launch(d3(R), d3(256), [&] { l2norm_fwd_f32(R, D, 1e-12f, lx.data(), ly.data(), ln.data()); });
    launch(d3(R), d3(256), [&] { l2norm_bwd_f32(R, D, 1e-12f, ldy.data(), ly.data(), ln.data(), ldx.data()); });
    std::vector<double> lyr(R * D), lnr(R), ldxr(R * D);
    for (int r = 0; r < R; r++) {
        double s = 0; for (int k = 0; k < D; k++) s += (double)lx[r * D + k] * lx[r * D + k];
        lnr[r] = sqrt(s);
        double dot = 0;
        for (int k = 0; k < D; k++) { lyr[r * D + k] = lx[r * D + k] / lnr[r]; dot += ldy[r * D + k] * lyr[r * D + k]; }
        for (int k = 0; k < D; k++) ldxr[r * D + k] = (ldy[r * D + k] - lyr[r * D + k] * dot) / lnr[r];
    }
    report("l2norm fwd", d(ly), lyr, 1e-6);
    report("l2norm norms", d(ln), lnr, 1e-6);
    report("l2norm bwd", d(ldx), ldxr, 1e-5);

    // Overflow flag.
    int flag = 0;
    launch(d3(2), d3(256), [&] { nonfinite_f32(rows * C, x.data(), &flag); });
    int flag2 = 0; x[77] = INFINITY;
    launch(d3(2), d3(256), [&] { nonfinite_f32(rows * C, x.data(), &flag2); });
    report("nonfinite flag (clean, inf)", {(double)flag, (double)flag2}, {0, 1}, 0);

    // Margin forward block kernel itself (256 threads, shuffles) against a direct log-sum-exp.
    int B = 5, NC = 700; long long j0 = 0;
    std::vector<float> cosv(B * NC), tau(B), zy(B), M(B, -INFINITY), S(B, 0), So(B, 0);
    std::vector<long long> lab(B);
    HeadParams hp{64, 1, 0.5f, 0, 0, 0, 1.0f / B, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0};
    for (auto& v : cosv) v = 0.6 * (2 * urand() - 1);
    for (int i = 0; i < B; i++) { lab[i] = (i * 131) % NC; tau[i] = 0.2f; zy[i] = 64 * 0.3f; }
    for (long long blk = 0; blk < NC; blk += 256) {
        int nb = min(256LL, NC - blk);
        std::vector<float> sub(B * nb);
        for (int i = 0; i < B; i++) for (int k = 0; k < nb; k++) sub[i * nb + k] = cosv[i * NC + blk + k];
        launch(d3(B), d3(256), [&] { margin_fwd_block_f32(B, nb, blk, nb, sub.data(), lab.data(), tau.data(), zy.data(), hp, M.data(), S.data(), So.data()); });
    }
    std::vector<double> lse(B), lser(B), sor(B), sog(B);
    for (int i = 0; i < B; i++) {
        double mx = -1e300; std::vector<double> zz(NC);
        for (int j = 0; j < NC; j++) { zz[j] = j == lab[i] ? zy[i] : 64.0 * cosv[i * NC + j]; mx = max(mx, zz[j]); }
        double s = 0, so = 0; for (int j = 0; j < NC; j++) { s += exp(zz[j] - mx); if (j != lab[i]) so += exp(zz[j] - mx); }
        lser[i] = mx + log(s); lse[i] = M[i] + log(S[i]);
        sor[i] = mx + log(so); sog[i] = M[i] + log(So[i]);
    }
    report("margin fwd block LSE (3 blocks)", lse, lser, 1e-6);
    report("margin fwd block LSE w/o target", sog, sor, 1e-6);

    // Dropout mask against the host mirror's formula, SGD and AdamW one step, uint8 input.
    std::vector<float> dxin(1000, 1.0f), dyo(1000), mask(1000);
    launch(d3(2), d3(256), [&] { dropout_f32(1000, 0.3f, 99ull, dxin.data(), dyo.data(), mask.data()); });
    double kept = 0; for (auto m : mask) kept += m > 0;
    report("dropout keep rate ~0.7", {kept / 1000}, {0.7}, 0.08);
    std::vector<float> p(100), gr(100), buf(100), m(100, 0), v(100, 0);
    for (int i = 0; i < 100; i++) { p[i] = nrand(); gr[i] = nrand(); }
    std::vector<float> p_sgd = p, p_adam = p;
    launch(d3(1), d3(256), [&] { sgd_f32(100, 0.1f, 0.9f, 0.0f, 5e-4f, 0, 1, 1.0f, p_sgd.data(), gr.data(), buf.data(), nullptr); });
    launch(d3(1), d3(256), [&] { adamw_f32(100, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 0.1f, 0.001f, 1.0f, p_adam.data(), gr.data(), m.data(), v.data(), nullptr); });
    std::vector<double> sgdr(100), adr(100);
    for (int i = 0; i < 100; i++) {
        sgdr[i] = p[i] - 0.1 * (gr[i] + 5e-4 * p[i]);
        double pi = p[i] * (1 - 1e-3 * 0.05), mi = 0.1 * gr[i], vi = 0.001 * gr[i] * gr[i];
        adr[i] = pi - 1e-3 / 0.1 * mi / (sqrt(vi) / sqrt(0.001) + 1e-8);
    }
    report("sgd first step", d(p_sgd), sgdr, 1e-6);
    report("adamw first step", d(p_adam), adr, 1e-6);
    int N = 2, H = 3, W = 4; std::vector<unsigned char> img(N * H * W * 3), flip = {0, 1};
    for (auto& c : img) c = urand() * 256;
    std::vector<float> nh(N * H * W * 3);
    launch(d3(1), d3(256), [&] { u8_to_nhwc_f32(N, H, W, img.data(), flip.data(), nh.data()); });
    std::vector<double> nhr(nh.size());
    for (int n = 0; n < N; n++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) for (int c = 0; c < 3; c++) {
        int sw = flip[n] ? W - 1 - w : w;
        nhr[((n * H + h) * W + w) * 3 + c] = (img[((n * H + h) * W + sw) * 3 + c] / 255.0 - 0.5) / 0.5;
    }
    report("u8 -> nhwc + flip", d(nh), nhr, 1e-6);
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
