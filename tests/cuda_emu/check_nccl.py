#!/usr/bin/env python3
"""Checks the libnccl stand-in (tests/cuda_emu/nccl.cpp) against NCCL's documented semantics.

Usage: check_nccl.py LIBDIR

Builds the emulation into LIBDIR (tests/cuda_emu/build.sh), then runs jobs of worker processes (this
script again, one process per rank, FACETRAIN_EMU_DEVICES set, each opening its own device through the
libcuda stand-in): every collective x reduction op x data type for worlds of 2, 3 and 4 ranks (counts
0, 1, odd, and larger than the exchange slot; the 3-rank job with a tiny slot so that every size
crosses several), in-place forms, nested group calls, stream ordering (a collective queued behind a
slow host function reads what it wrote; the call returns before the peers arrive; later work on the
stream waits for it), identical bits on every rank, immediate argument errors, a mismatched collective
reported through ncclCommGetAsyncError, two communicators used at once, ncclCommAbort unblocking a
collective whose peer never comes (and a peer arriving after the abort), several ranks in one process
(threads, ncclCommInitAll), nranks mismatch and a duplicate rank at init, and no /dev/shm leftovers.
Every expected value is computed with NumPy from the documentation's definitions, reducing in rank
order and rounding 16-bit floats to the type after each operation.
"""
import ctypes as ct
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
P, I, SZ = ct.c_void_p, ct.c_int, ct.c_size_t
NOT_READY = 600
NON_BLOCKING = 1
SUCCESS, INVALID_ARGUMENT, INVALID_USAGE = 0, 4, 5
SUM, PROD, MAX, MIN, AVG = range(5)
OPS = ["sum", "prod", "max", "min", "avg"]
# ncclDataType_t -> (name, NumPy storage type); bfloat16 is kept as its uint16 bits.
TYPES = [("int8", np.int8), ("uint8", np.uint8), ("int32", np.int32), ("uint32", np.uint32), ("int64", np.int64),
         ("uint64", np.uint64), ("float16", np.float16), ("float32", np.float32), ("float64", np.float64),
         ("bfloat16", np.uint16)]
BF16 = 9
SLOT = 4 << 20  # the stand-in's default exchange slot per rank


class UniqueId(ct.Structure):
    _fields_ = [("internal", ct.c_char * 128)]


def load_nccl(libdir):
    nc = ct.CDLL(os.path.join(libdir, "libnccl.so"))
    C = P  # ncclComm_t, cudaStream_t
    nc.ncclGetUniqueId.argtypes = [ct.POINTER(UniqueId)]
    nc.ncclCommInitRank.argtypes = [ct.POINTER(C), I, UniqueId, I]
    nc.ncclCommInitRankConfig.argtypes = [ct.POINTER(C), I, UniqueId, I, P]
    nc.ncclCommInitAll.argtypes = [ct.POINTER(C), I, ct.POINTER(I)]
    for n in ("ncclCommDestroy", "ncclCommAbort", "ncclCommFinalize"):
        getattr(nc, n).argtypes = [C]
    for n in ("ncclCommCount", "ncclCommCuDevice", "ncclCommUserRank", "ncclCommGetAsyncError"):
        getattr(nc, n).argtypes = [C, ct.POINTER(I)]
    nc.ncclGetVersion.argtypes = [ct.POINTER(I)]
    nc.ncclGetErrorString.argtypes = [I]
    nc.ncclGetErrorString.restype = ct.c_char_p
    nc.ncclGetLastError.argtypes = [C]
    nc.ncclGetLastError.restype = ct.c_char_p
    nc.ncclAllReduce.argtypes = [P, P, SZ, I, I, C, C]
    nc.ncclReduce.argtypes = [P, P, SZ, I, I, I, C, C]
    nc.ncclBroadcast.argtypes = [P, P, SZ, I, I, C, C]
    nc.ncclAllGather.argtypes = [P, P, SZ, I, C, C]
    nc.ncclReduceScatter.argtypes = [P, P, SZ, I, I, C, C]
    return nc


def new_id(nc):
    uid = UniqueId()
    assert nc.ncclGetUniqueId(ct.byref(uid)) == 0
    return ct.string_at(ct.addressof(uid), 128).hex()


def id_from_hex(h):
    return UniqueId.from_buffer_copy(bytes.fromhex(h))


# ------------------------------------------------------------------------------------------------
# References: the documentation's definitions, in rank order, rounded to the type after each step.
def bf16_to_f32(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(f):
    b = np.asarray(f, np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(f, np.float32))
    return np.where(nan, ((b >> 16) | 0x40).astype(np.uint16), r)


def apply(op, a, b):
    if op in (SUM, AVG):
        return a + b
    if op == PROD:
        return a * b
    return np.maximum(a, b) if op == MAX else np.minimum(a, b)


def ref_reduce(dt, op, arrs):
    n = len(arrs)
    with np.errstate(over="ignore"):
        if dt == BF16:
            acc = bf16_to_f32(arrs[0])
            for x in arrs[1:]:
                acc = bf16_to_f32(f32_to_bf16(apply(op, acc, bf16_to_f32(x))))
            if op == AVG:
                acc = bf16_to_f32(f32_to_bf16(acc / np.float32(n)))
            return f32_to_bf16(acc)
        t = TYPES[dt][1]
        acc = arrs[0].copy()
        for x in arrs[1:]:
            acc = apply(op, acc, x).astype(t)
        if op == AVG:
            if np.issubdtype(t, np.floating):
                acc = (acc / t(n)).astype(t)
            else:  # integer division truncating toward zero, as C does
                s = acc.astype(np.int64) if np.issubdtype(t, np.signedinteger) else acc.astype(np.uint64)
                acc = (np.sign(s) * (np.abs(s) // n)).astype(t) if np.issubdtype(t, np.signedinteger) else (s // n).astype(t)
        return acc


def gen(dt, op, count, rank, tag):
    rng = np.random.default_rng([tag, rank, dt, op])
    t = TYPES[dt][1]
    if dt < 6:
        lo = -20 if np.issubdtype(t, np.signedinteger) else 0
        return rng.integers(lo, 21, count).astype(t)
    x = rng.uniform(0.5, 2.0, count) if op == PROD else rng.standard_normal(count) * 10
    if dt == BF16:
        return f32_to_bf16(x.astype(np.float32))
    return x.astype(t)


# ------------------------------------------------------------------------------------------------
# Worker: one rank.
class Rank:
    def __init__(self, libdir, job, world, rank, tmp):
        self.job, self.world, self.rank, self.tmp = job, world, rank, tmp
        self.passed = self.failed = 0
        cu = self.cu = ct.CDLL(os.path.join(libdir, "libcuda.so"))
        U = ct.c_ulonglong
        cu.cuMemAlloc_v2.argtypes = [ct.POINTER(U), SZ]
        cu.cuMemcpyHtoD_v2.argtypes = [U, P, SZ]
        cu.cuMemcpyDtoH_v2.argtypes = [P, U, SZ]
        cu.cuMemcpyDtoDAsync_v2.argtypes = [U, U, SZ, P]
        cu.cuMemsetD8_v2.argtypes = [U, ct.c_ubyte, SZ]
        cu.cuStreamCreate.argtypes = [ct.POINTER(P), ct.c_uint]
        for n in ("cuStreamSynchronize", "cuStreamQuery", "cuStreamDestroy_v2"):
            getattr(cu, n).argtypes = [P]
        cu.cuLaunchHostFunc.argtypes = [P, P, P]
        cu.cuDevicePrimaryCtxRetain.argtypes = [ct.POINTER(P), I]
        cu.cuCtxSetCurrent.argtypes = [P]
        assert cu.cuInit(0) == 0
        self.nc = load_nccl(libdir)
        self.ctx = self.context(rank if world > 1 else 0)
        self.digest = hashlib.sha256()

    def context(self, device):
        ctx = P()
        assert self.cu.cuDevicePrimaryCtxRetain(ct.byref(ctx), device) == 0
        assert self.cu.cuCtxSetCurrent(ctx) == 0
        return ctx

    def report(self, name, ok, detail=""):
        self.passed += bool(ok)
        self.failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} [{self.job} r{self.rank}/{self.world}] {name} {detail if not ok else ''}",
              flush=True)

    def alloc(self, nbytes):
        p = ct.c_ulonglong()
        assert self.cu.cuMemAlloc_v2(ct.byref(p), max(nbytes, 1)) == 0
        return p.value

    def stream(self, flags=0):
        s = P()
        assert self.cu.cuStreamCreate(ct.byref(s), flags) == 0
        return s

    def put(self, dev, arr):
        arr = np.ascontiguousarray(arr)
        if arr.nbytes:
            assert self.cu.cuMemcpyHtoD_v2(dev, arr.ctypes.data, arr.nbytes) == 0

    def get(self, dev, dtype, count):
        out = np.empty(count, dtype)
        if out.nbytes:
            assert self.cu.cuMemcpyDtoH_v2(out.ctypes.data, dev, out.nbytes) == 0
        return out

    def init(self, idhex, world=None, rank=None):
        comm = P()
        r = self.nc.ncclCommInitRank(ct.byref(comm), world or self.world, id_from_hex(idhex),
                                     self.rank if rank is None else rank)
        assert r == 0, f"ncclCommInitRank: {r}"
        return comm

    def sync(self, s):
        return self.cu.cuStreamSynchronize(s)

    def bounded_sync(self, s, limit=5.0):
        """cuStreamSynchronize with a time limit: (result or None if it never returned, seconds)."""
        res = {}
        t0 = time.monotonic()
        th = threading.Thread(target=lambda: res.update(r=self.sync(s)), daemon=True)
        th.start()
        th.join(limit)
        return res.get("r"), time.monotonic() - t0

    def hung(self, what):
        """A stream that never drains: report, and leave at once (the driver would wait at exit)."""
        self.report(what, False, "(the stream never drained)")
        sys.stdout.flush()
        os._exit(1)

    # -- one collective, checked against its reference --------------------------------------------
    def collective(self, comm, s, kind, dt, op, count, root, inplace, tag):
        n, me, t = self.world, self.rank, TYPES[dt][1]
        es = np.dtype(t).itemsize
        size_in = count * n if kind == "reduce_scatter" else count
        inputs = [gen(dt, op, size_in, q, tag) for q in range(n)]
        mine = inputs[me]
        out_count = count * n if kind == "all_gather" else count
        self.cu.cuMemsetD8_v2(self.SB, 0xAB, max(size_in, out_count) * es)
        self.cu.cuMemsetD8_v2(self.RB, 0xFF, max(size_in, out_count) * es)
        sb, rb = self.SB, self.RB
        if inplace:
            if kind == "all_gather":
                sb = rb + me * count * es
            elif kind == "reduce_scatter":
                sb, rb = rb, rb + me * count * es
            else:
                sb = rb
        self.put(sb, mine)
        nc = self.nc
        if kind == "all_reduce":
            r = nc.ncclAllReduce(sb, rb, count, dt, op, comm, s)
        elif kind == "reduce":
            r = nc.ncclReduce(sb, rb, count, dt, op, root, comm, s)
        elif kind == "broadcast":
            r = nc.ncclBroadcast(sb, rb, count, dt, root, comm, s)
        elif kind == "all_gather":
            r = nc.ncclAllGather(sb, rb, count, dt, comm, s)
        else:
            r = nc.ncclReduceScatter(sb, rb, count, dt, op, comm, s)
        if r != 0:
            return f"returned {r}"
        if self.sync(s) != 0:
            return "stream failed"
        got = self.get(rb, t, out_count)
        if kind == "all_reduce":
            want = ref_reduce(dt, op, inputs)
            self.digest.update(got.tobytes())
        elif kind == "reduce":
            if me == root:
                want = ref_reduce(dt, op, inputs)
            else:  # recvbuff is only used on the root: untouched elsewhere
                want = mine if inplace else np.frombuffer(b"\xff" * (count * es), t)
        elif kind == "broadcast":
            want = inputs[root]
        elif kind == "all_gather":
            want = np.concatenate(inputs) if count else np.empty(0, t)
        else:
            want = ref_reduce(dt, op, [x[me * count:(me + 1) * count] for x in inputs])
        if got.tobytes() != np.ascontiguousarray(want, t).tobytes():
            bad = np.flatnonzero(got.view(np.uint8) != np.ascontiguousarray(want, t).view(np.uint8))
            i = bad[0] // es
            return f"element {i} of {out_count}: got {got[i]!r}, want {want[i]!r}"
        return None

    def check_all(self, comm, counts, large):
        s = self.stream()
        tag = 0
        for kind in ("all_reduce", "reduce", "broadcast", "all_gather", "reduce_scatter"):
            ops = range(5) if kind in ("all_reduce", "reduce", "reduce_scatter") else [0]
            for dt in range(10):
                errors = []
                for op in ops:
                    for count in counts:
                        for inplace in (False, True):
                            tag += 1
                            root = (tag % self.world) if kind in ("reduce", "broadcast") else 0
                            e = self.collective(comm, s, kind, dt, op, count, root, inplace, tag)
                            if e:
                                errors.append(f"{OPS[op]} count {count} root {root} inplace {inplace}: {e}")
                self.report(f"{kind} {TYPES[dt][0]} (ops {[OPS[o] for o in ops]}, counts {counts}, in place and not)",
                            not errors, "; ".join(errors[:3]))
        for kind, dt, count in large:
            tag += 1
            e = self.collective(comm, s, kind, dt, SUM, count, 1 % self.world, False, tag)
            self.report(f"{kind} {TYPES[dt][0]} count {count} (larger than one exchange slot)", e is None, e or "")
        self.cu.cuStreamDestroy_v2(s)

    def check_group(self, comm):
        """Nested groups: nothing is queued before the outermost ncclGroupEnd; then all of it, in order."""
        s, n, me, nc = self.stream(), self.world, self.rank, self.nc
        a = [gen(7, SUM, 5, q, 901) for q in range(n)]
        b = [gen(2, MAX, 3, q, 902) for q in range(n)]
        c = [gen(6, SUM, 4 * n, q, 903) for q in range(n)]
        ra, rb, rc, rd = self.alloc(20), self.alloc(12 * n), self.alloc(8), self.alloc(20)
        for p, x in ((ra, a[me]), (rb + 12 * me, b[me]), (self.SB, c[me])):
            self.put(p, x)
        self.cu.cuMemsetD8_v2(rc, 0xFF, 8)
        ok = nc.ncclGroupStart() == 0
        ok &= nc.ncclAllReduce(ra, ra, 5, 7, SUM, comm, s) == 0
        ok &= nc.ncclGroupStart() == 0
        ok &= nc.ncclAllGather(rb + 12 * me, rb, 3, 2, comm, s) == 0
        ok &= nc.ncclReduceScatter(self.SB, rc, 4, 6, SUM, comm, s) == 0
        ok &= nc.ncclGroupEnd() == 0
        self.cu.cuMemcpyDtoDAsync_v2(rd, ra, 20, s)  # queued now: runs before the group's work
        time.sleep(0.15)
        early = self.get(ra, np.float32, 5)
        ok &= nc.ncclGroupEnd() == 0
        ok &= self.sync(s) == 0
        self.report("nested group: nothing runs before the outermost ncclGroupEnd",
                    ok and early.tobytes() == a[me].tobytes() and self.get(rd, np.float32, 5).tobytes() == a[me].tobytes())
        good = (self.get(ra, np.float32, 5).tobytes() == ref_reduce(7, SUM, a).tobytes()
                and self.get(rb, np.int32, 3 * n).tobytes() == np.concatenate(b).tobytes()
                and self.get(rc, np.float16, 4).tobytes() == ref_reduce(6, SUM, [x[4 * me:4 * me + 4] for x in c]).tobytes())
        self.report("group: the recorded collectives all run, in order, at ncclGroupEnd", ok and good)
        self.cu.cuStreamDestroy_v2(s)

    def check_ordering(self, comm):
        """A collective queued behind a slow host function sees what it wrote, the call returns at once,
        and later work on the stream waits for the collective."""
        s, n, me, nc = self.stream(), self.world, self.rank, self.nc
        count = 1000
        data = [gen(7, SUM, count, q, 77) for q in range(n)]
        src = np.ascontiguousarray(data[me])
        self.cu.cuMemsetD8_v2(self.SB, 0, count * 4)
        out2 = self.alloc(count * 4)
        delay = 0.3 + 0.1 * me

        @ct.CFUNCTYPE(None, P)
        def slow(_):
            time.sleep(delay)
            ct.memmove(self.SB, src.ctypes.data, src.nbytes)

        self.keep = slow
        assert self.cu.cuLaunchHostFunc(s, ct.cast(slow, P), None) == 0
        t0 = time.monotonic()
        r = nc.ncclAllReduce(self.SB, self.RB, count, 7, SUM, comm, s)
        dt = time.monotonic() - t0
        q = self.cu.cuStreamQuery(s)
        self.cu.cuMemcpyDtoDAsync_v2(out2, self.RB, count * 4, s)
        rs = self.sync(s)
        want = ref_reduce(7, SUM, data)
        self.report("stream order: the collective reads what the stream's earlier work wrote; later work waits for it",
                    r == 0 and rs == 0 and self.get(out2, np.float32, count).tobytes() == want.tobytes())
        self.report("the collective call returns at once (before the stream reaches it and the peers arrive)",
                    r == 0 and dt < 0.2 and q == NOT_READY, f"(call took {dt:.3f} s, stream query {q})")

    def check_info_and_errors(self, comm):
        nc, v = self.nc, I()
        self.report("ncclGetVersion", nc.ncclGetVersion(ct.byref(v)) == 0 and v.value == 22803, f"({v.value})")
        cnt, dev, rk = I(), I(), I()
        ok = (nc.ncclCommCount(comm, ct.byref(cnt)) == 0 and nc.ncclCommCuDevice(comm, ct.byref(dev)) == 0
              and nc.ncclCommUserRank(comm, ct.byref(rk)) == 0)
        self.report("ncclCommCount/CuDevice/UserRank", ok and (cnt.value, dev.value, rk.value) == (self.world, self.rank, self.rank),
                    f"({cnt.value}, {dev.value}, {rk.value})")
        s = self.stream()
        rs = [nc.ncclAllReduce(self.SB, self.RB, 4, 7, SUM, None, s),
              nc.ncclBroadcast(self.SB, self.RB, 4, 7, self.world, comm, s),
              nc.ncclReduce(self.SB, self.RB, 4, 7, SUM, -1, comm, s),
              nc.ncclAllReduce(self.SB, self.RB, 4, 12, SUM, comm, s),
              nc.ncclAllReduce(self.SB, self.RB, 4, 7, 9, comm, s),
              nc.ncclAllReduce(None, self.RB, 4, 7, SUM, comm, s)]
        msg = nc.ncclGetLastError(None) or b""
        self.report("bad arguments fail at once with ncclInvalidArgument and queue nothing",
                    rs == [INVALID_ARGUMENT] * 6 and self.cu.cuStreamQuery(s) == 0 and len(msg) > 0, f"({rs}, {msg!r})")
        self.report("ncclGroupEnd without ncclGroupStart is ncclInvalidUsage", nc.ncclGroupEnd() == INVALID_USAGE)
        self.report("ncclGetErrorString", nc.ncclGetErrorString(INVALID_ARGUMENT) not in (None, b""))

    # -- jobs ----------------------------------------------------------------------------------------
    def job_main(self, ids):
        self.SB, self.RB = self.alloc(24 << 20), self.alloc(24 << 20)
        comm = self.init(ids[0])
        large = []
        if os.environ.get("FACETRAIN_EMU_NCCL_SLOT") is None:
            big = SLOT // 4 + 12345  # float32 elements, more than one slot
            large = [("all_reduce", 7, big), ("reduce", 6, SLOT // 2 + 999), ("broadcast", 9, SLOT // 2 + 3),
                     ("all_gather", 7, big), ("reduce_scatter", 7, SLOT // 4 // self.world + 777)]
        self.check_all(comm, [0, 1, 7, 100], large)
        self.check_group(comm)
        self.check_ordering(comm)
        print("digest " + self.digest.hexdigest(), flush=True)
        self.report("ncclCommFinalize then ncclCommDestroy", self.nc.ncclCommFinalize(comm) == 0
                    and self.nc.ncclCommDestroy(comm) == 0)

    def job_faults(self, ids):
        nc, me, n = self.nc, self.rank, self.world
        self.SB, self.RB = self.alloc(1 << 16), self.alloc(1 << 16)
        comm = self.init(ids[0])
        self.check_info_and_errors(comm)

        # Two communicators at once, issued in opposite orders on alternate ranks, each on its own stream.
        comm_b = self.init(ids[1])
        sa, sb = self.stream(), self.stream()
        x = [gen(8, SUM, 33, q, 501) for q in range(n)]
        y = [gen(4, MIN, 9, q, 502) for q in range(n)]
        xa, yb = self.alloc(33 * 8), self.alloc(9 * 8 * n)
        self.put(xa, x[me])
        self.put(yb + 72 * me, y[me])
        calls = [lambda: nc.ncclAllReduce(xa, xa, 33, 8, SUM, comm, sa),
                 lambda: nc.ncclAllGather(yb + 72 * me, yb, 9, 4, comm_b, sb)]
        rs = [f() for f in (calls if me % 2 == 0 else calls[::-1])]
        ok = rs == [0, 0] and self.sync(sa) == 0 and self.sync(sb) == 0
        self.report("two communicators used concurrently", ok
                    and self.get(xa, np.float64, 33).tobytes() == ref_reduce(8, SUM, x).tobytes()
                    and self.get(yb, np.int64, 9 * n).tobytes() == np.concatenate(y).tobytes())

        # A collective that differs on one rank (count): the async error, outputs untouched.
        s = self.stream()
        self.cu.cuMemsetD8_v2(self.RB, 0xFF, 64)
        count = 11 if me == n - 1 else 10
        r = nc.ncclAllReduce(self.SB, self.RB, count, 7, SUM, comm_b, s)
        rs = self.sync(s)
        err = I(-1)
        nc.ncclCommGetAsyncError(comm_b, ct.byref(err))
        untouched = self.get(self.RB, np.uint8, 64).tobytes() == b"\xff" * 64
        later = nc.ncclAllReduce(self.SB, self.RB, 10, 7, SUM, comm_b, s)
        self.report("a collective that differs between ranks: nothing done, ncclCommGetAsyncError says ncclInvalidArgument",
                    r == 0 and rs == 0 and err.value == INVALID_ARGUMENT and untouched and later == INVALID_ARGUMENT,
                    f"(call {r}, async {err.value}, untouched {untouched}, later call {later})")
        ok_err = I(-1)
        nc.ncclCommGetAsyncError(comm, ct.byref(ok_err))
        self.report("the other communicator has no async error", ok_err.value == 0)
        self.report("ncclCommAbort of the failed communicator", nc.ncclCommAbort(comm_b) == 0)

        # A different collective on one rank (Broadcast against AllReduce): the same, on a third comm.
        comm_c = self.init(ids[2])
        self.cu.cuMemsetD8_v2(self.RB, 0xFF, 64)
        if me == n - 1:
            r = nc.ncclBroadcast(self.SB, self.RB, 10, 7, 0, comm_c, s)
        else:
            r = nc.ncclAllReduce(self.SB, self.RB, 10, 7, SUM, comm_c, s)
        rs = self.sync(s)
        nc.ncclCommGetAsyncError(comm_c, ct.byref(err))
        untouched = self.get(self.RB, np.uint8, 64).tobytes() == b"\xff" * 64
        self.report("a different collective on one rank: nothing done, ncclInvalidArgument as the async error",
                    r == 0 and rs == 0 and err.value == INVALID_ARGUMENT and untouched, f"({r}, {err.value}, {untouched})")
        nc.ncclCommDestroy(comm_c)

        # Abort: the last rank never calls the collective; the others queue two, abort, and their
        # streams drain at once. Then the last rank arrives late, waits, aborts and drains too.
        flag = os.path.join(self.tmp, "aborted.%d")
        s2 = self.stream()
        if me < n - 1:
            r1 = nc.ncclAllReduce(self.SB, self.RB, 100, 7, SUM, comm, s2)
            r2 = nc.ncclBroadcast(self.SB, self.RB, 100, 7, 0, comm, s2)
            time.sleep(0.3)
            q = self.cu.cuStreamQuery(s2)
            res = {}

            def abort():
                t0 = time.monotonic()
                res["r"] = nc.ncclCommAbort(comm)
                res["t"] = time.monotonic() - t0

            th = threading.Thread(target=abort)
            th.start()
            rs, drained = self.bounded_sync(s2)
            th.join(5)
            if rs is None:
                self.hung("ncclCommAbort lets the blocked stream drain")
            open(flag % me, "w").close()
            self.report("a collective whose peer never comes blocks its stream",
                        r1 == 0 and r2 == 0 and q == NOT_READY, f"(query {q})")
            self.report("ncclCommAbort from another thread: the blocked and the queued collectives finish promptly",
                        res.get("r") == 0 and rs == 0 and drained < 0.5 and res["t"] < 0.5,
                        f"(abort {res.get('r')} in {res.get('t', -1):.3f} s, stream drained after {drained:.3f} s)")
        else:
            deadline = time.monotonic() + 10
            while not all(os.path.exists(flag % q) for q in range(n - 1)) and time.monotonic() < deadline:
                time.sleep(0.02)
            r1 = nc.ncclAllReduce(self.SB, self.RB, 100, 7, SUM, comm, s2)
            time.sleep(0.2)
            q = self.cu.cuStreamQuery(s2)
            t0 = time.monotonic()
            ra = nc.ncclCommAbort(comm)
            rs, drained = self.bounded_sync(s2)
            drained = time.monotonic() - t0
            if rs is None:
                self.hung("a late peer's ncclCommAbort lets its stream drain")
            self.report("a peer arriving after the others aborted waits (no crash), then aborts and drains",
                        r1 == 0 and q == NOT_READY and ra == 0 and rs == 0 and drained < 0.5,
                        f"(call {r1}, query {q}, abort {ra}, drained after {drained:.3f} s)")

    def job_threads(self, ids):
        """Several ranks in one process: threads, ncclCommInitAll, init errors, a 1-rank config comm.
        The ranks' streams are non-blocking: the process has one legacy default stream, which the
        synchronous copies use and which waits for every blocking stream, so a copy for one rank would
        wait for another rank's collective (as it would in one CUDA context)."""
        nc = self.nc
        # Two ranks on two threads, each with its own device context and stream.
        results = {}

        def thread_rank(r):
            try:
                self.context(r)
                comm = P()
                rc = nc.ncclCommInitRank(ct.byref(comm), 2, id_from_hex(ids[0]), r)
                s = self.stream(NON_BLOCKING)
                buf = self.alloc(40)
                self.put(buf, gen(7, SUM, 10, r, 300))
                ra = nc.ncclAllReduce(buf, buf, 10, 7, SUM, comm, s)
                rs = self.sync(s)
                dev = I()
                nc.ncclCommCuDevice(comm, ct.byref(dev))
                results[r] = (rc, ra, rs, dev.value, self.get(buf, np.float32, 10), nc.ncclCommDestroy(comm))
            except Exception as e:  # noqa: BLE001
                results[r] = repr(e)

        ths = [threading.Thread(target=thread_rank, args=(r,)) for r in range(2)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        want = ref_reduce(7, SUM, [gen(7, SUM, 10, r, 300) for r in range(2)])
        # (The libcuda stand-in's cuCtxGetDevice is per process, so the devices are not compared here.)
        ok = all(isinstance(results.get(r), tuple) and results[r][:3] == (0, 0, 0) and results[r][5] == 0
                 and results[r][4].tobytes() == want.tobytes() for r in range(2))
        self.report("two ranks on two threads of one process", ok,
                    f"({results})")

        # ncclCommInitAll: three communicators from one thread; one group drives them all.
        comms = (P * 3)()
        devs = (I * 3)(2, 0, 1)
        r = nc.ncclCommInitAll(comms, 3, devs)
        streams = [self.stream(NON_BLOCKING) for _ in range(3)]
        bufs = [self.alloc(6 * 8) for _ in range(3)]
        data = [gen(5, PROD, 6, q, 310) for q in range(3)]
        for q in range(3):
            self.put(bufs[q], data[q])
        nc.ncclGroupStart()
        ra = [nc.ncclAllReduce(bufs[q], bufs[q], 6, 5, PROD, comms[q], streams[q]) for q in range(3)]
        re = nc.ncclGroupEnd()
        rs = [self.sync(st) for st in streams]
        want = ref_reduce(5, PROD, data).tobytes()
        got = [self.get(bufs[q], np.uint64, 6).tobytes() for q in range(3)]
        cd = []
        for q in range(3):
            d = I()
            nc.ncclCommCuDevice(comms[q], ct.byref(d))
            cd.append(d.value)
        self.report("ncclCommInitAll + one group over its communicators", r == 0 and ra == [0] * 3 and re == 0
                    and rs == [0] * 3 and got == [want] * 3 and cd == [2, 0, 1], f"(init {r}, devices {cd})")
        for q in range(3):
            nc.ncclCommDestroy(comms[q])

        # nranks mismatch and a duplicate rank: the late caller gets an error, the right rank then joins.
        for what, idhex, bad_world, bad_rank in (("nranks differs", ids[1], 3, 1), ("duplicate rank", ids[2], 2, 0)):
            name = "/dev/shm/" + bytes.fromhex(idhex).split(b"\0")[0].decode().split("/")[-1]
            first = {}

            def rank0():
                c = P()
                first["r"] = nc.ncclCommInitRank(ct.byref(c), 2, id_from_hex(idhex), 0)
                first["c"] = c

            th = threading.Thread(target=rank0, daemon=True)
            th.start()
            deadline = time.monotonic() + 10
            while not os.path.exists(name) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)  # let rank 0 finish joining
            c = P()
            rbad = nc.ncclCommInitRank(ct.byref(c), bad_world, id_from_hex(idhex), bad_rank)
            rgood = nc.ncclCommInitRank(ct.byref(c), 2, id_from_hex(idhex), 1)
            th.join(10)
            self.report(f"init: {what} -> ncclInvalidUsage; the right rank then completes the communicator",
                        rbad == INVALID_USAGE and rgood == 0 and first.get("r") == 0, f"({rbad}, {rgood}, {first.get('r')})")
            if rgood == 0:
                nc.ncclCommDestroy(c)
            if first.get("r") == 0:
                nc.ncclCommDestroy(first["c"])

        # ncclCommInitRankConfig: blocking (the default) works; non-blocking is refused.
        class Config(ct.Structure):
            _fields_ = [("size", SZ), ("magic", ct.c_uint), ("version", ct.c_uint), ("blocking", I),
                        ("rest", I * 32)]

        cfg = Config(ct.sizeof(Config), 0xCAFEBEEF, 22803, -(2 ** 31))
        for i in range(32):
            cfg.rest[i] = -(2 ** 31)
        c = P()
        r1 = nc.ncclCommInitRankConfig(ct.byref(c), 1, id_from_hex(ids[3]), 0, ct.byref(cfg))
        s = self.stream()
        buf = self.alloc(8)
        self.put(buf, np.array([1.5, -2], np.float32))
        ra = nc.ncclAllReduce(buf, buf, 2, 7, AVG, c, s)
        rs = self.sync(s)
        got = self.get(buf, np.float32, 2).tolist()
        nc.ncclCommDestroy(c)
        cfg.blocking = 0
        r2 = nc.ncclCommInitRankConfig(ct.byref(c), 1, id_from_hex(ids[4]), 0, ct.byref(cfg))
        self.report("ncclCommInitRankConfig: blocking config, 1 rank (avg of one rank is the input); non-blocking refused",
                    r1 == 0 and ra == 0 and rs == 0 and got == [1.5, -2.0] and r2 == INVALID_ARGUMENT,
                    f"({r1}, {ra}, {rs}, {got}, {r2})")

    def run(self, ids):
        try:
            getattr(self, "job_" + self.job.split("-")[0])(ids)
        except Exception as e:  # noqa: BLE001 - a broken check is a failure
            import traceback
            traceback.print_exc()
            self.report("job raised", False, repr(e))
        self.cu.cuCtxSynchronize()
        return 1 if self.failed else 0


# ------------------------------------------------------------------------------------------------
# Parent: build, run the jobs, add up.
def run_job(libdir, nc, name, world, n_ids, tmp, extra_env=None, procs=None):
    ids = [new_id(nc) for _ in range(n_ids)]
    env = dict(os.environ)
    for k in ("FACETRAIN_EMU_SYNC", "FACETRAIN_EMU_JITTER", "FACETRAIN_EMU_NCCL_SLOT", "CUDA_VISIBLE_DEVICES"):
        env.pop(k, None)
    env["FACETRAIN_EMU_DEVICES"] = str(world)
    env.update(extra_env or {})
    procs = world if procs is None else procs
    jobdir = tempfile.mkdtemp(dir=tmp)
    ps = [subprocess.Popen([sys.executable, os.path.abspath(__file__), libdir, "--rank", name, str(world), str(r),
                            jobdir, ",".join(ids)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for r in range(procs)]
    outs = []
    for p in ps:
        try:
            o, e = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            o, e = p.communicate()
            o += f"\nFAIL [{name}] rank timed out\n"
        outs.append((p.returncode, o, e))
    return outs


def parent(libdir):
    subprocess.run(["bash", os.path.join(HERE, "build.sh"), libdir], check=True, stdout=subprocess.DEVNULL)
    nc = load_nccl(libdir)
    shm_before = {f for f in os.listdir("/dev/shm") if f.startswith("ftemu-nccl-")}
    passed = failed = 0
    jobs = [("main-2", 2, 1, None, None), ("main-3", 3, 1, {"FACETRAIN_EMU_NCCL_SLOT": "192"}, None),
            ("main-4", 4, 1, None, None), ("faults-3", 3, 3, None, None), ("threads-1", 3, 5, None, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, world, n_ids, env, procs in jobs:
            t0 = time.monotonic()
            outs = run_job(libdir, nc, name, world, n_ids, tmp, env, procs)
            digests = set()
            for rank, (rc, o, e) in enumerate(outs):
                p = sum(line.startswith("ok  ") for line in o.splitlines())
                f = sum(line.startswith("FAIL") for line in o.splitlines())
                digests |= {line for line in o.splitlines() if line.startswith("digest ")}
                if rc != 0 and f == 0:
                    f += 1
                    o += f"FAIL [{name} r{rank}] exited with {rc}\n"
                if name.startswith("faults"):
                    seen = "differs between ranks" in e
                    p += seen
                    f += not seen
                    o += f"{'ok  ' if seen else 'FAIL'} [{name} r{rank}] the mismatch is named on stderr\n"
                for line in o.splitlines():
                    if line.startswith("FAIL"):
                        print(line)
                if f:
                    sys.stdout.write(f"--- {name} rank {rank} stderr ---\n{e[-3000:]}\n")
                passed += p
                failed += f
            if name.startswith("main"):
                same = len(digests) == 1
                passed += same
                failed += not same
                print(f"{'ok  ' if same else 'FAIL'} [{name}] every rank got identical AllReduce bits")
            print(f"== {name}: {world} ranks in {len(outs)} process(es), {time.monotonic() - t0:.1f} s", flush=True)
    shm_after = {f for f in os.listdir("/dev/shm") if f.startswith("ftemu-nccl-")}
    left = shm_after - shm_before
    passed += not left
    failed += bool(left)
    print(f"{'ok  ' if not left else 'FAIL'} no /dev/shm entries left behind {sorted(left) if left else ''}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    if len(sys.argv) == 8 and sys.argv[2] == "--rank":
        libdir, _, job, world, rank, tmp, ids = sys.argv[1:]
        sys.exit(Rank(libdir, job, int(world), int(rank), tmp).run(ids.split(",")))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(parent(os.path.abspath(sys.argv[1])))


if __name__ == "__main__":
    main()
