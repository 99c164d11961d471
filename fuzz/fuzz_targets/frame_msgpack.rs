#![no_main]
//! See `gateway::fuzz::frame_msgpack`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::frame_msgpack(data));
