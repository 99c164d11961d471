//! The subset of wire protocol v1 that the load tester speaks, written from
//! `protocol-v1.md` alone.
//!
//! These types deliberately do not come from the gateway crate: the load tester doubles as
//! proof that a third-party client built from the written contract can chat through the
//! gateway. Server frames ignore unknown fields, and unknown frame types decode to
//! [`ServerFrame::Other`] so that additive protocol changes never break a run.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Wire encoding, chosen by WebSocket subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `chat.v1.json`: one JSON object per text frame.
    Json,
    /// `chat.v1.msgpack`: one MessagePack map (string keys) per binary frame.
    Msgpack,
}

/// An encoded frame, ready to become a WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

impl Encoding {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => "chat.v1.json",
            Encoding::Msgpack => "chat.v1.msgpack",
        }
    }

    pub fn encode(self, frame: &ClientFrame<'_>) -> Result<Payload> {
        Ok(match self {
            Encoding::Json => Payload::Text(serde_json::to_string(frame)?),
            Encoding::Msgpack => Payload::Binary(rmp_serde::to_vec_named(frame)?),
        })
    }
}

/// Decodes a JSON text frame from the server.
pub fn decode_json(text: &str) -> Result<ServerFrame> {
    serde_json::from_str(text).context("undecodable JSON frame")
}

/// Decodes a MessagePack binary frame from the server.
pub fn decode_msgpack(bytes: &[u8]) -> Result<ServerFrame> {
    rmp_serde::from_slice(bytes).context("undecodable MessagePack frame")
}

/// Frames the load tester sends. Only what the scenarios need.
#[derive(Debug, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    Hello {
        token: &'a str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        cursors: BTreeMap<&'a str, u64>,
    },
    Pong,
    Start {
        rid: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        queue: Option<&'a str>,
    },
    Send {
        rid: u64,
        conv: &'a str,
        cid: &'a str,
        text: &'a str,
    },
    Status {
        rid: u64,
        status: &'a str,
    },
    Accept {
        rid: u64,
        conv: &'a str,
    },
    Decline {
        rid: u64,
        conv: &'a str,
    },
    Close {
        rid: u64,
        conv: &'a str,
    },
}

/// A request id as echoed by the server. We only ever send numbers, but the contract allows
/// strings too, so a string never fails decoding.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Rid {
    Num(u64),
    Str(String),
}

impl Rid {
    pub fn num(&self) -> Option<u64> {
        match self {
            Rid::Num(n) => Some(*n),
            Rid::Str(_) => None,
        }
    }
}

/// Frames the server sends that the scenarios look at.
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(Welcome),
    Ok(OkFrame),
    Error(ErrorFrame),
    Ping,
    Msg(Msg),
    Conv(ConvEvent),
    Queue(QueueFrame),
    Offer(Offer),
    Notice(Notice),
    /// Any frame type this client does not use (typing, read, operator, …).
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct Welcome {
    /// The node that serves the connection (spread over several `--url`s is reported).
    #[serde(default)]
    pub node: String,
    pub me: Me,
    #[serde(default)]
    pub conversations: Vec<Conversation>,
    #[serde(default)]
    pub settings: Settings,
}

#[derive(Debug, Deserialize)]
pub struct Me {
    pub id: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Settings {
    pub routing: Option<String>,
    pub ping_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub id: String,
    #[serde(default)]
    pub state: String,
    pub visitor: Option<Party>,
    pub operator: Option<Party>,
    #[serde(default)]
    pub last_seq: u64,
    pub recovered: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Party {
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sender {
    pub role: String,
}

/// `ok` answers differ by request: a send ack carries `conv` as an id plus `cid`/`seq`/`ts`,
/// `start` and `accept` carry the whole Conversation under `conv`.
#[derive(Debug, Deserialize)]
pub struct OkFrame {
    pub rid: Option<Rid>,
    pub conv: Option<ConvRef>,
    pub cid: Option<String>,
    pub seq: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ConvRef {
    Id(String),
    Full(Box<Conversation>),
}

#[derive(Debug, Deserialize)]
pub struct ErrorFrame {
    pub rid: Option<Rid>,
    pub code: String,
}

#[derive(Debug, Deserialize)]
pub struct Msg {
    pub conv: String,
    pub seq: u64,
    pub from: Sender,
    pub cid: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ConvEvent {
    pub event: String,
    pub conv: Conversation,
}

#[derive(Debug, Deserialize)]
pub struct QueueFrame {
    #[serde(default)]
    pub waiting: Vec<Conversation>,
}

#[derive(Debug, Deserialize)]
pub struct Offer {
    pub conv: Conversation,
}

#[derive(Debug, Deserialize)]
pub struct Notice {
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn both(frame: &ClientFrame<'_>) -> (Value, Value) {
        let Payload::Text(text) = Encoding::Json.encode(frame).unwrap() else {
            panic!("json must be text")
        };
        let Payload::Binary(bin) = Encoding::Msgpack.encode(frame).unwrap() else {
            panic!("msgpack must be binary")
        };
        (
            serde_json::from_str(&text).unwrap(),
            rmp_serde::from_slice(&bin).unwrap(),
        )
    }

    #[test]
    fn client_frames_match_the_contract_in_both_encodings() {
        let mut cursors = BTreeMap::new();
        cursors.insert("c_1", 2);
        let cases: Vec<(ClientFrame<'_>, Value)> = vec![
            (
                ClientFrame::Hello {
                    token: "tok",
                    cursors,
                },
                json!({"t":"hello","token":"tok","cursors":{"c_1":2}}),
            ),
            (
                ClientFrame::Hello {
                    token: "tok",
                    cursors: BTreeMap::new(),
                },
                json!({"t":"hello","token":"tok"}),
            ),
            (ClientFrame::Pong, json!({"t":"pong"})),
            (
                ClientFrame::Start {
                    rid: 3,
                    queue: None,
                },
                json!({"t":"start","rid":3}),
            ),
            (
                ClientFrame::Start {
                    rid: 3,
                    queue: Some("general"),
                },
                json!({"t":"start","rid":3,"queue":"general"}),
            ),
            (
                ClientFrame::Send {
                    rid: 1,
                    conv: "c_1",
                    cid: "m-1",
                    text: "Hello",
                },
                json!({"t":"send","rid":1,"conv":"c_1","cid":"m-1","text":"Hello"}),
            ),
            (
                ClientFrame::Status {
                    rid: 5,
                    status: "active",
                },
                json!({"t":"status","rid":5,"status":"active"}),
            ),
            (
                ClientFrame::Accept {
                    rid: 6,
                    conv: "c_2",
                },
                json!({"t":"accept","rid":6,"conv":"c_2"}),
            ),
            (
                ClientFrame::Decline {
                    rid: 7,
                    conv: "c_2",
                },
                json!({"t":"decline","rid":7,"conv":"c_2"}),
            ),
            (
                ClientFrame::Close {
                    rid: 4,
                    conv: "c_1",
                },
                json!({"t":"close","rid":4,"conv":"c_1"}),
            ),
        ];
        for (frame, want) in cases {
            let (from_json, from_msgpack) = both(&frame);
            assert_eq!(from_json, want, "json {frame:?}");
            assert_eq!(from_msgpack, want, "msgpack {frame:?}");
        }
    }

    #[test]
    fn msgpack_uses_string_keys() {
        let Payload::Binary(bin) = Encoding::Msgpack.encode(&ClientFrame::Pong).unwrap() else {
            panic!()
        };
        // fixmap of 1, fixstr "t", fixstr "pong"
        assert_eq!(bin, vec![0x81, 0xa1, b't', 0xa4, b'p', b'o', b'n', b'g']);
    }

    /// Decodes a server frame given as JSON through both encodings.
    fn decode_both(v: Value) -> [ServerFrame; 2] {
        let text = v.to_string();
        let bin = rmp_serde::to_vec_named(&v).unwrap();
        [decode_json(&text).unwrap(), decode_msgpack(&bin).unwrap()]
    }

    fn conversation() -> Value {
        json!({"id":"c_1","site":"demo","queue":"general","state":"active",
               "visitor":{"id":"v_1","name":"Ann","online":true},
               "operator":{"id":"op_1","name":"Olga"},"last_seq":3,"tags":["billing"],
               "created_at":1700000000000u64,"recovered":true})
    }

    #[test]
    fn decodes_welcome() {
        let v = json!({"t":"welcome","conn":"n1-42","node":"n1",
            "me":{"role":"operator","id":"op_1","site":"demo","name":"Olga"},
            "conversations":[conversation()],
            "settings":{"routing":"manual","ping_interval_ms":25000,"queues":["general"]}});
        for f in decode_both(v) {
            let ServerFrame::Welcome(w) = f else {
                panic!("{f:?}")
            };
            assert_eq!(w.node, "n1");
            assert_eq!(w.me.id, "op_1");
            assert_eq!(w.conversations[0].id, "c_1");
            assert_eq!(w.conversations[0].last_seq, 3);
            assert_eq!(w.conversations[0].recovered, Some(true));
            assert_eq!(w.conversations[0].operator.as_ref().unwrap().id, "op_1");
            assert_eq!(w.conversations[0].visitor.as_ref().unwrap().id, "v_1");
            assert_eq!(w.settings.routing.as_deref(), Some("manual"));
            assert_eq!(w.settings.ping_interval_ms, Some(25000));
        }
    }

    #[test]
    fn decodes_the_three_shapes_of_ok() {
        let ack = json!({"t":"ok","rid":1,"conv":"c_1","cid":"m-1","seq":4,"ts":1700000002000u64});
        for f in decode_both(ack) {
            let ServerFrame::Ok(ok) = f else { panic!() };
            assert_eq!(ok.rid, Some(Rid::Num(1)));
            assert!(matches!(ok.conv, Some(ConvRef::Id(ref id)) if id == "c_1"));
            assert_eq!(ok.cid.as_deref(), Some("m-1"));
            assert_eq!(ok.seq, Some(4));
        }
        let started = json!({"t":"ok","rid":3,"conv":conversation()});
        for f in decode_both(started) {
            let ServerFrame::Ok(ok) = f else { panic!() };
            let Some(ConvRef::Full(c)) = ok.conv else {
                panic!()
            };
            assert_eq!(c.id, "c_1");
            assert_eq!(c.state, "active");
        }
        let empty = json!({"t":"ok","rid":"r-9"});
        for f in decode_both(empty) {
            let ServerFrame::Ok(ok) = f else { panic!() };
            assert_eq!(ok.rid, Some(Rid::Str("r-9".into())));
            assert!(ok.conv.is_none());
        }
    }

    #[test]
    fn decodes_msg_error_ping_and_events() {
        let msg = json!({"t":"msg","conv":"c_1","seq":4,
            "from":{"role":"operator","id":"op_1","name":"Olga"},
            "text":"How can I help?","ts":1700000002000u64,"cid":"m-1"});
        for f in decode_both(msg) {
            let ServerFrame::Msg(m) = f else { panic!() };
            assert_eq!((m.conv.as_str(), m.seq), ("c_1", 4));
            assert_eq!(m.from.role, "operator");
            assert_eq!(m.cid.as_deref(), Some("m-1"));
        }
        let system = json!({"t":"msg","conv":"c_1","seq":2,"from":{"role":"system","id":"system"},
            "text":"Olga joined","ts":1700000001500u64});
        for f in decode_both(system) {
            let ServerFrame::Msg(m) = f else { panic!() };
            assert!(m.cid.is_none());
        }
        let err =
            json!({"t":"error","rid":6,"code":"taken","message":"conversation already taken"});
        for f in decode_both(err) {
            let ServerFrame::Error(e) = f else { panic!() };
            assert_eq!(e.code, "taken");
            assert_eq!(e.rid.and_then(|r| r.num()), Some(6));
        }
        for f in decode_both(json!({"t":"ping"})) {
            assert!(matches!(f, ServerFrame::Ping));
        }
        let queue = json!({"t":"queue","queue":"general","waiting":[conversation()],"count":1});
        for f in decode_both(queue) {
            let ServerFrame::Queue(q) = f else { panic!() };
            assert_eq!(q.waiting.len(), 1);
        }
        let offer = json!({"t":"offer","conv":conversation(),"expires_at":1700000030000u64});
        for f in decode_both(offer) {
            assert!(matches!(f, ServerFrame::Offer(o) if o.conv.id == "c_1"));
        }
        let ev = json!({"t":"conv","event":"assigned","conv":conversation()});
        for f in decode_both(ev) {
            assert!(matches!(f, ServerFrame::Conv(e) if e.event == "assigned"));
        }
        let notice = json!({"t":"notice","conv":"c_1","code":"unavailable","text":"Sorry"});
        for f in decode_both(notice) {
            assert!(matches!(f, ServerFrame::Notice(n) if n.code == "unavailable"));
        }
    }

    #[test]
    fn unknown_frames_and_fields_are_ignored() {
        let typing =
            json!({"t":"typing","conv":"c_1","from":{"role":"visitor","id":"v_1"},"on":true});
        for f in decode_both(typing) {
            assert!(matches!(f, ServerFrame::Other));
        }
        let future = json!({"t":"ping","new_field":[1,2,3]});
        for f in decode_both(future) {
            assert!(matches!(f, ServerFrame::Ping));
        }
    }

    /// The gateway's golden frames (`tests/golden/frames.json`): every server frame decodes
    /// here in both encodings, and the client frames this tool sends equal the golden ones.
    /// Written from the contract alone, this module must still agree with the gateway.
    #[test]
    fn agrees_with_the_golden_frames() {
        let golden: Vec<Value> = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/golden/frames.json"
        )))
        .unwrap();
        let hex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let ours = |name: &str| -> Option<ClientFrame<'static>> {
            Some(match name {
                "hello" => ClientFrame::Hello {
                    token: "eyJhbGciOiJIUzI1NiJ9.e30.sig",
                    cursors: BTreeMap::from([("c_1", 2)]),
                },
                "hello_no_cursors" => ClientFrame::Hello {
                    token: "eyJhbGciOiJIUzI1NiJ9.e30.sig",
                    cursors: BTreeMap::new(),
                },
                "pong" => ClientFrame::Pong,
                "send" => ClientFrame::Send {
                    rid: 1,
                    conv: "c_1",
                    cid: "m-1",
                    text: "Hello",
                },
                "status" => ClientFrame::Status {
                    rid: 5,
                    status: "active",
                },
                "accept" => ClientFrame::Accept {
                    rid: 6,
                    conv: "c_2",
                },
                "decline" => ClientFrame::Decline {
                    rid: 7,
                    conv: "c_2",
                },
                _ => return None,
            })
        };
        let (mut servers, mut clients) = (0, 0);
        for g in &golden {
            let name = g["name"].as_str().unwrap();
            let bin = hex(g["msgpack_hex"].as_str().unwrap());
            if g["dir"] == "server" {
                let text = g["json"].to_string();
                let from_json = decode_json(&text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                let from_msgpack = decode_msgpack(&bin).unwrap_or_else(|e| panic!("{name}: {e:#}"));
                let t = g["json"]["t"].as_str().unwrap();
                for f in [from_json, from_msgpack] {
                    let known = !matches!(f, ServerFrame::Other);
                    let used = [
                        "welcome", "ok", "error", "ping", "msg", "conv", "queue", "offer", "notice",
                    ];
                    assert_eq!(known, used.contains(&t), "{name}: {f:?}");
                }
                servers += 1;
            } else if let Some(frame) = ours(name) {
                let (json, msgpack) = both(&frame);
                assert_eq!(json, g["json"], "{name}");
                assert_eq!(
                    msgpack,
                    rmp_serde::from_slice::<Value>(&bin).unwrap(),
                    "{name}"
                );
                clients += 1;
            }
        }
        assert!(
            servers >= 15 && clients == 7,
            "{servers} server, {clients} client frames"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_json("{not json").is_err());
        assert!(decode_json(r#"{"no_t":1}"#).is_err());
        assert!(decode_msgpack(&[0xc1]).is_err());
    }
}
