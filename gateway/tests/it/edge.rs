//! Bad input and hostile clients: tokens, authorisation across visitors and sites, malformed
//! and oversized frames, slow readers, rate limits, origins, hello timeout, drain, and the
//! visitor session endpoint.

use std::time::Duration;

use gateway::protocol::{
    ClientFrame, ConvEvent, Encoding, ErrorCode, OkBody, OperatorStatus, Role, ServerFrame,
};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

async fn hello_close_code(node: &Node, token: &str) -> Option<u16> {
    let mut c = Client::open(node, Encoding::Json).await;
    c.send(&ClientFrame::Hello {
        token: token.into(),
        cursors: Default::default(),
        lang: None,
        device: None,
    })
    .await;
    c.closed().await
}

#[tokio::test]
async fn forged_expired_and_alg_none_tokens_close_with_4001() {
    let node = node().await;
    let forged = gateway::auth::Auth::hs256(b"not-the-secret-at-all")
        .mint(&gateway::auth::Claims {
            anon: false,
            sid: None,
            sub: "op1".into(),
            site: "demo".into(),
            role: Role::Operator,
            name: None,
            exp: gateway::clock::now_ms() / 1000 + 3600,
            iat: None,
            queues: None,
            max_chats: None,
        })
        .unwrap();
    assert_eq!(hello_close_code(&node, &forged).await, Some(4001));
    let expired = token_with("demo", Role::Operator, "op1", "Olga", 1_000_000);
    assert_eq!(hello_close_code(&node, &expired).await, Some(4001));
    // {"alg":"none"} header, valid claims, empty signature.
    let valid = token("demo", Role::Operator, "op1", "Olga");
    let claims = valid.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.");
    assert_eq!(hello_close_code(&node, &none).await, Some(4001));
    assert_eq!(hello_close_code(&node, "garbage").await, Some(4001));
    node.shutdown().await;
}

#[tokio::test]
async fn no_hello_in_time_or_another_first_frame_closes_with_4001() {
    let node = node_with(|c| c.hello_timeout = Duration::from_millis(300)).await;
    let mut c = Client::open(&node, Encoding::Json).await;
    assert_eq!(c.closed().await, Some(4001));
    let mut c = Client::open(&node, Encoding::Json).await;
    c.send(&ClientFrame::Pong {}).await;
    assert_eq!(c.closed().await, Some(4001));
    node.shutdown().await;
}

#[tokio::test]
async fn a_visitor_cannot_read_or_write_another_visitors_conversation() {
    let node = node().await;
    let (mut v1, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v1.rid();
    let conv = ok_conv_id(&v1.request(req::start(r)).await);
    let r = v1.rid();
    v1.request(req::send(r, &conv, "secret", "my card number"))
        .await;

    let (mut v2, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Eve"),
    )
    .await;
    let r = v2.rid();
    let e = v2.request(req::send(r, &conv, "x", "hijack")).await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    let r = v2.rid();
    let e = v2
        .request(ClientFrame::History {
            rid: Some(r),
            conv: conv.clone(),
            before: None,
            limit: None,
        })
        .await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    let r = v2.rid();
    let e = v2
        .request(ClientFrame::Close {
            rid: Some(r),
            conv: conv.clone(),
            outcome: None,
            tags: None,
        })
        .await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    // Naming the conversation in cursors does not attach it either.
    let (_, w) = Client::resume(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Eve"),
        &[(&conv, 0)],
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = w else {
        unreachable!()
    };
    assert!(conversations.is_empty(), "{conversations:?}");
    // v1's data is intact.
    let r = v1.rid();
    let h = v1
        .request(ClientFrame::History {
            rid: Some(r),
            conv: conv.clone(),
            before: None,
            limit: None,
        })
        .await;
    let ServerFrame::Ok {
        body: OkBody::History { messages, .. },
        ..
    } = h
    else {
        panic!("{h:?}")
    };
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.from.role == Role::Visitor)
            .count(),
        1
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_operator_cannot_reach_another_sites_conversation() {
    let node = node_with(|c| c.sites = sites(r#"[{"id":"demo"},{"id":"other"}]"#)).await;
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let (mut op, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("other", Role::Operator, "op9", "Mallory"),
    )
    .await;
    let r = op.rid();
    op.request(req::status(r, OperatorStatus::Active)).await;
    for f in [
        req::accept(op.rid(), &conv),
        ClientFrame::History {
            rid: Some(op.rid()),
            conv: conv.clone(),
            before: None,
            limit: None,
        },
        req::send(op.rid(), &conv, "x", "hello from elsewhere"),
        ClientFrame::Close {
            rid: Some(op.rid()),
            conv: conv.clone(),
            outcome: None,
            tags: None,
        },
    ] {
        let e = op.request(f).await;
        assert!(
            matches!(
                e,
                ServerFrame::Error {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    // A supervisor of the other site cannot watch it either.
    let (mut sup, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("other", Role::Supervisor, "s1", "Sam"),
    )
    .await;
    let r = sup.rid();
    let e = sup
        .request(ClientFrame::Watch {
            rid: Some(r),
            conv: conv.clone(),
            on: true,
        })
        .await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    node.shutdown().await;
}

/// Operators read what they hold and what waits; another operator's live chat is for
/// supervisors; the history of a visitor's previous conversation comes with the new one.
#[tokio::test]
async fn an_operator_cannot_read_another_operators_live_conversation() {
    let node = node().await;
    let op = |id: &'static str, name: &'static str| {
        let node = &node;
        async move {
            let (mut c, _) = Client::connect(
                node,
                Encoding::Json,
                &token("demo", Role::Operator, id, name),
            )
            .await;
            let r = c.rid();
            c.request(req::status(r, OperatorStatus::Active)).await;
            c
        }
    };
    let (mut alice, mut bob) = (op("alice", "Alice").await, op("bob", "Bob").await);
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let r = v.rid();
    ok_seq(
        &v.request(req::send(r, &conv, "q1", "my card number is …"))
            .await,
    );
    // Waiting: any operator may look before taking it.
    let history = |bob: &mut Client, conv: &str| ClientFrame::History {
        rid: Some(bob.rid()),
        conv: conv.to_owned(),
        before: None,
        limit: None,
    };
    let f = history(&mut bob, &conv);
    assert!(matches!(bob.request(f).await, ServerFrame::Ok { .. }));
    let r = alice.rid();
    assert!(matches!(
        alice.request(req::accept(r, &conv)).await,
        ServerFrame::Ok { .. }
    ));
    // Taken: Bob no longer reads it, nor writes, nor attaches through cursors.
    let f = history(&mut bob, &conv);
    assert!(matches!(
        bob.request(f).await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let r = bob.rid();
    assert!(matches!(
        bob.request(req::send(r, &conv, "b1", "hi")).await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let (_spy, welcome) = Client::resume(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "bob", "Bob"),
        &[(&conv, 0)],
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = welcome else {
        unreachable!()
    };
    assert!(
        conversations.iter().all(|c| c.id != conv),
        "{conversations:?}"
    );
    // Closed, then the visitor writes again and Bob takes the new one: he reads the old one.
    let r = alice.rid();
    alice
        .request(ClientFrame::Close {
            rid: Some(r),
            conv: conv.clone(),
            outcome: None,
            tags: None,
        })
        .await;
    let r = v.rid();
    let sent = v.request(req::send(r, &conv, "q2", "one more thing")).await;
    let ServerFrame::Ok {
        body: gateway::protocol::OkBody::Sent { conv: next, .. },
        ..
    } = sent
    else {
        panic!("{sent:?}")
    };
    assert_ne!(next, conv);
    let f = history(&mut bob, &conv);
    assert!(
        matches!(bob.request(f).await, ServerFrame::Error { .. }),
        "not before he takes the new one"
    );
    let r = bob.rid();
    assert!(matches!(
        bob.request(req::accept(r, &next)).await,
        ServerFrame::Ok { .. }
    ));
    let f = history(&mut bob, &conv);
    match bob.request(f).await {
        ServerFrame::Ok {
            body: gateway::protocol::OkBody::History { messages, .. },
            ..
        } => assert!(messages.iter().any(|m| m.text == "my card number is …")),
        other => panic!("{other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_close_with_4000_and_unknown_types_get_an_error_frame() {
    let node = node().await;
    let tok = token("demo", Role::Visitor, "v1", "Ann");
    let (mut c, _) = Client::connect(&node, Encoding::Json, &tok).await;
    c.send_raw(Message::Text(r#"{"t":"teleport","rid":41}"#.into()))
        .await;
    let e = c.recv().await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::BadRequest,
                rid: Some(gateway::protocol::Rid::Int(41)),
                ..
            }
        ),
        "{e:?}"
    );
    c.send_raw(Message::Text(r#"{"t":"send","rid":42,"conv":7}"#.into()))
        .await;
    let e = c.recv().await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{e:?}"
    );
    // Still usable.
    let r = c.rid();
    assert!(matches!(
        c.request(req::start(r)).await,
        ServerFrame::Ok { .. }
    ));
    c.send_raw(Message::Text("{not json".into())).await;
    assert_eq!(c.closed().await, Some(4000));

    let (mut c, _) = Client::connect(&node, Encoding::Json, &tok).await;
    c.send_raw(Message::Binary(vec![0x92, 0x01, 0x02].into()))
        .await;
    assert_eq!(
        c.closed().await,
        Some(4000),
        "binary frame on a JSON connection"
    );

    let (mut c, _) = Client::connect(&node, Encoding::MsgPack, &tok).await;
    c.send_raw(Message::Binary(vec![0xc1, 0xff].into())).await;
    assert_eq!(c.closed().await, Some(4000), "invalid msgpack");
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_and_messages_are_refused() {
    let node = node().await;
    let (mut c, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = c.rid();
    let conv = ok_conv_id(&c.request(req::start(r)).await);
    // Over GATEWAY_MAX_TEXT but under the frame cap: an error, the socket stays.
    let r = c.rid();
    let e = c
        .request(req::send(r, &conv, "big", &"x".repeat(9000)))
        .await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{e:?}"
    );
    let r = c.rid();
    let e = c.request(req::send(r, &conv, &"c".repeat(65), "hi")).await;
    assert!(
        matches!(
            e,
            ServerFrame::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "cid over 64: {e:?}"
    );
    // Over the 64 KiB frame cap (GATEWAY_MAX_FRAME): a protocol violation, closed with 4000
    // (docs/protocol.md §9), and the close frame reaches the client.
    let huge = format!(
        r#"{{"t":"send","rid":1,"conv":"{conv}","cid":"h","text":"{}"}}"#,
        "y".repeat(70_000)
    );
    futures_util::SinkExt::send(&mut c.ws, Message::Text(huge.into()))
        .await
        .expect("the frame is written");
    assert_eq!(c.closed().await, Some(4000), "frame over GATEWAY_MAX_FRAME");
    node.shutdown().await;
}

/// A visitor whose socket never reads while an operator floods the conversation. While it is
/// stuck, the node holds at most `GATEWAY_OUTBOUND_MAX_BYTES` for it (sampled after every
/// message, from the connection's own queue: what the `gateway_outbound_queued_bytes` gauge
/// sums; the gauge itself and the RSS are per process, shared by every test of this binary);
/// the queue does fill up to the budget (so the samples were taken while it was stuck) and
/// the first message over it cuts the reader with 4008. The client, reading at last, finds
/// the 4008 close frame on the wire after what was in flight.
#[tokio::test]
async fn a_reader_that_never_reads_is_cut_with_4008_and_others_are_unaffected() {
    use futures_util::StreamExt;
    let budget = 64 * 1024;
    let node = node_with(|c| c.outbound_max_bytes = budget).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    // A visitor on a socket with a tiny receive buffer that stops reading after `start`.
    let (mut slow, conv, slow_conn) = slow_visitor(&node).await;
    let r = op.rid();
    op.request(req::accept(r, &conv)).await;
    // The operator writes; after each ack (by then the node has queued the message for the
    // visitor, or cut it) the slow connection's queue is sampled.
    let text = "z".repeat(7000);
    let mut peak = 0;
    let mut cut_after = None;
    for i in 0..3000 {
        let r = op.rid();
        let ok = op
            .request(req::send(r, &conv, &format!("o{i}"), &text))
            .await;
        assert!(
            matches!(ok, ServerFrame::Ok { .. }),
            "operator refused at {i}: {ok:?}"
        );
        let queued = slow_conn.queued_bytes();
        assert!(
            queued <= budget,
            "message {i}: {queued} bytes queued for a stuck reader, budget {budget}"
        );
        peak = peak.max(queued);
        if slow_conn.is_closing() {
            cut_after = Some(i);
            break;
        }
    }
    let cut_after = cut_after.expect("the slow reader was never cut");
    assert!(
        peak + 2 * text.len() > budget,
        "the reader was cut at message {cut_after} before its queue filled (peak {peak} bytes)"
    );
    // What went before the cut is bounded by the budget and the sockets' buffers, not by the
    // kernel's autotuned send buffer (megabytes): GATEWAY_SOCKET_SEND_BUFFER keeps it small.
    let sent = cut_after * text.len();
    assert!(
        sent < budget + 512 * 1024,
        "{sent} bytes went to a reader that never reads before it was cut"
    );
    assert_eq!(
        slow_conn.close_reason().map(|r| r.code()),
        Some(4008),
        "cut as too slow"
    );
    // The client reads at last: what was in flight, then the close frame.
    let mut msgs = 0;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(f))) => return Ok(f.map(|f| u16::from(f.code))),
                Some(Ok(Message::Text(_))) => msgs += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("{e}")),
                None => return Err("stream ended".into()),
            }
        }
    })
    .await
    .expect("the slow client's stream ends");
    assert_eq!(
        end,
        Ok(Some(4008)),
        "close frame after {msgs} frames in flight"
    );
    // Gone from the node (it leaves the hub before its close frame is sent); the operator
    // still chats.
    assert!(node.gw.connections().iter().all(|c| c.id != slow_conn.id));
    let r = op.rid();
    assert!(matches!(
        op.request(req::send(r, &conv, "after", "still here")).await,
        ServerFrame::Ok { .. }
    ));
    node.shutdown().await;
}

/// A visitor whose downlink is stuck (its socket reads nothing, its queue is under the
/// budget) still has its own frames read: the message it sends reaches the operator, and
/// its pongs keep it from the ping timeout (docs/protocol.md §3.4: any frame counts).
///
/// Regression: while a connection's writer waited on a full socket, its task read no frames
/// at all, so the message was never handled and the connection was closed with 1001 ("sent
/// nothing") after two ping intervals, though it kept sending.
#[tokio::test]
async fn a_client_whose_downlink_is_stuck_is_still_heard() {
    use futures_util::{SinkExt, StreamExt};
    let interval = Duration::from_millis(500);
    let node = node_with(|c| {
        c.outbound_max_bytes = 64 << 20;
        c.ping_interval = interval;
    })
    .await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let (slow, conv, slow_conn) = slow_visitor(&node).await;
    let (mut tx, _rx) = slow.split();
    let text = |f: &ClientFrame| {
        Message::Text(
            String::from_utf8(f.encode(Encoding::Json).to_vec())
                .unwrap()
                .into(),
        )
    };
    let r = op.rid();
    op.request(req::accept(r, &conv)).await;
    // Flood until the node queues for it: its socket and the kernel are full.
    let big = "z".repeat(7000);
    let mut i = 0;
    while slow_conn.queued_bytes() < 256 << 10 {
        let r = op.rid();
        ok_seq(
            &op.request(req::send(r, &conv, &format!("o{i}"), &big))
                .await,
        );
        i += 1;
        assert!(i < 3000, "never queued");
    }
    // Stuck downlink; the visitor writes a message and keeps answering with pongs.
    tx.send(text(&req::send(
        gateway::protocol::Rid::Int(2),
        &conv,
        "v-stuck",
        "can you hear me?",
    )))
    .await
    .unwrap();
    let pongs = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 5);
        loop {
            tick.tick().await;
            if tx.send(text(&ClientFrame::Pong {})).await.is_err() {
                return;
            }
        }
    });
    op.recv_until(|f| is_msg_text(f, "can you hear me?")).await;
    assert_eq!(slow_conn.close_reason(), None);
    pongs.abort();
    node.shutdown().await;
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_then_closed_with_4029() {
    let node = node_with(|c| {
        c.rate_per_sec = 5.try_into().unwrap();
        c.rate_burst = 5.try_into().unwrap();
    })
    .await;
    let (mut c, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    for i in 0..60 {
        c.send(&req::history(
            gateway::protocol::Rid::Int(i),
            "c_x",
            None,
            None,
        ))
        .await;
    }
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut c.ws))
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                if matches!(
                    ServerFrame::decode(Encoding::Json, t.as_bytes()),
                    Ok(ServerFrame::Error {
                        code: ErrorCode::RateLimited,
                        ..
                    })
                ) {
                    limited += 1;
                }
            }
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(limited >= 1);
    assert_eq!(code, Some(4029));
    node.shutdown().await;
}

#[tokio::test]
async fn origins_are_checked_against_allowed_origins() {
    let node = node_with(|c| {
        c.sites =
            sites(r#"[{"id":"demo","settings":{"allowed_origins":["https://shop.example"]}}]"#)
    })
    .await;
    let tok = token("demo", Role::Visitor, "v1", "Ann");
    let mut bad = Client::open_with(&node, Encoding::Json, |r| {
        r.headers_mut()
            .insert("Origin", "https://evil.example".parse().unwrap());
    })
    .await;
    bad.send(&ClientFrame::Hello {
        token: tok.clone(),
        cursors: Default::default(),
        lang: None,
        device: None,
    })
    .await;
    assert_eq!(bad.closed().await, Some(4003));
    let mut good = Client::open_with(&node, Encoding::Json, |r| {
        r.headers_mut()
            .insert("Origin", "https://shop.example".parse().unwrap());
    })
    .await;
    good.send(&ClientFrame::Hello {
        token: tok,
        cursors: Default::default(),
        lang: None,
        device: None,
    })
    .await;
    assert!(matches!(good.recv().await, ServerFrame::Welcome { .. }));
    node.shutdown().await;
}

#[tokio::test]
async fn drain_closes_clients_with_1012() {
    let node = node().await;
    let (mut c, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let gw = node.gw.clone();
    let stop = tokio::spawn(node.shutdown());
    assert_eq!(c.closed().await, Some(1012));
    assert!(gw.is_draining());
    stop.await.unwrap();
}

/// `/healthz` answers 200 while the process is up; `/readyz` 200 while the node serves and
/// 503 `draining` from the moment it drains (two clients: the drain spreads their closes over
/// the window, so the node is still up, draining, between them).
#[tokio::test]
async fn healthz_is_200_and_readyz_turns_503_while_draining() {
    let node = node_with(|c| c.drain_window = Duration::from_secs(4)).await;
    let addr = node.addr;
    assert_eq!(
        http(addr, "GET", "/healthz", &[], "").await,
        (200, "ok".into())
    );
    assert_eq!(
        http(addr, "GET", "/readyz", &[], "").await,
        (200, "ready".into())
    );
    let mut clients = Vec::new();
    for v in ["v1", "v2"] {
        clients.push(
            Client::connect(&node, Encoding::Json, &token("demo", Role::Visitor, v, v))
                .await
                .0,
        );
    }
    let stop = tokio::spawn(node.shutdown());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = http(addr, "GET", "/readyz", &[], "").await;
        if code == 503 {
            assert_eq!(body, "draining");
            break;
        }
        assert_eq!((code, body.as_str()), (200, "ready"));
        assert!(tokio::time::Instant::now() < deadline, "never drained");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        http(addr, "GET", "/healthz", &[], "").await,
        (200, "ok".into()),
        "up while draining"
    );
    for mut c in clients {
        assert_eq!(c.closed().await, Some(1012));
    }
    stop.await.unwrap();
}

async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    testsupport::http(&addr.to_string(), method, path, headers, body)
        .await
        .expect("the node answers HTTP")
}

#[tokio::test]
async fn visitor_session_keeps_the_visitor_id_when_the_previous_token_is_passed() {
    let node = node().await;
    let (st, body) = http(
        node.addr,
        "POST",
        "/v1/visitor/session",
        &[("Content-Type", "application/json")],
        r#"{"site":"demo"}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tok = first["token"].as_str().unwrap();
    let p = node.gw.auth().verify(tok).unwrap();
    assert_eq!(
        (p.role(), p.id(), p.site.as_str()),
        (Role::Visitor, first["visitor_id"].as_str().unwrap(), "demo")
    );
    let again = format!(r#"{{"site":"demo","visitor_token":"{tok}"}}"#);
    let (_, body) = http(node.addr, "POST", "/v1/visitor/session", &[], &again).await;
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["visitor_id"], first["visitor_id"]);
    // A forged previous token does not carry its id over.
    let forged = format!(r#"{{"site":"demo","visitor_token":"{}x"}}"#, tok);
    let (_, body) = http(node.addr, "POST", "/v1/visitor/session", &[], &forged).await;
    let third: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(third["visitor_id"], first["visitor_id"]);
    // Expired: kept within GATEWAY_VISITOR_RENEW_WITHIN (7 days), not a month later; and
    // never from a token of the site's own (a logged-in customer's), which its backend renews.
    let now = gateway::clock::now_ms() / 1000;
    let minted = |exp: u64, anon: bool| {
        node.gw
            .auth()
            .mint(&gateway::auth::Claims {
                anon,
                sid: None,
                sub: "v_returning".into(),
                site: "demo".into(),
                role: Role::Visitor,
                name: None,
                exp,
                iat: None,
                queues: None,
                max_chats: None,
            })
            .unwrap()
    };
    for (tok, kept) in [
        (minted(now - 3600, true), true),
        (minted(now - 30 * 24 * 3600, true), false),
        (minted(now + 3600, false), false),
        (minted(now - 3600, false), false),
    ] {
        let body = format!(r#"{{"site":"demo","visitor_token":"{tok}"}}"#);
        let (st, body) = http(node.addr, "POST", "/v1/visitor/session", &[], &body).await;
        assert_eq!(st, 200, "{body}");
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got["visitor_id"] == "v_returning", kept, "{body}");
    }
    let (st, _) = http(
        node.addr,
        "POST",
        "/v1/visitor/session",
        &[],
        r#"{"site":"nope"}"#,
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = http(node.addr, "POST", "/v1/visitor/session", &[], "][").await;
    assert_eq!(st, 400);
    node.shutdown().await;
}

#[tokio::test]
async fn settings_change_at_runtime_with_a_supervisor_token_only() {
    let node = node().await;
    let op = token("demo", Role::Operator, "op1", "Olga");
    let sup = token("demo", Role::Supervisor, "s1", "Sam");
    let (st, _) = http(
        node.addr,
        "PATCH",
        "/v1/sites/demo/settings",
        &[("Authorization", &format!("Bearer {op}"))],
        r#"{"routing":"auto"}"#,
    )
    .await;
    assert_eq!(st, 403);
    let (st, body) = http(
        node.addr,
        "PATCH",
        "/v1/sites/demo/settings",
        &[("Authorization", &format!("Bearer {sup}"))],
        r#"{"routing":"fast","max_chats":0}"#,
    )
    .await;
    assert_eq!(st, 422, "{body}");
    assert!(body.contains("routing") && body.contains("max_chats"));
    let (st, body) = http(
        node.addr,
        "PATCH",
        "/v1/sites/demo/settings",
        &[("Authorization", &format!("Bearer {sup}"))],
        r#"{"routing":"auto"}"#,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    // Auto routing now assigns a new conversation straight to the active operator.
    let (mut o, _) = Client::connect(&node, Encoding::Json, &op).await;
    let r = o.rid();
    o.request(req::status(r, OperatorStatus::Active)).await;
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let ok = v.request(req::start(r)).await;
    let ServerFrame::Ok {
        body: OkBody::Conv { conv },
        ..
    } = ok
    else {
        panic!("{ok:?}")
    };
    assert_eq!(conv.operator.map(|o| o.id), Some("op1".to_owned()));
    node.shutdown().await;
}

#[tokio::test]
async fn availability_follows_operator_status() {
    let node = node().await;
    let (_, body) = http(node.addr, "GET", "/v1/sites/demo/availability", &[], "").await;
    assert!(body.contains("\"offline\""), "{body}");
    let (mut o, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    let (_, body) = http(node.addr, "GET", "/v1/sites/demo/availability", &[], "").await;
    assert!(body.contains("\"busy\""), "{body}");
    let r = o.rid();
    o.request(req::status(r, OperatorStatus::Active)).await;
    let (_, body) = http(node.addr, "GET", "/v1/sites/demo/availability", &[], "").await;
    assert!(body.contains("\"online\""), "{body}");
    node.shutdown().await;
}

#[tokio::test]
async fn transcripts_are_for_participants_and_errors_say_what_happened() {
    let node = node().await;
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let r = v.rid();
    ok_seq(&v.request(req::send(r, &conv, "a", "<b>hello</b>")).await);
    let bearer = |t: String| format!("Bearer {t}");
    let own = bearer(token("demo", Role::Visitor, "v1", "Ann"));
    let (code, body) = http(
        node.addr,
        "GET",
        &format!("/v1/conversations/{conv}/transcript?format=html"),
        &[("Authorization", &own)],
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("&lt;b&gt;hello&lt;/b&gt;"), "{body}");
    let (code, body) = http(
        node.addr,
        "GET",
        "/v1/conversations/c_nope/transcript",
        &[("Authorization", &own)],
        "",
    )
    .await;
    assert_eq!(code, 404);
    assert!(body.contains(r#""error":"not_found""#), "{body}");
    let stranger = bearer(token("demo", Role::Visitor, "v2", "Eve"));
    let (code, _) = http(
        node.addr,
        "GET",
        &format!("/v1/conversations/{conv}/transcript"),
        &[("Authorization", &stranger)],
        "",
    )
    .await;
    assert_eq!(
        code, 404,
        "another visitor's conversation does not exist for them"
    );
    let (code, _) = http(
        node.addr,
        "GET",
        &format!("/v1/conversations/{conv}/transcript"),
        &[],
        "",
    )
    .await;
    assert_eq!(code, 401);
    node.shutdown().await;
}

/// An operator bans the visitor of their conversation: it ends, the visitor's connections
/// close with 4003, and they cannot come back (WebSocket nor session endpoint) until a
/// supervisor lifts the ban.
#[tokio::test]
async fn a_banned_visitor_is_closed_and_kept_out_until_unbanned() {
    let node = node().await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let visitor = token("demo", Role::Visitor, "v1", "Troll");
    let (mut v, _) = Client::connect(&node, Encoding::Json, &visitor).await;
    let (mut tab, _) = Client::connect(&node, Encoding::Json, &visitor).await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let r = op.rid();
    op.request(req::accept(r, &conv)).await;
    // Bad durations are refused, and visitors cannot ban anyone.
    let r = op.rid();
    let bad = op
        .request(ClientFrame::Ban {
            rid: Some(r),
            conv: conv.clone(),
            duration: Some("forever-ish".into()),
            reason: None,
        })
        .await;
    assert!(
        matches!(
            bad,
            ServerFrame::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{bad:?}"
    );
    let r = op.rid();
    let ok = op
        .request(ClientFrame::Ban {
            rid: Some(r),
            conv: conv.clone(),
            duration: Some("2h".into()),
            reason: Some("abuse".into()),
        })
        .await;
    match ok {
        ServerFrame::Ok {
            body: OkBody::Ban { visitor, until },
            ..
        } => {
            assert_eq!(visitor, "v1");
            assert!(until > gateway::clock::now_ms() + 3_600_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(v.closed().await, Some(4003));
    assert_eq!(tab.closed().await, Some(4003));
    let closed = op
        .recv_until(|f| {
            matches!(
                f,
                ServerFrame::Conv {
                    event: ConvEvent::Closed,
                    ..
                }
            )
        })
        .await;
    let ServerFrame::Conv { conv: c, .. } = closed else {
        unreachable!()
    };
    assert_eq!(c.outcome.as_deref(), Some("banned"));
    assert_eq!(hello_close_code(&node, &visitor).await, Some(4003));
    let (code, body) = http(
        node.addr,
        "POST",
        "/v1/visitor/session",
        &[("Content-Type", "application/json")],
        &format!(r#"{{"site":"demo","visitor_token":"{visitor}"}}"#),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("banned"));
    // Operators cannot lift it; supervisors can.
    let r = op.rid();
    assert!(matches!(
        op.request(ClientFrame::Unban {
            rid: Some(r),
            visitor: "v1".into()
        })
        .await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let (mut sup, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "s1", "Sam"),
    )
    .await;
    let r = sup.rid();
    assert!(matches!(
        sup.request(ClientFrame::Unban {
            rid: Some(r),
            visitor: "v1".into()
        })
        .await,
        ServerFrame::Ok { .. }
    ));
    let (_back, _) = Client::connect(&node, Encoding::Json, &visitor).await;
    node.shutdown().await;
}

/// A visitor on a socket with a 4 KiB receive buffer (when it stops reading, the node soon
/// meets a full socket) that says hello and starts a conversation. Returns the socket, the
/// conversation and the node's side of the connection.
async fn slow_visitor(
    node: &Node,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    String,
    std::sync::Arc<gateway::hub::ConnShared>,
) {
    use futures_util::{SinkExt, StreamExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(node.addr).await.unwrap();
    let url = format!("ws://{}/v1/ws", node.addr);
    let (mut slow, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let hello = ClientFrame::Hello {
        token: token("demo", Role::Visitor, "slow", "Slow"),
        cursors: Default::default(),
        lang: None,
        device: None,
    };
    let hello = String::from_utf8(hello.encode(Encoding::Json).to_vec()).unwrap();
    slow.send(Message::Text(hello.into())).await.unwrap();
    slow.send(Message::Text(r#"{"t":"start","rid":1}"#.into()))
        .await
        .unwrap();
    let conv = loop {
        let m = tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("the answer to start")
            .unwrap()
            .unwrap();
        if let Ok(ServerFrame::Ok {
            body: OkBody::Conv { conv },
            ..
        }) = ServerFrame::decode(Encoding::Json, m.to_text().unwrap().as_bytes())
        {
            break conv.id;
        }
    };
    let conn = node
        .gw
        .connections()
        .into_iter()
        .find(|c| c.role == Role::Visitor)
        .expect("the slow visitor's connection");
    (slow, conv, conn)
}
