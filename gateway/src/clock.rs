//! Wall-clock time in Unix milliseconds, the unit of every timestamp in the protocol.
//!
//! The pure core never calls this: it is handed `now`, which is how its tests use a fake clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
