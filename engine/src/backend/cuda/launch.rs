//! The compiled kernel modules of one device and the launch geometry helpers.

use super::compile::cached_ptx;
use crate::{Error, Result};
use cudarc::driver::{CudaContext as DriverContext, CudaFunction, CudaModule, LaunchConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Threads per block of the elementwise kernels.
pub const BLOCK: u32 = 256;

pub struct Kernels {
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// Blocks that keep every SM busy for grid-stride loops.
    max_blocks: u32,
    /// Kernel look-ups so far: every launch makes one, so differences count launches (for the benchmark's
    /// estimate of what a CUDA graph could save).
    lookups: AtomicU64,
}

impl Kernels {
    /// Compiles (or reads from the PTX cache) every source for `compute_<arch>` and loads it.
    pub fn load(ctx: &Arc<DriverContext>, arch: u32) -> Result<Kernels> {
        let mut modules = HashMap::new();
        for k in kernels::ALL {
            let ptx = cached_ptx(k.name, k.source, arch)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| Error::Device(format!("cannot load kernels/{}.cu on the GPU: {e}", k.name)))?;
            modules.insert(k.name, module);
        }
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(80)
            .max(1) as u32;
        Ok(Kernels {
            modules,
            functions: Mutex::new(HashMap::new()),
            max_blocks: sms * 8,
            lookups: AtomicU64::new(0),
        })
    }

    /// Kernel `name` of source `module` (looked up once, then cached).
    pub fn get(&self, module: &'static str, name: &'static str) -> Result<CudaFunction> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let mut f = self.functions.lock().map_err(|_| Error::Device("kernel table lock poisoned".into()))?;
        if let Some(k) = f.get(name) {
            return Ok(k.clone());
        }
        let m = self
            .modules
            .get(module)
            .ok_or_else(|| Error::Device(format!("no kernel source named {module}")))?;
        // The named module first; any other as a fallback (kernel names are unique across sources).
        let k = m
            .load_function(name)
            .or_else(|e| self.modules.values().find_map(|m| m.load_function(name).ok()).ok_or(e))
            .map_err(|e| Error::Device(format!("kernel {name} not found in kernels/{module}.cu: {e}")))?;
        f.insert(name, k.clone());
        Ok(k)
    }

    /// Kernel look-ups so far (about one per launch).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Grid-stride launch over `n` elements.
    pub fn elementwise(&self, n: usize) -> LaunchConfig {
        let blocks = (n.div_ceil(BLOCK as usize) as u64).clamp(1, self.max_blocks as u64) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// Geometry of a two-stage column reduction over `[rows, C]`: (launch config, rows per chunk, chunks).
    pub fn column_chunks(&self, rows: usize, c: usize) -> (LaunchConfig, usize, usize) {
        let col_blocks = c.div_ceil(32).max(1);
        let want = (self.max_blocks as usize / col_blocks).max(1);
        let max_chunks = rows.div_ceil(64).max(1); // at least 64 rows per chunk
        let chunks = want.min(max_chunks);
        let rows_per_chunk = rows.div_ceil(chunks).max(1);
        let chunks = rows.div_ceil(rows_per_chunk).max(1);
        let cfg = LaunchConfig {
            grid_dim: (col_blocks as u32, chunks as u32, 1),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        (cfg, rows_per_chunk, chunks)
    }

    /// One thread per channel.
    pub fn per_channel(c: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (c.div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One block per row.
    pub fn per_row(rows: usize, threads: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: (rows.max(1) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
    }
}
