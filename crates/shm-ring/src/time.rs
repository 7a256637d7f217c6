//! Monotonic time shared by both processes (`CLOCK_MONOTONIC` is one clock
//! system-wide on Linux and macOS, so a worker's timestamp is comparable in
//! the front-end).

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        // CLOCK_MONOTONIC cannot fail on the supported systems; a zero
        // stamp reads as "very old", the safe direction for a heartbeat.
        Err(_) => 0,
    }
}
