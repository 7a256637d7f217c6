//! MLX's allocator: memory in use, its peak, the buffer cache, and limits.

use crate::error::{Result, check};
use crate::ffi;

/// A snapshot of MLX's memory use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Held by live arrays.
    pub active: usize,
    /// Highest `active` since start or the last `reset_peak_memory`.
    pub peak: usize,
    /// Freed buffers kept for reuse.
    pub cache: usize,
}

/// The current memory use.
pub fn stats() -> MemoryStats {
    // SAFETY: the getters take no arguments and only read allocator counters.
    unsafe {
        MemoryStats {
            active: ffi::mlxs_active_memory(),
            peak: ffi::mlxs_peak_memory(),
            cache: ffi::mlxs_cache_memory(),
        }
    }
}

/// Restarts peak tracking from the current use.
pub fn reset_peak_memory() {
    // SAFETY: no arguments.
    unsafe { ffi::mlxs_reset_peak_memory() }
}

/// Returns the cached buffers to the system.
pub fn clear_cache() {
    // SAFETY: no arguments.
    unsafe { ffi::mlxs_clear_cache() }
}

/// The memory limit MLX tries to stay under (it waits for work in flight to
/// free memory before allocating past it).
pub fn memory_limit() -> usize {
    // SAFETY: no arguments.
    unsafe { ffi::mlxs_memory_limit() }
}

fn set(
    f: unsafe extern "C" fn(usize, *mut usize) -> std::ffi::c_int,
    limit: usize,
) -> Result<usize> {
    let mut previous = 0;
    // SAFETY: `f` is one of the shim's limit setters; the out-pointer is a
    // live local.
    check(unsafe { f(limit, &mut previous) })?;
    Ok(previous)
}

/// Sets the memory limit; returns the previous one.
pub fn set_memory_limit(limit: usize) -> Result<usize> {
    set(ffi::mlxs_set_memory_limit, limit)
}

/// Sets how much freed memory the cache may keep; returns the previous limit.
pub fn set_cache_limit(limit: usize) -> Result<usize> {
    set(ffi::mlxs_set_cache_limit, limit)
}

/// Sets how much memory may be wired (kept resident; Metal only, a no-op
/// elsewhere); returns the previous limit.
pub fn set_wired_limit(limit: usize) -> Result<usize> {
    set(ffi::mlxs_set_wired_limit, limit)
}
