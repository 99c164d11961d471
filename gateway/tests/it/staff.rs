//! What staff do besides chatting, over real sockets, with requests written as JSON the way a
//! client built from the protocol page sends them: transfer to an operator and to a queue,
//! tags, drafts, read receipts, and a supervisor's read-only watch.

use gateway::protocol::{
    ConvEvent, ConvState, Conversation, Encoding, ErrorCode, OkBody, Role, ServerFrame,
};
use serde_json::json;

use crate::common::*;

fn site_with_two_queues() -> Vec<gateway::config::SiteConfig> {
    sites(r#"[{"id":"demo","queues":["general","vip"]}]"#)
}

async fn operator(node: &Node, id: &str, name: &str) -> Client {
    let (mut c, _) = Client::connect(
        node,
        Encoding::Json,
        &token("demo", Role::Operator, id, name),
    )
    .await;
    let ok = c
        .request_json(json!({"t": "status", "status": "active"}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    c
}

async fn visitor(node: &Node, id: &str) -> Client {
    Client::connect(
        node,
        Encoding::Json,
        &token("demo", Role::Visitor, id, "Ann"),
    )
    .await
    .0
}

/// A visitor's new conversation, accepted by `op`.
async fn accepted(v: &mut Client, op: &mut Client) -> String {
    let conv = ok_conv_id(&v.request_json(json!({"t": "start"})).await);
    let ok = op.request_json(json!({"t": "accept", "conv": conv})).await;
    assert_eq!(ok_conv_id(&ok), conv);
    conv
}

fn ok_conv(f: ServerFrame) -> Conversation {
    match f {
        ServerFrame::Ok {
            body: OkBody::Conv { conv },
            ..
        } => *conv,
        other => panic!("expected ok with a conversation, got {other:?}"),
    }
}

fn error_code(f: &ServerFrame) -> Option<ErrorCode> {
    match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn is_event(f: &ServerFrame, conv: &str, event: ConvEvent) -> bool {
    matches!(f, ServerFrame::Conv { event: e, conv: c, .. } if *e == event && c.id == conv)
}

async fn say(c: &mut Client, conv: &str, cid: &str, text: &str) -> ServerFrame {
    c.request_json(json!({"t": "send", "conv": conv, "cid": cid, "text": text}))
        .await
}

/// Olga hands the conversation to Petr (with a note), who then sends it to the `vip` queue,
/// where Olga takes it back. Each move reaches the visitor and both operators as a
/// `transferred` event, the operator who lets go can no longer write, the one who takes over
/// can, and the queue lists it while it waits.
#[tokio::test]
async fn transfer_to_an_operator_then_to_a_queue() {
    let node = node_with(|c| c.sites = site_with_two_queues()).await;
    let mut olga = operator(&node, "op1", "Olga").await;
    let mut petr = operator(&node, "op2", "Petr").await;
    let mut v = visitor(&node, "v1").await;
    let conv = accepted(&mut v, &mut olga).await;

    // Nobody by that name, and no such queue.
    for to in [json!({"operator": "ghost"}), json!({"queue": "nope"})] {
        let e = olga
            .request_json(json!({"t": "transfer", "conv": conv, "to": to}))
            .await;
        assert_eq!(error_code(&e), Some(ErrorCode::NotFound), "{to}: {e:?}");
    }
    // The visitor may not transfer.
    let e = v
        .request_json(json!({"t": "transfer", "conv": conv, "to": {"operator": "op2"}}))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");

    let c = ok_conv(
        olga.request_json(
            json!({"t": "transfer", "conv": conv, "to": {"operator": "op2"}, "note": "VIP"}),
        )
        .await,
    );
    assert_eq!(
        (c.state, c.operator.map(|o| o.id)),
        (ConvState::Active, Some("op2".to_owned()))
    );
    for who in [&mut petr, &mut v, &mut olga] {
        let f = who
            .recv_until(|f| is_event(f, &conv, ConvEvent::Transferred))
            .await;
        let ServerFrame::Conv {
            conv: c, reason, ..
        } = f
        else {
            unreachable!()
        };
        assert_eq!(reason.as_deref(), Some("VIP"));
        assert_eq!(c.operator.map(|o| o.id), Some("op2".to_owned()));
    }
    let e = say(&mut olga, &conv, "o1-after", "still mine?").await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    ok_seq(&say(&mut petr, &conv, "o2-1", "Petr here").await);
    v.recv_until(|f| is_msg_text(f, "Petr here")).await;

    // To the vip queue: nobody holds it; it waits there.
    let c = ok_conv(
        petr.request_json(json!({"t": "transfer", "conv": conv, "to": {"queue": "vip"}}))
            .await,
    );
    assert_eq!(
        (c.state, c.queue.as_str(), c.operator.is_none()),
        (ConvState::Queued, "vip", true)
    );
    let f = v
        .recv_until(|f| is_event(f, &conv, ConvEvent::Transferred))
        .await;
    let ServerFrame::Conv { reason, .. } = f else {
        unreachable!()
    };
    assert_eq!(reason.as_deref(), Some("transfer"), "no note: the reason");
    olga.recv_until(|f| {
        matches!(f, ServerFrame::Queue { queue, waiting, .. }
            if queue == "vip" && waiting.iter().any(|c| c.id == conv))
    })
    .await;
    let e = say(&mut petr, &conv, "o2-2", "still mine?").await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    let c = ok_conv(
        olga.request_json(json!({"t": "accept", "conv": conv}))
            .await,
    );
    assert_eq!(
        (c.state, c.queue.as_str(), c.operator.map(|o| o.id)),
        (ConvState::Active, "vip", Some("op1".to_owned()))
    );
    ok_seq(&say(&mut olga, &conv, "o1-2", "back with Olga").await);
    v.recv_until(|f| is_msg_text(f, "back with Olga")).await;
    node.shutdown().await;
}

/// Tags are trimmed and lower-cased, `remove` applies before `add`, everyone attached gets
/// the `updated` event, and visitors cannot tag.
#[tokio::test]
async fn tags_are_added_and_removed_and_the_conversation_follows() {
    let node = node().await;
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = accepted(&mut v, &mut op).await;
    let sorted = |c: &Conversation| {
        let mut t = c.tags.clone();
        t.sort();
        t
    };
    let c = ok_conv(
        op.request_json(json!({"t": "tag", "conv": conv, "add": ["VIP", " Billing "]}))
            .await,
    );
    assert_eq!(sorted(&c), ["billing", "vip"]);
    let f = v
        .recv_until(|f| is_event(f, &conv, ConvEvent::Updated))
        .await;
    let ServerFrame::Conv {
        conv: seen, reason, ..
    } = f
    else {
        unreachable!()
    };
    assert_eq!(
        (sorted(&seen), reason.as_deref()),
        (vec!["billing".to_owned(), "vip".to_owned()], Some("tags"))
    );
    let c = ok_conv(
        op.request_json(
            json!({"t": "tag", "conv": conv, "add": ["refund", "vip"], "remove": ["VIP", "billing"]}),
        )
        .await,
    );
    assert_eq!(sorted(&c), ["refund", "vip"], "remove first, then add");
    let c = ok_conv(
        op.request_json(json!({"t": "tag", "conv": conv, "remove": ["vip"]}))
            .await,
    );
    assert_eq!(sorted(&c), ["refund"]);
    v.recv_until(|f| {
        matches!(f, ServerFrame::Conv { event: ConvEvent::Updated, conv: c, .. }
            if c.tags == ["refund"])
    })
    .await;
    let e = v
        .request_json(json!({"t": "tag", "conv": conv, "add": ["mine"]}))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    let e = op
        .request_json(json!({"t": "tag", "conv": conv, "add": ["bad\u{7}tag"]}))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::BadRequest), "{e:?}");
    node.shutdown().await;
}

/// A draft is kept on the server: the operator's other connection receives it at once, a
/// connection opened later finds it in `welcome`, the connection that wrote it gets no echo,
/// the visitor never sees it, and an empty draft clears it.
#[tokio::test]
async fn drafts_are_kept_returned_in_welcome_and_echoed_to_the_operators_other_connection() {
    let node = node().await;
    let mut desk = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = accepted(&mut v, &mut desk).await;
    let (mut laptop, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    desk.send_json(json!({"t": "draft", "conv": conv, "text": "Let me check"}))
        .await;
    let f = laptop
        .recv_until(|f| matches!(f, ServerFrame::Draft { .. }))
        .await;
    assert_eq!(
        f,
        ServerFrame::Draft {
            conv: conv.clone(),
            text: "Let me check".into()
        }
    );
    let draft_frames = |frames: Vec<ServerFrame>| {
        frames
            .into_iter()
            .filter(|f| matches!(f, ServerFrame::Draft { .. }))
            .count()
    };
    assert_eq!(
        draft_frames(desk.until_pong().await),
        0,
        "echoed to its writer"
    );
    assert_eq!(
        draft_frames(v.until_pong().await),
        0,
        "shown to the visitor"
    );
    let draft_in_welcome = |w: &ServerFrame| match w {
        ServerFrame::Welcome { conversations, .. } => conversations
            .iter()
            .find(|c| c.id == conv)
            .map(|c| c.draft.clone()),
        other => panic!("{other:?}"),
    };
    let (_phone, w) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    assert_eq!(draft_in_welcome(&w), Some(Some("Let me check".to_owned())));
    let (_tab, w) = Client::resume(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
        &[(&conv, 0)],
    )
    .await;
    assert_eq!(draft_in_welcome(&w), Some(None), "a visitor's welcome");
    // Cleared.
    desk.send_json(json!({"t": "draft", "conv": conv, "text": ""}))
        .await;
    let f = laptop
        .recv_until(|f| matches!(f, ServerFrame::Draft { .. }))
        .await;
    assert!(
        matches!(f, ServerFrame::Draft { ref text, .. } if text.is_empty()),
        "{f:?}"
    );
    let (_later, w) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    assert_eq!(draft_in_welcome(&w), Some(None));
    // Visitors have no drafts.
    v.send_json(json!({"t": "draft", "conv": conv, "text": "x"}))
        .await;
    let e = v
        .recv_until(|f| matches!(f, ServerFrame::Error { .. }))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    node.shutdown().await;
}

/// `read` reaches the other side (and the sender's other tab), never the connection that
/// sent it; the server passes the seq on as sent.
#[tokio::test]
async fn read_receipts_reach_the_other_side_not_the_sender() {
    let node = node().await;
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = accepted(&mut v, &mut op).await;
    let (mut tab, _) = Client::resume(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
        &[(&conv, 0)],
    )
    .await;
    let seq = ok_seq(&say(&mut op, &conv, "o1", "hello").await);
    v.send_json(json!({"t": "read", "conv": conv, "seq": seq}))
        .await;
    for other in [&mut op, &mut tab] {
        let f = other
            .recv_until(|f| matches!(f, ServerFrame::Read { .. }))
            .await;
        let ServerFrame::Read {
            conv: c,
            by,
            seq: s,
        } = f
        else {
            unreachable!()
        };
        assert_eq!(
            (c.as_str(), by.role, by.id.as_str(), by.name, s),
            (conv.as_str(), Role::Visitor, "v1", None, seq)
        );
    }
    let reads = |frames: Vec<ServerFrame>| {
        frames
            .into_iter()
            .filter(|f| matches!(f, ServerFrame::Read { .. }))
            .count()
    };
    assert_eq!(reads(v.until_pong().await), 0, "back to its sender");
    // And the other way round.
    let vseq = ok_seq(&say(&mut v, &conv, "v1", "thanks").await);
    op.send_json(json!({"t": "read", "conv": conv, "seq": vseq}))
        .await;
    let f = v
        .recv_until(|f| matches!(f, ServerFrame::Read { .. }))
        .await;
    assert!(
        matches!(f, ServerFrame::Read { ref by, seq, .. } if by.role == Role::Operator && by.id == "op1" && seq == vseq),
        "{f:?}"
    );
    assert_eq!(reads(op.until_pong().await), 0, "back to its sender");
    // Not someone else's conversation.
    let mut eve = visitor(&node, "v2").await;
    eve.send_json(json!({"t": "read", "conv": conv, "seq": 1}))
        .await;
    let e = eve
        .recv_until(|f| matches!(f, ServerFrame::Error { .. }))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::NotFound), "{e:?}");
    assert_eq!(reads(v.until_pong().await), 0, "a stranger's receipt");
    node.shutdown().await;
}

/// A supervisor attaches to a live conversation read-only: it receives both sides' messages
/// from then on, cannot write into it, and stops receiving after `watch` off. Operators
/// cannot watch.
#[tokio::test]
async fn a_supervisor_watches_read_only() {
    let node = node().await;
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = accepted(&mut v, &mut op).await;
    let (mut sup, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "s1", "Sam"),
    )
    .await;
    let e = op
        .request_json(json!({"t": "watch", "conv": conv, "on": true}))
        .await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    let c = ok_conv(
        sup.request_json(json!({"t": "watch", "conv": conv, "on": true}))
            .await,
    );
    assert_eq!(
        (c.id.as_str(), c.operator.map(|o| o.id)),
        (conv.as_str(), Some("op1".to_owned()))
    );
    assert!(c.visitor.preview.is_some(), "the staff view");
    ok_seq(&say(&mut v, &conv, "v1", "from the visitor").await);
    sup.recv_until(|f| is_msg_text(f, "from the visitor")).await;
    ok_seq(&say(&mut op, &conv, "o1", "from the operator").await);
    sup.recv_until(|f| is_msg_text(f, "from the operator"))
        .await;
    // Read-only.
    let e = say(&mut sup, &conv, "s1", "a supervisor's word").await;
    assert_eq!(error_code(&e), Some(ErrorCode::Forbidden), "{e:?}");
    let said =
        |frames: Vec<ServerFrame>| frames.iter().any(|f| is_msg_text(f, "a supervisor's word"));
    assert!(!said(v.until_pong().await) && !said(op.until_pong().await));
    // Off: nothing more arrives.
    ok_conv(
        sup.request_json(json!({"t": "watch", "conv": conv, "on": false}))
            .await,
    );
    ok_seq(&say(&mut op, &conv, "o2", "after the watch").await);
    let msgs: Vec<ServerFrame> = sup
        .until_pong()
        .await
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Msg(_)))
        .collect();
    assert!(msgs.is_empty(), "{msgs:?}");
    node.shutdown().await;
}
