//! Slow and greedy HTTP clients against a real gateway process: headers sent halfway and never
//! finished are cut at the header deadline, a body that trickles in is answered 408, one
//! address cannot hold more than its share of connections, and SIGTERM ends the process in
//! time even while a client holds a request open.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::*;
use crate::multinode::with;

/// Reads until the server closes the connection (or `within` passes: then `None`); what it
/// sent before closing.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn half_sent_headers_are_cut_and_a_trickling_body_is_answered_408() {
    let env = with(
        base_env(),
        &[
            ("GATEWAY_HTTP_HEADER_TIMEOUT", "1s"),
            ("GATEWAY_HTTP_BODY_TIMEOUT", "1s"),
        ],
    );
    let node = Node::start("slow", &env);
    let started = Instant::now();
    let mut half = TcpStream::connect(node.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut half, Duration::from_secs(15))
        .await
        .expect("the half-sent request is cut");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before its deadline"
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");

    // The body of a POST: 10 bytes of the 100 it announced, then nothing.
    let mut slow = TcpStream::connect(node.addr).await.unwrap();
    slow.write_all(
        b"POST /v1/visitor/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"site\":\"d",
    )
    .await
    .unwrap();
    let got = closed_within(&mut slow, Duration::from_secs(15))
        .await
        .expect("answered");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // The node still serves everyone else.
    let (status, _) = http_get(&node.http("/healthz")).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let env = with(base_env(), &[("GATEWAY_MAX_HTTP_CONNS_PER_IP", "4")]);
    let node = Node::start("greedy", &env);
    // Four idle connections: the address's share.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // Each is accepted (the loop accepts in order): a request on the last one is answered.
    let last = held.last_mut().unwrap();
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = last.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "the fourth is served"
    );
    // A fifth is closed at once, unanswered.
    let mut fifth = TcpStream::connect(node.addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let got = closed_within(&mut fifth, Duration::from_secs(10))
        .await
        .expect("closed");
    assert!(got.is_empty(), "{got}");
    // One of them leaves: the address may connect again.
    held.truncate(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, _)) = http_get(&node.http("/healthz")).await {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = node.metrics().await;
    assert!(
        m.get("gateway_http_connections_refused_total", &[]) >= 1.0,
        "counted"
    );
}

#[test]
fn sigterm_ends_the_process_in_time_while_a_request_is_held_open() {
    let env = with(
        base_env(),
        &[
            ("GATEWAY_HTTP_HEADER_TIMEOUT", "10m"),
            ("GATEWAY_SHUTDOWN_DEADLINE", "2s"),
        ],
    );
    let mut node = Node::start("held", &env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _half = rt.block_on(async {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        s
    });
    let asked = std::time::Instant::now();
    let status = node.terminate();
    assert!(status.success() || status.code().is_some(), "{status:?}");
    // The drain window (0.5 s) and the deadline (2 s), not the held request, decide.
    assert!(
        asked.elapsed() < Duration::from_millis(4500),
        "exited {:?} after SIGTERM",
        asked.elapsed()
    );
}
