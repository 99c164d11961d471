#![no_main]
//! See `gateway::fuzz::settings`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::settings(data));
