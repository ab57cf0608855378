"""PyTorch peer of bench/conv_cpu.rs: the same conv shapes, batch, width and thread count, on the CPU,
channels_last (NHWC, like the engine) and float32. Prints the same table.

Usage: conv_cpu_torch.py [--threads N] [--batch B] [--width W]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def shapes(w):
    return [
        ("stem 3x3 s1", 112, 3, w, 3, 1),
        ("layer1 conv1 3x3 s1", 112, w, w, 3, 1),
        ("layer1 conv2 3x3 s2", 112, w, w, 3, 2),
        ("layer1 downsample 1x1 s2", 112, w, w, 1, 2),
        ("layer2 conv1 3x3 s1", 56, w, 2 * w, 3, 1),
        ("layer2 block2 3x3 s1", 28, 2 * w, 2 * w, 3, 1),
        ("layer3 block2 3x3 s1", 14, 4 * w, 4 * w, 3, 1),
        ("layer4 block2 3x3 s1", 7, 8 * w, 8 * w, 3, 1),
    ]


def timeit(fn, budget=2.0):
    """(median wall seconds, mean process CPU seconds) per call."""
    fn()
    times = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), (time.process_time() - cpu0) / len(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cl = torch.channels_last
    print(f"torch {torch.__version__} conv, float32 channels_last, batch {a.batch}, width {a.width}, {a.threads} threads")
    print(f"{'shape':<26} {'fwd GF/s':>9} {'bwdD GF/s':>9} {'bwdF GF/s':>9} {'total ms':>9} {'img/s':>9} {'cpu ms':>9}")
    all_flops = all_secs = all_cpu = 0.0
    for name, hw, cin, cout, k, s in shapes(a.width):
        p = k // 2
        x = torch.randn(a.batch, cin, hw, hw).to(memory_format=cl)
        w = torch.randn(cout, cin, k, k).to(memory_format=cl)
        with torch.no_grad():
            y = F.conv2d(x, w, stride=s, padding=p)
        dy = torch.randn_like(y).to(memory_format=cl)
        flops = 2.0 * y.numel() * k * k * cin
        with torch.no_grad():
            tf, cf = timeit(lambda: F.conv2d(x, w, stride=s, padding=p))
        # torch's conv backward for chosen inputs: data (not for the stem, whose input is data) and filter.
        mask_d = [cin != 3, False, False]
        mask_w = [False, True, False]
        bw = torch.ops.aten.convolution_backward
        args = lambda m: (dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, m)
        td, cd = timeit(lambda: bw(*args(mask_d))) if cin != 3 else (0.0, 0.0)
        tw, cw = timeit(lambda: bw(*args(mask_w)))
        total = tf + td + tw
        cpu = cf + cd + cw
        gf = lambda t: flops / t / 1e9 if t > 0 else float("nan")
        print(f"{name:<26} {gf(tf):>9.1f} {gf(td):>9.1f} {gf(tw):>9.1f} {total * 1e3:>9.1f} {a.batch / total:>9.1f} {cpu * 1e3:>9.1f}")
        all_flops += flops * (2 if cin == 3 else 3)
        all_secs += total
        all_cpu += cpu
    print(f"all shapes: {all_flops / all_secs / 1e9:.1f} GFLOP/s forward+backward (wall), "
          f"{all_flops / all_cpu / 1e9:.1f} GFLOP per CPU-second")


if __name__ == "__main__":
    main()
