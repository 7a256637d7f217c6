//! The worker protocol's decoders and prompt reassembly against hostile
//! frames (see `protocol::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    protocol::fuzzing::frames(data);
});
