use std::sync::Arc;

use tokio::sync::mpsc;

use super::*;
use crate::bus::{Audience, Outbound};
use crate::core::SiteId;
use crate::protocol::{Encoding, Msg, Role, ServerFrame};
use tokio_tungstenite::tungstenite::Message;

fn conn(id: u64, role: Role, max: usize) -> (Arc<ConnShared>, Outbox) {
    ConnShared::new(ConnId(id), role, Encoding::Json, None, max, max, 0)
}

fn msg_frame(text: &str) -> BusMsg {
    BusMsg::frame(
        Audience::All,
        ServerFrame::Notice {
            conv: None,
            code: "x".into(),
            text: text.into(),
        },
    )
}

#[test]
fn delivers_to_subscribers_filtered_by_audience() {
    let hub = Hub::new();
    let (v, mut vrx) = conn(1, Role::Visitor, 1 << 20);
    let (o, mut orx) = conn(2, Role::Operator, 1 << 20);
    hub.register(v);
    hub.register(o);
    let ch = Channel::Conv(ConvId::from("c1"));
    hub.subscribe(ConnId(1), ch.clone());
    hub.subscribe(ConnId(2), ch.clone());
    hub.dispatch(&ch, &BusMsg::frame(Audience::Staff, ServerFrame::Ping {}));
    assert!(vrx.try_recv().is_none());
    assert!(orx.try_recv().is_some());
    hub.dispatch(&ch, &msg_frame("hi"));
    assert!(vrx.try_recv().is_some() && orx.try_recv().is_some());
}

#[test]
fn overflow_closes_with_4008_and_stops_queueing() {
    let hub = Hub::new();
    let (c, mut rx) = conn(1, Role::Visitor, 64);
    hub.register(c.clone());
    let ch = Channel::Conv(ConvId::from("c1"));
    hub.subscribe(ConnId(1), ch.clone());
    for _ in 0..10 {
        hub.dispatch(&ch, &msg_frame("0123456789"));
    }
    let mut frames = 0;
    while rx.try_recv().is_some() {
        frames += 1;
    }
    assert!((1..10).contains(&frames), "frames {frames}");
    assert_eq!(c.close_reason(), Some(CloseReason::TooSlow));
    assert!(c.queued_bytes() <= 64);
}

#[test]
fn frames_held_during_a_replay_count_against_the_budget() {
    let hub = Hub::new();
    let (bus_tx, _bus_rx) = mpsc::unbounded_channel();
    hub.set_bus(bus_tx);
    let (c, mut rx) = conn(1, Role::Visitor, 512);
    hub.register(c.clone());
    hub.attach(&c, ConvId::from("c"), 0);
    let ch = Channel::Conv(ConvId::from("c"));
    // The replay never finishes while the conversation keeps going.
    for s in 1..=100 {
        hub.dispatch(&ch, &msg("c", s));
    }
    assert_eq!(c.close_reason(), Some(CloseReason::TooSlow));
    let held: usize = c.gates.lock().iter().map(|g| g.held.len()).sum();
    assert!((1..100).contains(&held), "held {held}");
    assert!(texts(&mut rx).is_empty());
}

fn labels(changes: &[SubChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            SubChange::Changed(ch) => format!("changed {ch:?}"),
            SubChange::Catchup(h) => format!("catchup {} {}", h.conv, h.after),
        })
        .collect()
}

fn texts(rx: &mut Outbox) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv())
        .map(|m| m.to_text().unwrap().to_owned())
        .collect()
}

fn msg(conv: &str, seq: u64) -> BusMsg {
    BusMsg::frame(
        Audience::All,
        ServerFrame::Msg(Msg {
            conv: conv.into(),
            seq,
            from: crate::protocol::Author {
                role: Role::Visitor,
                id: "v".into(),
                name: None,
            },
            text: format!("m{seq}"),
            ts: 1,
            cid: None,
            code: None,
            args: None,
        }),
    )
}

#[test]
fn attach_on_user_channel_subscribes_that_users_connections() {
    let hub = Hub::new();
    let (bus_tx, mut bus_rx) = mpsc::unbounded_channel();
    hub.set_bus(bus_tx);
    let (o, mut orx) = conn(7, Role::Operator, 1 << 20);
    hub.register(o);
    let user = Channel::User(SiteId::from("s"), Role::Operator, "op".into());
    hub.subscribe(ConnId(7), user.clone());
    let joined = Outbound::new(ServerFrame::Ping {});
    let attach = BusMsg::Attach {
        conv: ConvId::from("c9"),
        frame: Some(joined),
        after_seq: 3,
    };
    hub.dispatch(&user, &attach);
    // Attaching twice changes nothing and delivers nothing twice.
    hub.dispatch(&user, &attach);
    let conv = Channel::Conv(ConvId::from("c9"));
    assert!(hub.has(&conv));
    assert_eq!(texts(&mut orx), vec![r#"{"t":"ping"}"#]);
    hub.unregister(ConnId(7));
    assert!(!hub.has(&conv) && !hub.has(&user));
    let changes: Vec<_> = std::iter::from_fn(|| bus_rx.try_recv().ok()).collect();
    assert_eq!(
        labels(&changes),
        vec![
            format!("changed {user:?}"),
            format!("changed {conv:?}"),
            "catchup c9 3".to_owned(),
            format!("changed {user:?}"),
            format!("changed {conv:?}"),
        ]
    );
}

#[test]
fn an_echo_skips_the_connection_it_came_from() {
    let hub = Hub::new();
    hub.set_node(crate::core::NodeId::from("n1"));
    let (a, mut arx) = conn(1, Role::Operator, 1 << 20);
    let (b, mut brx) = conn(2, Role::Operator, 1 << 20);
    hub.register(a);
    hub.register(b);
    let ch = Channel::Conv(ConvId::from("c"));
    hub.subscribe(ConnId(1), ch.clone());
    hub.subscribe(ConnId(2), ch.clone());
    let from = |node: &str| ConnRef {
        node: crate::core::NodeId::from(node),
        conn: ConnId(1),
    };
    hub.dispatch(
        &ch,
        &BusMsg::frame_except(Audience::All, ServerFrame::Ping {}, from("n1")),
    );
    assert!(texts(&mut arx).is_empty());
    assert_eq!(texts(&mut brx).len(), 1);
    // Connection 1 of another node is another connection.
    hub.dispatch(
        &ch,
        &BusMsg::frame_except(Audience::All, ServerFrame::Ping {}, from("n2")),
    );
    assert_eq!(texts(&mut arx).len(), 1);
}

#[test]
fn detach_delivers_its_frame_then_leaves() {
    let hub = Hub::new();
    let (o, mut orx) = conn(1, Role::Operator, 1 << 20);
    hub.register(o);
    let user = Channel::User(SiteId::from("s"), Role::Operator, "op".into());
    hub.subscribe(ConnId(1), user.clone());
    hub.subscribe(ConnId(1), Channel::Conv(ConvId::from("c")));
    let detach = BusMsg::Detach {
        conv: ConvId::from("c"),
        frame: Some(Outbound::new(ServerFrame::Pong {})),
    };
    hub.dispatch(&user, &detach);
    hub.dispatch(&user, &detach);
    assert_eq!(
        texts(&mut orx),
        vec![r#"{"t":"pong"}"#],
        "once, while attached"
    );
    assert!(!hub.has(&Channel::Conv(ConvId::from("c"))));
}

#[test]
fn a_replay_and_live_frames_leave_in_seq_order_each_once() {
    let hub = Hub::new();
    let (bus_tx, _bus_rx) = mpsc::unbounded_channel();
    hub.set_bus(bus_tx);
    let (c, mut rx) = conn(1, Role::Visitor, 1 << 20);
    hub.register(c.clone());
    hub.attach(&c, ConvId::from("c"), 2);
    let ch = Channel::Conv(ConvId::from("c"));
    // Live frames arrive while the log is being read: held back.
    hub.dispatch(&ch, &msg("c", 5));
    hub.dispatch(&ch, &msg("c", 6));
    assert!(texts(&mut rx).is_empty());
    let replayed: Vec<(u64, Arc<Outbound>)> = (2..=5)
        .map(|s| match msg("c", s) {
            BusMsg::Frame { frame, .. } => (s, frame),
            _ => unreachable!(),
        })
        .collect();
    c.release_gate(&ConvId::from("c"), &replayed);
    hub.dispatch(&ch, &msg("c", 7));
    let seqs: Vec<u64> = texts(&mut rx)
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
}

#[test]
fn a_frame_larger_than_the_connection_can_write_is_dropped_not_fatal() {
    let (c, mut rx) = ConnShared::new(
        ConnId(1),
        Role::Operator,
        Encoding::Json,
        None,
        1000,
        100,
        0,
    );
    assert!(!c.push(Message::Text("x".repeat(101).into())));
    assert_eq!(c.close_reason(), None, "the connection stays");
    assert!(c.push(Message::Text("y".repeat(100).into())));
    assert_eq!(texts(&mut rx), vec!["y".repeat(100)]);
}
