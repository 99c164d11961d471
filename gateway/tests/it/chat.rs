//! Chat over real sockets: both directions in both encodings, the accept race, reconnect within
//! and past the grace, idempotent retries, reopen after close, typing and the notice.

use gateway::protocol::{
    ClientFrame, ConvEvent, ConvState, Encoding, ErrorCode, OkBody, OperatorStatus, Role,
    ServerFrame,
};

use crate::common::*;

async fn chat_both_ways(enc: Encoding) {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, enc, "v1").await;
    // The visitor sees who joined, as a system message with its own seq.
    let joined = v.recv_until(|f| matches!(f, ServerFrame::Msg(_))).await;
    let ServerFrame::Msg(joined) = joined else {
        unreachable!()
    };
    assert_eq!(joined.from.role, Role::System);
    assert!(joined.text.contains("Olga"));

    let r = v.rid();
    let seq = ok_seq(
        &v.request(req::send(r, &conv, "m1", "Hello, I need help"))
            .await,
    );
    assert_eq!(seq, joined.seq + 1);
    let got = op
        .recv_until(|f| is_msg_text(f, "Hello, I need help"))
        .await;
    let ServerFrame::Msg(m) = got else {
        unreachable!()
    };
    assert_eq!(
        (m.seq, m.from.role, m.from.id.as_str(), m.cid.as_deref()),
        (seq, Role::Visitor, "v1", Some("m1"))
    );

    let r = op.rid();
    let seq2 = ok_seq(
        &op.request(req::send(r, &conv, "o1", "How can I help?"))
            .await,
    );
    assert_eq!(seq2, seq + 1);
    let got = v.recv_until(|f| is_msg_text(f, "How can I help?")).await;
    let ServerFrame::Msg(m) = got else {
        unreachable!()
    };
    assert_eq!(
        (m.seq, m.from.role, m.from.name.as_deref()),
        (seq2, Role::Operator, Some("Olga"))
    );
    node.shutdown().await;
}

#[tokio::test]
async fn visitor_and_operator_chat_both_ways_json() {
    chat_both_ways(Encoding::Json).await;
}

#[tokio::test]
async fn visitor_and_operator_chat_both_ways_msgpack() {
    chat_both_ways(Encoding::MsgPack).await;
}

#[tokio::test]
async fn two_operators_race_to_accept_and_exactly_one_wins() {
    let node = node().await;
    let mut ops = Vec::new();
    for (id, name) in [("op1", "Olga"), ("op2", "Petr")] {
        let (mut op, _) = Client::connect(
            &node,
            Encoding::Json,
            &token("demo", Role::Operator, id, name),
        )
        .await;
        let r = op.rid();
        op.request(req::status(r, OperatorStatus::Active)).await;
        ops.push(op);
    }
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    for op in &mut ops {
        op.recv_until(|f| matches!(f, ServerFrame::Queue { waiting, .. } if waiting.iter().any(|c| c.id == conv)))
            .await;
    }
    // Both requests are on the wire before either answer is read.
    let (a, b) = ops.split_at_mut(1);
    let (ra, rb) = (a[0].rid(), b[0].rid());
    a[0].send(&req::accept(ra.clone(), &conv)).await;
    b[0].send(&req::accept(rb.clone(), &conv)).await;
    let (x, y) = tokio::join!(a[0].answer(&ra), b[0].answer(&rb));
    let outcomes = [&x, &y];
    let wins = outcomes
        .iter()
        .filter(|f| matches!(f, ServerFrame::Ok { .. }))
        .count();
    let taken = outcomes
        .iter()
        .filter(|f| {
            matches!(
                f,
                ServerFrame::Error {
                    code: ErrorCode::Taken,
                    ..
                }
            )
        })
        .count();
    assert_eq!((wins, taken), (1, 1), "{x:?} / {y:?}");
    // The loser sees the conversation leave the queue.
    let loser = if matches!(x, ServerFrame::Ok { .. }) {
        &mut b[0]
    } else {
        &mut a[0]
    };
    loser
        .recv_until(|f| matches!(f, ServerFrame::Queue { waiting, .. } if !waiting.iter().any(|c| c.id == conv)))
        .await;
    node.shutdown().await;
}

fn grace_site(grace: &str) -> String {
    format!(r#"[{{"id":"demo","queues":["general"],"settings":{{"visitor_grace":"{grace}"}}}}]"#)
}

#[tokio::test]
async fn visitor_reconnects_within_grace_and_gets_exactly_the_missed_messages() {
    let node = node_with(|c| c.sites = sites(&grace_site("30s"))).await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = v.rid();
    let last_seen = ok_seq(&v.request(req::send(r, &conv, "m1", "first")).await);
    // Cut the TCP connection without a close frame.
    drop(v);
    let away = op
        .recv_until(|f| {
            matches!(
                f,
                ServerFrame::Conv {
                    event: ConvEvent::VisitorAway,
                    ..
                }
            )
        })
        .await;
    let ServerFrame::Conv { conv: c, .. } = away else {
        unreachable!()
    };
    assert!(!c.visitor.online);
    let mut sent = Vec::new();
    for i in 0..3 {
        let r = op.rid();
        let text = format!("while away {i}");
        sent.push((
            ok_seq(
                &op.request(req::send(r, &conv, &format!("o{i}"), &text))
                    .await,
            ),
            text,
        ));
    }
    let (mut v, welcome) = Client::resume(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
        &[(&conv, last_seen)],
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = welcome else {
        unreachable!()
    };
    assert_eq!(conversations.len(), 1);
    assert_eq!(conversations[0].id, conv);
    assert_eq!(conversations[0].recovered, Some(true));
    let mut got = Vec::new();
    while got.len() < sent.len() {
        if let ServerFrame::Msg(m) = v.recv().await {
            got.push((m.seq, m.text));
        }
    }
    assert_eq!(got, sent, "missed messages in order");
    assert_eq!(got[0].0, last_seen + 1);
    // Nothing more arrives: the next frame after a round trip is the answer itself.
    let r = v.rid();
    v.send(&ClientFrame::History {
        rid: Some(r.clone()),
        conv: conv.clone(),
        before: None,
        limit: Some(1),
    })
    .await;
    loop {
        match v.recv().await {
            ServerFrame::Msg(m) => panic!("duplicate or extra message {m:?}"),
            ServerFrame::Ok { rid: Some(x), .. } if x == r => break,
            _ => {}
        }
    }
    op.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::VisitorBack,
                ..
            }
        )
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn visitor_away_past_the_grace_ends_the_conversation() {
    let node = node_with(|c| c.sites = sites(&grace_site("300ms"))).await;
    let Pair { mut op, v, conv } = pair(&node, Encoding::Json, "v1").await;
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
    let ServerFrame::Conv {
        conv: c, reason, ..
    } = closed
    else {
        unreachable!()
    };
    assert_eq!(
        (c.id.as_str(), c.state, reason.as_deref()),
        (conv.as_str(), ConvState::Closed, Some("visitor_left"))
    );
    // The operator's load is free again.
    op.recv_until(|f| matches!(f, ServerFrame::Operator { id, load: 0, .. } if id == "op1"))
        .await;
    node.shutdown().await;
}

#[tokio::test]
async fn the_same_cid_twice_is_stored_and_delivered_once() {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::MsgPack, "v1").await;
    let r = v.rid();
    let a = ok_seq(&v.request(req::send(r, &conv, "same", "once")).await);
    let r = v.rid();
    let b = ok_seq(&v.request(req::send(r, &conv, "same", "once")).await);
    assert_eq!(a, b);
    let r = v.rid();
    let c = ok_seq(&v.request(req::send(r, &conv, "next", "after")).await);
    assert_eq!(c, a + 1, "the retry took no seq");
    op.recv_until(|f| is_msg_text(f, "once")).await;
    let next = op.recv_until(|f| matches!(f, ServerFrame::Msg(_))).await;
    assert!(is_msg_text(&next, "after"), "delivered twice: {next:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn visitor_writing_after_close_gets_a_new_linked_conversation_with_history() {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = v.rid();
    v.request(req::send(r, &conv, "m1", "old question")).await;
    let r = op.rid();
    let closed = op
        .request(ClientFrame::Close {
            rid: Some(r),
            conv: conv.clone(),
            outcome: Some("solved".into()),
            tags: Some(vec!["Billing".into()]),
        })
        .await;
    let ServerFrame::Ok {
        body: OkBody::Conv { conv: c },
        ..
    } = closed
    else {
        panic!("{closed:?}")
    };
    assert_eq!(
        (c.state, c.outcome.as_deref(), c.tags.clone()),
        (
            ConvState::Closed,
            Some("solved"),
            vec!["billing".to_owned()]
        )
    );
    v.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::Closed,
                ..
            }
        )
    })
    .await;
    // Writing into the closed conversation opens a new one linked to it.
    let r = v.rid();
    let ok = v.request(req::send(r, &conv, "m2", "one more thing")).await;
    let ServerFrame::Ok {
        body: OkBody::Sent { conv: new, .. },
        ..
    } = ok
    else {
        panic!("{ok:?}")
    };
    assert_ne!(new, conv);
    let queued = op
        .recv_until(|f| matches!(f, ServerFrame::Queue { waiting, .. } if waiting.iter().any(|c| c.id == new)))
        .await;
    let ServerFrame::Queue { waiting, .. } = queued else {
        unreachable!()
    };
    let linked = waiting.iter().find(|c| c.id == new).unwrap();
    assert_eq!(linked.previous.as_deref(), Some(conv.as_str()));
    // The operator can read the old conversation's history.
    let r = op.rid();
    let h = op
        .request(ClientFrame::History {
            rid: Some(r),
            conv: conv.clone(),
            before: None,
            limit: None,
        })
        .await;
    let ServerFrame::Ok {
        body: OkBody::History {
            messages, complete, ..
        },
        ..
    } = h
    else {
        panic!("{h:?}")
    };
    assert!(complete && messages.iter().any(|m| m.text == "old question"));
    node.shutdown().await;
}

#[tokio::test]
async fn typing_sneak_peek_reaches_operators_only() {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    // A second tab of the same visitor.
    let (mut tab, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    v.send(&ClientFrame::Typing {
        conv: conv.clone(),
        on: true,
        preview: Some("my order num".into()),
    })
    .await;
    let f = op
        .recv_until(|f| matches!(f, ServerFrame::Typing { .. }))
        .await;
    assert!(matches!(f, ServerFrame::Typing { preview: Some(ref p), .. } if p == "my order num"));
    let f = tab
        .recv_until(|f| matches!(f, ServerFrame::Typing { .. }))
        .await;
    assert!(
        matches!(
            f,
            ServerFrame::Typing {
                preview: None,
                on: true,
                ..
            }
        ),
        "{f:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn visitor_gets_the_unavailability_notice_when_no_operator_can_answer() {
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
    v.request(req::send(r, &conv, "m1", "anyone?")).await;
    let n = v
        .recv_until(|f| matches!(f, ServerFrame::Notice { .. }))
        .await;
    let ServerFrame::Notice {
        code,
        text,
        conv: c,
    } = n
    else {
        unreachable!()
    };
    assert_eq!(
        (code.as_str(), c.as_deref()),
        ("unavailable", Some(conv.as_str()))
    );
    // No language given (this client sends no Accept-Language): the site's, English.
    assert_eq!(
        text,
        gateway::i18n::default_unavailable_text(gateway::i18n::Lang::En)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn offer_routing_offers_to_the_operator_who_then_accepts() {
    let node = node_with(|c| {
        c.sites = sites(r#"[{"id":"demo","settings":{"routing":"offer","accept_timeout":"30s"}}]"#)
    })
    .await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let offer = op
        .recv_until(|f| matches!(f, ServerFrame::Offer { .. }))
        .await;
    let ServerFrame::Offer {
        conv: c,
        expires_at,
    } = offer
    else {
        unreachable!()
    };
    assert_eq!(
        (c.id.as_str(), c.state),
        (conv.as_str(), ConvState::Offered)
    );
    assert!(expires_at > gateway::clock::now_ms());
    let r = op.rid();
    assert_eq!(ok_conv_id(&op.request(req::accept(r, &conv)).await), conv);
    node.shutdown().await;
}

/// With `show_operator_name` off, visitors learn no operator name from any frame; a visitor
/// never gets staff-only fields, not even when closing twice; answers carry the real `last_seq`.
#[tokio::test]
async fn visitors_see_only_what_is_theirs_to_see() {
    let node = node_with(|c| {
        c.sites =
            sites(r#"[{"id":"demo","queues":["general"],"settings":{"show_operator_name":false}}]"#)
    })
    .await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = op.rid();
    ok_seq(&op.request(req::send(r, &conv, "o1", "hello")).await);
    let m = v.recv_until(|f| is_msg_text(f, "hello")).await;
    let ServerFrame::Msg(m) = m else {
        unreachable!()
    };
    assert_eq!(m.from.name, None, "operator name hidden in messages");
    op.send(&ClientFrame::Typing {
        conv: conv.clone(),
        on: true,
        preview: None,
    })
    .await;
    let t = v
        .recv_until(|f| matches!(f, ServerFrame::Typing { .. }))
        .await;
    let ServerFrame::Typing { from, .. } = t else {
        unreachable!()
    };
    assert_eq!(from.name, None, "operator name hidden in typing");
    for attempt in 0..2 {
        let r = v.rid();
        let closed = v
            .request(ClientFrame::Close {
                rid: Some(r),
                conv: conv.clone(),
                outcome: None,
                tags: None,
            })
            .await;
        let ServerFrame::Ok {
            body: OkBody::Conv { conv: c },
            ..
        } = closed
        else {
            panic!("{closed:?}")
        };
        assert_eq!(c.state, ConvState::Closed);
        assert!(
            c.last_seq >= 2,
            "attempt {attempt}: last_seq {}",
            c.last_seq
        );
        assert!(
            c.visitor.preview.is_none(),
            "attempt {attempt}: preview leaked"
        );
        assert_eq!(c.operator.map(|o| o.name), Some(String::new()));
    }
    node.shutdown().await;
}

/// `cid` is at most 64 characters (not bytes); `decline` answers with the conversation.
#[tokio::test]
async fn cids_count_characters_and_decline_answers_with_the_conversation() {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = v.rid();
    ok_seq(
        &v.request(req::send(r, &conv, &"ж".repeat(64), "sixty-four"))
            .await,
    );
    let r = v.rid();
    assert!(matches!(
        v.request(req::send(r, &conv, &"ж".repeat(65), "too long"))
            .await,
        ServerFrame::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    let r = op.rid();
    let back = op
        .request(ClientFrame::Decline {
            rid: Some(r),
            conv: conv.clone(),
        })
        .await;
    let ServerFrame::Ok {
        body: OkBody::Conv { conv: c },
        ..
    } = back
    else {
        panic!("{back:?}")
    };
    assert_eq!((c.id.as_str(), c.state), (conv.as_str(), ConvState::Queued));
    assert!(c.operator.is_none());
    node.shutdown().await;
}

/// A history page of long messages is cut to fit the outbound budget (with `complete:
/// false`, so the client pages on), instead of being one frame larger than the budget that
/// closes the asker with 4008. Regression: a page of 60 messages of 7,000 bytes asked at once
/// closed the visitor.
#[tokio::test]
async fn a_history_page_of_long_messages_fits_the_outbound_budget() {
    let node = node().await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    // 60 messages of 7,000 bytes: 420 KB, more than the 256 KiB budget in one frame. The
    // visitor reads each as it comes (a reader that keeps up).
    let mut last = 0;
    for i in 0..60 {
        let long = format!("{i:02}{}", "y".repeat(7000));
        let r = op.rid();
        last = ok_seq(
            &op.request(req::send(r, &conv, &format!("o{i}"), &long))
                .await,
        );
        v.recv_until(|f| is_msg_text(f, &long)).await;
    }
    // Page backwards through all of it, as a client would.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let r = v.rid();
        let page = v.request(req::history(r, &conv, before, Some(200))).await;
        let ServerFrame::Ok {
            body: OkBody::History {
                messages, complete, ..
            },
            ..
        } = page
        else {
            panic!("history refused: {page:?}");
        };
        let bytes: usize = messages.iter().map(|m| m.text.len()).sum();
        assert!(bytes <= 256 * 1024, "a page of {bytes} bytes");
        assert!(!messages.is_empty());
        before = messages.first().map(|m| m.seq);
        seen.splice(0..0, messages.into_iter().map(|m| m.seq));
        if complete {
            break;
        }
    }
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    // The visitor was never cut, and still chats.
    let r = v.rid();
    ok_seq(
        &v.request(req::send(r, &conv, "v-after", "still here"))
            .await,
    );
    node.shutdown().await;
}

/// Visitors' parameters and previews make a waiting list large: forty visitors with what
/// they may carry (parameters up to their budget, long page URLs and referrers) would be a
/// listing of hundreds of kilobytes, which would cut every operator of the queue with 4008 at
/// each change. A listing carries what fits (longest waiting first, without parameters) and
/// the count.
#[tokio::test]
async fn a_queue_of_visitors_with_large_parameters_does_not_cut_the_operators() {
    let node = node().await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let params: serde_json::Map<String, serde_json::Value> = (0..7)
        .map(|i| (format!("p{i}"), serde_json::Value::String("z".repeat(1000))))
        .collect();
    let url = format!("https://shop.example/{}", "p".repeat(1900));
    let mut visitors = Vec::new();
    for i in 0..40 {
        let (mut v, _) = Client::connect(
            &node,
            Encoding::Json,
            &token("demo", Role::Visitor, &format!("v{i}"), "Big"),
        )
        .await;
        let ok = v
            .request_json(serde_json::json!({
                "t": "start",
                "params": params,
                "page": {"url": url, "referrer": url},
            }))
            .await;
        assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
        visitors.push(v);
    }
    // The operator is still connected and sees the whole count in a listing that fits.
    let listing = op
        .recv_until(|f| {
            matches!(
                f,
                ServerFrame::Queue {
                    count: Some(40),
                    ..
                }
            )
        })
        .await;
    let ServerFrame::Queue { waiting, .. } = &listing else {
        unreachable!()
    };
    assert!(
        !waiting.is_empty() && waiting.len() < 40,
        "{} listed",
        waiting.len()
    );
    let bytes = serde_json::to_vec(&listing).unwrap().len();
    assert!(bytes <= 80 * 1024, "a listing of {bytes} bytes");
    let r = op.rid();
    let conv = waiting[0].id.clone();
    assert!(matches!(
        op.request(req::accept(r, &conv)).await,
        ServerFrame::Ok { .. }
    ));
    node.shutdown().await;
}
