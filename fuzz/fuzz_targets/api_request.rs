//! The OpenAI request parsers and validation against hostile bodies (see
//! `api::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    api::fuzzing::request_body(data);
});
