//! Golden frames (`tests/golden/frames.json`, shared with the widget's tests): every frame
//! decodes into our types and encodes back unchanged, in JSON and in MessagePack.
//! `GOLDEN_BLESS=1` records the MessagePack bytes of new frames.

use gateway::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::Value;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/frames.json");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn golden_frames_round_trip_in_both_encodings() {
    let text = std::fs::read_to_string(PATH).unwrap();
    let mut frames: Vec<Value> = serde_json::from_str(&text).unwrap();
    let bless = std::env::var_os("GOLDEN_BLESS").is_some();
    assert!(frames.len() >= 30, "golden set too small");
    let mut seen_client = 0;
    let mut seen_server = 0;
    for f in &mut frames {
        let name = f["name"].as_str().unwrap().to_owned();
        let json = f["json"].clone();
        let bytes = serde_json::to_vec(&json).unwrap();
        let (reencoded, msgpack) = match f["dir"].as_str().unwrap() {
            "client" => {
                seen_client += 1;
                let typed: ClientFrame = ClientFrame::decode(Encoding::Json, &bytes)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let mp = typed.encode(Encoding::MsgPack);
                let back = ClientFrame::decode(Encoding::MsgPack, &mp)
                    .unwrap_or_else(|e| panic!("{name} msgpack: {e}"));
                assert_eq!(back, typed, "{name}: msgpack round trip");
                (serde_json::to_value(&typed).unwrap(), mp)
            }
            "server" => {
                seen_server += 1;
                let typed = ServerFrame::decode(Encoding::Json, &bytes)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let mp = typed.encode(Encoding::MsgPack);
                let back = ServerFrame::decode(Encoding::MsgPack, &mp)
                    .unwrap_or_else(|e| panic!("{name} msgpack: {e}"));
                assert_eq!(back, typed, "{name}: msgpack round trip");
                (serde_json::to_value(&typed).unwrap(), mp)
            }
            other => panic!("{name}: bad dir {other}"),
        };
        assert_eq!(reencoded, json, "{name}: json round trip changed the frame");
        match f.get("msgpack_hex").and_then(Value::as_str) {
            Some(h) if !bless => {
                assert_eq!(
                    hex(&msgpack),
                    h,
                    "{name}: msgpack bytes differ from the golden ones"
                );
                // The stored bytes decode to the same JSON (maps with string keys, same names).
                let v: Value = rmp_serde::from_slice(&unhex(h)).unwrap();
                assert_eq!(v, json, "{name}: golden msgpack is not the json frame");
            }
            _ if bless => {
                f["msgpack_hex"] = Value::String(hex(&msgpack));
            }
            _ => panic!("{name}: no msgpack_hex; run with GOLDEN_BLESS=1 once"),
        }
    }
    assert!(seen_client >= 15 && seen_server >= 12);
    if bless {
        std::fs::write(PATH, serde_json::to_string_pretty(&frames).unwrap() + "\n").unwrap();
    }
}
