//! What Redis holds, read and written: MessagePack values, reply shapes, timer members, and
//! `msg` frames split around their `seq` (the append script puts the real one in).

use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{ConvId, OperatorId, TimerKind, VisitorId};
use crate::engine::EngineError;
use crate::protocol::{ConvState, Encoding, Msg, ServerFrame};

/// An answer this code cannot read.
pub(super) fn garbled(what: impl Into<String>) -> EngineError {
    EngineError::protocol(what)
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("msgpack encoding of own type")
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EngineError> {
    rmp_serde::from_slice(bytes).map_err(|e| garbled(format!("stored value: {e}")))
}

/// A stored `msg` frame back into the message.
pub(super) fn decode_msg(frame: &[u8]) -> Result<Msg, EngineError> {
    match ServerFrame::decode(Encoding::MsgPack, frame) {
        Ok(ServerFrame::Msg(m)) => Ok(m),
        Ok(_) => Err(garbled("stored frame is not a msg")),
        Err(e) => Err(garbled(format!("stored frame: {e}"))),
    }
}

pub(super) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

pub(super) fn as_str(v: &Value) -> Option<&str> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

pub(super) fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(_) | Value::SimpleString(_) => as_str(v)?.parse().ok(),
        _ => None,
    }
}

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(_) | Value::SimpleString(_) => as_str(v)?.parse().ok(),
        _ => None,
    }
}

pub(super) fn array(v: Value) -> Result<Vec<Value>, EngineError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(garbled(format!("expected an array, got {other:?}"))),
    }
}

/// A timer's member in its site's sorted set.
pub(super) fn timer_member(kind: &TimerKind) -> String {
    match kind {
        TimerKind::Offer(c) => format!("offer:{c}"),
        TimerKind::Reassign(c) => format!("reassign:{c}"),
        TimerKind::Inactive(c) => format!("inactive:{c}"),
        TimerKind::Callback(c) => format!("callback:{c}"),
        TimerKind::VisitorGrace(v) => format!("vgrace:{v}"),
        TimerKind::OperatorGrace(o) => format!("ograce:{o}"),
    }
}

pub(super) fn parse_timer(member: &str) -> Option<TimerKind> {
    let (kind, id) = member.split_once(':')?;
    Some(match kind {
        "offer" => TimerKind::Offer(ConvId::from(id)),
        "reassign" => TimerKind::Reassign(ConvId::from(id)),
        "inactive" => TimerKind::Inactive(ConvId::from(id)),
        "callback" => TimerKind::Callback(ConvId::from(id)),
        "vgrace" => TimerKind::VisitorGrace(VisitorId::from(id)),
        "ograce" => TimerKind::OperatorGrace(OperatorId::from(id)),
        _ => return None,
    })
}

pub(super) fn state_str(s: ConvState) -> &'static str {
    match s {
        ConvState::Queued => "queued",
        ConvState::Offered => "offered",
        ConvState::Active => "active",
        ConvState::Closed => "closed",
    }
}

/// A `msg` frame encoded around its `seq`: `(prefix, suffix)` such that
/// `prefix + msgpack(seq) + suffix` is the frame. The split is found by encoding a sentinel
/// `seq` (`0xcf` then eight `0xff`): `0xff` never occurs in UTF-8, so the text around it
/// cannot imitate it.
pub(super) fn msg_frame_parts(msg: &Msg) -> (Vec<u8>, Vec<u8>) {
    let mut probe = msg.clone();
    probe.seq = u64::MAX;
    let bytes = ServerFrame::Msg(probe).encode(Encoding::MsgPack);
    let mut needle = vec![0xa3, b's', b'e', b'q', 0xcf];
    needle.extend_from_slice(&[0xff; 8]);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("an encoded msg frame has a seq field");
    let prefix = bytes[..at + 4].to_vec();
    let suffix = bytes[at + needle.len()..].to_vec();
    (prefix, suffix)
}

/// A key's time to live in whole seconds (at least one).
pub(super) fn ttl_secs(d: std::time::Duration) -> u64 {
    d.as_secs().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Author, Role};

    fn msg(text: &str, cid: Option<&str>) -> Msg {
        Msg {
            conv: "c_1".into(),
            seq: 0,
            from: Author {
                role: Role::Visitor,
                id: "v_1".into(),
                name: Some("Ann".into()),
            },
            text: text.into(),
            ts: 1_700_000_000_000,
            cid: cid.map(str::to_owned),
            code: None,
            args: None,
        }
    }

    #[test]
    fn frame_parts_rebuild_the_exact_frame_for_any_seq() {
        for text in ["hi", "ÿ\u{ff}\u{10ffff} with seq in it: seq", ""] {
            let mut m = msg(text, Some("k1"));
            let (prefix, suffix) = msg_frame_parts(&m);
            for seq in [1u64, 127, 128, 255, 256, 65_535, 65_536, 1 << 32, 1 << 40] {
                m.seq = seq;
                let mut rebuilt = prefix.clone();
                rmp::encode::write_uint(&mut rebuilt, seq).unwrap();
                rebuilt.extend_from_slice(&suffix);
                assert_eq!(
                    rebuilt,
                    ServerFrame::Msg(m.clone())
                        .encode(Encoding::MsgPack)
                        .to_vec(),
                    "seq {seq} text {text:?}"
                );
            }
        }
    }

    #[test]
    fn timer_members_round_trip() {
        for k in [
            TimerKind::Offer(ConvId::from("c:1")),
            TimerKind::Reassign(ConvId::from("c2")),
            TimerKind::Inactive(ConvId::from("c3")),
            TimerKind::Callback(ConvId::from("c4")),
            TimerKind::VisitorGrace(VisitorId::from("v:x")),
            TimerKind::OperatorGrace(OperatorId::from("o")),
        ] {
            assert_eq!(parse_timer(&timer_member(&k)), Some(k));
        }
    }
}
