// The step's checks over many tensors at once; must match engine::backend::cpu::amp::{first_nonfinite,
// scale_and_check, sum_of_squares}. Tensors are f32 or 16-bit (tagged per entry). flags[flag_base + k]
// is entry k's int, zeroed by the host first; a non-finite element sets it to 1 (concurrent stores of
// the same value need no atomics). sum_of_squares writes one f64 partial per block, summed on the host
// in block order, so the total does not depend on scheduling.

#define CHECK_MAX 128
struct CheckTable {
    long long n[CHECK_MAX];
    const void* x[CHECK_MAX];
    float* out[CHECK_MAX];  // scale_multi: the f32 result
    int first_block[CHECK_MAX + 1];
    unsigned char dtype[CHECK_MAX];
    int count;
    int base;  // the first entry's flag index (or the first block's partial index)
};

#define CHECK_ENTRY                                                                    \
    int k = mt_entry(t.first_block, t.count, blockIdx.x);                              \
    long long start = (long long)(blockIdx.x - t.first_block[k]) * MT_CHUNK;           \
    long long end = min(start + MT_CHUNK, t.n[k]);                                     \
    const void* x = t.x[k];                                                            \
    int dt = t.dtype[k];

extern "C" __global__ void nonfinite_multi(CheckTable t, int* __restrict__ flags) {
    CHECK_ENTRY
    bool bad = false;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) bad |= !isfinite(load_tagged(x, dt, i));
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) flags[t.base + k] = 1;
}

// out = x * factor in f32 (the fp16 unscale; 16-bit gradients are widened first), flagging non-finite
// results.
extern "C" __global__ void scale_multi(CheckTable t, float factor, int* __restrict__ flags) {
    CHECK_ENTRY
    float* __restrict__ out = t.out[k];
    bool bad = false;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float v = load_tagged(x, dt, i) * factor;
        out[i] = v;
        bad |= !isfinite(v);
    }
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) flags[t.base + k] = 1;
}

extern "C" __global__ void sumsq_multi(CheckTable t, double* __restrict__ partials) {
    __shared__ double scratch[32];
    CHECK_ENTRY
    double s = 0.0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        double v = load_tagged(x, dt, i);
        s += v * v;
    }
    s = warp_sum_d(s);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < (int)((blockDim.x + 31) >> 5); w++) total += scratch[w];
        partials[t.base + blockIdx.x] = total;
    }
}
