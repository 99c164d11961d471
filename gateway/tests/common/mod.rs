//! Test harness: in-process nodes on 127.0.0.1:0 and a real WebSocket client that waits for
//! the frame it expects (with a timeout) instead of sleeping.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::auth::Claims;
use gateway::clock::now_ms;
use gateway::config::{parse_sites, Config};
use gateway::core::settings::Bounds;
use gateway::engine::memory::MemoryEngine;
use gateway::protocol::{ClientFrame, Encoding, Role, ServerFrame};
use gateway::server::{start_memory, Running};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(10);

pub type Node = Running<MemoryEngine>;

/// A node with the default demo site.
pub async fn node() -> Node {
    node_with(|_| {}).await
}

/// A node whose config a test may adjust (sites, limits).
pub async fn node_with(tweak: impl FnOnce(&mut Config)) -> Node {
    let mut cfg = Config::for_tests(SECRET);
    tweak(&mut cfg);
    start_memory(cfg, None).await.expect("node starts")
}

/// Sites from JSON, with short timers allowed.
pub fn sites(json: &str) -> Vec<gateway::config::SiteConfig> {
    parse_sites(
        json,
        Bounds {
            allow_short_timers: true,
        },
    )
    .expect("valid sites")
}

pub fn token(site: &str, role: Role, sub: &str, name: &str) -> String {
    token_with(site, role, sub, name, now_ms() / 1000 + 3600)
}

pub fn token_with(site: &str, role: Role, sub: &str, name: &str, exp: u64) -> String {
    gateway::auth::Auth::hs256(SECRET.as_bytes())
        .mint(&Claims {
            anon: false,
            sid: None,
            sub: sub.into(),
            site: site.into(),
            role,
            name: Some(name.into()),
            exp,
            iat: None,
            queues: None,
            max_chats: None,
        })
        .unwrap()
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub enc: Encoding,
    next_rid: i64,
    /// Frames read while waiting for an answer, handed out by `recv` first.
    backlog: std::collections::VecDeque<ServerFrame>,
}

impl Client {
    /// Opens a socket (no hello yet).
    pub async fn open(node: &Node, enc: Encoding) -> Client {
        Client::open_with(node, enc, |_| {}).await
    }

    pub async fn open_with(
        node: &Node,
        enc: Encoding,
        tweak: impl FnOnce(&mut tokio_tungstenite::tungstenite::handshake::client::Request),
    ) -> Client {
        let mut req = format!("ws://{}/v1/ws", node.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(enc.subprotocol()),
        );
        tweak(&mut req);
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some(enc.subprotocol().to_owned())
        );
        Client {
            ws,
            enc,
            next_rid: 1,
            backlog: Default::default(),
        }
    }

    /// Opens, says hello, and returns the welcome.
    pub async fn connect(node: &Node, enc: Encoding, token: &str) -> (Client, ServerFrame) {
        Client::resume(node, enc, token, &[]).await
    }

    /// An operator of the demo site, connected in JSON and set active.
    pub async fn active_operator(node: &Node, id: &str, name: &str) -> Client {
        let (mut op, _) = Client::connect(
            node,
            Encoding::Json,
            &token("demo", Role::Operator, id, name),
        )
        .await;
        let r = op.rid();
        let ok = op
            .request(req::status(r, gateway::protocol::OperatorStatus::Active))
            .await;
        assert!(
            matches!(ok, ServerFrame::Ok { .. }),
            "status refused: {ok:?}"
        );
        op
    }

    pub async fn resume(
        node: &Node,
        enc: Encoding,
        token: &str,
        cursors: &[(&str, u64)],
    ) -> (Client, ServerFrame) {
        let mut c = Client::open(node, enc).await;
        c.send(&ClientFrame::Hello {
            token: token.into(),
            cursors: cursors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            lang: None,
            device: None,
        })
        .await;
        let w = c.recv().await;
        assert!(
            matches!(w, ServerFrame::Welcome { .. }),
            "expected welcome, got {w:?}"
        );
        (c, w)
    }

    pub fn rid(&mut self) -> gateway::protocol::Rid {
        self.next_rid += 1;
        gateway::protocol::Rid::Int(self.next_rid)
    }

    pub async fn send(&mut self, f: &ClientFrame) {
        let bytes = f.encode(self.enc);
        let msg = match self.enc {
            Encoding::Json => Message::Text(String::from_utf8(bytes.to_vec()).unwrap().into()),
            Encoding::MsgPack => Message::Binary(bytes),
        };
        self.ws.send(msg).await.expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send raw");
    }

    /// The next server frame (pings are answered and skipped).
    pub async fn recv(&mut self) -> ServerFrame {
        if let Some(f) = self.backlog.pop_front() {
            return f;
        }
        self.recv_wire(Instant::now() + WAIT).await
    }

    /// The next frame off the socket, by `deadline` (pings, answered, do not extend it).
    async fn recv_wire(&mut self, deadline: Instant) -> ServerFrame {
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("stream ended")
                .expect("ws error");
            let data = match m {
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Binary(b) => b.to_vec(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            };
            if std::env::var_os("TRACE_FRAMES").is_some() {
                eprintln!("<< {}", String::from_utf8_lossy(&data));
            }
            let f = ServerFrame::decode(self.enc, &data)
                .unwrap_or_else(|e| panic!("undecodable {e}: {}", String::from_utf8_lossy(&data)));
            if matches!(f, ServerFrame::Ping {}) {
                self.send(&ClientFrame::Pong {}).await;
                continue;
            }
            return f;
        }
    }

    /// Skips frames until one matches, within [`WAIT`] in all.
    pub async fn recv_until(&mut self, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        let deadline = Instant::now() + WAIT;
        loop {
            let f = match self.backlog.pop_front() {
                Some(f) => f,
                None => self.recv_wire(deadline).await,
            };
            if pred(&f) {
                return f;
            }
        }
    }

    /// Sends a request and returns its answer (ok or error); other frames stay for `recv`.
    pub async fn request(&mut self, f: ClientFrame) -> ServerFrame {
        let rid = f.rid().cloned().expect("request carries a rid");
        self.send(&f).await;
        self.answer(&rid).await
    }

    /// Waits for the answer to `rid`; other frames stay for `recv`.
    pub async fn answer(&mut self, rid: &gateway::protocol::Rid) -> ServerFrame {
        if let Some(i) = self.backlog.iter().position(|f| is_answer(f, rid)) {
            return self.backlog.remove(i).expect("index exists");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let f = self.recv_wire(deadline).await;
            if is_answer(&f, rid) {
                return f;
            }
            self.backlog.push_back(f);
        }
    }

    /// Sends a request written as JSON (its `rid` is set here) as a text frame, the way a
    /// client written from the protocol page would; returns the answer (ok or error).
    pub async fn request_json(&mut self, mut v: serde_json::Value) -> ServerFrame {
        assert_eq!(self.enc, Encoding::Json, "a JSON connection");
        let rid = self.rid();
        let gateway::protocol::Rid::Int(n) = rid else {
            unreachable!()
        };
        v["rid"] = n.into();
        self.send_json(v).await;
        self.answer(&rid).await
    }

    /// Sends a frame written as JSON (no answer expected).
    pub async fn send_json(&mut self, v: serde_json::Value) {
        self.send_raw(Message::Text(v.to_string().into())).await;
    }

    /// Every frame that arrives before the answer to a client `ping` sent now (queued ones
    /// first): what the node had sent this connection by the time it read the ping.
    pub async fn until_pong(&mut self) -> Vec<ServerFrame> {
        self.send(&ClientFrame::Ping {}).await;
        let mut got: Vec<ServerFrame> = self.backlog.drain(..).collect();
        let deadline = Instant::now() + WAIT;
        loop {
            match self.recv_wire(deadline).await {
                ServerFrame::Pong {} => return got,
                f => got.push(f),
            }
        }
    }

    /// Waits for the server to close; returns the close code (None: the TCP connection ended).
    /// The next frame, or the close code if the connection closes first.
    pub async fn recv_or_closed(&mut self) -> Result<ServerFrame, u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for a frame or a close");
            match m {
                Some(Ok(Message::Close(Some(f)))) => return Err(f.code.into()),
                Some(Ok(Message::Close(None))) => return Err(1005),
                Some(Ok(Message::Text(t))) => {
                    return Ok(ServerFrame::decode(self.enc, t.as_bytes()).expect("decodable"))
                }
                Some(Ok(Message::Binary(b))) => {
                    return Ok(ServerFrame::decode(self.enc, &b).expect("decodable"))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(1006),
            }
        }
    }

    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("timed out waiting for close")
            {
                Some(Ok(Message::Close(Some(f)))) => return Some(f.code.into()),
                Some(Ok(Message::Close(None))) => return Some(1005),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

fn is_answer(f: &ServerFrame, rid: &gateway::protocol::Rid) -> bool {
    matches!(f, ServerFrame::Ok { rid: Some(x), .. } | ServerFrame::Error { rid: Some(x), .. } if x == rid)
}

/// Helpers that build request frames.
pub mod req {
    use super::*;
    use gateway::protocol::{OperatorStatus, Rid};

    pub fn start(rid: Rid) -> ClientFrame {
        ClientFrame::Start {
            rid: Some(rid),
            queue: None,
            prechat: None,
            params: None,
            page: None,
            offline: false,
        }
    }

    pub fn send(rid: Rid, conv: &str, cid: &str, text: &str) -> ClientFrame {
        ClientFrame::Send {
            rid: Some(rid),
            conv: conv.into(),
            cid: cid.into(),
            text: text.into(),
        }
    }

    pub fn status(rid: Rid, s: OperatorStatus) -> ClientFrame {
        ClientFrame::Status {
            rid: Some(rid),
            status: s,
        }
    }

    pub fn accept(rid: Rid, conv: &str) -> ClientFrame {
        ClientFrame::Accept {
            rid: Some(rid),
            conv: conv.into(),
        }
    }

    pub fn history(rid: Rid, conv: &str, before: Option<u64>, limit: Option<u32>) -> ClientFrame {
        ClientFrame::History {
            rid: Some(rid),
            conv: conv.into(),
            before,
            limit,
        }
    }
}

/// The conversation id in an `ok` answer to `start`/`accept`.
pub fn ok_conv_id(f: &ServerFrame) -> String {
    match f {
        ServerFrame::Ok {
            body: gateway::protocol::OkBody::Conv { conv },
            ..
        } => conv.id.clone(),
        other => panic!("expected ok with a conversation, got {other:?}"),
    }
}

/// The seq in an `ok` answer to `send`.
pub fn ok_seq(f: &ServerFrame) -> u64 {
    match f {
        ServerFrame::Ok {
            body: gateway::protocol::OkBody::Sent { seq, .. },
            ..
        } => *seq,
        other => panic!("expected ok to send, got {other:?}"),
    }
}

pub fn is_msg_text(f: &ServerFrame, text: &str) -> bool {
    matches!(f, ServerFrame::Msg(m) if m.text == text)
}

/// An active operator and a visitor whose conversation that operator accepted.
pub struct Pair {
    pub op: Client,
    pub v: Client,
    pub conv: String,
}

pub async fn pair(node: &Node, enc: Encoding, visitor: &str) -> Pair {
    let (mut op, _) =
        Client::connect(node, enc, &token("demo", Role::Operator, "op1", "Olga")).await;
    let r = op.rid();
    assert!(matches!(
        op.request(req::status(r, gateway::protocol::OperatorStatus::Active))
            .await,
        ServerFrame::Ok { .. }
    ));
    let (mut v, _) =
        Client::connect(node, enc, &token("demo", Role::Visitor, visitor, "Ann")).await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    op.recv_until(
        |f| matches!(f, ServerFrame::Queue { waiting, .. } if waiting.iter().any(|c| c.id == conv)),
    )
    .await;
    let r = op.rid();
    let ok = op.request(req::accept(r, &conv)).await;
    assert_eq!(ok_conv_id(&ok), conv);
    v.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: gateway::protocol::ConvEvent::Assigned,
                ..
            }
        )
    })
    .await;
    Pair { op, v, conv }
}
