#![no_main]
//! See `gateway::fuzz::frame_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::frame_json(data));
