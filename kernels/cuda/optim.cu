// Must match engine::backend::cpu::optim::{sgd_update, adamw_update} (torch.optim.SGD and AdamW). One
// launch updates every tensor of its table (multi-tensor, as torch's foreach path), out of place: each
// entry reads the weights, the gradient and the state and writes new tensors, so nothing is copied first
// and tensors shared elsewhere are never written. grad_scale multiplies the raw gradient first (1/loss
// scale, or the clipping coefficient). A gradient is f32, or 16-bit where an autocast GEMM produced it
// (widened as read, as the cast torch's autocast puts after the GEMM would). Where half_out is set, the
// new f32 master weight is also written there in 16 bits: the copy the next forward's GEMM reads.
// flags[base + k] is set (1.0f, zeroed by the host) when entry k's new weights or state hold a NaN or an
// infinity: the check after an update costs no pass of its own.

#define OPT_MAX 32
struct OptimTable {
    long long n[OPT_MAX];
    const float* p[OPT_MAX];
    float* p_out[OPT_MAX];
    const void* g[OPT_MAX];
    const float* s1[OPT_MAX];  // SGD: momentum buffer (null on its first step); AdamW: exp_avg
    float* s1_out[OPT_MAX];
    const float* s2[OPT_MAX];  // AdamW: exp_avg_sq
    float* s2_out[OPT_MAX];
    void* half_out[OPT_MAX];
    int first_block[OPT_MAX + 1];
    float lr[OPT_MAX];
    float wd[OPT_MAX];
    float bc1[OPT_MAX];  // AdamW: 1 - beta1^t and 1 - beta2^t at this tensor's step t
    float bc2[OPT_MAX];
    unsigned char g_type[OPT_MAX];
    unsigned char half_type[OPT_MAX];
    int count;
    int base;  // the first entry's flag index
};

// Sets entry k's flag when any thread of the warp saw a non-finite value.
__device__ __forceinline__ void flag_nonfinite(bool bad, float* flags, int i) {
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) flags[i] = 1.0f;
}

// torch SGD: d = g + wd*p; buf = d on the first step, else momentum*buf + (1-dampening)*d;
// d = d + momentum*buf (nesterov) or buf; p -= lr*d. With momentum 0 there is no buffer.
extern "C" __global__ void sgd_multi(OptimTable t, float momentum, float dampening, int nesterov,
                                     float grad_scale, float* __restrict__ flags) {
    int k = mt_entry(t.first_block, t.count, blockIdx.x);
    long long start = (long long)(blockIdx.x - t.first_block[k]) * MT_CHUNK;
    long long end = min(start + MT_CHUNK, t.n[k]);
    const float* __restrict__ p = t.p[k];
    float* __restrict__ p_out = t.p_out[k];
    const float* __restrict__ buf = t.s1[k];
    float* __restrict__ buf_out = t.s1_out[k];
    const void* g = t.g[k];
    void* half_out = t.half_out[k];
    int gt = t.g_type[k], ht = t.half_type[k];
    float lr = t.lr[k], wd = t.wd[k];
    bool bad = false;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float w = p[i];
        float d = fmaf(wd, w, load_tagged(g, gt, i) * grad_scale);
        if (momentum != 0.0f) {
            float b = buf == nullptr ? d : fmaf(momentum, buf[i], (1.0f - dampening) * d);
            buf_out[i] = b;
            bad |= !isfinite(b);
            d = nesterov ? fmaf(momentum, b, d) : b;
        }
        w -= lr * d;
        p_out[i] = w;
        bad |= !isfinite(w);
        if (half_out != nullptr) store_tagged(half_out, ht, i, w);
    }
    flag_nonfinite(bad, flags, t.base + k);
}

// torch AdamW (amsgrad off): p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
extern "C" __global__ void adamw_multi(OptimTable t, float beta1, float beta2, float eps, float grad_scale,
                                       float* __restrict__ flags) {
    int k = mt_entry(t.first_block, t.count, blockIdx.x);
    long long start = (long long)(blockIdx.x - t.first_block[k]) * MT_CHUNK;
    long long end = min(start + MT_CHUNK, t.n[k]);
    const float* __restrict__ p = t.p[k];
    float* __restrict__ p_out = t.p_out[k];
    const float* __restrict__ m = t.s1[k];
    float* __restrict__ m_out = t.s1_out[k];
    const float* __restrict__ v = t.s2[k];
    float* __restrict__ v_out = t.s2_out[k];
    const void* g = t.g[k];
    void* half_out = t.half_out[k];
    int gt = t.g_type[k], ht = t.half_type[k];
    float lr = t.lr[k], wd = t.wd[k];
    float step = lr / t.bc1[k];
    float sqrt_bc2 = sqrtf(t.bc2[k]);
    bool bad = false;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        float gi = load_tagged(g, gt, i) * grad_scale;
        float w = p[i] * (1.0f - lr * wd);
        float mi = fmaf(beta1, m[i], (1.0f - beta1) * gi);
        float vi = fmaf(beta2, v[i], (1.0f - beta2) * gi * gi);
        m_out[i] = mi;
        v_out[i] = vi;
        w -= step * mi / (sqrtf(vi) / sqrt_bc2 + eps);
        p_out[i] = w;
        bad |= !(isfinite(w) && isfinite(mi) && isfinite(vi));
        if (half_out != nullptr) store_tagged(half_out, ht, i, w);
    }
    flag_nonfinite(bad, flags, t.base + k);
}
