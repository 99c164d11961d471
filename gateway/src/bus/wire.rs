//! The wire form of bus messages between nodes: one kind byte, then the fields. Frames travel
//! as their MessagePack bytes, which nodes hand to MessagePack sockets unchanged.
//!
//! ```text
//! 'F' audience except seq:msgpack-uint ts:msgpack-uint frame-bytes
//!     audience: 'a' | 's' | 'v' | 'q' queue:msgpack-str
//!     except:   msgpack-nil | msgpack-array [node:str, conn:uint]
//! 'A' conv:msgpack-str after_seq:msgpack-uint [frame-bytes]
//! 'D' conv:msgpack-str [frame-bytes]
//! 'C' code:u16-be
//! 'S' site-bytes
//! ```
//!
//! The Redis engine's append script builds `'F' 'a' nil seq ts frame` itself (it alone knows
//! `seq`).

use bytes::Bytes;

use super::{Audience, BusMsg, ConnRef, Outbound};
use crate::core::{ConnId, ConvId, NodeId, QueueId, SiteId};
use crate::protocol::CloseReason;

#[derive(Debug, thiserror::Error)]
#[error("malformed bus message: {0}")]
pub struct WireError(&'static str);

pub fn encode(msg: &BusMsg) -> Vec<u8> {
    let mut out = Vec::new();
    match msg {
        BusMsg::Frame {
            audience,
            frame,
            seq,
            ts,
            except,
        } => {
            out.push(b'F');
            match audience {
                Audience::All => out.push(b'a'),
                Audience::Staff => out.push(b's'),
                Audience::Visitors => out.push(b'v'),
                Audience::Queue(q) => {
                    out.push(b'q');
                    write_str(&mut out, q.as_str());
                }
            }
            match except {
                None => rmp::encode::write_nil(&mut out).expect("writing to a Vec"),
                Some(r) => {
                    rmp::encode::write_array_len(&mut out, 2).expect("writing to a Vec");
                    write_str(&mut out, r.node.as_str());
                    write_uint(&mut out, r.conn.0);
                }
            }
            write_uint(&mut out, *seq);
            write_uint(&mut out, *ts);
            out.extend_from_slice(frame.msgpack());
        }
        BusMsg::Attach {
            conv,
            frame,
            after_seq,
        } => {
            out.push(b'A');
            write_str(&mut out, conv.as_str());
            write_uint(&mut out, *after_seq);
            if let Some(f) = frame {
                out.extend_from_slice(f.msgpack());
            }
        }
        BusMsg::Detach { conv, frame } => {
            out.push(b'D');
            write_str(&mut out, conv.as_str());
            if let Some(f) = frame {
                out.extend_from_slice(f.msgpack());
            }
        }
        BusMsg::Close(reason) => {
            out.push(b'C');
            out.extend_from_slice(&reason.code().to_be_bytes());
        }
        BusMsg::Settings(site) => {
            out.push(b'S');
            out.extend_from_slice(site.as_str().as_bytes());
        }
    }
    out
}

pub fn decode(bytes: Bytes) -> Result<BusMsg, WireError> {
    let Some(&kind) = bytes.first() else {
        return Err(WireError("empty"));
    };
    let mut rd = &bytes[1..];
    let msg = match kind {
        b'F' => {
            let (&a, rest) = rd.split_first().ok_or(WireError("no audience"))?;
            rd = rest;
            let audience = match a {
                b'a' => Audience::All,
                b's' => Audience::Staff,
                b'v' => Audience::Visitors,
                b'q' => Audience::Queue(QueueId(read_str(&mut rd)?)),
                _ => return Err(WireError("unknown audience")),
            };
            let except = match rd.first() {
                Some(0xc0) => {
                    rd = &rd[1..];
                    None
                }
                _ => {
                    let n = rmp::decode::read_array_len(&mut rd)
                        .map_err(|_| WireError("bad except"))?;
                    if n != 2 {
                        return Err(WireError("bad except"));
                    }
                    let node = NodeId(read_str(&mut rd)?);
                    Some(ConnRef {
                        node,
                        conn: ConnId(read_uint(&mut rd)?),
                    })
                }
            };
            let seq = read_uint(&mut rd)?;
            let ts = read_uint(&mut rd)?;
            let frame = Outbound::from_msgpack(rest_of(&bytes, rd));
            BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                except,
            }
        }
        b'A' => {
            let conv = ConvId(read_str(&mut rd)?);
            let after_seq = read_uint(&mut rd)?;
            let frame = (!rd.is_empty()).then(|| Outbound::from_msgpack(rest_of(&bytes, rd)));
            BusMsg::Attach {
                conv,
                frame,
                after_seq,
            }
        }
        b'D' => {
            let conv = ConvId(read_str(&mut rd)?);
            let frame = (!rd.is_empty()).then(|| Outbound::from_msgpack(rest_of(&bytes, rd)));
            BusMsg::Detach { conv, frame }
        }
        b'C' => {
            let code = match rd {
                [a, b] => u16::from_be_bytes([*a, *b]),
                _ => return Err(WireError("bad close")),
            };
            BusMsg::Close(CloseReason::from_code(code).ok_or(WireError("unknown close"))?)
        }
        b'S' => BusMsg::Settings(SiteId(
            String::from_utf8(rd.to_vec()).map_err(|_| WireError("site not utf-8"))?,
        )),
        _ => return Err(WireError("unknown kind")),
    };
    Ok(msg)
}

/// The tail of `bytes` that `rd` still points at, sharing the allocation.
fn rest_of(bytes: &Bytes, rd: &[u8]) -> Bytes {
    bytes.slice(bytes.len() - rd.len()..)
}

fn write_uint(out: &mut Vec<u8>, v: u64) {
    rmp::encode::write_uint(out, v).expect("writing to a Vec cannot fail");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    rmp::encode::write_str(out, s).expect("writing to a Vec cannot fail");
}

fn read_uint(rd: &mut &[u8]) -> Result<u64, WireError> {
    rmp::decode::read_int(rd).map_err(|_| WireError("bad integer"))
}

fn read_str(rd: &mut &[u8]) -> Result<String, WireError> {
    let len = rmp::decode::read_str_len(rd).map_err(|_| WireError("bad string"))? as usize;
    if rd.len() < len {
        return Err(WireError("short string"));
    }
    let (s, rest) = rd.split_at(len);
    *rd = rest;
    String::from_utf8(s.to_vec()).map_err(|_| WireError("string not utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Encoding, Msg, Role, ServerFrame};

    fn msg(conv: &str, seq: u64) -> BusMsg {
        BusMsg::frame(
            Audience::All,
            ServerFrame::Msg(Msg {
                conv: conv.into(),
                seq,
                from: crate::protocol::Author {
                    role: Role::Visitor,
                    id: "v".into(),
                    name: None,
                },
                text: format!("m{seq}"),
                ts: 1,
                cid: None,
                code: None,
                args: None,
            }),
        )
    }

    #[test]
    fn bus_messages_survive_the_wire_and_frames_keep_their_bytes() {
        let frame = msg("c1", 42);
        let BusMsg::Frame {
            frame: original, ..
        } = &frame
        else {
            unreachable!()
        };
        let back = decode(Bytes::from(encode(&frame))).unwrap();
        let BusMsg::Frame {
            audience,
            frame: f,
            seq,
            ts,
            except,
        } = back
        else {
            panic!("not a frame")
        };
        assert_eq!((audience, seq, ts, except), (Audience::All, 42, 1, None));
        // MessagePack passes through untouched; JSON is transcoded to the same text.
        assert_eq!(f.msgpack(), original.msgpack());
        assert_eq!(
            f.message(Encoding::Json).to_text().unwrap(),
            original.message(Encoding::Json).to_text().unwrap()
        );
        let q = BusMsg::frame(
            Audience::Queue(QueueId::from("sales")),
            ServerFrame::Ping {},
        );
        match decode(Bytes::from(encode(&q))).unwrap() {
            BusMsg::Frame { audience, seq, .. } => {
                assert_eq!(
                    (audience, seq),
                    (Audience::Queue(QueueId::from("sales")), 0)
                )
            }
            _ => panic!("not a frame"),
        }
        let echo = BusMsg::frame_except(
            Audience::Staff,
            ServerFrame::Pong {},
            ConnRef {
                node: NodeId::from("n1"),
                conn: ConnId(7),
            },
        );
        for m in [
            echo,
            BusMsg::Attach {
                conv: ConvId::from("c"),
                frame: None,
                after_seq: 9,
            },
            BusMsg::Detach {
                conv: ConvId::from("c"),
                frame: Some(Outbound::new(ServerFrame::Ping {})),
            },
            BusMsg::Close(CloseReason::Forbidden),
            BusMsg::Settings(SiteId::from("demo")),
        ] {
            let back = decode(Bytes::from(encode(&m))).unwrap();
            assert_eq!(format!("{:?}", encode(&back)), format!("{:?}", encode(&m)));
        }
        for bad in [&b""[..], b"Z", b"Fx", b"C\x00", b"A\xc1"] {
            assert!(decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
