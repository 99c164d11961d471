//! Decoding client frames (telling garbage from a frame we cannot accept) and encoding
//! server frames in either encoding.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::*;

/// Why a client frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not an object with a string `t`: a protocol violation (close 4000).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A well-formed object whose type or fields we cannot accept (error frame).
    #[error("bad frame: {message}")]
    Invalid { rid: Option<Rid>, message: String },
}

/// The deepest nesting a client's MessagePack may have. No frame nests deeper than a few
/// levels; rmp-serde allows 1024, and a frame of maps nested a thousand deep (926 bytes,
/// found by fuzzing) overflowed a 2 MiB stack decoding it. serde_json stops at 128.
const MAX_MSGPACK_DEPTH: usize = 32;

/// MessagePack from a client, with its nesting bounded.
fn from_msgpack<'a, T: Deserialize<'a>>(data: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(data);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    T::deserialize(&mut de)
}

/// The envelope fields we can still read from a frame that failed to decode.
#[derive(Deserialize)]
struct Envelope {
    t: String,
    #[serde(default)]
    rid: Option<Rid>,
}

impl ClientFrame {
    /// Decodes a client frame. Distinguishes garbage (close the socket) from a frame of an
    /// unknown type or with bad fields (answer with an error, keep the socket).
    pub fn decode(enc: Encoding, data: &[u8]) -> Result<ClientFrame, DecodeError> {
        let full = match enc {
            Encoding::Json => {
                serde_json::from_slice::<ClientFrame>(data).map_err(|e| e.to_string())
            }
            Encoding::MsgPack => from_msgpack::<ClientFrame>(data).map_err(|e| e.to_string()),
        };
        match full {
            Ok(frame) => Ok(frame),
            Err(detail) => {
                let env = match enc {
                    Encoding::Json => serde_json::from_slice::<Envelope>(data).ok(),
                    Encoding::MsgPack => from_msgpack::<Envelope>(data).ok(),
                };
                match env {
                    None => Err(DecodeError::Malformed(detail)),
                    Some(env) => Err(DecodeError::Invalid {
                        rid: env.rid,
                        message: format!("frame {:?}: {}", env.t, short(&detail)),
                    }),
                }
            }
        }
    }

    /// Encodes a client frame (used by the load tester and tests).
    pub fn encode(&self, enc: Encoding) -> Bytes {
        encode_value(self, enc)
    }
}

impl ServerFrame {
    pub fn encode(&self, enc: Encoding) -> Bytes {
        encode_value(self, enc)
    }

    /// The JSON text of the frame.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).expect("json encoding of own type")
    }

    pub fn decode(enc: Encoding, data: &[u8]) -> Result<ServerFrame, String> {
        match enc {
            Encoding::Json => serde_json::from_slice(data).map_err(|e| e.to_string()),
            Encoding::MsgPack => from_msgpack(data).map_err(|e| e.to_string()),
        }
    }

    pub fn error(rid: Option<Rid>, code: ErrorCode, message: impl Into<String>) -> ServerFrame {
        ServerFrame::Error {
            rid,
            code,
            message: message.into(),
        }
    }
}

fn short(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn encode_value<T: Serialize>(v: &T, enc: Encoding) -> Bytes {
    // Serialising our own types into a Vec cannot fail: every map key is a string and no
    // type has a custom serializer that errors.
    match enc {
        Encoding::Json => Bytes::from(serde_json::to_vec(v).expect("json encoding of own type")),
        Encoding::MsgPack => {
            Bytes::from(rmp_serde::to_vec_named(v).expect("msgpack encoding of own type"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_prefers_first_known_protocol() {
        assert_eq!(Encoding::negotiate(None), Some((Encoding::Json, None)));
        assert_eq!(
            Encoding::negotiate(Some("foo, chat.v1.msgpack, chat.v1.json")),
            Some((Encoding::MsgPack, Some(SUBPROTOCOL_MSGPACK)))
        );
        assert_eq!(Encoding::negotiate(Some("foo")), None);
    }

    #[test]
    fn garbage_is_malformed_but_unknown_type_is_invalid_with_rid() {
        assert!(matches!(
            ClientFrame::decode(Encoding::Json, b"not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            ClientFrame::decode(Encoding::Json, b"[1,2]"),
            Err(DecodeError::Malformed(_))
        ));
        match ClientFrame::decode(Encoding::Json, br#"{"t":"fly","rid":7}"#) {
            Err(DecodeError::Invalid { rid, .. }) => assert_eq!(rid, Some(Rid::Int(7))),
            other => panic!("unexpected {other:?}"),
        }
        match ClientFrame::decode(Encoding::Json, br#"{"t":"send","rid":"a","conv":1}"#) {
            Err(DecodeError::Invalid { rid, .. }) => assert_eq!(rid, Some(Rid::Str("a".into()))),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = ClientFrame::decode(Encoding::Json, br#"{"t":"pong","x":{"y":1}}"#).unwrap();
        assert_eq!(f, ClientFrame::Pong {});
    }

    #[test]
    fn rids_are_echoed_verbatim() {
        for rid in [
            "18446744073709551615",
            "-9223372036854775808",
            "1.5",
            "\"r-1\"",
        ] {
            let frame = format!(r#"{{"t":"history","rid":{rid},"conv":"c"}}"#);
            let f = ClientFrame::decode(Encoding::Json, frame.as_bytes()).unwrap();
            let back = serde_json::to_string(f.rid().unwrap()).unwrap();
            assert_eq!(back, rid);
        }
    }
}
