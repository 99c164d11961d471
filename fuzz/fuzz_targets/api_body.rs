#![no_main]
//! See `gateway::fuzz::api_body`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::api_body(data));
