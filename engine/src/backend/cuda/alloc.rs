//! A caching device allocator: freed buffers go to a free list keyed by their rounded size and are
//! handed out again, so a training step in steady state makes no cudaMalloc calls. Sizes round up to a
//! multiple of 512 bytes below 1 MiB and to an eighth of the next power of two above, which bounds the
//! waste to 12.5% while keeping the number of distinct buckets small. All buffers are used on the
//! compute stream, so reuse is ordered after every earlier use without events.

use crate::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The bucket a request of `bytes` is served from.
pub fn bucket_size(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= 1 << 20 {
        return bytes.div_ceil(512) * 512;
    }
    let pow = usize::BITS - (bytes - 1).leading_zeros(); // 2^pow >= bytes
    let step = 1usize << (pow - 4); // an eighth of 2^(pow-1), the power just below
    bytes.div_ceil(step) * step
}

#[derive(Default, Debug, Clone, Copy)]
pub struct PoolStats {
    /// Buffers obtained from the driver.
    pub driver_allocs: u64,
    /// Requests served from a free list.
    pub reuses: u64,
    /// Bytes held by the pool (in use or cached).
    pub bytes_held: usize,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<CudaSlice<u8>>>,
    stats: PoolStats,
}

pub struct Pool {
    stream: Arc<CudaStream>,
    state: Mutex<PoolState>,
}

impl Pool {
    pub fn new(stream: Arc<CudaStream>) -> Arc<Pool> {
        Arc::new(Pool { stream, state: Mutex::new(PoolState::default()) })
    }

    /// A buffer of at least `bytes` bytes (uninitialised).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer> {
        let size = bucket_size(bytes);
        let mut st = self.state.lock().map_err(|_| Error::Device("allocator lock poisoned".into()))?;
        if let Some(slice) = st.free.get_mut(&size).and_then(Vec::pop) {
            st.stats.reuses += 1;
            return Ok(DeviceBuffer { slice: Some(slice), size, pool: self.clone() });
        }
        // SAFETY: the memory is uninitialised; every user writes before reading (or zeroes it).
        let slice = match unsafe { self.stream.alloc::<u8>(size) } {
            Ok(s) => s,
            Err(_) => {
                // Out of memory with buffers cached: release them and try once more.
                st.free.clear();
                st.stats.bytes_held = 0;
                unsafe { self.stream.alloc::<u8>(size) }
                    .map_err(|e| Error::Device(format!("cannot allocate {size} bytes on the GPU: {e}")))?
            }
        };
        st.stats.driver_allocs += 1;
        st.stats.bytes_held += size;
        Ok(DeviceBuffer { slice: Some(slice), size, pool: self.clone() })
    }

    pub fn stats(&self) -> PoolStats {
        self.state.lock().map(|s| s.stats).unwrap_or_default()
    }

    /// Returns every cached buffer to the driver.
    pub fn empty_cache(&self) {
        if let Ok(mut st) = self.state.lock() {
            let freed: usize = st.free.iter().map(|(size, v)| size * v.len()).sum();
            st.free.clear();
            st.stats.bytes_held -= freed;
        }
    }

    fn give_back(&self, size: usize, slice: CudaSlice<u8>) {
        if let Ok(mut st) = self.state.lock() {
            st.free.entry(size).or_default().push(slice);
        }
    }
}

/// Device memory on loan from the pool; returns there when dropped.
pub struct DeviceBuffer {
    slice: Option<CudaSlice<u8>>,
    size: usize,
    pool: Arc<Pool>,
}

impl DeviceBuffer {
    pub fn slice(&self) -> &CudaSlice<u8> {
        self.slice.as_ref().expect("buffer present until drop")
    }
    pub fn slice_mut(&mut self) -> &mut CudaSlice<u8> {
        self.slice.as_mut().expect("buffer present until drop")
    }
    pub fn bytes(&self) -> usize {
        self.size
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.pool.give_back(self.size, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_size;

    #[test]
    fn buckets_cover_the_request_with_bounded_waste() {
        for bytes in [1usize, 511, 512, 513, 4000, 1 << 20, (1 << 20) + 1, 3_000_000, 123_456_789] {
            let b = bucket_size(bytes);
            assert!(b >= bytes, "{bytes} -> {b}");
            assert!((b - bytes) as f64 <= (bytes as f64 / 8.0).max(512.0), "{bytes} -> {b}");
            assert_eq!(b % 512, 0);
        }
        assert_eq!(bucket_size(3_000_000), bucket_size(3_000_001));
    }
}
