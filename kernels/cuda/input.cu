// Must match engine::backend::cpu::input::images_to_nhwc, the CPU input path (the loader's own
// normalization, datasets::loader::extend_normalized). A batch of decoded uint8 HWC
// RGB images [N, H, W, 3] becomes (x/255 - 0.5)/0.5 in NHWC, mirrored left-right for images whose flip
// byte is nonzero (training passes zeros: the loader has already applied its random flip).

#define U8_TO_NHWC(SUF, T)                                                                              \
    extern "C" __global__ void u8_to_nhwc_##SUF(int N, int H, int W, const unsigned char* __restrict__ src, \
                                                const unsigned char* __restrict__ flip,                 \
                                                T* __restrict__ dst) {                                 \
        long long n = (long long)N * H * W * 3;                                                        \
        GRID_STRIDE(i, n) {                                                                            \
            int ch = (int)(i % 3);                                                                     \
            long long pix = i / 3;                                                                     \
            int w = (int)(pix % W);                                                                    \
            long long row = pix / W; /* image * H + h */                                               \
            int img = (int)(row / H);                                                                  \
            int sw = (flip != nullptr && flip[img]) ? W - 1 - w : w;                                   \
            float v = (float)src[(row * W + sw) * 3 + ch];                                             \
            dst[i] = from_f32<T>((v * (1.0f / 255.0f) - 0.5f) * 2.0f);                                 \
        }                                                                                              \
    }
U8_TO_NHWC(f32, float)
U8_TO_NHWC(bf16, bf16_t)
U8_TO_NHWC(f16, f16_t)
