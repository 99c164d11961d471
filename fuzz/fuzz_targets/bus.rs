#![no_main]
//! See `gateway::fuzz::bus`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::bus(data));
