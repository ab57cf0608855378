#!/usr/bin/env python3
"""Checks the asynchronous streams of the emulated libcuda (tests/cuda_emu/cuda.cpp).

Usage: check_streams.py LIBDIR

Builds the emulation into LIBDIR (tests/cuda_emu/build.sh), then runs this script again as a child
process three times: asynchronous streams (the default), asynchronous with FACETRAIN_EMU_JITTER=1,
and FACETRAIN_EMU_SYNC=1 (everything runs when queued). Each child compiles a small kernel source
through the fake NVRTC and drives libcuda through ctypes: stream order, races between unordered
streams (and none once ordered by an event), the copy semantics of pageable and pinned host memory,
synchronization, queries, event timing, the legacy default stream, stream destruction, stream-ordered
frees and the sticky error of a failing kernel. Device memory is host memory in the emulation, so a
check may peek at a device buffer without synchronizing (`peek`) to see what has run so far.
"""
import ctypes as ct
import os
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_READY, LAUNCH_FAILED, INVALID_VALUE, INVALID_HANDLE = 600, 719, 1, 400
NON_BLOCKING = 1

KERNELS = r"""
extern "C" __global__ void spin_write(int* buf, int idx, int value, long long spins) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        volatile long long k = 0;
        for (long long i = 0; i < spins; i++) k = k + 1;
        buf[idx] = value;
    }
}
extern "C" __global__ void copy_int(const int* src, int si, int* dst, int di) {
    if (threadIdx.x == 0 && blockIdx.x == 0) dst[di] = src[si];
}
// Arguments of several sizes and alignments, to check each is copied by its real type at launch.
extern "C" __global__ void mix_args(double* out, char c, double d, short s, long long ll, float f, int* p) {
    if (threadIdx.x == 0) {
        out[0] = c; out[1] = d; out[2] = s; out[3] = (double)ll; out[4] = f;
        out[5] = (double)(long long)p;
    }
}
// Lanes 16..31 exit, then lanes 0..15 shuffle with a full mask: the collective can never complete.
extern "C" __global__ void bad_shuffle(int* out) {
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 20);
}
"""

P, I, U, SZ, LL = ct.c_void_p, ct.c_int, ct.c_uint, ct.c_size_t, ct.c_longlong


# ------------------------------------------------------------------------------------------------
# Parent: build, run the three modes, add up.
def parent(libdir):
    subprocess.run(["bash", os.path.join(HERE, "build.sh"), libdir], check=True, stdout=subprocess.DEVNULL)
    passed = failed = 0
    modes = [("async", {}), ("jitter", {"FACETRAIN_EMU_JITTER": "1"}), ("sync", {"FACETRAIN_EMU_SYNC": "1"})]
    for mode, extra in modes:
        env = dict(os.environ)
        for k in ("FACETRAIN_EMU_JITTER", "FACETRAIN_EMU_SYNC"):
            env.pop(k, None)
        env.update(extra)
        env["FACETRAIN_EMU_CACHE"] = os.path.join(libdir, "kcache")
        print(f"== mode {mode} ==", flush=True)
        r = subprocess.run([sys.executable, os.path.abspath(__file__), libdir, "--child", mode], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
        sys.stdout.write(r.stdout)
        p = f = 0
        for line in r.stdout.splitlines():
            if line.startswith("ok  "):
                p += 1
            elif line.startswith("FAIL"):
                f += 1
        # The failing kernel's message goes to stderr, as a real driver's would not, but the emulation's does.
        ok = "kernel bad_shuffle failed" in r.stderr
        print(f"{'ok  ' if ok else 'FAIL'} [{mode}] the failing kernel's message is on stderr")
        p += ok
        f += not ok
        if r.returncode != 0 and f == 0:
            f += 1
            print(f"FAIL [{mode}] child exited with {r.returncode}")
        if f:
            sys.stdout.write("--- child stderr ---\n" + r.stderr[-4000:] + "\n")
        passed += p
        failed += f
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------
# Child: one mode.
class Child:
    def __init__(self, libdir, mode):
        self.mode = mode
        self.passed = self.failed = 0
        self.cu = ct.CDLL(os.path.join(libdir, "libcuda.so"))
        self.rtc = ct.CDLL(os.path.join(libdir, "libnvrtc.so"))
        cu = self.cu
        cu.cuLaunchKernel.argtypes = [P, U, U, U, U, U, U, U, P, ct.POINTER(P), P]
        cu.cuMemAlloc_v2.argtypes = [ct.POINTER(ct.c_ulonglong), SZ]
        cu.cuMemAllocAsync.argtypes = [ct.POINTER(ct.c_ulonglong), SZ, P]
        cu.cuMemFree_v2.argtypes = [ct.c_ulonglong]
        cu.cuMemFreeAsync.argtypes = [ct.c_ulonglong, P]
        cu.cuMemcpyHtoDAsync_v2.argtypes = [ct.c_ulonglong, P, SZ, P]
        cu.cuMemcpyDtoHAsync_v2.argtypes = [P, ct.c_ulonglong, SZ, P]
        cu.cuMemcpyDtoDAsync_v2.argtypes = [ct.c_ulonglong, ct.c_ulonglong, SZ, P]
        cu.cuMemcpyHtoD_v2.argtypes = [ct.c_ulonglong, P, SZ]
        cu.cuMemcpyDtoH_v2.argtypes = [P, ct.c_ulonglong, SZ]
        cu.cuMemsetD32Async.argtypes = [ct.c_ulonglong, U, SZ, P]
        cu.cuMemsetD8Async.argtypes = [ct.c_ulonglong, ct.c_ubyte, SZ, P]
        cu.cuMemAllocHost_v2.argtypes = [ct.POINTER(P), SZ]
        cu.cuMemFreeHost.argtypes = [P]
        cu.cuMemGetInfo_v2.argtypes = [ct.POINTER(SZ), ct.POINTER(SZ)]
        cu.cuStreamCreate.argtypes = [ct.POINTER(P), U]
        for n in ("cuStreamDestroy_v2", "cuStreamSynchronize", "cuStreamQuery"):
            getattr(cu, n).argtypes = [P]
        cu.cuStreamWaitEvent.argtypes = [P, P, U]
        cu.cuEventCreate.argtypes = [ct.POINTER(P), U]
        cu.cuEventRecord.argtypes = [P, P]
        for n in ("cuEventDestroy_v2", "cuEventSynchronize", "cuEventQuery"):
            getattr(cu, n).argtypes = [P]
        cu.cuEventElapsedTime.argtypes = [ct.POINTER(ct.c_float), P, P]
        cu.cuLaunchHostFunc.argtypes = [P, P, P]
        cu.cuModuleLoadData.argtypes = [ct.POINTER(P), P]
        cu.cuModuleGetFunction.argtypes = [ct.POINTER(P), P, ct.c_char_p]
        cu.cuDevicePrimaryCtxRetain.argtypes = [ct.POINTER(P), I]
        cu.cuCtxSetCurrent.argtypes = [P]
        self.rtc.nvrtcCreateProgram.argtypes = [ct.POINTER(P), ct.c_char_p, ct.c_char_p, I, P, P]
        self.rtc.nvrtcCompileProgram.argtypes = [P, I, P]
        self.rtc.nvrtcGetPTXSize.argtypes = [P, ct.POINTER(SZ)]
        self.rtc.nvrtcGetPTX.argtypes = [P, ct.c_char_p]
        self.rtc.nvrtcGetProgramLogSize.argtypes = [P, ct.POINTER(SZ)]
        self.rtc.nvrtcGetProgramLog.argtypes = [P, ct.c_char_p]

        assert cu.cuInit(0) == 0
        ctx = P()
        assert cu.cuDevicePrimaryCtxRetain(ct.byref(ctx), 0) == 0
        assert cu.cuCtxSetCurrent(ctx) == 0
        self.fn = self.compile()
        self.streams = []
        self.spins_per_ms = self.calibrate()

    # -- plumbing ---------------------------------------------------------------------------------
    def report(self, name, ok, detail=""):
        self.passed += bool(ok)
        self.failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} [{self.mode}] {name} {detail}", flush=True)

    def compile(self):
        prog = P()
        assert self.rtc.nvrtcCreateProgram(ct.byref(prog), KERNELS.encode(), b"check_streams", 0, None, None) == 0
        r = self.rtc.nvrtcCompileProgram(prog, 0, None)
        if r != 0:
            n = SZ()
            self.rtc.nvrtcGetProgramLogSize(prog, ct.byref(n))
            log = ct.create_string_buffer(n.value)
            self.rtc.nvrtcGetProgramLog(prog, log)
            raise SystemExit("kernel compile failed:\n" + log.value.decode())
        n = SZ()
        self.rtc.nvrtcGetPTXSize(prog, ct.byref(n))
        ptx = ct.create_string_buffer(n.value)
        self.rtc.nvrtcGetPTX(prog, ptx)
        mod = P()
        assert self.cu.cuModuleLoadData(ct.byref(mod), ptx) == 0
        fns = {}
        for name in ("spin_write", "copy_int", "mix_args", "bad_shuffle"):
            f = P()
            assert self.cu.cuModuleGetFunction(ct.byref(f), mod, name.encode()) == 0, name
            fns[name] = f
        return fns

    def stream(self, flags=NON_BLOCKING):
        s = P()
        assert self.cu.cuStreamCreate(ct.byref(s), flags) == 0
        self.streams.append(s)
        return s

    def alloc(self, nbytes):
        p = ct.c_ulonglong()
        assert self.cu.cuMemAlloc_v2(ct.byref(p), nbytes) == 0
        return p.value

    def launch(self, name, stream, *args, block=1):
        vals = [a if isinstance(a, ct._SimpleCData) else ct.c_ulonglong(a) for a in args]
        arr = (P * len(vals))(*[ct.cast(ct.pointer(v), P) for v in vals])
        return self.cu.cuLaunchKernel(self.fn[name], 1, 1, 1, block, 1, 1, 0, stream, arr, None)

    def spin_write(self, stream, buf, idx, value, ms):
        return self.launch("spin_write", stream, ct.c_void_p(buf), I(idx), I(value), LL(int(ms * self.spins_per_ms)))

    def copy_int(self, stream, src, si, dst, di):
        return self.launch("copy_int", stream, ct.c_void_p(src), I(si), ct.c_void_p(dst), I(di))

    def peek(self, ptr, n=1):
        """Device memory as it is right now (the emulation's device memory is host memory)."""
        return np.ctypeslib.as_array((ct.c_int * n).from_address(ptr)).copy()

    def sync(self, s):
        return self.cu.cuStreamSynchronize(s)

    def calibrate(self):
        s = self.stream()
        buf = self.alloc(64)
        best = None
        for _ in range(3):
            n = 20_000_000
            t = time.perf_counter()
            self.launch("spin_write", s, ct.c_void_p(buf), I(0), I(1), LL(n))
            self.sync(s)
            dt = (time.perf_counter() - t) * 1000
            best = dt if best is None else min(best, dt)
        return 20_000_000 / max(best, 1e-3)

    # -- checks -------------------------------------------------------------------------------------
    def check_async_launch(self):
        s, buf = self.stream(), self.alloc(64)
        self.cu.cuMemsetD32Async(buf, 0, 16, s)
        self.sync(s)
        t = time.perf_counter()
        r = self.spin_write(s, buf, 0, 42, 150)
        ret_ms = (time.perf_counter() - t) * 1000
        q = self.cu.cuStreamQuery(s)
        early = self.peek(buf)[0]
        rs = self.sync(s)
        late, q2 = self.peek(buf)[0], self.cu.cuStreamQuery(s)
        if self.mode == "sync":
            self.report("launch runs at once (FACETRAIN_EMU_SYNC)", r == 0 and q == 0 and early == 42 and ret_ms > 10,
                        f"(query {q}, value {early}, launch took {ret_ms:.0f} ms)")
        else:
            self.report("launch returns before the kernel runs; cuStreamQuery is NOT_READY meanwhile",
                        r == 0 and q == NOT_READY and early == 0 and ret_ms < 50,
                        f"(query {q}, value {early}, launch took {ret_ms:.1f} ms)")
        self.report("cuStreamSynchronize waits for the kernel", rs == 0 and late == 42 and q2 == 0,
                    f"(sync {rs}, value {late}, query after {q2})")

    def check_in_order(self):
        s, buf = self.stream(), self.alloc(64)
        seen = []
        main = threading.get_ident()

        @ct.CFUNCTYPE(None, P)
        def host_fn(data):
            seen.append((data or 0, self.peek(buf, 4).tolist(), threading.get_ident() != main))

        self.keep = host_fn
        ok = self.cu.cuMemsetD32Async(buf, 0, 16, s) == 0
        ok &= self.spin_write(s, buf, 0, 7, 100) == 0           # slow write of buf[0]
        ok &= self.copy_int(s, buf, 0, buf, 1) == 0              # buf[1] = buf[0]: must see 7
        ok &= self.cu.cuLaunchHostFunc(s, ct.cast(host_fn, P), P(1)) == 0
        ok &= self.cu.cuMemcpyDtoDAsync_v2(buf + 8, buf + 4, 4, s) == 0   # buf[2] = buf[1]
        ok &= self.spin_write(s, buf, 3, 9, 20) == 0
        ok &= self.cu.cuLaunchHostFunc(s, ct.cast(host_fn, P), P(2)) == 0
        ok &= self.sync(s) == 0
        vals = self.peek(buf, 4).tolist()
        self.report("one stream runs kernels, copies, memsets and host functions in order",
                    ok and vals == [7, 7, 7, 9] and [x[0] for x in seen] == [1, 2]
                    and seen[0][1] == [7, 7, 0, 0] and seen[1][1] == [7, 7, 7, 9],
                    f"(buffer {vals}, host functions saw {[x[:2] for x in seen]})")
        if self.mode != "sync":
            self.report("host functions run on the stream's worker thread", all(x[2] for x in seen))

    def race(self, ordered, attempts, spin_ms):
        a, b = self.stream(), self.stream()
        buf, out = self.alloc(64), self.alloc(4 * attempts)
        stale = 0
        for i in range(attempts):
            self.cu.cuMemsetD32Async(buf, 0, 1, a)
            self.sync(a)
            self.spin_write(a, buf, 0, i + 1, spin_ms)
            if ordered:
                e = P()
                self.cu.cuEventCreate(ct.byref(e), 0x2)
                self.cu.cuEventRecord(e, a)
                self.cu.cuStreamWaitEvent(b, e, 0)
                self.cu.cuEventDestroy_v2(e)  # the queued wait keeps the recorded point
            self.copy_int(b, buf, 0, out, i)
            self.sync(b)
            self.sync(a)
            stale += int(self.peek(out + 4 * i)[0] == 0)
        return stale

    def check_races(self):
        n = 40
        if self.mode == "async":
            stale = self.race(False, n, 5)
            self.report("without a wait, a second stream reads the buffer before the first writes it",
                        stale >= 1, f"({stale}/{n} stale reads)")
        elif self.mode == "jitter":
            stale = self.race(False, n, 0)
            self.report("with jitter, unordered streams interleave both ways (no spin)",
                        1 <= stale < n, f"({stale}/{n} stale reads)")
        stale = self.race(True, n, 0 if self.mode == "jitter" else 5)
        self.report("cuEventRecord + cuStreamWaitEvent orders the streams", stale == 0, f"({stale}/{n} stale reads)")

    def check_htod(self):
        s = self.stream()
        dev = self.alloc(4096)
        host = np.arange(1024, dtype=np.int32)
        self.spin_write(s, dev, 1023, 0, 100)  # the copy queues behind this
        r = self.cu.cuMemcpyHtoDAsync_v2(dev, host.ctypes.data, host.nbytes, s)
        host[:] = -1  # pageable: staged at call time, so this must not reach the device
        self.sync(s)
        got = self.peek(dev, 1024)
        self.report("HtoDAsync from pageable memory stages the source at call time",
                    r == 0 and np.array_equal(got, np.arange(1024)), f"(first {got[:3].tolist()})")

        pinned = P()
        assert self.cu.cuMemAllocHost_v2(ct.byref(pinned), 4096) == 0
        ph = np.ctypeslib.as_array((ct.c_int * 1024).from_address(pinned.value))
        ph[:] = np.arange(1024)
        self.spin_write(s, dev, 1023, 0, 100)
        r = self.cu.cuMemcpyHtoDAsync_v2(dev, pinned, 4096, s)
        ph[:] = 5  # pinned: read when the copy runs (after the spin)
        self.sync(s)
        got = self.peek(dev, 1024)
        want = np.arange(1024) if self.mode == "sync" else np.full(1024, 5)
        self.report("HtoDAsync from pinned memory reads it when the copy runs" if self.mode != "sync"
                    else "HtoDAsync from pinned memory copies at once (sync mode)",
                    r == 0 and np.array_equal(got, want), f"(first {got[:3].tolist()})")
        self.cu.cuMemFreeHost(pinned)

    def check_dtoh(self):
        s, dev = self.stream(), self.alloc(64)
        self.cu.cuMemsetD32Async(dev, 0, 16, s)
        self.spin_write(s, dev, 0, 1234, 100)
        host = np.zeros(16, np.int32)
        r = self.cu.cuMemcpyDtoHAsync_v2(host.ctypes.data, dev, 64, s)
        self.report("DtoHAsync to pageable memory has the data when it returns",
                    r == 0 and host[0] == 1234 and self.cu.cuStreamQuery(s) == 0, f"(got {host[0]})")

        pinned = P()
        assert self.cu.cuMemAllocHost_v2(ct.byref(pinned), 64) == 0
        ph = np.ctypeslib.as_array((ct.c_int * 16).from_address(pinned.value))
        ph[:] = 0
        self.spin_write(s, dev, 0, 4321, 100)
        r = self.cu.cuMemcpyDtoHAsync_v2(pinned, dev, 64, s)
        before, q = int(ph[0]), self.cu.cuStreamQuery(s)
        self.sync(s)
        after = int(ph[0])
        if self.mode == "sync":
            self.report("DtoHAsync to pinned memory completes at once (sync mode)", r == 0 and before == 4321)
        else:
            self.report("DtoHAsync to pinned memory is asynchronous",
                        r == 0 and before == 0 and q == NOT_READY and after == 4321,
                        f"(at return {before}, query {q}, after sync {after})")
        self.cu.cuMemFreeHost(pinned)

    def check_params_copied(self):
        s, out = self.stream(), self.alloc(64)
        buf = self.alloc(64)
        self.spin_write(s, buf, 0, 1, 100)
        vals = [ct.c_char(b"\x05"), ct.c_double(2.5), ct.c_short(-3), LL(1 << 40), ct.c_float(0.25), ct.c_void_p(0xabc0)]
        arr = (P * len(vals))(*[ct.cast(ct.pointer(v), P) for v in vals])
        outp = ct.c_void_p(out)
        full = (P * 7)(ct.cast(ct.pointer(outp), P), *arr)
        r = self.cu.cuLaunchKernel(self.fn["mix_args"], 1, 1, 1, 1, 1, 1, 0, s, full, None)
        # The caller may change or free its argument values as soon as the launch returns.
        vals[0].value, vals[1].value, vals[2].value = b"\x09", 9.0, 9
        vals[3].value, vals[4].value, vals[5].value = 9, 9.0, 9
        outp.value = buf
        self.sync(s)
        got = np.ctypeslib.as_array((ct.c_double * 6).from_address(out)).tolist()
        self.report("kernel arguments are copied, by their types, at launch",
                    r == 0 and got == [5.0, 2.5, -3.0, float(1 << 40), 0.25, float(0xabc0)], f"(kernel saw {got})")

    def check_events(self):
        s, buf = self.stream(), self.alloc(64)
        e1, e2, nt = P(), P(), P()
        self.cu.cuEventCreate(ct.byref(e1), 0)
        self.cu.cuEventCreate(ct.byref(e2), 0)
        self.cu.cuEventCreate(ct.byref(nt), 0x2)  # CU_EVENT_DISABLE_TIMING
        never = P()
        self.cu.cuEventCreate(ct.byref(never), 0)
        t0 = time.perf_counter()
        self.cu.cuEventRecord(e1, s)
        self.spin_write(s, buf, 0, 1, 120)
        self.cu.cuEventRecord(e2, s)
        self.cu.cuEventRecord(nt, s)
        ms = ct.c_float()
        r_early = self.cu.cuEventElapsedTime(ct.byref(ms), e1, e2)
        q_early = self.cu.cuEventQuery(e2)
        rs = self.cu.cuEventSynchronize(e2)
        wall = (time.perf_counter() - t0) * 1000  # bounds the time between the two events
        q_late = self.cu.cuEventQuery(e2)
        r = self.cu.cuEventElapsedTime(ct.byref(ms), e1, e2)
        r_nt = self.cu.cuEventElapsedTime(ct.byref(ct.c_float()), e1, nt)
        r_never = self.cu.cuEventElapsedTime(ct.byref(ct.c_float()), e1, never)
        q_never = self.cu.cuEventQuery(never)
        if self.mode == "sync":
            self.report("events: elapsed time (sync mode)", r_early == 0 and q_early == 0 and r == 0
                        and 10 < ms.value <= wall + 1, f"({ms.value:.1f} ms of {wall:.1f} ms)")
        else:
            self.report("events: NOT_READY while pending, then synchronize, query and elapsed time",
                        r_early == NOT_READY and q_early == NOT_READY and rs == 0 and q_late == 0 and r == 0
                        and 10 < ms.value <= wall + 1, f"(early {r_early}/{q_early}, elapsed {ms.value:.1f} ms of {wall:.1f} ms)")
        self.report("events: elapsed time needs timing events that were recorded",
                    r_nt == INVALID_HANDLE and r_never == INVALID_HANDLE and q_never == 0)
        self.sync(s)

    def check_legacy(self):
        if self.mode == "sync":
            return
        blk, nb, buf = self.stream(0), self.stream(NON_BLOCKING), self.alloc(64)
        self.cu.cuMemsetD32Async(buf, 0, 16, blk)
        self.sync(blk)
        self.spin_write(blk, buf, 0, 55, 100)
        self.copy_int(None, buf, 0, buf, 1)  # legacy stream: waits for the blocking stream
        self.sync(None)
        v1 = self.peek(buf, 2).tolist()
        self.spin_write(None, buf, 2, 66, 100)
        self.copy_int(blk, buf, 2, buf, 3)  # blocking stream: waits for the legacy stream
        self.sync(blk)
        v2 = self.peek(buf, 4).tolist()[2:]
        self.report("the legacy default stream and blocking streams wait for each other",
                    v1 == [55, 55] and v2 == [66, 66], f"({v1}, {v2})")

        self.spin_write(nb, buf, 4, 77, 150)
        self.copy_int(None, buf, 4, buf, 5)  # does not wait for a non-blocking stream
        self.sync(None)
        v3, q = self.peek(buf, 6).tolist()[4:], self.cu.cuStreamQuery(nb)
        self.sync(nb)
        self.report("the legacy default stream does not wait for non-blocking streams",
                    v3 == [0, 0] and q == NOT_READY, f"({v3}, query {q})")

        self.spin_write(blk, buf, 6, 88, 100)
        host = np.zeros(16, np.int32)
        r = self.cu.cuMemcpyDtoH_v2(host.ctypes.data, buf, 64)  # synchronous copy: legacy stream
        self.report("a synchronous cuMemcpyDtoH waits for blocking streams", r == 0 and host[6] == 88,
                    f"(got {host[6]})")

    def check_destroy_pending(self):
        s, buf = self.stream(), self.alloc(64)
        self.streams.remove(s)
        self.cu.cuMemsetD32Async(buf, 0, 16, s)
        self.spin_write(s, buf, 0, 99, 100)
        r = self.cu.cuStreamDestroy_v2(s)
        early = self.peek(buf)[0]
        rc = self.cu.cuCtxSynchronize()
        late = self.peek(buf)[0]
        self.report("cuStreamDestroy lets pending work complete",
                    r == 0 and rc == 0 and late == 99 and (early != 99 or self.mode == "sync"),
                    f"(before {early}, after cuCtxSynchronize {late})")

    def check_frees(self):
        s = self.stream()
        free0, total = SZ(), SZ()
        p = ct.c_ulonglong()
        assert self.cu.cuMemAllocAsync(ct.byref(p), 1 << 20, s) == 0
        self.cu.cuMemGetInfo_v2(ct.byref(free0), ct.byref(total))
        self.spin_write(s, p.value, 0, 5, 100)
        r = self.cu.cuMemFreeAsync(p.value, s)
        f1 = SZ()
        self.cu.cuMemGetInfo_v2(ct.byref(f1), ct.byref(total))
        after_free = self.cu.cuMemsetD8Async(p.value, 0, 16, s)  # the pointer is gone for new work
        self.sync(s)
        f2 = SZ()
        self.cu.cuMemGetInfo_v2(ct.byref(f2), ct.byref(total))
        held = f1.value == free0.value if self.mode != "sync" else True
        self.report("cuMemFreeAsync frees when the stream reaches it",
                    r == 0 and held and f2.value == free0.value + (1 << 20) and after_free == INVALID_VALUE,
                    f"(held until then: {held}, new work on it: {after_free})")

        buf = self.alloc(64)
        self.spin_write(s, buf, 0, 5, 100)
        r = self.cu.cuMemFree_v2(buf)  # synchronizes first: the kernel still writes the buffer
        self.report("cuMemFree waits for queued work", r == 0 and self.cu.cuStreamQuery(s) == 0)

    def check_failure(self):
        s, out = self.stream(), self.alloc(256)
        buf = self.alloc(64)
        if self.mode != "sync":
            self.spin_write(s, buf, 0, 1, 50)  # so that what follows is queued before the failure
        r = self.launch("bad_shuffle", s, ct.c_void_p(out), block=32)
        if self.mode == "sync":
            rs = self.sync(s)
            self.report("a failing kernel fails its launch (sync mode)", r == LAUNCH_FAILED and rs == 0,
                        f"(launch {r}, synchronize {rs})")
            return
        called = []

        @ct.CFUNCTYPE(None, P)
        def after(data):
            called.append(1)

        self.keep_after = after
        rh = self.cu.cuLaunchHostFunc(s, ct.cast(after, P), None)  # queued behind the failing kernel
        rs = self.sync(s)
        self.report("work queued behind a failing kernel is skipped (its host function is not called)",
                    rh in (0, LAUNCH_FAILED) and not called, f"(queued: {rh}, called: {bool(called)})")
        rc = self.cu.cuCtxSynchronize()
        rl = self.spin_write(s, buf, 0, 1, 0)
        host = np.zeros(4, np.int32)
        rm = self.cu.cuMemcpyDtoH_v2(host.ctypes.data, buf, 16)
        self.report("a failing kernel: the launch returns, the next synchronize gives LAUNCH_FAILED (sticky)",
                    r == 0 and rs == LAUNCH_FAILED and rc == LAUNCH_FAILED and rl == LAUNCH_FAILED and rm == LAUNCH_FAILED,
                    f"(launch {r}, stream sync {rs}, ctx sync {rc}, later launch {rl}, memcpy {rm})")
        rr = self.cu.cuDevicePrimaryCtxReset_v2(0)
        r2 = self.spin_write(s, buf, 0, 3, 0)
        rs2 = self.sync(s)
        self.report("cuDevicePrimaryCtxReset clears the sticky error",
                    rr == 0 and r2 == 0 and rs2 == 0 and self.peek(buf)[0] == 3)

    def run(self):
        print(f"[{self.mode}] spin calibration: {self.spins_per_ms:.0f} iterations per ms", flush=True)
        for check in (self.check_async_launch, self.check_in_order, self.check_races, self.check_htod,
                      self.check_dtoh, self.check_params_copied, self.check_events, self.check_legacy,
                      self.check_destroy_pending, self.check_frees, self.check_failure):
            try:
                check()
            except Exception as e:  # noqa: BLE001 - a broken check is a failure, the rest still run
                self.report(check.__name__, False, f"raised {e!r}")
        for s in self.streams:
            self.cu.cuStreamDestroy_v2(s)
        self.cu.cuCtxSynchronize()
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def main():
    if len(sys.argv) >= 4 and sys.argv[2] == "--child":
        sys.exit(Child(sys.argv[1], sys.argv[3]).run())
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(parent(os.path.abspath(sys.argv[1])))


if __name__ == "__main__":
    main()
