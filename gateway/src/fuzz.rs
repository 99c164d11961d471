//! The fuzz targets' bodies: what the gateway reads from outside, fed arbitrary bytes. Each
//! must return (never panic, never hang) whatever it is given, and what it accepts must come
//! back the same after a round trip through its own encoder. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz`); `gateway/tests/fuzz_corpus.rs` replays the kept corpus through them on the
//! stable toolchain in the test command.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::core::settings::{Bounds, Settings};
use crate::directory::{self, Directory, Entity};
use crate::protocol::{ClientFrame, Encoding};

/// A client frame in JSON: decoded, and what decodes re-encodes to the same frame.
pub fn frame_json(data: &[u8]) {
    client_frame(Encoding::Json, data);
}

/// A client frame in MessagePack: decoded, and what decodes re-encodes to the same frame.
pub fn frame_msgpack(data: &[u8]) {
    client_frame(Encoding::MsgPack, data);
}

fn client_frame(enc: Encoding, data: &[u8]) {
    if let Ok(frame) = ClientFrame::decode(enc, data) {
        let bytes = frame.encode(enc);
        let again = ClientFrame::decode(enc, &bytes).expect("a frame the gateway encodes decodes");
        // Compared encoded: a NaN `rid` is not equal to itself, but is echoed as it came.
        assert_eq!(again.encode(enc), bytes, "{enc:?} round trip");
    }
}

/// A message from the bus (another node, or whoever reached Redis): decoded, and what
/// decodes encodes to the bytes its re-decoding encodes to.
pub fn bus(data: &[u8]) {
    if let Ok(msg) = crate::bus::wire::decode(Bytes::copy_from_slice(data)) {
        let bytes = crate::bus::wire::encode(&msg);
        let again = crate::bus::wire::decode(Bytes::from(bytes.clone()))
            .expect("a message the gateway encodes decodes");
        assert_eq!(crate::bus::wire::encode(&again), bytes, "bus round trip");
    }
}

/// Site settings as `PATCH …/settings` and `PATCH /v1/sites/{site}` take them, and a sites
/// file: checked, never a panic; settings that pass apply again to the same.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for bounds in [
        Bounds {
            allow_short_timers: false,
        },
        Bounds {
            allow_short_timers: true,
        },
    ] {
        if let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(text) {
            if let Ok(s) = Settings::default().patched(&patch, bounds) {
                let again = s
                    .patched(&patch, bounds)
                    .expect("settings that passed pass again");
                assert_eq!(again, s, "a patch applied twice is the patch applied once");
            }
        }
        let _ = crate::config::parse_sites(text, bounds);
    }
}

/// A JSON body of the HTTP API's directory: read as each collection's entity (as create and
/// patch do), prepared and checked against an empty directory and against one holding it.
pub fn api_body(data: &[u8]) {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    entity::<directory::Queue>(&body);
    entity::<directory::Group>(&body);
    entity::<directory::Staff>(&body);
    entity::<directory::Tag>(&body);
    entity::<directory::Outcome>(&body);
    entity::<directory::Param>(&body);
    entity::<directory::Canned>(&body);
    entity::<directory::Ban>(&body);
    entity::<directory::Webhook>(&body);
    entity::<directory::Action>(&body);
}

fn entity<T: Entity>(body: &Map<String, Value>) {
    let mut body = body.clone();
    // Staff passwords are hashed in `prepare` (argon2id, on purpose slow): not here.
    body.remove("password");
    if T::prepare(&mut body, None).is_err() {
        return;
    }
    let Ok(item) = serde_json::from_value::<T>(Value::Object(body)) else {
        return;
    };
    let mut dir = Directory::default();
    let _ = item.check(&dir);
    let _ = item.view(&dir);
    T::map_mut(&mut dir).insert(item.id().to_owned(), item.clone());
    let _ = item.check(&dir);
    let _ = T::referrers(&dir, item.id());
}
