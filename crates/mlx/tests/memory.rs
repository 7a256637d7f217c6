//! Memory statistics, alone in their test binary so that no other test
//! allocates or frees while they are read.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used)]

use mlx::{Dtype, memory};

#[test]
fn memory_statistics_track_allocations() {
    let a = mlx::zeros(&[1024, 1024], Dtype::F32)
        .unwrap()
        .add(&mlx::ones(&[1], Dtype::F32).unwrap())
        .unwrap();
    a.eval().unwrap();
    let during = memory::stats();
    assert!(during.active >= a.nbytes(), "{during:?}");
    assert!(during.peak >= 4 << 20, "{during:?}");
    assert!(during.peak >= during.active);
    drop(a);
    memory::clear_cache();
    assert_eq!(memory::stats().cache, 0);
    let previous = memory::set_cache_limit(1 << 30).unwrap();
    memory::set_cache_limit(previous).unwrap();
    let limit = memory::memory_limit();
    assert!(limit > 0);
    assert_eq!(memory::set_memory_limit(limit).unwrap(), limit);
    memory::reset_peak_memory();
}
