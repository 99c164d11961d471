//! Unit tests of the pure core with a fake clock (plain numbers), and property tests of its
//! invariants over random command sequences.

use std::time::Duration;

use proptest::prelude::*;

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::protocol::{
    ConvEvent, ConvState, Conversation, ErrorCode, OperatorStatus, TransferTarget,
};

const T0: Millis = 1_000_000;

struct World {
    st: SiteState,
    settings: Settings,
    queues: Vec<QueueId>,
    /// Lines' own settings.
    lines: LineSettings,
    now: Millis,
    /// Pending timers, as the engine would hold them.
    timers: BTreeMap<TimerKind, Millis>,
    effects: Vec<Effect>,
}

impl World {
    fn new(settings: Settings) -> World {
        World {
            st: SiteState {
                site: SiteId::from("s"),
                ..SiteState::default()
            },
            settings,
            queues: vec![QueueId::from("general"), QueueId::from("billing")],
            lines: LineSettings::new(),
            now: T0,
            timers: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    fn run(&mut self, cmd: Command) -> Result<Reply, Reject> {
        let before = self.st.clone();
        let ctx = Ctx {
            lines: &self.lines,
            settings: &self.settings,
            queues: &self.queues,
            now: self.now,
        };
        match handle(&mut self.st, ctx, cmd) {
            Ok((reply, effects)) => {
                // An engine that cannot store the transition puts its copy back exactly.
                let mut undone = self.st.clone();
                undone.rollback();
                assert_eq!(undone, before, "rollback did not restore the state");
                assert_eq!(undone.queue_clock, before.queue_clock);
                assert_eq!(undone.version, before.version);
                self.st.clear_touched();
                for e in &effects {
                    match e {
                        Effect::SetTimer { kind, at } => {
                            self.timers.insert(kind.clone(), *at);
                        }
                        Effect::CancelTimer { kind } => {
                            self.timers.remove(kind);
                        }
                        _ => {}
                    }
                }
                self.effects = effects;
                check_invariants(&self.st, &self.settings).unwrap();
                Ok(reply)
            }
            Err(r) => {
                assert_eq!(self.st, before, "a rejected command changed the state");
                Err(r)
            }
        }
    }

    /// Moves the fake clock and fires every timer that falls due, in deadline order.
    fn advance(&mut self, by: Duration, activity: Activity) {
        let until = self.now + by.as_millis() as u64;
        loop {
            let next = self
                .timers
                .iter()
                .filter(|(_, at)| **at <= until)
                .min_by_key(|(_, at)| **at)
                .map(|(k, at)| (k.clone(), *at));
            let Some((kind, at)) = next else { break };
            self.timers.remove(&kind);
            self.now = self.now.max(at);
            self.run(Command::Timer { kind, activity }).unwrap();
        }
        self.now = until;
    }

    fn op(&mut self, id: &str) {
        self.run(Command::OperatorConnected {
            node: NodeId::from("n1"),
            op: OperatorId::from(id),
            name: id.to_uppercase(),
            max_chats: None,
            queues: None,
        })
        .unwrap();
        self.run(Command::SetStatus {
            op: OperatorId::from(id),
            status: OperatorStatus::Active,
        })
        .unwrap();
    }

    fn visitor_starts(&mut self, v: &str, conv: &str) -> Conversation {
        match self
            .run(Command::Start {
                node: NodeId::from("n1"),
                visitor: VisitorId::from(v),
                conv: ConvId::from(conv),
                queue: None,
                profile: Box::default(),
                previous: None,
                offline: false,
            })
            .unwrap()
        {
            Reply::Conv(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn view(&self, id: &str) -> Conversation {
        super::views::view(&self.st, &ConvId::from(id)).expect("open")
    }

    fn conv(&self, id: &str) -> Option<&Conv> {
        self.st.convs.get(&ConvId::from(id))
    }

    fn saw(&self, pred: impl Fn(&Effect) -> bool) -> bool {
        self.effects.iter().any(pred)
    }
}

fn settings(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::default();
    f(&mut s);
    s
}

fn accept(w: &mut World, op: &str, conv: &str) -> Result<Reply, Reject> {
    w.run(Command::Accept {
        op: OperatorId::from(op),
        conv: ConvId::from(conv),
    })
}

#[test]
fn manual_routing_first_accept_wins() {
    let mut w = World::new(Settings::default());
    w.op("a");
    w.op("b");
    let c = w.visitor_starts("v", "c1");
    assert_eq!(c.state, ConvState::Queued);
    assert!(accept(&mut w, "a", "c1").is_ok());
    assert_eq!(
        accept(&mut w, "b", "c1").unwrap_err().code,
        ErrorCode::Taken
    );
    assert_eq!(w.conv("c1").unwrap().operator, Some(OperatorId::from("a")));
    // Accepting again is idempotent for the holder, and re-publishes what a lost first
    // answer may have lost: the attachment and the conversation's record.
    let version = w.st.version;
    assert!(accept(&mut w, "a", "c1").is_ok());
    assert_eq!(w.st.version, version, "nothing changed");
    assert!(w.saw(|e| matches!(e, Effect::Attach { who: Participant::Operator(o), update: Some(_), .. } if o.as_str() == "a")));
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::Assigned,
            ..
        }
    )));
}

#[test]
fn start_is_idempotent_and_unknown_queue_is_refused() {
    let mut w = World::new(Settings::default());
    let a = w.visitor_starts("v", "c1");
    let again = w
        .run(Command::Start {
            node: NodeId::from("n1"),
            visitor: VisitorId::from("v"),
            conv: ConvId::from("c2"),
            queue: None,
            profile: Box::default(),
            previous: None,
            offline: false,
        })
        .unwrap();
    assert!(matches!(again, Reply::Conv(c) if c.id == a.id));
    w.run(Command::VisitorConnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("x"),
        counted: None,
    })
    .unwrap();
    let err = w
        .run(Command::Start {
            node: NodeId::from("n1"),
            visitor: VisitorId::from("x"),
            conv: ConvId::from("c3"),
            queue: Some(QueueId::from("nope")),
            profile: Box::default(),
            previous: None,
            offline: false,
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
}

#[test]
fn capacity_is_enforced() {
    let mut w = World::new(settings(|s| s.max_chats = 1));
    w.op("a");
    w.visitor_starts("v1", "c1");
    w.visitor_starts("v2", "c2");
    accept(&mut w, "a", "c1").unwrap();
    assert_eq!(
        accept(&mut w, "a", "c2").unwrap_err().code,
        ErrorCode::Capacity
    );
}

#[test]
fn offer_goes_to_least_loaded_and_never_back_to_who_let_it_lapse() {
    let mut w = World::new(settings(|s| {
        s.routing = Routing::Offer;
        s.accept_timeout = Duration::from_secs(30);
    }));
    w.op("a");
    w.op("b");
    w.visitor_starts("v0", "c0");
    // c0 went to a (tie broken by id); a accepts, so b is now the least loaded.
    assert_eq!(
        w.conv("c0").unwrap().offered_to,
        Some(OperatorId::from("a"))
    );
    accept(&mut w, "a", "c0").unwrap();
    w.visitor_starts("v1", "c1");
    assert_eq!(
        w.conv("c1").unwrap().offered_to,
        Some(OperatorId::from("b"))
    );
    assert!(w.saw(|e| matches!(e, Effect::Offer { op, .. } if op.as_str() == "b")));
    // b lets it lapse: it goes to a, never back to b.
    w.advance(Duration::from_secs(31), Activity::default());
    let c = w.conv("c1").unwrap();
    assert_eq!(c.offered_to, Some(OperatorId::from("a")));
    assert!(c.tried.contains(&OperatorId::from("b")));
    // a lets it lapse too: nobody left, it waits in the queue.
    w.advance(Duration::from_secs(31), Activity::default());
    let c = w.conv("c1").unwrap();
    assert_eq!((c.state, c.offered_to.clone()), (ConvState::Queued, None));
    // b going active again does not bring the offer back to b.
    w.run(Command::SetStatus {
        op: OperatorId::from("b"),
        status: OperatorStatus::Away,
    })
    .unwrap();
    w.run(Command::SetStatus {
        op: OperatorId::from("b"),
        status: OperatorStatus::Active,
    })
    .unwrap();
    assert_eq!(w.conv("c1").unwrap().state, ConvState::Queued);
    // A new operator gets it.
    w.op("c");
    assert_eq!(
        w.conv("c1").unwrap().offered_to,
        Some(OperatorId::from("c"))
    );
}

#[test]
fn auto_routing_assigns_directly_and_fills_when_capacity_frees() {
    let mut w = World::new(settings(|s| {
        s.routing = Routing::Auto;
        s.max_chats = 1;
    }));
    w.op("a");
    w.visitor_starts("v1", "c1");
    w.visitor_starts("v2", "c2");
    assert_eq!(w.conv("c1").unwrap().state, ConvState::Active);
    assert_eq!(w.conv("c2").unwrap().state, ConvState::Queued);
    w.run(Command::Close {
        by: Actor::Operator(OperatorId::from("a")),
        conv: ConvId::from("c1"),
        outcome: Some("solved".into()),
        tags: vec![],
    })
    .unwrap();
    assert!(w.conv("c1").is_none());
    assert_eq!(w.conv("c2").unwrap().operator, Some(OperatorId::from("a")));
}

#[test]
fn away_and_inactive_operators_get_nothing_new_but_keep_their_chats() {
    let mut w = World::new(settings(|s| s.routing = Routing::Auto));
    w.op("a");
    w.visitor_starts("v1", "c1");
    w.run(Command::SetStatus {
        op: OperatorId::from("a"),
        status: OperatorStatus::Away,
    })
    .unwrap();
    w.visitor_starts("v2", "c2");
    assert_eq!(w.conv("c1").unwrap().operator, Some(OperatorId::from("a")));
    assert_eq!(w.conv("c2").unwrap().state, ConvState::Queued);
    assert_eq!(availability(&w.st, &w.settings), Availability::Busy);
}

#[test]
fn decline_transfer_and_tags() {
    let mut w = World::new(Settings::default());
    w.op("a");
    w.op("b");
    w.visitor_starts("v1", "c1");
    accept(&mut w, "a", "c1").unwrap();
    // Only the holder (or a supervisor) transfers.
    let err = w
        .run(Command::Transfer {
            by: Actor::Operator(OperatorId::from("b")),
            conv: ConvId::from("c1"),
            to: TransferTarget::Operator("b".into()),
            note: None,
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    w.run(Command::Transfer {
        by: Actor::Operator(OperatorId::from("a")),
        conv: ConvId::from("c1"),
        to: TransferTarget::Operator("b".into()),
        note: Some("VIP".into()),
    })
    .unwrap();
    assert_eq!(w.conv("c1").unwrap().operator, Some(OperatorId::from("b")));
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Transferred, reason: Some(r), .. } if r == "VIP")));
    assert!(w.saw(
        |e| matches!(e, Effect::Detach { who: Participant::Operator(o), .. } if o.as_str() == "a")
    ));
    w.run(Command::Transfer {
        by: Actor::Supervisor("s".into()),
        conv: ConvId::from("c1"),
        to: TransferTarget::Queue("billing".into()),
        note: None,
    })
    .unwrap();
    let c = w.conv("c1").unwrap();
    assert_eq!(
        (c.state, c.queue.as_str(), c.operator.clone()),
        (ConvState::Queued, "billing", None)
    );
    w.run(Command::Tag {
        conv: ConvId::from("c1"),
        add: vec![" VIP ".into(), "vip".into()],
        remove: vec![],
    })
    .unwrap();
    assert_eq!(w.conv("c1").unwrap().tags, vec!["vip".to_owned()]);
    let err = w
        .run(Command::Tag {
            conv: ConvId::from("c1"),
            add: vec!["x".repeat(41)],
            remove: vec![],
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    // Decline in manual mode marks the operator as tried.
    w.run(Command::Decline {
        op: OperatorId::from("b"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(w.conv("c1").unwrap().tried.contains(&OperatorId::from("b")));
}

#[test]
fn supervisor_assign_respects_capacity_and_presence() {
    let mut w = World::new(settings(|s| s.max_chats = 1));
    w.op("a");
    w.visitor_starts("v1", "c1");
    w.visitor_starts("v2", "c2");
    w.run(Command::Assign {
        conv: ConvId::from("c1"),
        op: OperatorId::from("a"),
    })
    .unwrap();
    assert_eq!(
        w.run(Command::Assign {
            conv: ConvId::from("c2"),
            op: OperatorId::from("a")
        })
        .unwrap_err()
        .code,
        ErrorCode::Capacity
    );
    assert_eq!(
        w.run(Command::Assign {
            conv: ConvId::from("c2"),
            op: OperatorId::from("ghost")
        })
        .unwrap_err()
        .code,
        ErrorCode::NotFound
    );
}

#[test]
fn visitor_grace_away_back_and_expiry() {
    let mut w = World::new(settings(|s| s.visitor_grace = Duration::from_secs(60)));
    w.op("a");
    w.visitor_starts("v", "c1");
    accept(&mut w, "a", "c1").unwrap();
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::VisitorAway, conv, .. } if !conv.visitor.online)));
    w.advance(Duration::from_secs(30), Activity::default());
    w.run(Command::VisitorConnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        counted: None,
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::VisitorBack,
            ..
        }
    )));
    assert!(!w
        .timers
        .contains_key(&TimerKind::VisitorGrace(VisitorId::from("v"))));
    // Away again, and past the grace: closed.
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    w.advance(Duration::from_secs(61), Activity::default());
    assert!(w.conv("c1").is_none());
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Closed, reason: Some(r), .. } if r == "visitor_left")));
    assert!(w.st.operators[&OperatorId::from("a")].convs.is_empty());
}

#[test]
fn two_tabs_the_visitor_is_away_only_when_both_are_gone() {
    let mut w = World::new(Settings::default());
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorConnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        counted: None,
    })
    .unwrap();
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(!w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::VisitorAway,
            ..
        }
    )));
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::VisitorAway,
            ..
        }
    )));
}

#[test]
fn offline_callback_keeps_a_waiting_conversation_then_marks_it_missed() {
    let mut w = World::new(settings(|s| {
        s.visitor_grace = Duration::from_secs(10);
        s.offline_callback = Some(Duration::from_secs(3600));
        // Shorter than the call-back window: inactivity must not end a call-back request.
        s.close_after_inactive = Some(Duration::from_secs(600));
    }));
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    w.advance(Duration::from_secs(11), Activity::default());
    assert_eq!(
        w.conv("c1").unwrap().state,
        ConvState::Queued,
        "kept for a call-back"
    );
    w.advance(Duration::from_secs(1800), Activity::default());
    assert_eq!(
        w.conv("c1").unwrap().state,
        ConvState::Queued,
        "inactivity does not end a call-back request"
    );
    w.advance(Duration::from_secs(1800), Activity::default());
    assert!(w.conv("c1").is_none());
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Closed, conv, .. } if conv.outcome.as_deref() == Some("missed"))));
}

/// An operator who takes a call-back request has it as long as they work on it: the
/// call-back deadline no longer applies and the inactivity clock starts again.
#[test]
fn taking_a_call_back_request_stops_its_deadline() {
    let mut w = World::new(settings(|s| {
        s.visitor_grace = Duration::from_secs(10);
        s.offline_callback = Some(Duration::from_secs(3600));
        s.close_after_inactive = Some(Duration::from_secs(600));
    }));
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    w.advance(Duration::from_secs(1800), Activity::default());
    w.op("a");
    w.run(Command::Accept {
        op: OperatorId::from("a"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert_eq!(w.conv("c1").unwrap().callback_until, None);
    // The operator writes to the visitor who left a message; past the old call-back
    // deadline the conversation is still theirs.
    let said = w.now + 1_000;
    let answered = answered_at(T0, said);
    w.advance(Duration::from_secs(500), answered);
    assert_eq!(w.conv("c1").unwrap().state, ConvState::Active);
    // Then ten minutes without the visitor's answer close it as usual.
    w.advance(Duration::from_secs(200), answered);
    assert!(w.conv("c1").is_none());
}

#[test]
fn operator_grace_requeues_their_conversations_and_marks_them_inactive() {
    let mut w = World::new(settings(|s| {
        s.operator_grace = Duration::from_secs(60);
        s.routing = Routing::Auto;
    }));
    w.op("a");
    w.visitor_starts("v1", "c1");
    assert_eq!(w.conv("c1").unwrap().operator, Some(OperatorId::from("a")));
    w.run(Command::OperatorDisconnected {
        node: NodeId::from("n1"),
        op: OperatorId::from("a"),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::OperatorAway,
            ..
        }
    )));
    // Back within the grace: nothing lost.
    w.advance(Duration::from_secs(30), Activity::default());
    w.run(Command::OperatorConnected {
        node: NodeId::from("n1"),
        op: OperatorId::from("a"),
        name: "A".into(),
        max_chats: None,
        queues: None,
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::OperatorBack,
            ..
        }
    )));
    w.run(Command::OperatorDisconnected {
        node: NodeId::from("n1"),
        op: OperatorId::from("a"),
    })
    .unwrap();
    w.op("b");
    w.advance(Duration::from_secs(61), Activity::default());
    let a = &w.st.operators[&OperatorId::from("a")];
    assert_eq!((a.status, a.convs.len()), (OperatorStatus::Inactive, 0));
    // Auto routing hands it to b right away.
    assert_eq!(w.conv("c1").unwrap().operator, Some(OperatorId::from("b")));
}

/// A visitor's activity: waiting for an answer since `since`.
fn waiting_since(since: Millis) -> Activity {
    let mut a = Activity::default();
    a.record(crate::protocol::Role::Visitor, since);
    a
}

/// A visitor's activity: the operator's word last, at `at`.
fn answered_at(visitor: Millis, at: Millis) -> Activity {
    let mut a = waiting_since(visitor);
    a.record(crate::protocol::Role::Operator, at);
    a
}

fn operator_of(w: &World, conv: &str) -> Option<String> {
    w.conv(conv)
        .and_then(|c| c.operator.as_ref().map(|o| o.to_string()))
}

/// Manual routing: the visitor writes before anyone accepts; accepting arms the reassign
/// timer (nobody set it by hand), which moves the conversation on after `reassign_after` of
/// silence from the accept — then again from the next operator, never back to one who had it.
#[test]
fn reassign_after_is_armed_by_the_accept_and_moves_on_from_each_operator_once() {
    let mut w = World::new(settings(|s| {
        s.reassign_after = Some(Duration::from_secs(120));
        s.close_after_inactive = None;
    }));
    for op in ["a", "b", "c"] {
        w.op(op);
    }
    w.visitor_starts("v", "c1");
    let wrote = w.now;
    w.advance(Duration::from_secs(30), waiting_since(wrote));
    accept(&mut w, "a", "c1").unwrap();
    let accepted = w.now;
    assert_eq!(
        w.timers.get(&TimerKind::Reassign(ConvId::from("c1"))),
        Some(&(accepted + 120_000)),
        "armed by the accept"
    );
    // 119 s after the accept a still has it: the clock runs from the accept, not from the
    // visitor's message half a minute earlier.
    w.advance(Duration::from_secs(119), waiting_since(wrote));
    assert_eq!(operator_of(&w, "c1").as_deref(), Some("a"));
    w.advance(Duration::from_secs(2), waiting_since(wrote));
    let moved = operator_of(&w, "c1").unwrap();
    assert_ne!(moved, "a");
    assert!(w.effects.iter().any(|e| matches!(
        e,
        Effect::System {
            note: Note::Reassigned,
            ..
        }
    )));
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Transferred, reason: Some(r), .. } if r == "reassigned")));
    // The next operator is silent too: on to the third, never back to a.
    w.advance(Duration::from_secs(121), waiting_since(wrote));
    let third = operator_of(&w, "c1").unwrap();
    assert!(third != "a" && third != moved, "{third}");
    // Nobody else is left: it stays, and is looked at again after another period.
    w.advance(Duration::from_secs(121), waiting_since(wrote));
    assert_eq!(operator_of(&w, "c1"), Some(third));
    assert!(w
        .timers
        .contains_key(&TimerKind::Reassign(ConvId::from("c1"))));
}

/// Nobody waits (the operator answered): the timer does nothing and is not set again; the
/// visitor's next unanswered message starts the clock (the engine sets the timer then).
#[test]
fn reassign_after_needs_a_waiting_visitor() {
    let mut w = World::new(settings(|s| {
        s.reassign_after = Some(Duration::from_secs(120));
        s.close_after_inactive = None;
    }));
    w.op("a");
    w.op("b");
    w.visitor_starts("v", "c1");
    accept(&mut w, "a", "c1").unwrap();
    let t = w.now;
    w.advance(Duration::from_secs(121), answered_at(t, t + 10_000));
    assert_eq!(operator_of(&w, "c1").as_deref(), Some("a"));
    assert!(!w
        .timers
        .contains_key(&TimerKind::Reassign(ConvId::from("c1"))));
}

/// A transfer to an operator, and an assignment, arm the timer for the new operator.
#[test]
fn reassign_after_is_armed_by_a_transfer_and_an_assignment() {
    let mut w = World::new(settings(|s| {
        s.reassign_after = Some(Duration::from_secs(120));
        s.close_after_inactive = None;
    }));
    for op in ["a", "b", "c"] {
        w.op(op);
    }
    w.visitor_starts("v", "c1");
    let wrote = w.now;
    accept(&mut w, "a", "c1").unwrap();
    w.advance(Duration::from_secs(60), waiting_since(wrote));
    w.run(Command::Transfer {
        by: Actor::Operator(OperatorId::from("a")),
        conv: ConvId::from("c1"),
        to: TransferTarget::Operator("b".into()),
        note: None,
    })
    .unwrap();
    assert_eq!(
        w.timers.get(&TimerKind::Reassign(ConvId::from("c1"))),
        Some(&(w.now + 120_000)),
        "armed for b from the transfer"
    );
    w.advance(Duration::from_secs(121), waiting_since(wrote));
    assert_eq!(
        operator_of(&w, "c1").as_deref(),
        Some("c"),
        "a already had it"
    );
    w.run(Command::Assign {
        conv: ConvId::from("c1"),
        op: OperatorId::from("a"),
    })
    .unwrap();
    assert_eq!(
        w.timers.get(&TimerKind::Reassign(ConvId::from("c1"))),
        Some(&(w.now + 120_000))
    );
}

/// `close_after_inactive` closes an active conversation that long after the operator's last
/// message when the visitor has not answered — and never a visitor waiting in the queue or
/// for an answer.
#[test]
fn close_after_inactive_counts_from_the_operators_last_word() {
    let mut w = World::new(settings(|s| {
        s.close_after_inactive = Some(Duration::from_secs(600))
    }));
    w.op("a");
    w.visitor_starts("v", "c1");
    let wrote = w.now;
    // Waiting in the queue for an hour: not closed, no inactivity timer at all.
    w.advance(Duration::from_secs(3600), waiting_since(wrote));
    assert!(w.conv("c1").is_some());
    assert!(!w
        .timers
        .contains_key(&TimerKind::Inactive(ConvId::from("c1"))));
    accept(&mut w, "a", "c1").unwrap();
    // The operator ignores the visitor: still not this rule's business.
    w.advance(Duration::from_secs(1800), waiting_since(wrote));
    assert!(w.conv("c1").is_some(), "an ignored visitor is not closed");
    // The operator answers; the visitor says nothing for ten minutes: closed.
    let said = w.now;
    w.advance(Duration::from_secs(599), answered_at(wrote, said));
    assert!(w.conv("c1").is_some());
    w.advance(Duration::from_secs(2), answered_at(wrote, said));
    assert!(w.conv("c1").is_none());
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Closed, conv, .. } if conv.outcome.as_deref() == Some("inactive"))));
}

/// A visitor who answered is not closed for the operator's silence after it.
#[test]
fn close_after_inactive_spares_a_visitor_who_answered() {
    let mut w = World::new(settings(|s| {
        s.close_after_inactive = Some(Duration::from_secs(600))
    }));
    w.op("a");
    w.visitor_starts("v", "c1");
    accept(&mut w, "a", "c1").unwrap();
    let t = w.now;
    let mut a = answered_at(t, t + 1_000);
    a.record(crate::protocol::Role::Visitor, t + 2_000);
    w.advance(Duration::from_secs(3600), a);
    assert!(w.conv("c1").is_some());
}

/// A changed setting applies to running conversations at once: a shorter inactivity close
/// closes a conversation whose timer was set under the longer one; turning a rule off drops
/// its timers.
#[test]
fn changed_timing_settings_apply_to_running_conversations() {
    let mut w = World::new(settings(|s| {
        s.close_after_inactive = Some(Duration::from_secs(3600));
        s.reassign_after = Some(Duration::from_secs(120));
    }));
    w.op("a");
    w.visitor_starts("v", "c1");
    accept(&mut w, "a", "c1").unwrap();
    let t = w.now;
    w.advance(Duration::from_secs(100), answered_at(t, t + 1_000));
    w.settings.close_after_inactive = Some(Duration::from_secs(60));
    w.settings.reassign_after = None;
    w.run(Command::SettingsChanged { retime: true }).unwrap();
    assert!(!w
        .timers
        .contains_key(&TimerKind::Reassign(ConvId::from("c1"))));
    w.advance(Duration::ZERO, answered_at(t, t + 1_000));
    assert!(w.conv("c1").is_none(), "closed under the new setting");
}

#[test]
fn unavailability_notice_once_per_wait_and_only_with_no_active_operator() {
    let mut w = World::new(Settings::default());
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorWrote {
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Notice {
            code: "unavailable",
            ..
        }
    )));
    w.run(Command::VisitorWrote {
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(!w.saw(|e| matches!(e, Effect::Notice { .. })), "not twice");
    let mut w = World::new(Settings::default());
    w.op("a");
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorWrote {
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(!w.saw(|e| matches!(e, Effect::Notice { .. })));
    let mut w = World::new(settings(|s| s.notify_unavailable = false));
    w.visitor_starts("v", "c1");
    w.run(Command::VisitorWrote {
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(!w.saw(|e| matches!(e, Effect::Notice { .. })));
}

#[test]
fn operators_only_see_and_take_their_queues() {
    let mut w = World::new(settings(|s| s.routing = Routing::Auto));
    w.run(Command::OperatorConnected {
        node: NodeId::from("n1"),
        op: OperatorId::from("billing-only"),
        name: "B".into(),
        max_chats: Some(2),
        queues: Some(vec![QueueId::from("billing")]),
    })
    .unwrap();
    w.run(Command::SetStatus {
        op: OperatorId::from("billing-only"),
        status: OperatorStatus::Active,
    })
    .unwrap();
    w.visitor_starts("v", "c1");
    assert_eq!(
        w.conv("c1").unwrap().state,
        ConvState::Queued,
        "general is not served"
    );
    assert_eq!(
        accept(&mut w, "billing-only", "c1").unwrap_err().code,
        ErrorCode::Forbidden
    );
}

// ----- properties -----

#[derive(Debug, Clone)]
enum Step {
    OperatorConnect(u8, u8),
    OperatorDisconnect(u8, u8),
    Status(u8, u8),
    VisitorConnect(u8, u8),
    VisitorDisconnect(u8, u8),
    NodeGone(u8),
    Start(u8),
    Accept(u8, u8),
    Decline(u8, u8),
    TransferToOperator(u8, u8, u8),
    TransferQueue(u8, u8),
    Assign(u8, u8),
    Close(u8),
    Advance(u16),
}

fn op_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..4u8, 0..2u8).prop_map(|(a, n)| Step::OperatorConnect(a, n)),
        (0..4u8, 0..2u8).prop_map(|(a, n)| Step::OperatorDisconnect(a, n)),
        (0..4u8, 0..3u8).prop_map(|(a, b)| Step::Status(a, b)),
        (0..8u8, 0..2u8).prop_map(|(a, n)| Step::VisitorConnect(a, n)),
        (0..8u8, 0..2u8).prop_map(|(a, n)| Step::VisitorDisconnect(a, n)),
        (0..2u8).prop_map(Step::NodeGone),
        (0..8u8).prop_map(Step::Start),
        (0..4u8, 0..10u8).prop_map(|(a, b)| Step::Accept(a, b)),
        (0..4u8, 0..10u8).prop_map(|(a, b)| Step::Decline(a, b)),
        (0..4u8, 0..10u8, 0..4u8).prop_map(|(a, b, c)| Step::TransferToOperator(a, b, c)),
        (0..4u8, 0..10u8).prop_map(|(a, b)| Step::TransferQueue(a, b)),
        (0..10u8, 0..4u8).prop_map(|(a, b)| Step::Assign(a, b)),
        (0..10u8).prop_map(Step::Close),
        (0..120u16).prop_map(Step::Advance),
    ]
}

fn routing_strategy() -> impl Strategy<Value = Routing> {
    prop_oneof![
        Just(Routing::Manual),
        Just(Routing::Offer),
        Just(Routing::Auto)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Whatever happens: at most one operator per conversation (and consistent both ways),
    /// no operator above max_chats, no rejected command changes anything (checked in `run`).
    #[test]
    fn invariants_hold_under_any_sequence(routing in routing_strategy(), max in 1..3u32, ops in proptest::collection::vec(op_strategy(), 1..120)) {
        let mut w = World::new(settings(|s| {
            s.routing = routing;
            s.max_chats = max;
            s.accept_timeout = Duration::from_secs(20);
            s.visitor_grace = Duration::from_secs(30);
            s.operator_grace = Duration::from_secs(30);
            s.offline_callback = Some(Duration::from_secs(60));
        }));
        let mut convs = 0u32;
        let op = |i: u8| OperatorId(format!("op{i}"));
        let conv = |i: u8| ConvId(format!("c{i}"));
        let node = |i: u8| NodeId(format!("n{i}"));
        for o in ops {
            let _ = match o {
                Step::OperatorConnect(i, n) => w.run(Command::OperatorConnected { op: op(i), node: node(n), name: format!("O{i}"), max_chats: None, queues: None }),
                Step::OperatorDisconnect(i, n) => w.run(Command::OperatorDisconnected { op: op(i), node: node(n) }),
                Step::Status(i, s) => w.run(Command::SetStatus { op: op(i), status: [OperatorStatus::Active, OperatorStatus::Away, OperatorStatus::Inactive][s as usize] }),
                Step::VisitorConnect(i, n) => w.run(Command::VisitorConnected { visitor: VisitorId(format!("v{i}")), node: node(n), counted: None }),
                Step::VisitorDisconnect(i, n) => {
                    let visitor = VisitorId(format!("v{i}"));
                    let conv = w.st.visitors.get(&visitor).and_then(|v| v.conv.clone()).unwrap_or(ConvId::from("gone"));
                    w.run(Command::VisitorDisconnected { visitor, node: node(n), conv })
                }
                Step::NodeGone(n) => w.run(Command::NodeGone { node: node(n) }),
                Step::Start(i) => {
                    convs += 1;
                    w.run(Command::Start { visitor: VisitorId(format!("v{i}")), node: node(0), conv: ConvId(format!("c{}", convs % 10)), queue: None, profile: Box::default(), previous: None, offline: false })
                }
                Step::Accept(i, c) => w.run(Command::Accept { op: op(i), conv: conv(c) }),
                Step::Decline(i, c) => w.run(Command::Decline { op: op(i), conv: conv(c) }),
                Step::TransferToOperator(i, c, t) => w.run(Command::Transfer { by: Actor::Operator(op(i)), conv: conv(c), to: TransferTarget::Operator(format!("op{t}")), note: None }),
                Step::TransferQueue(i, c) => w.run(Command::Transfer { by: Actor::Operator(op(i)), conv: conv(c), to: TransferTarget::Queue("billing".into()), note: None }),
                Step::Assign(c, i) => w.run(Command::Assign { conv: conv(c), op: op(i) }),
                Step::Close(c) => w.run(Command::Close { by: Actor::System, conv: conv(c), outcome: None, tags: vec![] }),
                Step::Advance(s) => {
                    w.advance(Duration::from_secs(u64::from(s)), Activity::default());
                    Ok(Reply::None)
                }
            };
            // `run` already checked the invariants after every committed command.
            for o in w.st.operators.values() {
                prop_assert!(o.convs.len() as u32 <= max);
            }
        }
    }

    /// An operator who let an offer lapse is never offered that conversation again.
    #[test]
    fn lapsed_offers_never_come_back(ops in proptest::collection::vec(0..4u8, 1..40)) {
        let mut w = World::new(settings(|s| {
            s.routing = Routing::Offer;
            s.accept_timeout = Duration::from_secs(10);
            s.max_chats = 5;
        }));
        for i in 0..3 { w.op(&format!("op{i}")); }
        w.visitor_starts("v", "c");
        let mut lapsed: BTreeSet<OperatorId> = BTreeSet::new();
        for o in ops {
            let offered = w.conv("c").and_then(|c| c.offered_to.clone());
            match o {
                0 | 1 => {
                    if let Some(op) = offered { lapsed.insert(op); }
                    w.advance(Duration::from_secs(11), Activity::default());
                }
                2 => { w.op(&format!("late{}", lapsed.len())); }
                _ => {
                    let _ = w.run(Command::SetStatus { op: OperatorId::from("op0"), status: OperatorStatus::Active });
                }
            }
            if let Some(c) = w.conv("c") {
                if let Some(to) = &c.offered_to { prop_assert!(!lapsed.contains(to), "re-offered to {to}"); }
            }
        }
    }
}

#[test]
fn the_staff_edit_details_of_any_open_conversation_of_the_site() {
    let mut w = World::new(Settings::default());
    w.op("a");
    w.visitor_starts("v1", "c1");
    w.effects.clear();
    let edit = |conv: &str| Command::Identify {
        visitor: None,
        conv: ConvId::from(conv),
        name: None,
        email: Some("ann@example.com".into()),
        phone: None,
        params: [("crm".to_owned(), "42".to_owned())].into(),
    };
    w.run(edit("c1")).unwrap();
    let c = w.conv("c1").unwrap();
    assert_eq!(c.profile.email.as_deref(), Some("ann@example.com"));
    assert_eq!(c.profile.params["crm"], "42");
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Updated, reason: Some(r), .. } if r == "edited")));
    assert_eq!(w.run(edit("nope")).unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn an_invitation_goes_to_the_operator_asked_for_or_waits_in_the_queue() {
    let mut w = World::new(Settings::default());
    w.op("a");
    let invite = |v: &str, conv: &str, op: Option<&str>| Command::Invite {
        visitor: VisitorId::from(v),
        conv: ConvId::from(conv),
        queue: None,
        operator: op.map(OperatorId::from),
        profile: Box::new(VisitorProfile {
            name: Some("Ann".into()),
            ..VisitorProfile::default()
        }),
    };
    // To a present operator: active at once, the visitor (away) finds it when back.
    let Reply::Conv(c) = w.run(invite("v1", "c1", Some("a"))).unwrap() else {
        panic!("an invitation answers with the conversation")
    };
    assert_eq!(c.state, ConvState::Active);
    assert_eq!(c.operator.as_ref().map(|o| o.id.as_str()), Some("a"));
    assert!(w.saw(
        |e| matches!(e, Effect::Attach { who: Participant::Visitor(v), .. } if v.as_str() == "v1")
    ));
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Assigned, reason: Some(r), .. } if r == "invited")));
    // One open conversation per visitor.
    assert_eq!(
        w.run(invite("v1", "c2", None)).unwrap_err().code,
        ErrorCode::Conflict
    );
    // To an absent operator: refused, and nothing was started.
    let before = w.st.clone();
    assert_eq!(
        w.run(invite("v2", "c3", Some("ghost"))).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(w.st, before);
    // Without an operator: routed like any waiting conversation.
    let Reply::Conv(c) = w.run(invite("v2", "c3", None)).unwrap() else {
        panic!("an invitation answers with the conversation")
    };
    assert_ne!(c.state, ConvState::Closed);
    assert!(w.conv("c3").is_some());
}

#[test]
fn a_visitor_identifies_mid_conversation_and_staff_see_it() {
    let mut w = World::new(Settings::default());
    w.op("a");
    w.visitor_starts("v1", "c1");
    accept(&mut w, "a", "c1").unwrap();
    let identify = |name: Option<&str>, params: &[(&str, &str)]| Command::Identify {
        visitor: Some(VisitorId::from("v1")),
        conv: ConvId::from("c1"),
        name: name.map(str::to_owned),
        email: None,
        phone: Some("+420 123".into()),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let reply = w
        .run(identify(Some("Ann"), &[("plan", "gold"), ("cart", "3")]))
        .unwrap();
    let Reply::Conv(c) = reply else {
        panic!("identify answers with the conversation")
    };
    assert_eq!(c.visitor.name.as_deref(), Some("Ann"));
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::Updated, reason: Some(r), .. } if r == "visitor")));
    // The same details again (a page load repeating what it knows): nothing changes, nobody
    // is told.
    w.effects.clear();
    w.run(identify(Some("Ann"), &[("plan", "gold")])).unwrap();
    assert!(!w.saw(|e| matches!(e, Effect::Conv { .. } | Effect::Queue { .. })));
    // Absent fields stay; an empty parameter removes it.
    w.run(identify(None, &[("cart", "")])).unwrap();
    let profile = &w.conv("c1").unwrap().profile;
    assert_eq!(profile.name.as_deref(), Some("Ann"));
    assert_eq!(profile.phone.as_deref(), Some("+420 123"));
    assert_eq!(
        profile.params.iter().collect::<Vec<_>>(),
        vec![(&"plan".to_owned(), &"gold".to_owned())]
    );
    // Nobody identifies for someone else's conversation, or past the parameter limit.
    let mut other = identify(Some("Eve"), &[]);
    if let Command::Identify { visitor, .. } = &mut other {
        *visitor = Some(VisitorId::from("v2"));
    }
    assert_eq!(w.run(other).unwrap_err().code, ErrorCode::NotFound);
    let many: Vec<(String, String)> = (0..60).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        w.run(identify(None, &many)).unwrap_err().code,
        ErrorCode::TooLarge
    );
    assert_eq!(w.conv("c1").unwrap().profile.params.len(), 1);
    // A waiting conversation's new details reach the queue's listing too.
    w.visitor_starts("v3", "c3");
    w.effects.clear();
    w.run(Command::Identify {
        visitor: Some(VisitorId::from("v3")),
        conv: ConvId::from("c3"),
        name: Some("Vera".into()),
        email: None,
        phone: None,
        params: BTreeMap::new(),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(e, Effect::Queue { queue } if queue.as_str() == "general")));
}

#[test]
fn a_line_routes_and_times_out_by_its_own_settings() {
    // The site routes manually; the billing line offers, with a 10 s accept timeout, and lets
    // an operator hold one of its conversations.
    let mut w = World::new(Settings::default());
    w.lines.insert(
        QueueId::from("billing"),
        Settings {
            routing: Routing::Offer,
            accept_timeout: Duration::from_secs(10),
            max_chats: 1,
            ..Settings::default()
        },
    );
    w.op("o1");
    let start = |w: &mut World, v: &str, conv: &str, queue: &str| {
        w.run(Command::VisitorConnected {
            node: NodeId::from("n1"),
            visitor: VisitorId::from(v),
            counted: None,
        })
        .unwrap();
        w.run(Command::Start {
            node: NodeId::from("n1"),
            visitor: VisitorId::from(v),
            conv: ConvId::from(conv),
            queue: Some(QueueId::from(queue)),
            profile: Box::default(),
            previous: None,
            offline: false,
        })
        .unwrap();
    };
    start(&mut w, "v1", "c1", "general");
    assert_eq!(
        w.st.convs[&ConvId::from("c1")].state,
        ConvState::Queued,
        "manual: it waits"
    );
    start(&mut w, "v2", "c2", "billing");
    let c2 = &w.st.convs[&ConvId::from("c2")];
    assert_eq!(c2.state, ConvState::Offered, "the line offers");
    assert_eq!(c2.offer_expires, Some(w.now + 10_000));
    w.run(Command::Accept {
        op: OperatorId::from("o1"),
        conv: ConvId::from("c2"),
    })
    .unwrap();
    // The line's max_chats (1): a second billing conversation is not offered to o1, who
    // holds one; a general one could still be taken by hand (the site's limit is 5).
    start(&mut w, "v3", "c3", "billing");
    assert_eq!(w.st.convs[&ConvId::from("c3")].state, ConvState::Queued);
    w.run(Command::Accept {
        op: OperatorId::from("o1"),
        conv: ConvId::from("c1"),
    })
    .unwrap();
}

/// A visitor without an open conversation is no part of the site's state: connecting and
/// leaving costs no transition, and the presence of a conversation leaves with it.
#[test]
fn a_browsing_visitor_is_no_transition_and_presence_leaves_with_the_conversation() {
    let mut w = World::new(Settings::default());
    let v = VisitorId::from("v");
    let version = w.st.version;
    let reply = w
        .run(Command::VisitorConnected {
            node: NodeId::from("n1"),
            visitor: v.clone(),
            counted: None,
        })
        .unwrap();
    assert!(matches!(reply, Reply::None));
    assert_eq!(w.st.version, version, "a browsing visitor changed nothing");
    assert!(w.st.visitors.is_empty());

    // Starting counts the starting connection; a second tab counts itself once.
    w.visitor_starts("v", "c1");
    assert_eq!(w.st.visitors[&v].conns.total(), 1);
    let second = w
        .run(Command::VisitorConnected {
            node: NodeId::from("n2"),
            visitor: v.clone(),
            counted: None,
        })
        .unwrap();
    assert!(matches!(second, Reply::Counted(ref c) if c.as_str() == "c1"));
    let again = w
        .run(Command::VisitorConnected {
            node: NodeId::from("n2"),
            visitor: v.clone(),
            counted: Some(ConvId::from("c1")),
        })
        .unwrap();
    assert!(matches!(again, Reply::None), "counted for c1 already");
    assert_eq!(w.st.visitors[&v].conns.total(), 2);

    // Closed while both tabs are open: the visitor leaves the state with it.
    w.run(Command::Close {
        by: Actor::Visitor(v.clone()),
        conv: ConvId::from("c1"),
        outcome: None,
        tags: vec![],
    })
    .unwrap();
    assert!(w.st.visitors.is_empty());

    // A new conversation from the first tab; the second tab's late disconnect names c1 and
    // takes nothing from c2's presence.
    w.visitor_starts("v", "c2");
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: v.clone(),
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert_eq!(w.st.visitors[&v].conns.total(), 1);
    assert!(w.view("c2").visitor.online);
}

/// An invited visitor is not counted until a tab of theirs is attached and counts itself:
/// then staff learn they are here.
#[test]
fn an_invited_visitor_is_counted_when_a_tab_counts_itself() {
    let mut w = World::new(Settings::default());
    let v = VisitorId::from("v");
    w.run(Command::Invite {
        visitor: v.clone(),
        conv: ConvId::from("c1"),
        queue: None,
        operator: None,
        profile: Box::default(),
    })
    .unwrap();
    assert!(!w.view("c1").visitor.online);
    let reply = w
        .run(Command::VisitorConnected {
            node: NodeId::from("n1"),
            visitor: v.clone(),
            counted: None,
        })
        .unwrap();
    assert!(matches!(reply, Reply::Counted(ref c) if c.as_str() == "c1"));
    assert!(w.saw(|e| matches!(e, Effect::Conv { event: ConvEvent::VisitorBack, conv, .. } if conv.visitor.online)));
    // Its disconnect starts the grace, as for any conversation.
    w.run(Command::VisitorDisconnected {
        node: NodeId::from("n1"),
        visitor: v,
        conv: ConvId::from("c1"),
    })
    .unwrap();
    assert!(w.saw(|e| matches!(
        e,
        Effect::Conv {
            event: ConvEvent::VisitorAway,
            ..
        }
    )));
}
