#!/usr/bin/env python3
"""PyTorch baselines for bench/gpu-check.sh (prints markdown to stdout).

  torch_ir50.py ir50 [--compile]   IR-50 (insightface iresnet50) + ArcFace head training throughput:
                                   112x112, eager AMP bf16, channels-last, SGD; images/s and MFU.
                                   --fp32: plain float32 without TF32 (the engine's f32 GPU step).
  torch_ir50.py head               the head alone: linear on normalized x/W + ArcFace margin + cross
                                   entropy, forward and backward: time and peak memory.

Inputs are random (never zeros); timing uses CUDA events after warm-up, median over steps.
`--device cpu` with small sizes is a smoke test only.
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, downsample):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        idt = x if self.downsample is None else self.downsample(x)
        return out + idt


class IResNet(nn.Module):
    """insightface arcface_torch iresnet (layers [3, 4, 14, 3] for IR-50), 112x112 input."""

    def __init__(self, layers=(3, 4, 14, 3), emb=512):
        super().__init__()
        self.conv1 = conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        stages = []
        for cout, n in zip((64, 128, 256, 512), layers):
            ds = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout, eps=1e-5))
            blocks = [IBasicBlock(cin, cout, 2, ds)]
            blocks += [IBasicBlock(cout, cout, 1, None) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, emb)
        self.features = nn.BatchNorm1d(emb, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.layers(self.prelu(self.bn1(self.conv1(x))))
        x = torch.flatten(self.bn2(x), 1)
        # insightface's iresnet runs fc and features outside autocast, in f32 (as the engine does).
        with torch.autocast(x.device.type, enabled=False):
            return self.features(self.fc(x.to(self.fc.weight.dtype)))


class ArcFace(nn.Module):
    """Normalized linear classifier with the ArcFace margin (EXACT mode, fallback past pi - m)."""

    def __init__(self, classes, emb=512, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, emb) * 0.01)
        self.s, self.m = s, m
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def forward(self, x, labels):
        cos = F.linear(F.normalize(x), F.normalize(self.weight)).float().clamp(-1, 1)
        cy = cos.gather(1, labels[:, None])
        sin = (1 - cy * cy).clamp_min(0).sqrt()
        phi = cy * math.cos(self.m) - sin * math.sin(self.m)
        phi = torch.where(cy > self.th, phi, cy - self.mm)
        logits = cos.scatter(1, labels[:, None], phi) * self.s
        return F.cross_entropy(logits, labels)


def timed(fn, steps, warmup, device):
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times), times


def step_flops(model, head, x, y, amp=True):
    """FLOPs of one forward+backward, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = head(model(x), y)
        loss.backward()
    return fc.get_total_flops()


def bench_ir50(a):
    dev = a.device
    amp = not a.fp32
    if a.fp32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = IResNet().to(dev).to(memory_format=torch.channels_last)
    head = ArcFace(a.classes).to(dev)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 112, 112, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    flops = step_flops(model, head, x[: min(a.batch, 8)], y[: min(a.batch, 8)], amp) * a.batch / min(a.batch, 8)
    opt.zero_grad(set_to_none=True)

    def train_step(x, y):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss = head(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    fn = torch.compile(train_step) if a.compile else train_step
    mode = "torch.compile" if a.compile else "eager"
    t0 = time.perf_counter()
    med, _ = timed(lambda: fn(x, y), a.steps, a.warmup, dev)
    total = time.perf_counter() - t0
    ips = a.batch / med
    mfu = flops / med / (a.peak_tflops * 1e12)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan")
    print("| run | batch | classes | images/s | GFLOP/image (fwd+bwd) | MFU | step ms | peak GiB | total s |")
    print("|---|---|---|---|---|---|---|---|---|")
    prec = "fp32 (no TF32)" if a.fp32 else "AMP bf16"
    print(f"| PyTorch {mode} {prec} channels-last | {a.batch} | {a.classes} | {ips:.0f} | "
          f"{flops / 1e9 / a.batch:.2f} | {100 * mfu:.1f}% | {med * 1e3:.1f} | {peak:.1f} | {total:.0f} |")


def bench_head(a):
    dev = a.device
    torch.manual_seed(0)
    head = ArcFace(a.classes).to(dev)
    x = torch.randn(a.batch, 512, device=dev, requires_grad=True)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = head(x, y)
        loss.backward()
        x.grad = None
        head.weight.grad = None

    med, _ = timed(step, a.steps, a.warmup, dev)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if dev == "cuda" else float("nan")
    print("| run | batch | classes | step ms (fwd+bwd) | peak MiB above inputs |")
    print("|---|---|---|---|---|")
    print(f"| PyTorch linear+ArcFace+CE (bf16 autocast) | {a.batch} | {a.classes} | {med * 1e3:.2f} | {peak:.0f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ir50", "head"])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--classes", type=int, default=93431)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--fp32", action="store_true", help="ir50 in plain float32, TF32 off (compare with the engine's f32 step)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the card (H100 SXM: 989)")
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_ir50.py: no CUDA device visible to PyTorch")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    (bench_ir50 if a.what == "ir50" else bench_head)(a)


if __name__ == "__main__":
    main()
