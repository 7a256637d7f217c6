//! The shared-memory ring's frame decoder against a hostile producer
//! (see `shm_ring::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shm_ring::fuzzing::ring_frames(data);
});
