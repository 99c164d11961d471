//! What the console needs from the gateway in the first hour: supervisors' live list of
//! active conversations and taking one over; transfer notes kept for the staff; read
//! receipts that survive a reload; the visitor's last message in queue listings; offline-form
//! conversations marked; settings changes pushed to open consoles.

use gateway::protocol::{
    ConvEvent, Conversation, Encoding, OkBody, OperatorStatus, Role, ServerFrame,
};
use serde_json::json;

use crate::common::*;

async fn visitor(node: &Node, id: &str) -> Client {
    Client::connect(node, Encoding::Json, &token("demo", Role::Visitor, id, id))
        .await
        .0
}

async fn supervisor(node: &Node, id: &str, name: &str) -> Client {
    Client::connect(
        node,
        Encoding::Json,
        &token("demo", Role::Supervisor, id, name),
    )
    .await
    .0
}

async fn start(v: &mut Client) -> String {
    let r = v.rid();
    ok_conv_id(&v.request(req::start(r)).await)
}

async fn say(c: &mut Client, conv: &str, cid: &str, text: &str) -> u64 {
    let r = c.rid();
    ok_seq(&c.request(req::send(r, conv, cid, text)).await)
}

async fn accept(op: &mut Client, conv: &str) {
    op.recv_until(
        |f| matches!(f, ServerFrame::Queue { waiting, .. } if waiting.iter().any(|c| c.id == conv)),
    )
    .await;
    let r = op.rid();
    assert_eq!(ok_conv_id(&op.request(req::accept(r, conv)).await), conv);
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

async fn get(c: &mut Client, conv: &str) -> Conversation {
    ok_conv(c.request_json(json!({"t": "get", "conv": conv})).await)
}

/// Supervisors see the active conversations with who has them, how long the visitor has
/// waited for an answer, the visitor's last message time and the first response time — the
/// one whose visitor waits first. Operators may not ask.
#[tokio::test]
async fn a_supervisor_lists_active_conversations_with_their_timings() {
    let node = node().await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut waits = visitor(&node, "w").await;
    let c1 = start(&mut waits).await;
    accept(&mut op, &c1).await;
    let mut answered = visitor(&node, "a").await;
    let c2 = start(&mut answered).await;
    accept(&mut op, &c2).await;
    say(&mut answered, &c2, "a1", "a question").await;
    say(&mut op, &c2, "o1", "an answer").await;
    say(&mut waits, &c1, "w1", "hello? anyone?").await;
    let mut sup = supervisor(&node, "s1", "Sam").await;
    let list = sup.request_json(json!({"t": "active"})).await;
    let ServerFrame::Ok {
        body: OkBody::Conversations {
            conversations,
            count,
        },
        ..
    } = list
    else {
        panic!("{list:?}")
    };
    assert_eq!(count, Some(2));
    let ids: Vec<&str> = conversations.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [c1.as_str(), c2.as_str()], "the waiting visitor first");
    let a1 = conversations[0].activity.unwrap();
    assert!(a1.waiting_since.is_some() && a1.first_response_ms.is_none());
    assert_eq!(conversations[0].operator.as_ref().unwrap().id, "op1");
    assert_eq!(
        conversations[0].last_message.as_ref().unwrap().text,
        "hello? anyone?"
    );
    let a2 = conversations[1].activity.unwrap();
    assert!(
        a2.waiting_since.is_none() && a2.first_response_ms.is_some() && a2.operator_ts.is_some()
    );
    let refused = op.request_json(json!({"t": "active"})).await;
    assert!(matches!(refused, ServerFrame::Error { .. }), "{refused:?}");
    node.shutdown().await;
}

/// A supervisor takes a conversation over: the operator loses it, the visitor is told who
/// joined, the supervisor writes into it, and gets it back in `welcome` after a reload.
/// Supervisors are present but never routed to: alone online, they leave the site offline.
#[tokio::test]
async fn a_supervisor_takes_a_conversation_over_and_answers_in_it() {
    let node = node().await;
    let mut sup = supervisor(&node, "s1", "Sam").await;
    let availability = || async {
        testsupport::http(
            &node.addr.to_string(),
            "GET",
            "/v1/sites/demo/availability",
            &[],
            "",
        )
        .await
        .unwrap()
        .1
    };
    assert!(
        availability().await.contains("offline"),
        "a supervisor is not an operator"
    );
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    accept(&mut op, &conv).await;
    let taken = ok_conv(
        sup.request_json(json!({"t": "takeover", "conv": conv}))
            .await,
    );
    assert_eq!(taken.operator.as_ref().unwrap().id, "s1");
    op.recv_until(|f| {
        matches!(f, ServerFrame::Conv { event: ConvEvent::Assigned, conv: c, reason }
            if c.id == conv && reason.as_deref() == Some("takeover"))
    })
    .await;
    v.recv_until(|f| matches!(f, ServerFrame::Msg(m) if m.code.as_deref() == Some("operator_joined") && m.text.contains("Sam")))
        .await;
    say(&mut sup, &conv, "s-1", "Hello, I am the supervisor").await;
    let m = v
        .recv_until(|f| is_msg_text(f, "Hello, I am the supervisor"))
        .await;
    let ServerFrame::Msg(m) = m else {
        unreachable!()
    };
    assert_eq!(m.from.role, Role::Supervisor);
    let r = op.rid();
    assert!(matches!(
        op.request(req::send(r, &conv, "o-late", "still mine?"))
            .await,
        ServerFrame::Error { .. }
    ));
    drop(sup);
    let (_again, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "s1", "Sam"),
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = welcome else {
        unreachable!()
    };
    assert!(
        conversations.iter().any(|c| c.id == conv),
        "held after a reload"
    );
    node.shutdown().await;
}

/// A transfer's note stays with the conversation for the staff (the next operator reads it
/// whenever they open it); the visitor never sees it.
#[tokio::test]
async fn transfer_notes_are_kept_for_the_staff_only() {
    let node = node().await;
    let mut op1 = Client::active_operator(&node, "op1", "Olga").await;
    let mut op2 = Client::active_operator(&node, "op2", "Petr").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    accept(&mut op1, &conv).await;
    let ok = op1
        .request_json(json!({"t": "transfer", "conv": conv, "to": {"operator": "op2"}, "note": "VIP: knows billing"}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let c = get(&mut op2, &conv).await;
    assert_eq!(c.notes.len(), 1);
    assert_eq!(
        (c.notes[0].text.as_str(), c.notes[0].by.as_str()),
        ("VIP: knows billing", "Olga")
    );
    assert!(
        get(&mut v, &conv).await.notes.is_empty(),
        "not for the visitor"
    );
    node.shutdown().await;
}

/// Read marks are kept: after a reload the operator's `welcome` and a history page say how
/// far the visitor has read (before, receipts fell back to "sent").
#[tokio::test]
async fn read_receipts_survive_a_reload() {
    let node = node().await;
    let Pair { op, mut v, conv } = pair(&node, Encoding::Json, "v1").await;
    drop(op);
    let (mut op1, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    let seq = say(&mut op1, &conv, "o1", "hi").await;
    v.send_json(json!({"t": "read", "conv": conv, "seq": seq}))
        .await;
    op1.recv_until(|f| matches!(f, ServerFrame::Read { seq: s, .. } if *s == seq))
        .await;
    drop(op1);
    let (mut op1, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = welcome else {
        unreachable!()
    };
    let c = conversations.iter().find(|c| c.id == conv).unwrap();
    assert_eq!(c.read.unwrap().visitor, seq);
    let r = op1.rid();
    let h = op1.request(req::history(r, &conv, None, None)).await;
    let ServerFrame::Ok {
        body: OkBody::History { read, .. },
        ..
    } = h
    else {
        panic!("{h:?}")
    };
    assert_eq!(read.unwrap().visitor, seq);
    node.shutdown().await;
}

/// Queue items show what the visitor asked, and a message left in the offline form is marked.
#[tokio::test]
async fn queue_items_show_the_last_message_and_mark_the_offline_form() {
    let node = node().await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let r = op.rid();
    op.request(req::status(r, OperatorStatus::Away)).await;
    let mut v = visitor(&node, "v1").await;
    let ok = v
        .request_json(json!({"t": "start", "offline": true, "prechat": {"name": "Ann"}}))
        .await;
    let conv = ok_conv(ok).id;
    say(&mut v, &conv, "m1", "Please call me back about my invoice").await;
    let listing = op
        .recv_until(|f| {
            matches!(f, ServerFrame::Queue { waiting, .. }
                if waiting.iter().any(|c| c.id == conv && c.last_message.is_some()))
        })
        .await;
    let ServerFrame::Queue { waiting, .. } = listing else {
        unreachable!()
    };
    let item = waiting.iter().find(|c| c.id == conv).unwrap();
    assert_eq!(
        item.last_message.as_ref().unwrap().text,
        "Please call me back about my invoice"
    );
    assert!(item.offline, "marked as left in the offline form");
    node.shutdown().await;
}

/// A settings change reaches open consoles at once (a `settings` frame).
#[tokio::test]
async fn settings_changes_reach_open_consoles() {
    let node = node().await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let sup = token("demo", Role::Supervisor, "s1", "Sam");
    let (code, body) = testsupport::http(
        &node.addr.to_string(),
        "PATCH",
        "/v1/sites/demo/settings",
        &[("Authorization", &format!("Bearer {sup}"))],
        r#"{"routing":"auto","canned":[{"shortcut":"hi","text":"Hello!"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let f = op
        .recv_until(|f| matches!(f, ServerFrame::Settings { .. }))
        .await;
    let ServerFrame::Settings { settings } = f else {
        unreachable!()
    };
    assert_eq!(settings.routing, "auto");
    assert_eq!(settings.canned[0].text, "Hello!");
    node.shutdown().await;
}
