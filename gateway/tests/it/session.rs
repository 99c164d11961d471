//! The session over a real socket: the application-level heartbeat (ping, pong, the silent
//! client cut with 1001) and resume with a cursor the capped log no longer reaches
//! (`recovered: false`, nothing replayed).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway::protocol::{ClientFrame, ConvEvent, Encoding, OkBody, Role, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// The next data frame, or the close code (`None`: the stream ended), straight off the
/// socket: pings are not answered here.
async fn wire(c: &mut Client) -> Result<ServerFrame, Option<u16>> {
    loop {
        let m = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("timed out waiting for a frame");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Ok(ServerFrame::decode(Encoding::Json, t.as_bytes()).unwrap())
            }
            Some(Ok(Message::Close(f))) => return Err(f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// With `GATEWAY_PING_INTERVAL` at 500 ms: `welcome` announces the interval; a client that
/// answers every ping with pong (and sends nothing else) keeps being pinged about once an
/// interval and stays; a client that sends nothing after `hello` is closed with 1001
/// (docs/protocol.md §3.4, Deviations 1), no sooner than two intervals after its last frame.
#[tokio::test]
async fn the_server_pings_each_interval_and_closes_a_silent_client_with_1001() {
    let interval = Duration::from_millis(500);
    let node = node_with(|c| c.ping_interval = interval).await;
    let (mut talker, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let ServerFrame::Welcome { settings, .. } = welcome else {
        unreachable!()
    };
    assert_eq!(settings.ping_interval_ms, 500);
    let hello_sent = Instant::now();
    let (mut silent, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Bob"),
    )
    .await;
    // The talker answers pings only, in its own task, for five pings: longer than the three
    // intervals after which a silent client is surely cut.
    let talking = tokio::spawn(async move {
        let mut pings = Vec::new();
        while pings.len() < 5 {
            match wire(&mut talker).await {
                Ok(ServerFrame::Ping {}) => {
                    pings.push(Instant::now());
                    talker.send(&ClientFrame::Pong {}).await;
                }
                Ok(other) => panic!("unexpected frame {other:?}"),
                Err(code) => panic!("the talker was closed: {code:?}"),
            }
        }
        (talker, pings)
    });
    // The silent client reads (pings arrive) but never writes.
    let mut pinged = 0;
    let code = loop {
        match wire(&mut silent).await {
            Ok(ServerFrame::Ping {}) => pinged += 1,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(code) => break code,
        }
    };
    let after = hello_sent.elapsed();
    assert_eq!(code, Some(1001), "ping timeout");
    assert!(pinged >= 1, "the silent client was pinged before the cut");
    // (The node counts whole milliseconds of wall clock: a few of slack.)
    assert!(
        after + Duration::from_millis(5) > 2 * interval,
        "closed {after:?} after its hello: sooner than two intervals"
    );
    assert!(
        after < 3 * interval + Duration::from_secs(2),
        "closed {after:?} after its hello"
    );
    // The talker outlived it, pinged about once an interval: five pings span at least three
    // intervals (one more is slack for a late read), and no gap reaches three.
    let (mut talker, pings) = talking.await.unwrap();
    let span = pings[4] - pings[0];
    assert!(
        span >= interval * 3,
        "five pings in {span:?}, interval {interval:?}"
    );
    for w in pings.windows(2) {
        assert!(w[1] - w[0] < interval * 3, "pings {:?} apart", w[1] - w[0]);
    }
    // Still open: the addition client ping → pong.
    talker.send(&ClientFrame::Ping {}).await;
    loop {
        match wire(&mut talker).await {
            Ok(ServerFrame::Pong {}) => break,
            Ok(ServerFrame::Ping {}) => talker.send(&ClientFrame::Pong {}).await,
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(code) => panic!("the talker was closed: {code:?}"),
        }
    }
    node.shutdown().await;
}

/// `GATEWAY_MAX_LOG` = 5: a cursor exactly five messages back is recovered with those five;
/// one further back is `recovered: false` with no `msg` replayed at all (never a partial
/// replay), and `history` then gives what the log holds.
#[tokio::test]
async fn a_cursor_older_than_the_capped_log_is_not_recovered_and_nothing_is_replayed() {
    let node = node_with(|c| c.max_log = 5).await;
    let visitor = token("demo", Role::Visitor, "v1", "Ann");
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = v.rid();
    let seen = ok_seq(&v.request(req::send(r, &conv, "v-0", "hello")).await);
    drop(v);
    op.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::VisitorAway,
                ..
            }
        )
    })
    .await;
    // Eight messages while away: the log keeps the last five.
    let mut last = seen;
    for i in 0..8 {
        let r = op.rid();
        last = ok_seq(
            &op.request(req::send(r, &conv, &format!("o-{i}"), &format!("away {i}")))
                .await,
        );
    }
    assert_eq!(last, seen + 8);

    // Five back: the log still reaches; exactly those five follow the welcome.
    let (mut edge, w) = Client::resume(&node, Encoding::Json, &visitor, &[(&conv, last - 5)]).await;
    let ServerFrame::Welcome { conversations, .. } = w else {
        unreachable!()
    };
    assert_eq!(conversations[0].recovered, Some(true));
    let replayed = msgs_until_answer(&mut edge, &conv).await;
    assert_eq!(replayed, ((last - 4)..=last).collect::<Vec<_>>());

    // Six back (the client's real cursor, `seen`, is further still): not recovered.
    for cursor in [last - 6, seen] {
        let (mut late, w) =
            Client::resume(&node, Encoding::Json, &visitor, &[(&conv, cursor)]).await;
        let ServerFrame::Welcome { conversations, .. } = w else {
            unreachable!()
        };
        assert_eq!(conversations.len(), 1);
        assert_eq!(
            (conversations[0].id.as_str(), conversations[0].recovered),
            (conv.as_str(), Some(false)),
            "cursor {cursor}"
        );
        assert_eq!(conversations[0].last_seq, last);
        assert_eq!(
            msgs_until_answer(&mut late, &conv).await,
            Vec::<u64>::new(),
            "cursor {cursor}: a partial replay"
        );
        // The client reloads with history: what the log still holds.
        let r = late.rid();
        let h = late.request(req::history(r, &conv, None, Some(50))).await;
        let ServerFrame::Ok {
            body: OkBody::History { messages, .. },
            ..
        } = h
        else {
            panic!("{h:?}")
        };
        assert_eq!(
            messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            ((last - 4)..=last).collect::<Vec<_>>()
        );
        // It is live again all the same.
        let r = op.rid();
        let seq = ok_seq(
            &op.request(req::send(r, &conv, &format!("o-live-{cursor}"), "live"))
                .await,
        );
        let m = late.recv_until(|f| matches!(f, ServerFrame::Msg(_))).await;
        assert!(
            matches!(m, ServerFrame::Msg(ref m) if m.seq == seq),
            "{m:?}"
        );
        last = seq;
    }
    node.shutdown().await;
}

/// The seqs of the `msg` frames of `conv` that arrive before the answer to a request sent
/// now (the opening frames are all queued before any answer).
async fn msgs_until_answer(c: &mut Client, conv: &str) -> Vec<u64> {
    let r = c.rid();
    c.send(&req::history(r.clone(), conv, None, Some(1))).await;
    let mut seqs = Vec::new();
    loop {
        match c.recv().await {
            ServerFrame::Msg(m) if m.conv == conv => seqs.push(m.seq),
            ServerFrame::Ok { rid: Some(x), .. } if x == r => return seqs,
            _ => {}
        }
    }
}

/// A visitor's presence is their conversation's. A browsing visitor's tab counts nowhere (no
/// transition of the site); a tab that was open before the conversation started counts
/// itself once it is attached to it, so the visitor is away only when the last tab goes.
#[tokio::test]
async fn a_tab_open_before_the_conversation_started_counts_itself_once_attached() {
    let node = node().await;
    let site = gateway::core::SiteId::from("demo");
    let visitor = token("demo", Role::Visitor, "v1", "Ann");
    let (mut other_tab, _) = Client::connect(&node, Encoding::Json, &visitor).await;
    assert!(
        node.gw.connections().iter().all(|c| c.counted().is_none()),
        "a browsing visitor counts nowhere"
    );
    let Pair { mut op, v, conv } = pair(&node, Encoding::Json, "v1").await;
    other_tab
        .recv_until(|f| {
            matches!(f, ServerFrame::Conv { event: ConvEvent::Assigned, conv: c, .. } if c.id == conv)
        })
        .await;
    // The starting tab counted with the start, the other one by itself.
    let counting = || {
        node.gw
            .connections()
            .iter()
            .filter(|c| c.role == Role::Visitor)
            .filter(|c| {
                c.counted()
                    .and_then(|c| c.conv)
                    .is_some_and(|c| c.as_str() == conv)
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while counting() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other tab never counted itself"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The starting tab goes. Once its disconnect is recorded (it leaves the node's count of
    // the site's connections only then), anything it changed for the staff is already queued
    // for the operator, ahead of the pong: the visitor must still be present.
    assert_eq!(node.gw.site_connections(&site), 3);
    drop(v);
    while node.gw.site_connections(&site) > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first tab's disconnect never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = op.until_pong().await;
    assert!(
        !seen.iter().any(|f| matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::VisitorAway,
                ..
            }
        )),
        "away while a tab was still open: {seen:?}"
    );
    // The last tab goes: away.
    drop(other_tab);
    let away = op
        .recv_until(|f| {
            matches!(f, ServerFrame::Conv { event: ConvEvent::VisitorAway, conv: c, .. } if c.id == conv)
        })
        .await;
    let ServerFrame::Conv { conv: c, .. } = away else {
        unreachable!()
    };
    assert!(!c.visitor.online);
    node.shutdown().await;
}
