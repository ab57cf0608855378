//! The ledger of a training step: every kernel launch (ours, cuDNN's, cuBLAS's, copies and fills) with
//! its FLOPs and bytes, recorded where kernels are launched, and the cost model that turns it into a
//! predicted time.
//!
//! Counting rules (the same for the engine and the PyTorch peer): bytes are the size of every tensor a
//! kernel reads plus every tensor it writes, each once, at its stored dtype (workspaces and caches not
//! counted); FLOPs are 2 x multiply-adds for convolutions and GEMMs, and are not counted for memory-bound
//! kernels. The predicted time of a kernel is max(FLOPs / peak for its math, bytes / bandwidth) + a launch
//! overhead; a step's time is the sum over its kernels (no overlap assumed).

use std::sync::Mutex;

/// The arithmetic a launch's FLOPs run in, which decides the peak rate that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Math {
    /// bf16/fp16 operands on the tensor cores (f32 accumulation).
    Tensor16,
    /// f32 FMA (no TF32).
    F32,
    /// Memory-bound: no FLOPs counted.
    Memory,
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The kernel (our NVRTC names; `cublas_gemm`, `cudnn_conv_*`, `memcpy_*`, `memset` for the rest).
    pub kernel: String,
    /// The op family the launch belongs to, for the ledger's table.
    pub family: &'static str,
    pub flops: f64,
    pub bytes: f64,
    pub math: Math,
}

impl Launch {
    pub fn memory(kernel: impl Into<String>, family: &'static str, bytes: f64) -> Launch {
        Launch { kernel: kernel.into(), family, flops: 0.0, bytes, math: Math::Memory }
    }

    pub fn compute(
        kernel: impl Into<String>,
        family: &'static str,
        flops: f64,
        bytes: f64,
        math: Math,
    ) -> Launch {
        Launch { kernel: kernel.into(), family, flops, bytes, math }
    }
}

/// A card's peak rates for the cost model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peaks {
    pub name: &'static str,
    /// Dense bf16/fp16 tensor-core FLOP/s.
    pub tensor16: f64,
    /// f32 FMA FLOP/s.
    pub f32: f64,
    /// Device memory bytes/s.
    pub bandwidth: f64,
    /// Seconds per launch (queuing and the kernel's ramp).
    pub launch: f64,
}

impl Peaks {
    /// H100 SXM as measured on this workplace's cards (bench/NOTES.md: bf16 GEMM ~798 TFLOP/s, copy
    /// ~3.0 TB/s); f32 FMA from the datasheet (67 TFLOP/s); 4 us per launch.
    pub const H100: Peaks =
        Peaks { name: "H100", tensor16: 798e12, f32: 67e12, bandwidth: 3.0e12, launch: 4e-6 };
    /// H200 as measured (bench/NOTES.md: ~790 TFLOP/s, ~4.3 TB/s); same f32 and launch cost.
    pub const H200: Peaks =
        Peaks { name: "H200", tensor16: 790e12, f32: 67e12, bandwidth: 4.3e12, launch: 4e-6 };

    /// Predicted seconds of one launch.
    pub fn seconds(&self, l: &Launch) -> f64 {
        let math = match l.math {
            Math::Tensor16 => l.flops / self.tensor16,
            Math::F32 => l.flops / self.f32,
            Math::Memory => 0.0,
        };
        math.max(l.bytes / self.bandwidth) + self.launch
    }
}

/// Launches recorded while recording is on.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: Mutex<Option<Vec<Launch>>>,
}

impl Ledger {
    /// Starts (or restarts) recording.
    pub fn start(&self) {
        if let Ok(mut e) = self.entries.lock() {
            *e = Some(Vec::new());
        }
    }

    /// What was recorded since `start`; recording stops.
    pub fn take(&self) -> Vec<Launch> {
        self.entries.lock().ok().and_then(|mut e| e.take()).unwrap_or_default()
    }

    /// Records `l` when recording is on.
    pub fn record(&self, l: Launch) {
        if let Ok(mut e) = self.entries.lock() {
            if let Some(v) = e.as_mut() {
                v.push(l);
            }
        }
    }

    /// Whether recording is on (callers skip building entries otherwise).
    pub fn recording(&self) -> bool {
        self.entries.lock().map(|e| e.is_some()).unwrap_or(false)
    }
}

/// Totals over launches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub launches: usize,
    pub flops: f64,
    pub bytes: f64,
    pub seconds: f64,
}

/// Totals of `launches` under `peaks`.
pub fn totals<'a>(launches: impl IntoIterator<Item = &'a Launch>, peaks: &Peaks) -> Totals {
    let mut t = Totals::default();
    for l in launches {
        t.launches += 1;
        t.flops += l.flops;
        t.bytes += l.bytes;
        t.seconds += peaks.seconds(l);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_takes_the_longer_of_its_math_and_its_memory_plus_the_launch() {
        let p = Peaks { name: "t", tensor16: 1e12, f32: 1e11, bandwidth: 1e9, launch: 1e-6 };
        let gemm = Launch::compute("g", "gemm", 2e12, 1e6, Math::Tensor16);
        assert!((p.seconds(&gemm) - (2.0 + 1e-6)).abs() < 1e-12);
        let copy = Launch::memory("c", "copy", 3e9);
        assert!((p.seconds(&copy) - (3.0 + 1e-6)).abs() < 1e-12);
        let f = Launch::compute("f", "gemm", 1e11, 0.0, Math::F32);
        assert!((p.seconds(&f) - (1.0 + 1e-6)).abs() < 1e-12);
        let t = totals([&gemm, &copy], &p);
        assert_eq!((t.launches, t.flops, t.bytes), (2, 2e12, 1e6 + 3e9));
        let l = Ledger::default();
        l.record(copy.clone());
        assert!(l.take().is_empty(), "nothing is kept before start");
        l.start();
        l.record(copy.clone());
        assert!(l.recording());
        assert_eq!(l.take(), vec![copy]);
        assert!(!l.recording());
    }
}
