//! A server frame shared by every socket it goes to, encoded at most once per encoding.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::protocol::{Encoding, ServerFrame};

/// A server frame shared by every socket it goes to, encoded at most once per encoding.
///
/// It starts either from a typed frame (made on this node) or from its MessagePack bytes
/// (received from another node); the other encoding is derived on first use. JSON derived
/// from MessagePack is a straight transcode, so it has the same fields in the same order as
/// the JSON this node would have written.
#[derive(Debug)]
pub struct Outbound {
    frame: Option<ServerFrame>,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Outbound {
    pub fn new(frame: ServerFrame) -> Arc<Outbound> {
        Arc::new(Outbound {
            frame: Some(frame),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        })
    }

    /// A frame received as MessagePack bytes.
    pub fn from_msgpack(bytes: Bytes) -> Arc<Outbound> {
        let msgpack = OnceLock::new();
        let _ = msgpack.set(bytes);
        Arc::new(Outbound {
            frame: None,
            json: OnceLock::new(),
            msgpack,
        })
    }

    /// The MessagePack bytes (the form frames travel between nodes in).
    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| {
            self.frame
                .as_ref()
                .expect("an outbound frame has a typed or an encoded form")
                .encode(Encoding::MsgPack)
        })
    }

    fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| match &self.frame {
            Some(f) => Utf8Bytes::from(f.to_json_string()),
            None => Utf8Bytes::from(transcode_to_json(self.msgpack())),
        })
    }

    /// The WebSocket message for an encoding; cloning it only bumps a reference count.
    pub fn message(&self, enc: Encoding) -> Message {
        match enc {
            Encoding::Json => Message::Text(self.json().clone()),
            Encoding::MsgPack => Message::Binary(self.msgpack().clone()),
        }
    }
}

/// MessagePack to JSON text, field for field. Bytes that are not valid MessagePack (which
/// only a bug could produce) become an `error` frame rather than a broken one.
fn transcode_to_json(msgpack: &[u8]) -> String {
    let mut de = rmp_serde::Deserializer::new(msgpack);
    let mut out = Vec::with_capacity(msgpack.len() + msgpack.len() / 4);
    let mut ser = serde_json::Serializer::new(&mut out);
    match serde_transcode::transcode(&mut de, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "undecodable frame from the bus");
            ServerFrame::error(
                None,
                crate::protocol::ErrorCode::Unavailable,
                "internal error",
            )
            .to_json_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Msg, Role};

    #[test]
    fn shares_encoded_bytes_across_sockets() {
        let o = Outbound::new(ServerFrame::Msg(Msg {
            conv: "c".into(),
            seq: 1,
            from: crate::protocol::Author {
                role: Role::System,
                id: "system".into(),
                name: None,
            },
            text: "x".into(),
            ts: 1,
            cid: None,
            code: None,
            args: None,
        }));
        let (Message::Text(a), Message::Text(b)) =
            (o.message(Encoding::Json), o.message(Encoding::Json))
        else {
            panic!("json frames are text");
        };
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }
}
