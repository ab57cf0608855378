#!/usr/bin/env python3
"""Checks the emulated libcudnn.so (tests/cuda_emu/cudnn.cpp) against PyTorch on the CPU.

Usage: check_cudnn.py LIBDIR   (LIBDIR holds libcudnn.so, as built by tests/cuda_emu/build.sh)

Drives the library through the C calls cudarc's safe cudnn API makes (handle, 4-d tensor / filter /
convolution descriptors, cudnnGet*Algorithm_v7, cudnnGet*WorkspaceSize, the launch) and compares
forward, backward-data and backward-filter results with torch.nn.functional.conv2d and autograd in
float64 on the same (already rounded) inputs.

Tolerances, as ||out - ref|| / ||ref||:
  float  1e-5  (float accumulation of at most a few hundred products: ~1e-7 in practice)
  double 1e-12
  half   2^-11 + 1e-5,  bf16  2^-8 + 1e-5: the library accumulates in float and rounds once to the
         16-bit type, so each element is off by at most the unit roundoff u times its magnitude (plus
         the float accumulation error), hence the norm-wise error is at most u plus that.
"""
import ctypes
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

FLOAT, DOUBLE, HALF, BF16 = 0, 1, 2, 9
NCHW, NHWC, NCHW_VECT_C = 0, 1, 2
CONVOLUTION, CROSS_CORRELATION = 0, 1
SUCCESS, BAD_PARAM, NOT_SUPPORTED = 0, 2000, 3000
TORCH = {FLOAT: torch.float32, DOUBLE: torch.float64, HALF: torch.float16, BF16: torch.bfloat16}
DNAME = {FLOAT: "f32", DOUBLE: "f64", HALF: "f16", BF16: "bf16"}
TOL = {FLOAT: 1e-5, DOUBLE: 1e-12, HALF: 2.0**-11 + 1e-5, BF16: 2.0**-8 + 1e-5}


class Perf(ctypes.Structure):  # cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t
    _fields_ = [("algo", ctypes.c_int), ("status", ctypes.c_int), ("time", ctypes.c_float),
                ("memory", ctypes.c_size_t), ("determinism", ctypes.c_int), ("mathType", ctypes.c_int),
                ("reserved", ctypes.c_int * 3)]


def load(libdir):
    lib = ctypes.CDLL(os.path.join(libdir, "libcudnn.so"))
    P, I, Z = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    IP, PP, ZP, PerfP = ctypes.POINTER(I), ctypes.POINTER(P), ctypes.POINTER(Z), ctypes.POINTER(Perf)
    sigs = {
        "cudnnGetVersion": ([], Z),
        "cudnnCreate": ([PP], I), "cudnnDestroy": ([P], I), "cudnnSetStream": ([P, P], I),
        "cudnnCreateTensorDescriptor": ([PP], I), "cudnnDestroyTensorDescriptor": ([P], I),
        "cudnnSetTensor4dDescriptor": ([P, I, I, I, I, I, I], I),
        "cudnnSetTensor4dDescriptorEx": ([P, I] + [I] * 8, I),
        "cudnnSetTensorNdDescriptor": ([P, I, I, IP, IP], I),
        "cudnnCreateFilterDescriptor": ([PP], I), "cudnnDestroyFilterDescriptor": ([P], I),
        "cudnnSetFilter4dDescriptor": ([P, I, I, I, I, I, I], I),
        "cudnnSetFilterNdDescriptor": ([P, I, I, I, IP], I),
        "cudnnCreateConvolutionDescriptor": ([PP], I), "cudnnDestroyConvolutionDescriptor": ([P], I),
        "cudnnSetConvolution2dDescriptor": ([P, I, I, I, I, I, I, I, I], I),
        "cudnnSetConvolutionNdDescriptor": ([P, I, IP, IP, IP, I, I], I),
        "cudnnSetConvolutionMathType": ([P, I], I), "cudnnSetConvolutionGroupCount": ([P, I], I),
        "cudnnGetConvolutionForwardAlgorithm_v7": ([P, P, P, P, P, I, IP, PerfP], I),
        "cudnnGetConvolutionBackwardDataAlgorithm_v7": ([P, P, P, P, P, I, IP, PerfP], I),
        "cudnnGetConvolutionBackwardFilterAlgorithm_v7": ([P, P, P, P, P, I, IP, PerfP], I),
        "cudnnGetConvolutionForwardWorkspaceSize": ([P, P, P, P, P, I, ZP], I),
        "cudnnGetConvolutionBackwardDataWorkspaceSize": ([P, P, P, P, P, I, ZP], I),
        "cudnnGetConvolutionBackwardFilterWorkspaceSize": ([P, P, P, P, P, I, ZP], I),
        "cudnnConvolutionForward": ([P, P, P, P, P, P, P, I, P, Z, P, P, P], I),
        "cudnnConvolutionBackwardData": ([P, P, P, P, P, P, P, I, P, Z, P, P, P], I),
        "cudnnConvolutionBackwardFilter": ([P, P, P, P, P, P, P, I, P, Z, P, P, P], I),
    }
    for name, (args, res) in sigs.items():
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    return lib


def ok(st, what):
    if st != SUCCESS:
        raise RuntimeError(f"{what} returned {st}")


def ints(*v):
    return (ctypes.c_int * len(v))(*v)


class Emu:
    def __init__(self, lib):
        self.lib = lib
        h = ctypes.c_void_p()
        ok(lib.cudnnCreate(ctypes.byref(h)), "cudnnCreate")
        ok(lib.cudnnSetStream(h, None), "cudnnSetStream")
        self.h = h
        self.owned = []

    def _new(self, kind):
        d = ctypes.c_void_p()
        ok(getattr(self.lib, f"cudnnCreate{kind}Descriptor")(ctypes.byref(d)), kind)
        self.owned.append((kind, d))
        return d

    def tensor(self, dtype, layout, dims, how="4d"):
        d = self._new("Tensor")
        n, c, h, w = dims
        strides = (c * h * w, 1, w * c, c) if layout == NHWC else (c * h * w, h * w, w, 1)
        if how == "4d":
            st = self.lib.cudnnSetTensor4dDescriptor(d, layout, dtype, n, c, h, w)
        elif how == "ex":
            st = self.lib.cudnnSetTensor4dDescriptorEx(d, dtype, n, c, h, w, *strides)
        else:
            st = self.lib.cudnnSetTensorNdDescriptor(d, dtype, 4, ints(*dims), ints(*strides))
        return d, st

    def filt(self, dtype, layout, dims, how="4d"):
        d = self._new("Filter")
        if how == "4d":
            st = self.lib.cudnnSetFilter4dDescriptor(d, dtype, layout, *dims)
        else:
            st = self.lib.cudnnSetFilterNdDescriptor(d, dtype, layout, 4, ints(*dims))
        return d, st

    def conv(self, pad, stride, dil, mode, compute, how="2d", math_type=0):
        d = self._new("Convolution")
        if how == "2d":
            ok(self.lib.cudnnSetConvolution2dDescriptor(d, *pad, *stride, *dil, mode, compute), "conv2d desc")
        else:
            ok(self.lib.cudnnSetConvolutionNdDescriptor(d, 2, ints(*pad), ints(*stride), ints(*dil), mode,
                                                        compute), "convNd desc")
        ok(self.lib.cudnnSetConvolutionMathType(d, math_type), "math type")
        return d

    def free(self):
        for kind, d in self.owned:
            ok(getattr(self.lib, f"cudnnDestroy{kind}Descriptor")(d), f"destroy {kind}")
        self.owned = []


# ---- host buffers in cuDNN layouts ----
def to_mem(t, dtype, layout):
    """Logical NCHW / KCRS float64 tensor -> numpy buffer of `dtype` in `layout` (NHWC / KRSC)."""
    if layout == NHWC:
        t = t.permute(0, 2, 3, 1)
    t = t.contiguous().to(TORCH[dtype])
    if dtype in (HALF, BF16):
        t = t.view(torch.int16)
    return t.numpy().copy()


def from_mem(a, dtype, layout, dims):
    t = torch.from_numpy(a.copy())
    if dtype in (HALF, BF16):
        t = t.view(TORCH[dtype])
    t = t.double()
    n, c, h, w = dims
    return t.reshape(n, h, w, c).permute(0, 3, 1, 2) if layout == NHWC else t.reshape(dims)


def rounded(shape, dtype, gen):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(TORCH[dtype]).double()


def scalar(v, dtype):
    return ctypes.byref(ctypes.c_double(v) if dtype == DOUBLE else ctypes.c_float(v))


def rel_err(out, ref):
    if not torch.isfinite(out).all():
        return math.inf
    return (torch.linalg.vector_norm(out - ref) / max(torch.linalg.vector_norm(ref).item(), 1e-300)).item()


def out_size(n, pad, r, dil, stride):
    return 1 + (n + 2 * pad - ((r - 1) * dil + 1)) // stride


def pick(emu, direction, xd, wd, cd, yd):
    """What cudarc's pick_algorithm + get_workspace_size do: first entry of the _v7 list, its workspace."""
    lib, n = emu.lib, {"fwd": 8, "bwd_data": 6, "bwd_filter": 7}[direction]
    perf, cnt, ws = (Perf * n)(), ctypes.c_int(0), ctypes.c_size_t(0)
    if direction == "fwd":
        ok(lib.cudnnGetConvolutionForwardAlgorithm_v7(emu.h, xd, wd, cd, yd, n, ctypes.byref(cnt), perf), "v7")
    elif direction == "bwd_data":
        ok(lib.cudnnGetConvolutionBackwardDataAlgorithm_v7(emu.h, wd, yd, cd, xd, n, ctypes.byref(cnt), perf), "v7")
    else:
        ok(lib.cudnnGetConvolutionBackwardFilterAlgorithm_v7(emu.h, xd, yd, cd, wd, n, ctypes.byref(cnt), perf),
           "v7")
    assert 0 < cnt.value <= n and perf[0].status == SUCCESS, "bad perf results"
    algo = perf[0].algo
    workspace_size(emu, direction, xd, wd, cd, yd, algo, ws)
    return algo, ws.value


def workspace_size(emu, direction, xd, wd, cd, yd, algo, ws):
    lib = emu.lib
    if direction == "fwd":
        st = lib.cudnnGetConvolutionForwardWorkspaceSize(emu.h, xd, wd, cd, yd, algo, ctypes.byref(ws))
    elif direction == "bwd_data":
        st = lib.cudnnGetConvolutionBackwardDataWorkspaceSize(emu.h, wd, yd, cd, xd, algo, ctypes.byref(ws))
    else:
        st = lib.cudnnGetConvolutionBackwardFilterWorkspaceSize(emu.h, xd, yd, cd, wd, algo, ctypes.byref(ws))
    return st


def launch(emu, direction, dtype, alpha, beta, xd, x, wd, w, cd, yd, y, algo, ws_buf, ws_size):
    """x / w / y are the three buffers of the direction: fwd (x, w -> y), bwd_data (dy=y, w -> dx=x),
    bwd_filter (x, dy=y -> dw=w)."""
    lib, a, b = emu.lib, scalar(alpha, dtype), scalar(beta, dtype)
    wsp = ws_buf.ctypes.data if ws_buf is not None else None
    if direction == "fwd":
        return lib.cudnnConvolutionForward(emu.h, a, xd, x.ctypes.data, wd, w.ctypes.data, cd, algo, wsp, ws_size,
                                           b, yd, y.ctypes.data)
    if direction == "bwd_data":
        return lib.cudnnConvolutionBackwardData(emu.h, a, wd, w.ctypes.data, yd, y.ctypes.data, cd, algo, wsp,
                                                ws_size, b, xd, x.ctypes.data)
    return lib.cudnnConvolutionBackwardFilter(emu.h, a, xd, x.ctypes.data, yd, y.ctypes.data, cd, algo, wsp, ws_size,
                                              b, wd, w.ctypes.data)


class Case:
    def __init__(self, name, n=2, c=3, h=8, w=9, k=4, r=3, s=3, pad=(1, 1), stride=(1, 1), dil=(1, 1),
                 mode=CROSS_CORRELATION, layout=NCHW, flayout=None, alpha=1.0, beta=0.0, how="4d"):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        self.flayout = layout if flayout is None else flayout
        self.p = out_size(h, pad[0], r, dil[0], stride[0])
        self.q = out_size(w, pad[1], s, dil[1], stride[1])


def run_case(emu, cs, dtype, direction, gen, algo=None, timing=False):
    """Runs one direction of one case through the library; returns (relative error, seconds)."""
    xs, ws_, ys = (cs.n, cs.c, cs.h, cs.w), (cs.k, cs.c, cs.r, cs.s), (cs.n, cs.k, cs.p, cs.q)
    x, w, dy = rounded(xs, dtype, gen), rounded(ws_, dtype, gen), rounded(ys, dtype, gen)
    out_shape = {"fwd": ys, "bwd_data": xs, "bwd_filter": ws_}[direction]
    out_layout = cs.flayout if direction == "bwd_filter" else cs.layout
    # beta == 0: prefill with NaN, which must not leak into the result (cuDNN does not read y then).
    old = torch.full(out_shape, math.nan, dtype=torch.float64) if cs.beta == 0 else rounded(out_shape, dtype, gen)

    # float64 reference by autograd on the same rounded inputs; CUDNN_CONVOLUTION flips the filter.
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    weff = wr.flip(2, 3) if cs.mode == CONVOLUTION else wr
    yr = F.conv2d(xr, weff, stride=cs.stride, padding=cs.pad, dilation=cs.dil)
    assert tuple(yr.shape) == ys
    if direction == "fwd":
        core = yr.detach()
    else:
        gx, gw = torch.autograd.grad(yr, (xr, wr), dy)
        core = gx if direction == "bwd_data" else gw
    ref = cs.alpha * core + (cs.beta * old if cs.beta != 0 else 0)

    compute = DOUBLE if dtype == DOUBLE else FLOAT
    xd, st1 = emu.tensor(dtype, cs.layout, xs, cs.how)
    wd, st2 = emu.filt(dtype, cs.flayout, ws_, "nd" if cs.how == "nd" else "4d")
    yd, st3 = emu.tensor(dtype, cs.layout, ys, cs.how)
    ok(st1 or st2 or st3, "descriptor")
    cd = emu.conv(cs.pad, cs.stride, cs.dil, cs.mode, compute, "nd" if cs.how == "nd" else "2d")
    bx, bw, by = to_mem(x, dtype, cs.layout), to_mem(w, dtype, cs.flayout), to_mem(dy, dtype, cs.layout)
    ob = to_mem(old, dtype, out_layout)
    if direction == "fwd":
        by = ob
    elif direction == "bwd_data":
        bx = ob
    else:
        bw = ob
    if algo is None:
        algo, ws_size = pick(emu, direction, xd, wd, cd, yd)
    else:
        wsz = ctypes.c_size_t(0)
        ok(workspace_size(emu, direction, xd, wd, cd, yd, algo, wsz), "workspace size")
        ws_size = wsz.value
    ws_buf = np.zeros(ws_size, np.uint8) if ws_size else None
    t0 = time.perf_counter()
    ok(launch(emu, direction, dtype, cs.alpha, cs.beta, xd, bx, wd, bw, cd, yd, by, algo, ws_buf, ws_size),
       direction)
    dt = time.perf_counter() - t0
    emu.free()
    res = {"fwd": by, "bwd_data": bx, "bwd_filter": bw}[direction]
    return rel_err(from_mem(res, dtype, out_layout, out_shape), ref), dt, res


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    lib = load(sys.argv[1])
    emu = Emu(lib)
    gen = torch.Generator().manual_seed(1234)
    passed, failed = 0, 0

    def report(name, good, detail):
        nonlocal passed, failed
        passed += good
        failed += not good
        print(f"{'ok  ' if good else 'FAIL'} {name}: {detail}", flush=True)

    v = lib.cudnnGetVersion()
    report("cudnnGetVersion", 90000 <= v < 100000, str(v))

    cases = [
        Case("nchw 3x3 s1 p1"),
        Case("nhwc 3x3 s1 p1", layout=NHWC),
        Case("nchw 1x1 s1 p0", r=1, s=1, pad=(0, 0), alpha=0.5, beta=0.25),
        Case("nhwc 1x1 s2 p0", r=1, s=1, pad=(0, 0), stride=(2, 2), layout=NHWC, alpha=1.25),
        Case("nchw 3x3 s2 p1 conv-mode", stride=(2, 2), mode=CONVOLUTION, alpha=0.7, beta=0.3),
        Case("nhwc 3x3 s2 p0 conv-mode", pad=(0, 0), stride=(2, 2), mode=CONVOLUTION, layout=NHWC, alpha=-1.5,
             beta=2.0),
        Case("nchw 3x3 dil2 p2", h=11, w=10, pad=(2, 2), dil=(2, 2), alpha=1.5, beta=-0.5),
        Case("nhwc 3x3 dil2 s2 p1 conv-mode", h=11, w=10, stride=(2, 2), dil=(2, 2), mode=CONVOLUTION,
             layout=NHWC),
        Case("nchw 3x2 kernel pad(1,0) stride(2,1)", r=3, s=2, pad=(1, 0), stride=(2, 1), alpha=0.9, beta=0.1),
        Case("nhwc 2x3 kernel pad(0,1) stride(1,2) dil(1,2)", h=7, w=12, r=2, s=3, pad=(0, 1), stride=(1, 2),
             dil=(1, 2), layout=NHWC, mode=CONVOLUTION),
        Case("nchw c16 k8 5x5 s1 p2", n=1, c=16, h=12, w=12, k=8, r=5, s=5, pad=(2, 2)),
        Case("nhwc c16 k8 5x5 s2 p2", n=3, c=16, h=12, w=13, k=8, r=5, s=5, pad=(2, 2), stride=(2, 2),
             layout=NHWC, alpha=2.0, beta=1.0),
        Case("nchw via SetTensor4dDescriptorEx", how="ex", stride=(2, 2), mode=CONVOLUTION, beta=0.5),
        Case("nhwc via Nd descriptors", how="nd", layout=NHWC, stride=(2, 1), dil=(2, 1), h=10, pad=(2, 1)),
        Case("x nhwc, filter nchw (mixed)", layout=NHWC, flayout=NCHW, mode=CONVOLUTION),
    ]
    for dtype in (FLOAT, HALF, BF16, DOUBLE):
        for cs in cases if dtype != DOUBLE else cases[:6]:
            for direction in ("fwd", "bwd_data", "bwd_filter"):
                err, _, _ = run_case(emu, cs, dtype, direction, gen)
                report(f"{DNAME[dtype]} {direction} {cs.name} a={cs.alpha} b={cs.beta}", err < TOL[dtype],
                       f"rel err {err:.2e} (tol {TOL[dtype]:.1e})")

    # Every algorithm value computes the same (bitwise) result, with the workspace it asks for.
    cs = Case("algos", stride=(2, 2), mode=CONVOLUTION, alpha=0.5, beta=0.5)
    for direction, count in (("fwd", 8), ("bwd_data", 6), ("bwd_filter", 7)):
        outs = []
        for algo in range(count):
            g = torch.Generator().manual_seed(99)
            err, _, res = run_case(emu, cs, FLOAT, direction, g, algo=algo)
            outs.append(res)
            report(f"f32 {direction} algo {algo}", err < TOL[FLOAT], f"rel err {err:.2e}")
        report(f"{direction} all algos identical", all(np.array_equal(o, outs[0]) for o in outs), "")

    # Timing at a realistic size (cudarc callers run these in their tests).
    big = [Case("n8 c64 32x32 k64 3x3 nchw", n=8, c=64, h=32, w=32, k=64),
           Case("n8 c64 32x32 k64 3x3 nhwc", n=8, c=64, h=32, w=32, k=64, layout=NHWC)]
    for cs in big:
        for direction in ("fwd", "bwd_data", "bwd_filter"):
            err, dt, _ = run_case(emu, cs, FLOAT, direction, gen)
            report(f"f32 {direction} {cs.name}", err < TOL[FLOAT] and dt < 3.0, f"rel err {err:.2e}, {dt:.3f} s")

    # ---- rejections ----
    def descs(dtype=FLOAT, xs=(2, 3, 8, 9), ws_=(4, 3, 3, 3), ys=(2, 4, 8, 9), compute=FLOAT):
        xd, _ = emu.tensor(dtype, NCHW, xs)
        wd, _ = emu.filt(dtype, NCHW, ws_)
        yd, _ = emu.tensor(dtype, NCHW, ys)
        return xd, wd, emu.conv((1, 1), (1, 1), (1, 1), CROSS_CORRELATION, compute), yd

    bufs = [np.zeros(4096, np.float32) for _ in range(3)]
    perf, cnt, wsz = (Perf * 8)(), ctypes.c_int(0), ctypes.c_size_t(0)

    def expect(name, st, want):
        report(name, st == want, f"status {st} (want {want})")

    def all_calls(tag, want, **kw):
        xd, wd, cd, yd = descs(**kw)
        expect(f"{tag}: fwd v7", lib.cudnnGetConvolutionForwardAlgorithm_v7(emu.h, xd, wd, cd, yd, 8,
                                                                              ctypes.byref(cnt), perf), want)
        expect(f"{tag}: fwd workspace size", workspace_size(emu, "fwd", xd, wd, cd, yd, 0, wsz), want)
        for d in ("fwd", "bwd_data", "bwd_filter"):
            before = [b.copy() for b in bufs]
            st = launch(emu, d, FLOAT, 1.0, 0.0, xd, bufs[0], wd, bufs[1], cd, yd, bufs[2], 0, None, 0)
            expect(f"{tag}: {d} launch", st, want)
            report(f"{tag}: {d} left buffers alone", all(np.array_equal(a, b) for a, b in zip(before, bufs)), "")
        emu.free()

    all_calls("y height off by one", BAD_PARAM, ys=(2, 4, 9, 9))
    all_calls("y channels != K", BAD_PARAM, ys=(2, 3, 8, 9))
    all_calls("y batch != x batch", BAD_PARAM, ys=(1, 4, 8, 9))
    all_calls("filter C != x C", BAD_PARAM, ws_=(4, 2, 3, 3))
    all_calls("filter larger than padded input", BAD_PARAM, xs=(2, 3, 1, 9), ws_=(4, 3, 5, 3), ys=(2, 4, 1, 9))
    all_calls("half data with half compute", NOT_SUPPORTED, dtype=HALF, compute=HALF)
    all_calls("float data with double compute", NOT_SUPPORTED, compute=DOUBLE)

    xd, wd, cd, yd = descs()
    wd16, _ = emu.filt(HALF, NCHW, (4, 3, 3, 3))
    expect("x float, w half", workspace_size(emu, "fwd", xd, wd16, cd, yd, 0, wsz), BAD_PARAM)
    for d, count in (("fwd", 8), ("bwd_data", 6), ("bwd_filter", 7)):
        expect(f"{d} algo {count} (out of range)", launch(emu, d, FLOAT, 1.0, 0.0, xd, bufs[0], wd, bufs[1], cd,
                                                          yd, bufs[2], count, None, 0), BAD_PARAM)
        expect(f"{d} workspace size algo {count}", workspace_size(emu, d, xd, wd, cd, yd, count, wsz), BAD_PARAM)
        ok(workspace_size(emu, d, xd, wd, cd, yd, 1, wsz), "ws")
        need = wsz.value
        report(f"{d} algo 1 asks for a workspace", need > 0, f"{need} bytes")
        small = np.zeros(need, np.uint8)
        expect(f"{d} workspace too small", launch(emu, d, FLOAT, 1.0, 0.0, xd, bufs[0], wd, bufs[1], cd, yd,
                                                  bufs[2], 1, small, need - 1), BAD_PARAM)
        expect(f"{d} workspace size without pointer", launch(emu, d, FLOAT, 1.0, 0.0, xd, bufs[0], wd, bufs[1],
                                                             cd, yd, bufs[2], 1, None, need), BAD_PARAM)
        ok(workspace_size(emu, d, xd, wd, cd, yd, 0, wsz), "ws")
        report(f"{d} algo 0 needs no workspace", wsz.value == 0, f"{wsz.value} bytes")
    expect("group count 2", lib.cudnnSetConvolutionGroupCount(cd, 2), NOT_SUPPORTED)
    expect("group count 1", lib.cudnnSetConvolutionGroupCount(cd, 1), SUCCESS)
    _, st = emu.tensor(FLOAT, NCHW_VECT_C, (2, 8, 4, 4))
    expect("NCHW_VECT_C tensor", st, NOT_SUPPORTED)
    _, st = emu.tensor(FLOAT, NCHW, (2, 0, 4, 4))
    expect("zero dim tensor", st, BAD_PARAM)
    expect("stride 0 conv", lib.cudnnSetConvolution2dDescriptor(cd, 0, 0, 0, 1, 1, 1, CROSS_CORRELATION, FLOAT),
           BAD_PARAM)
    emu.free()
    ok(lib.cudnnDestroy(emu.h), "cudnnDestroy")

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
