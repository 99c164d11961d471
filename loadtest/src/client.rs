//! One WebSocket connection to a gateway node: choosing the node and source address for the
//! n-th socket, the TCP connect and upgrade (with the subprotocol of the chosen encoding),
//! and sending / receiving protocol frames.
//!
//! Sockets bind an explicit source address when `--source-ips` is given: each loopback
//! address has its own ~28k ephemeral ports, which is what lets one machine open more
//! sockets to one gateway port than the ephemeral range allows.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use crate::cli::CutMode;
use crate::proto::{decode_json, decode_msgpack, ClientFrame, Encoding, Payload, ServerFrame};
use crate::stats::{Stats, C, H};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway node.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

/// Where sockets go and how they talk.
pub struct Net {
    targets: Vec<Target>,
    source_ips: Vec<IpAddr>,
    pub encoding: Encoding,
    config: WebSocketConfig,
    handshakes: Semaphore,
}

/// Parses `ws://host:port/path` and resolves it; refuses anything but loopback, so a load
/// test can never be pointed at someone else's server by mistake.
pub async fn resolve_target(url: &str) -> Result<Target> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL `{url}`"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("`{url}`: only ws:// URLs are supported");
    }
    let host = uri.host().context("URL without host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("resolving `{url}`"))?
        .next()
        .with_context(|| format!("`{url}` resolves to nothing"))?;
    if !addr.ip().is_loopback() {
        bail!("`{url}` is not a loopback address; the load tester only targets this machine");
    }
    Ok(Target {
        url: url.to_owned(),
        addr,
    })
}

impl Net {
    pub async fn new(
        urls: &[String],
        source_ips: &[IpAddr],
        encoding: Encoding,
        concurrency: usize,
    ) -> Result<Net> {
        let mut targets = Vec::new();
        for u in urls {
            targets.push(resolve_target(u).await?);
        }
        if targets.is_empty() {
            bail!("no --url given");
        }
        if let Some(ip) = source_ips.iter().find(|ip| !ip.is_loopback()) {
            bail!("source address {ip} is not a loopback address");
        }
        // Small buffers: tens of thousands of sockets per process. Messages may still be
        // large (a `queue` frame lists every waiting conversation).
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(8 << 10)
            .max_write_buffer_size(4 << 20)
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        Ok(Net {
            targets,
            source_ips: source_ips.to_vec(),
            encoding,
            config,
            handshakes: Semaphore::new(concurrency.max(1)),
        })
    }

    /// Node and source address of the `i`-th socket of the run (round-robin over each).
    pub fn route(&self, i: usize) -> (&Target, Option<IpAddr>) {
        let t = &self.targets[i % self.targets.len()];
        let ip = (!self.source_ips.is_empty()).then(|| self.source_ips[i % self.source_ips.len()]);
        (t, ip)
    }

    /// Opens socket `i`: TCP connect and WebSocket upgrade. Records the connect time; on
    /// failure returns an error kind for the error table.
    pub async fn connect(&self, i: usize, stats: &Stats) -> Result<WsConn, String> {
        let (target, source) = self.route(i);
        let _slot = self
            .handshakes
            .acquire()
            .await
            .map_err(|_| "shutdown".to_owned())?;
        stats.inc(C::ConnAttempts);
        let t0 = Instant::now();
        let result = timeout(CONNECT_TIMEOUT, self.open(target, source)).await;
        match result {
            Ok(Ok(ws)) => {
                stats.record(H::Connect, t0.elapsed());
                Ok(WsConn {
                    ws,
                    encoding: self.encoding,
                })
            }
            Ok(Err(kind)) => Err(kind),
            Err(_) => Err("connect:timeout".into()),
        }
    }

    async fn open(
        &self,
        target: &Target,
        source: Option<IpAddr>,
    ) -> Result<WebSocketStream<TcpStream>, String> {
        let io = |what: &str, e: std::io::Error| format!("{what}:{}", io_kind(&e));
        let sock = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| io("socket", e))?;
        if let Some(ip) = source {
            sock.bind(SocketAddr::new(ip, 0))
                .map_err(|e| io("bind", e))?;
        }
        let stream = sock
            .connect(target.addr)
            .await
            .map_err(|e| io("connect", e))?;
        stream.set_nodelay(true).map_err(|e| io("connect", e))?;
        let mut req = target
            .url
            .as_str()
            .into_client_request()
            .map_err(|_| "handshake:request".to_owned())?;
        req.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(self.encoding.subprotocol()),
        );
        let (ws, resp) = client_async_with_config(req, stream, Some(self.config))
            .await
            .map_err(|e| match e {
                WsError::Http(r) => format!("handshake:http_{}", r.status().as_u16()),
                WsError::Io(e) => io("handshake", e),
                _ => "handshake:protocol".to_owned(),
            })?;
        let agreed = resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        if agreed.and_then(|v| v.to_str().ok()) != Some(self.encoding.subprotocol()) {
            return Err("handshake:subprotocol".into());
        }
        Ok(ws)
    }
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "refused".into(),
        ConnectionReset => "reset".into(),
        AddrInUse => "addr_in_use".into(),
        AddrNotAvailable => "addr_not_available".into(),
        TimedOut => "timeout".into(),
        _ => match e.raw_os_error() {
            Some(24) => "too_many_open_files".into(),
            Some(n) => format!("os_{n}"),
            None => "io".into(),
        },
    }
}

/// What the connection produced.
#[derive(Debug)]
pub enum Event {
    Frame(ServerFrame),
    /// A frame that could not be decoded (counted, then ignored).
    Undecodable,
    Closed(Ended),
}

/// How a connection ended, for the close-code table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub code: Option<u16>,
    /// `"1012"`, `"eof"` (TCP closed without a close frame), `"reset"`, `"io"`, …
    pub label: String,
}

impl Ended {
    fn code(code: u16) -> Ended {
        Ended {
            code: Some(code),
            label: code.to_string(),
        }
    }

    pub fn other(label: &str) -> Ended {
        Ended {
            code: None,
            label: label.to_owned(),
        }
    }
}

pub struct WsConn {
    ws: WebSocketStream<TcpStream>,
    encoding: Encoding,
}

impl WsConn {
    fn message(&self, frame: &ClientFrame<'_>) -> Message {
        match self
            .encoding
            .encode(frame)
            .expect("client frames always encode")
        {
            Payload::Text(t) => Message::text(t),
            Payload::Binary(b) => Message::binary(b),
        }
    }

    /// Sends one frame and flushes it.
    pub async fn send(&mut self, frame: &ClientFrame<'_>) -> Result<(), Ended> {
        let msg = self.message(frame);
        self.ws.send(msg).await.map_err(|e| ended_by(&e))
    }

    /// The next protocol frame. Cancel-safe: a frame is either returned or not consumed.
    pub async fn recv(&mut self) -> Event {
        loop {
            let msg = match self.ws.next().await {
                None => return Event::Closed(Ended::other("eof")),
                Some(Err(e)) => return Event::Closed(ended_by(&e)),
                Some(Ok(m)) => m,
            };
            let decoded = match &msg {
                Message::Text(t) => decode_json(t.as_str()),
                Message::Binary(b) => decode_msgpack(b),
                Message::Close(Some(f)) => return Event::Closed(Ended::code(u16::from(f.code))),
                Message::Close(None) => return Event::Closed(Ended::other("close_no_code")),
                // WebSocket-level pings are answered by tungstenite itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            return match decoded {
                Ok(f) => Event::Frame(f),
                Err(_) => Event::Undecodable,
            };
        }
    }

    /// Drops the socket without a WebSocket close: `rst` resets it, `fin` closes the TCP
    /// stream. Either way the gateway sees a dead client, not a goodbye.
    pub fn cut(self, mode: CutMode) {
        if mode == CutMode::Rst {
            let _ = self.ws.get_ref().set_zero_linger();
        }
        drop(self);
    }

    /// A polite close (1000), waiting briefly for the gateway's answer.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "load test done".into(),
        };
        let _ = timeout(Duration::from_secs(2), async {
            if self.ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        })
        .await;
    }
}

fn ended_by(e: &WsError) -> Ended {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Ended::other("closed"),
        WsError::Io(io) => Ended::other(&io_kind(io)),
        WsError::Protocol(_) => Ended::other("protocol"),
        WsError::Capacity(_) => Ended::other("too_large"),
        _ => Ended::other("io"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_non_loopback_and_non_ws_urls() {
        assert!(resolve_target("ws://127.0.0.1:8080/v1/ws").await.is_ok());
        assert!(resolve_target("ws://[::1]:8080/v1/ws").await.is_ok());
        assert!(resolve_target("ws://10.1.2.3:8080/v1/ws").await.is_err());
        assert!(resolve_target("wss://127.0.0.1:8080/v1/ws").await.is_err());
        assert!(resolve_target("http://127.0.0.1:8080/").await.is_err());
        assert!(resolve_target("not a url").await.is_err());
    }

    #[tokio::test]
    async fn routes_round_robin_over_nodes_and_sources() {
        let urls = vec![
            "ws://127.0.0.1:1/v1/ws".to_owned(),
            "ws://127.0.0.1:2/v1/ws".to_owned(),
        ];
        let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let net = Net::new(&urls, &ips, Encoding::Json, 4).await.unwrap();
        let seen: Vec<(u16, String)> = (0..6)
            .map(|i| {
                let (t, ip) = net.route(i);
                (t.addr.port(), ip.unwrap().to_string())
            })
            .collect();
        assert_eq!(seen[0], (1, "127.0.0.2".into()));
        assert_eq!(seen[1], (2, "127.0.0.3".into()));
        assert_eq!(seen[2], (1, "127.0.0.4".into()));
        assert_eq!(seen[3], (2, "127.0.0.2".into()));
        let bad: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap()];
        assert!(Net::new(&urls, &bad, Encoding::Json, 4).await.is_err());
    }
}
