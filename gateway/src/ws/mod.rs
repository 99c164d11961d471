//! The WebSocket edge: the HTTP upgrade at `GET /v1/ws`, the tuned tungstenite configuration,
//! the node-wide pinger, connection limits per IP, and the drain on SIGTERM.

pub mod conn;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use dashmap::DashMap;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::clock::now_ms;
use crate::config::Config;
use crate::outbound::Outbound;
use crate::protocol::{CloseReason, Encoding, ServerFrame};
use crate::service::Engine;
use crate::service::Gateway;

use conn::ConnInfo;

/// The tungstenite configuration: small buffers, a finite write buffer, capped frames.
/// tungstenite's defaults allocate 128 KiB of read buffer per socket up front.
pub fn ws_config(cfg: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.ws_read_buffer)
        .write_buffer_size(cfg.ws_write_buffer)
        .max_write_buffer_size(cfg.ws_write_buffer + cfg.max_frame * 2)
        .max_message_size(Some(cfg.max_frame))
        .max_frame_size(Some(cfg.max_frame))
}

/// Open connections per client IP.
#[derive(Default)]
pub struct IpLimits {
    open: DashMap<IpAddr, u32>,
}

impl IpLimits {
    /// One more open connection from `ip`, held until the guard drops; `None` at `max`.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<IpGuard> {
        let mut e = self.open.entry(ip).or_insert(0);
        if *e >= max {
            return None;
        }
        *e += 1;
        Some(IpGuard {
            limits: self.clone(),
            ip,
        })
    }
}

pub(crate) struct IpGuard {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.limits.open.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// What the upgrade handler needs.
pub struct WsState<E: Engine> {
    pub gw: Arc<Gateway<E>>,
    pub limits: Arc<IpLimits>,
    pub tasks: tokio_util_tracker::Tracker,
}

impl<E: Engine> Clone for WsState<E> {
    fn clone(&self) -> Self {
        WsState {
            gw: self.gw.clone(),
            limits: self.limits.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// `GET /v1/ws`: validates the upgrade, negotiates the subprotocol and hands the socket to
/// a connection task.
pub async fn upgrade<E: Engine>(
    State(st): State<WsState<E>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let is_upgrade = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket");
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return plain(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade");
    };
    if !is_upgrade || !version_ok {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)",
        );
    }
    let offer = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let Some((encoding, proto)) = Encoding::negotiate(offer) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "supported subprotocols: chat.v1.json, chat.v1.msgpack",
        );
    };
    let text = |h: header::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let country = st
        .gw
        .config()
        .country_header
        .as_deref()
        .and_then(|h| headers.get(h))
        .and_then(|v| v.to_str().ok())
        .map(|c| c.chars().take(8).collect());
    let info = ConnInfo {
        encoding,
        ip: peer.ip(),
        origin: text(header::ORIGIN),
        user_agent: text(header::USER_AGENT).map(|u| u.chars().take(512).collect()),
        // The reader's language, until `hello` says otherwise: the browser's first choice.
        language: text(header::ACCEPT_LANGUAGE).and_then(|h| {
            crate::i18n::accepted(&h)
                .first()
                .map(|t| t.chars().take(35).collect())
        }),
        country,
        device: None,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let cfg = ws_config(st.gw.config());
    let guard = st
        .limits
        .acquire(peer.ip(), st.gw.config().max_conns_per_ip);
    let gw = st.gw.clone();
    // What the task captures it keeps for the connection's whole life, used or not: so it
    // captures the handshake as a boxed future (freed once done) and the client's details
    // boxed, a few words instead of a few hundred bytes.
    let accepting = Box::pin(accept(on_upgrade, cfg));
    let info = Box::new(info);
    st.tasks.spawn(async move {
        let Some(ws) = accepting.await else {
            return;
        };
        // Each branch's future is boxed at its own size: the task keeps only what the
        // connection it became needs for the rest of its life.
        match guard {
            Some(guard) => {
                conn::run(gw, ws, *info).await;
                drop(guard);
            }
            None => {
                metrics::counter!(crate::metrics::RATE_LIMITED).increment(1);
                Box::pin(refuse(
                    ws,
                    CloseReason::RateLimited,
                    "too many connections from your address",
                ))
                .await;
            }
        }
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .expect("base64 is a valid header value"),
    );
    if let Some(p) = proto {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    res
}

/// The upgraded socket as a WebSocket with our configuration.
async fn accept(
    on_upgrade: hyper::upgrade::OnUpgrade,
    cfg: WebSocketConfig,
) -> Option<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return None;
        }
    };
    Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), WsRole::Server, Some(cfg)).await)
}

async fn refuse<S>(mut ws: WebSocketStream<S>, reason: CloseReason, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::Message;
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(reason.code()),
            reason: text.to_owned().into(),
        })))
        .await;
    let _ = ws.close(None).await;
}

fn header_has(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

/// Sends the application-level ping to every connection once per interval and closes those
/// that sent nothing for two intervals. One task per node, not a timer per socket; the
/// connections are pinged in [`PING_SLOTS`] slices spread over the interval, so that ten
/// thousand sockets do not all get their ping (and all answer) in the same instant.
pub async fn run_pinger<E: Engine>(gw: Arc<Gateway<E>>) {
    let interval = gw.config().ping_interval;
    let ping = Outbound::new(ServerFrame::Ping {});
    let mut tick = tokio::time::interval(interval / PING_SLOTS as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let dead_after = 2 * interval.as_millis() as u64;
    let mut slot = 0u64;
    loop {
        tick.tick().await;
        let now = now_ms();
        // Every connection's queue is read on every tick (a load, no lock): the gauge is at
        // most one slice of the interval old.
        let mut queued = 0usize;
        gw.for_each_connection(|c| {
            queued += c.queued_bytes();
            if c.id.0 % PING_SLOTS != slot {
                return;
            }
            let idle = now.saturating_sub(c.last_rx.load(std::sync::atomic::Ordering::Relaxed));
            if idle > dead_after {
                c.close(CloseReason::PingTimeout);
            } else {
                c.deliver(&ping);
            }
        });
        slot = (slot + 1) % PING_SLOTS;
        metrics::gauge!(crate::metrics::OUTBOUND_QUEUED_BYTES).set(queued as f64);
    }
}

/// How many slices the connections are pinged in over one interval.
pub const PING_SLOTS: u64 = 25;

/// Closes every connection with 1012, spread evenly over `window`, so clients reconnect to
/// other nodes without a thundering herd.
pub async fn drain<E: Engine>(gw: &Gateway<E>, window: Duration) {
    gw.set_draining();
    let conns = gw.connections();
    let start = tokio::time::Instant::now();
    let mut closed = 0;
    while closed < conns.len() {
        // The k-th connection's turn is at window * k / n. The timer wakes us at most once a
        // millisecond, so each wake closes every connection whose turn has come: the drain
        // ends on time however many connections there are.
        let due = turns_due(start.elapsed(), window, conns.len());
        for c in &conns[closed..due] {
            c.close(CloseReason::Restarting);
        }
        closed = due;
        if closed < conns.len() {
            tokio::time::sleep_until(start + turn_at(closed, window, conns.len())).await;
        }
    }
}

/// When the k-th of `n` turns spread evenly over `window` comes.
fn turn_at(k: usize, window: Duration, n: usize) -> Duration {
    Duration::from_nanos((window.as_nanos() * k as u128 / n.max(1) as u128) as u64)
}

/// How many of `n` turns spread evenly over `window` have come `elapsed` after the start
/// (the first comes at once).
fn turns_due(elapsed: Duration, window: Duration, n: usize) -> usize {
    if elapsed >= window {
        return n;
    }
    ((elapsed.as_nanos() * n as u128 / window.as_nanos()) as usize + 1).min(n)
}

/// A small task tracker: spawn, then wait for all with a deadline.
pub mod tokio_util_tracker {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::Notify;

    #[derive(Clone, Default)]
    pub struct Tracker {
        inner: Arc<Inner>,
    }

    #[derive(Default)]
    struct Inner {
        live: AtomicUsize,
        idle: Notify,
    }

    impl Tracker {
        pub fn spawn<F>(&self, fut: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            self.inner.live.fetch_add(1, Ordering::AcqRel);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                fut.await;
                if inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.idle.notify_waiters();
                }
            });
        }

        pub fn live(&self) -> usize {
            self.inner.live.load(Ordering::Acquire)
        }

        /// Waits until every spawned task ended, or the deadline passed.
        pub async fn wait(&self, deadline: Duration) -> bool {
            let wait = async {
                loop {
                    let notified = self.inner.idle.notified();
                    if self.live() == 0 {
                        return;
                    }
                    notified.await;
                }
            };
            tokio::time::timeout(deadline, wait).await.is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_turns_are_spread_evenly_and_end_with_the_window() {
        let w = Duration::from_secs(5);
        assert_eq!(turns_due(Duration::ZERO, w, 10_000), 1);
        assert_eq!(turns_due(Duration::from_millis(1), w, 10_000), 3);
        assert_eq!(turns_due(Duration::from_millis(2500), w, 10_000), 5_001);
        assert_eq!(turns_due(w, w, 10_000), 10_000);
        assert_eq!(turns_due(Duration::ZERO, Duration::ZERO, 7), 7);
        assert_eq!(turn_at(5_000, w, 10_000), Duration::from_millis(2500));
        assert_eq!(turn_at(0, w, 3), Duration::ZERO);
        // Every turn k is due by the time turn_at(k) comes.
        for k in 0..100 {
            assert!(turns_due(turn_at(k, w, 100), w, 100) > k);
        }
    }
}
