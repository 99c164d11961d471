//! The node's HTTP/1.1 server: the accept loop that hands each TCP connection to hyper, with
//! what keeps slow and greedy clients from holding the node — a deadline on a request's headers
//! (a connection that trickles them in, or sends half and stops, is closed), a deadline on its
//! body, a cap on one address's open connections, and a bounded wait for the connections to
//! finish once the node stops. `axum::serve` has none of these (its header timeout never runs:
//! it sets no timer).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::metrics as m;
use crate::ws::tokio_util_tracker::Tracker;
use crate::ws::IpLimits;

/// The largest request body the node reads (the HTTP API's own limit, 64 KiB, is lower; a
/// bigger body is refused here before it is held).
const MAX_ANY_BODY: usize = 128 * 1024;

/// How the node serves HTTP.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// Open HTTP connections from one address (WebSockets count apart, once upgraded).
    pub max_conns_per_ip: u32,
    /// After the node stops accepting, how long its connections get to finish.
    pub close_wait: Duration,
    /// The kernel send buffer of each socket (`None`: the system's).
    pub send_buffer: Option<usize>,
}

/// Reads a request's whole body within `timeout` (408 after it, 413 past [`MAX_ANY_BODY`]), so
/// that no handler waits on a client that sends its body slowly. Requests without a body pass
/// as they are (a WebSocket upgrade among them).
pub async fn body_deadline(timeout: Duration, req: Request<Body>, next: Next) -> Response {
    let bodiless = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_none()
        && req
            .headers()
            .get(axum::http::header::TRANSFER_ENCODING)
            .is_none();
    if bodiless {
        return next.run(req).await;
    }
    let api = req.uri().path().starts_with("/v1/sites");
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_ANY_BODY);
    let refused = |status: StatusCode, kind: &str, text: &str| -> Response {
        // The HTTP API answers problem details; the rest of the node `{"error","message"}`.
        if api {
            crate::api::Problem::new(status, kind, text).into_response()
        } else {
            (
                status,
                axum::Json(serde_json::json!({"error": kind, "message": text})),
            )
                .into_response()
        }
    };
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(b)) => {
            next.run(Request::from_parts(parts, Body::from(b.to_bytes())))
                .await
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "the request body is too large",
        ),
        // The client went away mid-body: nobody reads the answer.
        Ok(Err(_)) => refused(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "the request body was cut",
        ),
        Err(_) => {
            metrics::counter!(m::SLOW_REQUESTS, "part" => "body").increment(1);
            refused(
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "the request body did not arrive in time",
            )
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves; then each connection is asked to close
/// after its request in flight, and they get [`HttpLimits::close_wait`] to do so.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stop: impl std::future::Future<Output = ()>,
) {
    let per_ip = Arc::new(IpLimits::default());
    let conns = Tracker::default();
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = per_ip.acquire(crate::abuse::client(peer.ip()), limits.max_conns_per_ip)
        else {
            metrics::counter!(m::HTTP_REFUSED).increment(1);
            tracing::debug!(peer = %peer, "too many HTTP connections from one address");
            drop(tcp);
            continue;
        };
        tune(&tcp, limits.send_buffer);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(
                    app.oneshot(req.map(Body::new))
                        .await
                        .unwrap_or_else(|e| match e {}),
                )
            }
        });
        let header_timeout = limits.header_timeout;
        let mut closing = closing_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => done(r),
                () = async { drop(closing.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    done(conn.await);
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    if !conns.wait(limits.close_wait).await {
        tracing::warn!(
            left = conns.live(),
            "HTTP connections still open after the close wait: dropped"
        );
    }
}

fn done(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        if e.is_timeout() {
            metrics::counter!(m::SLOW_REQUESTS, "part" => "headers").increment(1);
        }
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// Without TCP_NODELAY a small frame written while an earlier one is unacknowledged waits for
/// the peer's delayed ACK (Nagle): ~40 ms added to a message's delivery. A small kernel send
/// buffer: a client that stops reading pins at most this much kernel memory, and its outbound
/// budget (4008) starts counting soon instead of after megabytes.
fn tune(tcp: &TcpStream, send_buffer: Option<usize>) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    if let Some(n) = send_buffer {
        if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(n) {
            tracing::debug!(error = %e, "SO_SNDBUF not set");
        }
    }
}
