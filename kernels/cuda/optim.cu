// Must match engine::backend::cpu::optim::{sgd_step, adamw_step} (torch.optim.SGD and AdamW), one
// fused pass per parameter tensor. grad_scale multiplies the raw gradient first (1/loss_scale under
// mixed precision). When p16 is not null the updated f32 master weight is also written there as bf16,
// the copy the next forward reads.

// torch SGD: d = g + wd*p; buf = d on the first step, else momentum*buf + (1-dampening)*d;
// d = d + momentum*buf (nesterov) or buf; p -= lr*d. With momentum 0, buf is not touched (may be null).
extern "C" __global__ void sgd_f32(long long n, float lr, float momentum, float dampening, float wd,
                                   int nesterov, int first_step, float grad_scale, float* __restrict__ p,
                                   const float* __restrict__ g, float* __restrict__ buf,
                                   bf16_t* __restrict__ p16) {
    GRID_STRIDE(i, n) {
        float w = p[i];
        float d = fmaf(wd, w, g[i] * grad_scale);
        if (momentum != 0.0f) {
            float b = first_step ? d : fmaf(momentum, buf[i], (1.0f - dampening) * d);
            buf[i] = b;
            d = nesterov ? fmaf(momentum, b, d) : b;
        }
        w -= lr * d;
        p[i] = w;
        if (p16 != nullptr) p16[i] = from_f32<bf16_t>(w);
    }
}

// torch AdamW (amsgrad off): p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
// p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps), with bc1 = 1 - b1^t and bc2 = 1 - b2^t from the host.
extern "C" __global__ void adamw_f32(long long n, float lr, float beta1, float beta2, float eps, float wd,
                                     float bc1, float bc2, float grad_scale, float* __restrict__ p,
                                     const float* __restrict__ g, float* __restrict__ m,
                                     float* __restrict__ v, bf16_t* __restrict__ p16) {
    float step = lr / bc1;
    float sqrt_bc2 = sqrtf(bc2);
    GRID_STRIDE(i, n) {
        float gi = g[i] * grad_scale;
        float w = p[i] * (1.0f - lr * wd);
        float mi = fmaf(beta1, m[i], (1.0f - beta1) * gi);
        float vi = fmaf(beta2, v[i], (1.0f - beta2) * gi * gi);
        m[i] = mi;
        v[i] = vi;
        w -= step * mi / (sqrtf(vi) / sqrt_bc2 + eps);
        p[i] = w;
        if (p16 != nullptr) p16[i] = from_f32<bf16_t>(w);
    }
}
