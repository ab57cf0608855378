#!/usr/bin/env python3
"""Checks the host emulation of libcuBLAS (tests/cuda_emu/cublas.cpp) against NumPy.

Usage: check_cublas.py LIBDIR   (LIBDIR holds the built libcublas.so)

No libcuda is loaded here, so every call runs immediately. Matrices are column-major with leading
dimensions larger than their rows; every case checks the padding of C is left untouched.
"""
import ctypes as ct
import sys
import time

import numpy as np

lib = ct.CDLL(sys.argv[1].rstrip("/") + "/libcublas.so")

OP_N, OP_T, OP_C = 0, 1, 2
R_32F, R_64F, R_16F, R_16BF = 0, 1, 2, 14
COMPUTE_16F, COMPUTE_32F, COMPUTE_64F, COMPUTE_32F_FAST_TF32, COMPUTE_32I = 64, 68, 70, 77, 72
GEMM_DEFAULT = -1
INVALID_VALUE, NOT_SUPPORTED = 7, 15

P, I, LL = ct.c_void_p, ct.c_int, ct.c_longlong
gemm_args = [P, I, I, I, I, I, P, P, I, P, I, P, P, I]
sb_args = [P, I, I, I, I, I, P, P, I, LL, P, I, LL, P, P, I, LL, I]
for name in ("cublasSgemm_v2", "cublasDgemm_v2", "cublasHgemm"):
    getattr(lib, name).argtypes = gemm_args
for name in ("cublasSgemmStridedBatched", "cublasDgemmStridedBatched", "cublasHgemmStridedBatched"):
    getattr(lib, name).argtypes = sb_args
lib.cublasGemmEx.argtypes = [P, I, I, I, I, I, P, P, I, I, P, I, I, P, P, I, I, I, I]
lib.cublasGemmStridedBatchedEx.argtypes = [P, I, I, I, I, I, P, P, I, I, LL, P, I, I, LL, P, P, I, I, LL, I, I, I]
for name in ("cublasSgemv_v2", "cublasDgemv_v2"):
    getattr(lib, name).argtypes = [P, I, I, I, P, P, I, P, I, P, P, I]
for name in ("cublasSasum_v2", "cublasDasum_v2"):
    getattr(lib, name).argtypes = [P, I, P, I, P]
lib.cublasGetStatusName.restype = ct.c_char_p

handle = P()
assert lib.cublasCreate_v2(ct.byref(handle)) == 0

rng = np.random.default_rng(1234)
passed = failed = 0


def report(name, ok, detail=""):
    global passed, failed
    passed += ok
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")


def ptr(a):
    return a.ctypes.data_as(P)


# --- element types: storage dtype, conversion from float64 to the stored bits, and back ---------
def to_bf16(x):
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(h):
    return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


TYPES = {  # name: (cuda type, numpy storage, encode, decode, half-ulp relative rounding of the output)
    "f32": (R_32F, np.float32, lambda x: x.astype(np.float32), lambda a: a.astype(np.float64), 2.0**-24),
    "f64": (R_64F, np.float64, lambda x: x.astype(np.float64), lambda a: a.astype(np.float64), 2.0**-53),
    "f16": (R_16F, np.uint16, lambda x: x.astype(np.float16).view(np.uint16),
            lambda a: a.view(np.float16).astype(np.float64), 2.0**-11),
    "bf16": (R_16BF, np.uint16, to_bf16, from_bf16, 2.0**-8),
}


def rel_err(got, ref):
    denom = np.linalg.norm(ref)
    return np.linalg.norm(got - ref) / denom if denom > 0 else np.linalg.norm(got)


def within_dot_bound(got, ref, mag, k, u):
    """Standard forward error bound of a k-term dot product in precision u (for results that
    cancel, where a 1e-6 relative error is out of reach of any f32 implementation)."""
    return bool((np.abs(got - ref) <= (k + 2) * u * mag).all())


def col_view(buf, off, rows, cols, ld):
    """rows x cols matrix stored column-major at buf[off:] with leading dimension ld."""
    return buf[off:off + ld * cols].reshape(cols, ld).T[:rows, :]


def run_gemm_case(kind, ab_type, c_type, ta, tb, m, n, k, alpha, beta, batch=None, pad=(0, 0, 0), nan_a=False):
    """kind: S, D, H (typed entry points), EX (GemmEx), EX16 (GemmEx with CUBLAS_COMPUTE_16F).
    batch: None or (count, extra stride; -1 broadcasts A)."""
    at, _, aenc, adec, _ = TYPES[ab_type]
    cty, _, cenc, cdec, c_ulp = TYPES[c_type]
    ra, ca = (m, k) if ta == OP_N else (k, m)
    rb, cb = (k, n) if tb == OP_N else (n, k)
    lda, ldb, ldc = max(1, ra) + pad[0], max(1, rb) + pad[1], max(1, m) + pad[2]
    count, extra = batch or (1, 0)
    broadcast_a = extra < 0  # strideA = 0: one A for every batch entry
    extra = max(extra, 0)
    sa, sb, sc = (0 if broadcast_a else lda * ca + extra), ldb * cb + extra, ldc * n + extra
    A = aenc(rng.standard_normal(max(sa * (count - 1), 0) + lda * ca))
    B = aenc(rng.standard_normal(sb * (count - 1) + ldb * cb))
    C = cenc(rng.standard_normal(sc * (count - 1) + ldc * n))
    if beta == 0:  # C must not be read at all
        C[:] = cenc(np.full(C.shape, np.nan))
    if nan_a:
        col_view(A, 0, ra, ca, lda)[0, 0] = aenc(np.array([np.nan]))[0]
    C0 = C.copy()

    if ab_type == "f64" or (kind == "EX" and c_type == "f64"):
        sdt, compute = np.float64, COMPUTE_64F
    elif kind in ("H", "EX16"):
        sdt, compute = np.float16, COMPUTE_16F
    else:
        sdt, compute = np.float32, COMPUTE_32F
    al, be = np.array([alpha], sdt), np.array([beta], sdt)
    args = (handle, ta, tb, m, n, k, ptr(al), ptr(A))
    if kind.startswith("EX") and batch:
        st = lib.cublasGemmStridedBatchedEx(*args, at, lda, sa, ptr(B), at, ldb, sb, ptr(be), ptr(C), cty, ldc, sc,
                                            count, compute, GEMM_DEFAULT)
    elif kind.startswith("EX"):
        st = lib.cublasGemmEx(*args, at, lda, ptr(B), at, ldb, ptr(be), ptr(C), cty, ldc, compute, GEMM_DEFAULT)
    elif batch:
        fn = {"S": lib.cublasSgemmStridedBatched, "D": lib.cublasDgemmStridedBatched,
              "H": lib.cublasHgemmStridedBatched}[kind]
        st = fn(*args, lda, sa, ptr(B), ldb, sb, ptr(be), ptr(C), ldc, sc, count)
    else:
        fn = {"S": lib.cublasSgemm_v2, "D": lib.cublasDgemm_v2, "H": lib.cublasHgemm}[kind]
        st = fn(*args, lda, ptr(B), ldb, ptr(be), ptr(C), ldc)

    name = (f"{kind}{'-batched' if batch else ''} {ab_type}->{c_type} op={'NTC'[ta]}{'NTC'[tb]} "
            f"m={m} n={n} k={k} ld=({lda},{ldb},{ldc}) alpha={alpha} beta={beta}"
            f"{f' batch={count} strides=({sa},{sb},{sc})' if batch else ''}{' nan-in-A' if nan_a else ''}")
    if st != 0:
        return report(name, False, f"status {st}")
    alpha64, beta64 = float(sdt(alpha)), float(sdt(beta))
    ok, worst = True, 0.0
    for b in range(count):
        a = col_view(adec(A), b * sa, ra, ca, lda)
        bm = col_view(adec(B), b * sb, rb, cb, ldb)
        opa, opb = (a if ta == OP_N else a.T), (bm if tb == OP_N else bm.T)
        c0 = col_view(cdec(C0), b * sc, m, n, ldc)
        prod = opa @ opb
        ref = alpha64 * prod + (beta64 * c0 if beta != 0 else 0)
        got = col_view(cdec(C), b * sc, m, n, ldc)
        mag = abs(alpha64) * (np.abs(opa) @ np.abs(opb)) + (abs(beta64) * np.abs(c0) if beta != 0 else 0)
        if nan_a:
            # stored A[0, 0] is op(A)[0, 0] either way: row 0 of C must be all NaN, the rest finite
            ok &= bool(np.isnan(got[0, :]).all())
            got, ref, mag = got[1:], ref[1:], mag[1:]
        if np.isnan(got).any():
            return report(name, False, "unexpected NaN")
        if c_type in ("f32", "f64"):
            err = rel_err(got, ref)
            worst = max(worst, err)
            ok &= err < (1e-6 if c_type == "f32" else 1e-13) or within_dot_bound(got, ref, mag, k, c_ulp)
        else:
            # a few output ulps, plus the f32 accumulation error of a k-term dot product
            bound = 4 * c_ulp * np.abs(ref) + 4 * k * 2.0**-24 * mag + 1e-30
            err = np.max(np.abs(got - ref) / bound) if got.size else 0.0
            worst = max(worst, err)
            ok &= err <= 1
    # nothing outside the m x n blocks of C may change (ldc padding, gaps between batches)
    touched = np.zeros(C.shape, bool)
    for b in range(count):
        col_view(touched, b * sc, m, n, ldc)[:] = True
    same = (C[~touched] == C0[~touched]) | (np.isnan(cdec(C[~touched])) & np.isnan(cdec(C0[~touched])))
    ok &= bool(same.all())
    report(name, ok, f"err={worst:.3g}" + ("" if same.all() else " padding changed"))


OPS = [(OP_N, OP_N), (OP_N, OP_T), (OP_T, OP_N), (OP_T, OP_T)]
SHAPES = [(1, 1, 1), (1, 7, 1), (5, 1, 9), (1, 1, 33), (7, 3, 1), (17, 31, 13), (64, 48, 80), (3, 129, 2)]


def shape_cases():
    for (m, n, k) in SHAPES:
        for ta, tb in OPS:
            pad = tuple(int(x) for x in rng.integers(0, 4, 3))
            yield m, n, k, ta, tb, pad


for kind, ab, c in [("S", "f32", "f32"), ("D", "f64", "f64"), ("EX", "f32", "f32"), ("EX", "bf16", "bf16"),
                    ("EX", "f16", "f16"), ("EX", "bf16", "f32"), ("EX", "f16", "f32"), ("EX", "f64", "f64"),
                    ("H", "f16", "f16"), ("EX16", "f16", "f16")]:
    for i, (m, n, k, ta, tb, pad) in enumerate(shape_cases()):
        beta = [0.0, -0.75, 1.0, 0.5][i % 4]
        run_gemm_case(kind, ab, c, ta, tb, m, n, k, 1.25 if i % 3 else -0.5, beta, pad=pad)

# OP_C behaves as OP_T for real types; NaN propagates; alpha = 0 and k = 0 leave C = beta * C.
run_gemm_case("S", "f32", "f32", OP_C, OP_C, 9, 4, 6, 0.75, 0.25, pad=(1, 2, 3))
run_gemm_case("S", "f32", "f32", OP_N, OP_T, 9, 4, 6, 0.75, 0.0, pad=(1, 0, 2), nan_a=True)
run_gemm_case("EX", "bf16", "bf16", OP_T, OP_N, 5, 6, 7, 2.0, 0.5, nan_a=True)
run_gemm_case("S", "f32", "f32", OP_N, OP_N, 6, 5, 0, 1.5, 0.5)
run_gemm_case("D", "f64", "f64", OP_T, OP_N, 6, 5, 4, 0.0, -2.0)

for kind, ab, c in [("S", "f32", "f32"), ("D", "f64", "f64"), ("EX", "bf16", "bf16"), ("EX", "f16", "f16"),
                    ("EX", "bf16", "f32"), ("EX", "f32", "f32"), ("H", "f16", "f16")]:
    for i, (m, n, k, ta, tb, pad) in enumerate(shape_cases()):
        if i % 3:
            continue
        count, extra = [(3, 0), (2, 5), (4, -1)][(i // 3) % 3]  # -1: broadcast A (strideA = 0)
        run_gemm_case(kind, ab, c, ta, tb, m, n, k, 0.75, [0.0, 1.5][i % 2], batch=(count, extra), pad=pad)


# 16-bit outputs are rounded to nearest even: with k = 1 every product is exact in f32, so the
# output bits must equal NumPy's rounding of it (truncation would differ in about half the elements).
for ab, cty, enc in [("bf16", R_16BF, to_bf16), ("f16", R_16F, lambda x: x.astype(np.float16).view(np.uint16))]:
    m, n = 16, 16
    A, B = TYPES[ab][2](rng.standard_normal(m)), TYPES[ab][2](rng.standard_normal(n))
    C = np.zeros(m * n, np.uint16)
    one, zero = np.array([1.0], np.float32), np.array([0.0], np.float32)
    st = lib.cublasGemmEx(handle, OP_N, OP_T, m, n, 1, ptr(one), ptr(A), cty, m, ptr(B), cty, n, ptr(zero), ptr(C),
                          cty, m, COMPUTE_32F, GEMM_DEFAULT)
    exact = np.outer(TYPES[ab][3](A), TYPES[ab][3](B)).astype(np.float32)  # exact products
    want = enc(exact.T.reshape(-1))  # column-major
    report(f"rounding: {ab} output is round-to-nearest-even", st == 0 and np.array_equal(C, want),
           f"{int((C != want).sum())} of {C.size} differ")

# DEVICE pointer mode: alpha/beta are "device" pointers, which are host memory in this emulation.
assert lib.cublasSetPointerMode_v2(handle, 1) == 0
A, B, C = (rng.standard_normal(size).astype(np.float32) for size in (12, 16, 12))  # 3x4, 4x4, 3x4
al, be, C0 = np.array([2.0], np.float32), np.array([0.5], np.float32), C.copy()
st = lib.cublasSgemm_v2(handle, OP_N, OP_N, 3, 4, 4, ptr(al), ptr(A), 3, ptr(B), 4, ptr(be), ptr(C), 3)
ref = 2.0 * (A.reshape(4, 3).T.astype(np.float64) @ B.reshape(4, 4).T) + 0.5 * C0.reshape(4, 3).T
out = np.array([0.0], np.float32)
st2 = lib.cublasSasum_v2(handle, 12, ptr(A), 1, ptr(out))
assert lib.cublasSetPointerMode_v2(handle, 0) == 0
report("pointer mode DEVICE: sgemm and asum", st == 0 and st2 == 0 and rel_err(C.reshape(4, 3).T, ref) < 1e-6
       and abs(out[0] - np.abs(A).sum()) < 1e-5, f"err={rel_err(C.reshape(4, 3).T, ref):.3g}")


# --- gemv / asum ------------------------------------------------------------------------------
def vec(buf, length, inc):
    idx = np.arange(length) * abs(inc)
    return buf[idx if inc > 0 else idx[::-1]]


for fn, dt, tol, u in [(lib.cublasSgemv_v2, np.float32, 1e-6, 2.0**-24), (lib.cublasDgemv_v2, np.float64, 1e-13, 2.0**-53)]:
    for trans, m, n, lda, incx, incy, alpha, beta in [(OP_N, 7, 5, 9, 1, 1, 1.5, 0.0), (OP_T, 7, 5, 7, 2, -3, -0.5, 2.0),
                                                      (OP_N, 1, 33, 4, -1, 2, 1.0, 1.0), (OP_T, 40, 1, 40, 1, 1, 2.0, 0.0)]:
        lx, ly = (n, m) if trans == OP_N else (m, n)
        A = rng.standard_normal(lda * n).astype(dt)
        x = rng.standard_normal(lx * abs(incx)).astype(dt)
        y = rng.standard_normal(ly * abs(incy)).astype(dt)
        if beta == 0:
            y[:] = np.nan
        y0 = y.copy()
        al, be = np.array([alpha], dt), np.array([beta], dt)
        st = fn(handle, trans, m, n, ptr(al), ptr(A), lda, ptr(x), incx, ptr(be), ptr(y), incy)
        a = col_view(A.astype(np.float64), 0, m, n, lda)
        op = a if trans == OP_N else a.T
        ref = alpha * (op @ vec(x, lx, incx).astype(np.float64)) + (beta * vec(y0, ly, incy) if beta else 0)
        got = vec(y, ly, incy)
        err = rel_err(got, ref)
        mag = abs(alpha) * (np.abs(op) @ np.abs(vec(x, lx, incx))) + (abs(beta) * np.abs(vec(y0, ly, incy)) if beta else 0)
        untouched = np.ones(y.shape, bool)
        untouched[np.arange(ly) * abs(incy)] = False
        same = np.array_equal(y[untouched], y0[untouched], equal_nan=True)
        report(f"{dt.__name__} gemv op={'NTC'[trans]} m={m} n={n} lda={lda} incx={incx} incy={incy}",
               st == 0 and (err < tol or within_dot_bound(got, ref, mag, lx, u)) and same, f"err={err:.3g}")

for fn, dt, tol in [(lib.cublasSasum_v2, np.float32, 1e-6), (lib.cublasDasum_v2, np.float64, 1e-13)]:
    for n, inc in [(1, 1), (1000, 1), (37, 3), (5, 0), (0, 1)]:
        x = rng.standard_normal(max(n * max(inc, 1), 1)).astype(dt)
        out = np.array([-1.0], dt)
        st = fn(handle, n, ptr(x), inc, ptr(out))
        ref = np.abs(x[::inc][:n].astype(np.float64)).sum() if inc > 0 else 0.0
        err = abs(out[0] - ref) / max(ref, 1e-300)
        report(f"{dt.__name__} asum n={n} inc={inc}", st == 0 and err < tol, f"got={out[0]:.6g} ref={ref:.6g}")

# --- status codes -----------------------------------------------------------------------------
A = np.ones(64, np.float32)
one = np.array([1.0], np.float32)
C = np.full(64, 7.0, np.float32)
for desc, args, want in [
    ("lda < m", (OP_N, OP_N, 4, 2, 3, 3, 3, 4), INVALID_VALUE),
    ("lda < k for op T", (OP_T, OP_N, 4, 2, 3, 2, 3, 4), INVALID_VALUE),
    ("ldb < n for op T", (OP_N, OP_T, 4, 2, 3, 4, 1, 4), INVALID_VALUE),
    ("ldc < m", (OP_N, OP_N, 4, 2, 3, 4, 3, 3), INVALID_VALUE),
    ("m < 0", (OP_N, OP_N, -1, 2, 3, 4, 3, 4), INVALID_VALUE),
    ("bad op", (5, OP_N, 4, 2, 3, 4, 3, 4), INVALID_VALUE),
    ("m = 0 is a no-op", (OP_N, OP_N, 0, 2, 3, 1, 3, 1), 0),
]:
    ta, tb, m, n, k, lda, ldb, ldc = args
    st = lib.cublasSgemm_v2(handle, ta, tb, m, n, k, ptr(one), ptr(A), lda, ptr(A), ldb, ptr(one), ptr(C), ldc)
    report(f"status: {desc}", st == want and (C == 7.0).all(), f"got {st} ({lib.cublasGetStatusName(st).decode()})")

for desc, types, compute, want in [
    ("f16 x bf16 mixed", (R_16F, R_16BF, R_16F), COMPUTE_32F, NOT_SUPPORTED),
    ("f32 with 64F compute", (R_32F, R_32F, R_32F), COMPUTE_64F, NOT_SUPPORTED),
    ("32I compute", (R_32F, R_32F, R_32F), COMPUTE_32I, NOT_SUPPORTED),
    ("f32 with FAST_TF32", (R_32F, R_32F, R_32F), COMPUTE_32F_FAST_TF32, 0),
]:
    st = lib.cublasGemmEx(handle, OP_N, OP_N, 2, 2, 2, ptr(one), ptr(A), types[0], 2, ptr(A), types[1], 2,
                          ptr(np.zeros(1, np.float32)), ptr(C), types[2], 2, compute, GEMM_DEFAULT)
    report(f"status: GemmEx {desc}", st == want, f"got {st}")

# --- handle state -------------------------------------------------------------------------------
v = ct.c_int()
lib.cublasGetVersion_v2(handle, ct.byref(v))
mode = ct.c_int()
ok = lib.cublasSetMathMode(handle, 3) == 0 and lib.cublasGetMathMode(handle, ct.byref(mode)) == 0 and mode.value == 3
ok &= lib.cublasGetPointerMode_v2(handle, ct.byref(mode)) == 0 and mode.value == 0
s = P()
ok &= lib.cublasSetStream_v2(handle, P(0x1234)) == 0 and lib.cublasGetStream_v2(handle, ct.byref(s)) == 0
ok &= s.value == 0x1234 and lib.cublasSetStream_v2(handle, None) == 0
report("handle state (math mode, pointer mode, stream)", ok, f"version={v.value}")

# --- speed: 512^3 f32 --------------------------------------------------------------------------
N = 512
A = rng.standard_normal(N * N).astype(np.float32)
C = np.zeros(N * N, np.float32)
zero = np.zeros(1, np.float32)
t = time.perf_counter()
st = lib.cublasSgemm_v2(handle, OP_T, OP_N, N, N, N, ptr(one), ptr(A), N, ptr(A), N, ptr(zero), ptr(C), N)
dt_s = time.perf_counter() - t
report(f"speed: sgemm {N}^3", st == 0 and dt_s < 1.0, f"{dt_s * 1000:.0f} ms")

assert lib.cublasDestroy_v2(handle) == 0
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
