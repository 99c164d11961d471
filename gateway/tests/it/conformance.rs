//! The engine conformance suite: every case is written once, generic over [`Engine`], and the
//! `conformance!` macro runs all of them against each engine (the Redis engine joins here).
//! Engines are made with a log capped at 5 messages so trimming is exercised.

use std::collections::BTreeSet;
use std::sync::Arc;

use gateway::core::{
    self, Command, ConvId, OperatorId, QueueId, Settings, SiteId, TimerKind, VisitorId,
};
use gateway::engine::memory::{MemoryConfig, MemoryEngine};
use gateway::engine::{AppendOutcome, AppendRefusal, ConvMeta, Engine, NewMessage, Replay, SiteTx};
use gateway::hub::{Channel, ConnShared, Hub};
use gateway::protocol::{
    Author, ConvState, Conversation, Encoding, OperatorRef, Role, VisitorView,
};
use tokio_tungstenite::tungstenite::Message;

pub const LOG_CAP: usize = 5;

fn snapshot(conv: &str, state: ConvState, operator: Option<&str>) -> Conversation {
    Conversation {
        id: conv.into(),
        site: "s".into(),
        queue: "general".into(),
        state,
        visitor: VisitorView {
            id: "v1".into(),
            name: None,
            online: true,
            preview: None,
            email: None,
            phone: None,
            params: Default::default(),
        },
        operator: operator.map(|o| OperatorRef {
            id: o.into(),
            name: o.into(),
        }),
        last_seq: 0,
        tags: vec![],
        created_at: 1,
        previous: None,
        recovered: None,
        outcome: None,
        draft: None,
    }
}

fn author(role: Role, id: &str) -> Author {
    Author {
        role,
        id: id.into(),
        name: None,
    }
}

fn msg(conv: &str, role: Role, id: &str, cid: Option<&str>, text: &str, ts: u64) -> NewMessage {
    NewMessage {
        conv: ConvId::from(conv),
        cid: cid.map(str::to_owned),
        from: author(role, id),
        text: text.into(),
        ts,
    }
}

async fn open_conv<E: Engine>(e: &E, conv: &str) {
    e.put_meta(
        &ConvId::from(conv),
        ConvMeta::from_snapshot(&snapshot(conv, ConvState::Active, Some("op1"))),
    )
    .await
    .unwrap();
}

fn stored(o: AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored(a) => a.msg.seq,
        other => panic!("expected stored, got {other:?}"),
    }
}

/// A local listener on a conversation's channel, to see what the engine publishes.
fn listen(hub: &Hub, conv: &str, id: u64) -> tokio::sync::mpsc::UnboundedReceiver<Message> {
    let (c, rx) = ConnShared::new(
        gateway::core::ConnId(id),
        Role::Operator,
        Encoding::Json,
        None,
        1 << 20,
        0,
    );
    hub.register(c);
    hub.subscribe(gateway::core::ConnId(id), Channel::Conv(ConvId::from(conv)));
    rx
}

fn published_seqs(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Message>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["t"] == "msg" {
            out.push(v["seq"].as_u64().unwrap());
        }
    }
    out
}

pub async fn append_assigns_contiguous_seqs_and_publishes_in_order<E: Engine>(hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let mut rx = listen(&hub, "c1", 1);
    for i in 0..4u64 {
        let role = if i % 2 == 0 {
            Role::Visitor
        } else {
            Role::Operator
        };
        let id = if i % 2 == 0 { "v1" } else { "op1" };
        let seq = stored(
            e.append(msg("c1", role, id, Some(&format!("m{i}")), "hi", 10 + i))
                .await
                .unwrap(),
        );
        assert_eq!(seq, i + 1);
    }
    assert_eq!(e.last_seq(&ConvId::from("c1")).await.unwrap(), 4);
    assert_eq!(published_seqs(&mut rx), vec![1, 2, 3, 4]);
}

pub async fn append_is_idempotent_by_cid<E: Engine>(hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let mut rx = listen(&hub, "c1", 1);
    let a = stored(
        e.append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 1))
            .await
            .unwrap(),
    );
    match e
        .append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 2))
        .await
        .unwrap()
    {
        AppendOutcome::Duplicate(m) => assert_eq!((m.seq, m.ts), (a, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(published_seqs(&mut rx), vec![a]);
    let b = stored(
        e.append(msg("c1", Role::Visitor, "v1", Some("y"), "next", 3))
            .await
            .unwrap(),
    );
    assert_eq!(b, a + 1);
}

pub async fn append_refuses_strangers_closed_and_unknown<E: Engine>(_hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let r = |o: AppendOutcome| match o {
        AppendOutcome::Refused(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        r(e.append(msg("c1", Role::Visitor, "v2", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::Forbidden
    );
    assert_eq!(
        r(e.append(msg("c1", Role::Operator, "op2", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::Forbidden
    );
    assert_eq!(
        r(e.append(msg("c1", Role::Supervisor, "s", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::Forbidden
    );
    assert_eq!(
        r(e.append(msg("nope", Role::Visitor, "v1", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::NotFound
    );
    e.put_meta(
        &ConvId::from("c1"),
        ConvMeta::from_snapshot(&snapshot("c1", ConvState::Closed, Some("op1"))),
    )
    .await
    .unwrap();
    assert_eq!(
        r(e.append(msg("c1", Role::Visitor, "v1", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::Closed
    );
    // System messages (e.g. "closed") still go in.
    assert_eq!(
        stored(
            e.append(msg("c1", Role::System, "system", None, "bye", 2))
                .await
                .unwrap()
        ),
        1
    );
}

pub async fn replay_is_all_or_nothing<E: Engine>(_hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let c = ConvId::from("c1");
    assert_eq!(e.replay(&c, 0).await.unwrap(), Replay::Recovered(vec![]));
    for i in 0..3u64 {
        e.append(msg(
            "c1",
            Role::Visitor,
            "v1",
            Some(&format!("m{i}")),
            &format!("t{i}"),
            i,
        ))
        .await
        .unwrap();
    }
    match e.replay(&c, 1).await.unwrap() {
        Replay::Recovered(m) => assert_eq!(m.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]),
        Replay::Lost => panic!("lost"),
    }
    assert_eq!(e.replay(&c, 3).await.unwrap(), Replay::Recovered(vec![]));
    assert_eq!(
        e.replay(&c, 9).await.unwrap(),
        Replay::Lost,
        "a cursor past the end"
    );
    // Fill past the cap: seqs 1..=2 of 7 are trimmed.
    for i in 3..7u64 {
        e.append(msg(
            "c1",
            Role::Visitor,
            "v1",
            Some(&format!("m{i}")),
            &format!("t{i}"),
            i,
        ))
        .await
        .unwrap();
    }
    assert_eq!(e.replay(&c, 1).await.unwrap(), Replay::Lost);
    match e.replay(&c, 2).await.unwrap() {
        Replay::Recovered(m) => assert_eq!(
            m.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7]
        ),
        Replay::Lost => panic!("lost at the edge"),
    }
}

pub async fn history_pages_backwards<E: Engine>(_hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let c = ConvId::from("c1");
    for i in 0..4u64 {
        e.append(msg(
            "c1",
            Role::Visitor,
            "v1",
            Some(&format!("m{i}")),
            &format!("t{i}"),
            i,
        ))
        .await
        .unwrap();
    }
    let p = e.history(&c, None, 2).await.unwrap();
    assert_eq!(
        p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(!p.complete);
    let p = e.history(&c, Some(3), 10).await.unwrap();
    assert_eq!(
        p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(p.complete);
    let p = e.history(&ConvId::from("none"), None, 10).await.unwrap();
    assert!(p.messages.is_empty() && p.complete);
}

pub async fn activity_tracks_the_unanswered_window<E: Engine>(_hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let c = ConvId::from("c1");
    let started = |o: AppendOutcome| match o {
        AppendOutcome::Stored(a) => a.started_unanswered,
        other => panic!("{other:?}"),
    };
    assert!(started(
        e.append(msg("c1", Role::Visitor, "v1", Some("a"), "q1", 100))
            .await
            .unwrap()
    ));
    assert!(!started(
        e.append(msg("c1", Role::Visitor, "v1", Some("b"), "q2", 200))
            .await
            .unwrap()
    ));
    let a = e.activity(&c).await.unwrap();
    assert_eq!((a.last_ts, a.unanswered_since), (200, Some(100)));
    e.append(msg("c1", Role::Operator, "op1", Some("c"), "answer", 300))
        .await
        .unwrap();
    let a = e.activity(&c).await.unwrap();
    assert_eq!((a.last_ts, a.unanswered_since), (300, None));
}

/// Two transitions race on one site; the core on each side decides; exactly one accept wins.
pub async fn site_transitions_are_atomic<E: Engine>(_hub: Arc<Hub>, e: E) {
    let site = SiteId::from("s");
    let settings = Settings::default();
    let queues = vec![QueueId::from("general")];
    let run = |cmd: Command| {
        let (e, site, settings, queues) = (&e, site.clone(), settings.clone(), queues.clone());
        async move {
            loop {
                let mut tx = e.begin(&site).await.unwrap();
                let ctx = core::Ctx {
                    settings: &settings,
                    queues: &queues,
                    now: 1000,
                };
                let res = core::handle(tx.state(), ctx, cmd.clone());
                match res {
                    Err(rej) => return Err(rej),
                    Ok(_) => match tx.commit().await {
                        Ok(()) => return Ok(()),
                        Err(gateway::engine::EngineError::Conflict) => continue,
                        Err(err) => panic!("{err}"),
                    },
                }
            }
        }
    };
    for op in ["a", "b"] {
        run(Command::OperatorConnected {
            op: OperatorId::from(op),
            name: op.into(),
            max_chats: None,
            queues: None,
        })
        .await
        .unwrap();
    }
    run(Command::VisitorConnected {
        visitor: VisitorId::from("v"),
    })
    .await
    .unwrap();
    run(Command::Start {
        visitor: VisitorId::from("v"),
        conv: ConvId::from("c"),
        queue: None,
        profile: Box::default(),
        previous: None,
    })
    .await
    .unwrap();
    let (x, y) = tokio::join!(
        run(Command::Accept {
            op: OperatorId::from("a"),
            conv: ConvId::from("c")
        }),
        run(Command::Accept {
            op: OperatorId::from("b"),
            conv: ConvId::from("c")
        }),
    );
    assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "{x:?} {y:?}");
    let mut tx = e.begin(&site).await.unwrap();
    core::check_invariants(tx.state(), &settings).unwrap();
    assert_eq!(
        tx.state().convs[&ConvId::from("c")].state,
        ConvState::Active
    );
}

pub async fn timers_fire_once_and_move<E: Engine>(_hub: Arc<Hub>, e: E) {
    let s = SiteId::from("s");
    let k1 = TimerKind::Offer(ConvId::from("c1"));
    let k2 = TimerKind::VisitorGrace(VisitorId::from("v1"));
    e.set_timer(&s, &k1, 100, false).await.unwrap();
    e.set_timer(&s, &k1, 300, false).await.unwrap(); // moved
    e.set_timer(&s, &k2, 200, false).await.unwrap();
    e.set_timer(&s, &k2, 50, true).await.unwrap(); // kept: only if absent
    assert_eq!(e.next_timer().await.unwrap(), Some(200));
    assert!(e.due_timers(150, 10).await.unwrap().is_empty());
    let (a, b) = tokio::join!(e.due_timers(250, 10), e.due_timers(250, 10));
    let mut fired: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(fired, vec![(s.clone(), k2.clone())], "claimed exactly once");
    e.cancel_timer(&s, &k1).await.unwrap();
    fired = e.due_timers(1000, 10).await.unwrap();
    assert!(fired.is_empty());
    assert_eq!(e.next_timer().await.unwrap(), None);
}

pub async fn drafts_settings_and_latest_conversation<E: Engine>(_hub: Arc<Hub>, e: E) {
    let s = SiteId::from("s");
    let op = OperatorId::from("op1");
    e.set_draft(&s, &op, &ConvId::from("c1"), Some("hel".into()))
        .await
        .unwrap();
    e.set_draft(&s, &op, &ConvId::from("c2"), Some("x".into()))
        .await
        .unwrap();
    e.set_draft(&s, &op, &ConvId::from("c2"), None)
        .await
        .unwrap();
    assert_eq!(
        e.drafts(&s, &op).await.unwrap(),
        vec![(ConvId::from("c1"), "hel".to_owned())]
    );
    assert!(e
        .drafts(&s, &OperatorId::from("op2"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(e.load_settings(&s).await.unwrap(), None);
    let v = serde_json::json!({"routing": "auto"});
    e.save_settings(&s, &v).await.unwrap();
    assert_eq!(e.load_settings(&s).await.unwrap(), Some(v));
    let v1 = VisitorId::from("v1");
    assert_eq!(e.visitor_latest(&s, &v1).await.unwrap(), None);
    e.set_visitor_latest(&s, &v1, &ConvId::from("c9"))
        .await
        .unwrap();
    assert_eq!(
        e.visitor_latest(&s, &v1).await.unwrap(),
        Some(ConvId::from("c9"))
    );
    e.ping().await.unwrap();
}

pub async fn seqs_stay_contiguous_under_concurrent_appends<E: Engine>(_hub: Arc<Hub>, e: E) {
    open_conv(&e, "c1").await;
    let e = &e;
    let tasks = (0..40u64).map(|i| async move {
        let (role, id) = if i % 2 == 0 {
            (Role::Visitor, "v1")
        } else {
            (Role::Operator, "op1")
        };
        stored(
            e.append(msg("c1", role, id, Some(&format!("m{i}")), "x", i))
                .await
                .unwrap(),
        )
    });
    let seqs: BTreeSet<u64> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .collect();
    assert_eq!(seqs, (1..=40).collect());
}

pub async fn memory(hub: Arc<Hub>) -> MemoryEngine {
    let cfg = MemoryConfig {
        max_log: LOG_CAP,
        ..MemoryConfig::default()
    };
    MemoryEngine::new(hub, cfg)
}

/// Runs every case against one engine.
macro_rules! conformance {
    ($name:ident, $make:path) => {
        mod $name {
            use super::*;
            conformance!(@cases $make;
                append_assigns_contiguous_seqs_and_publishes_in_order,
                append_is_idempotent_by_cid,
                append_refuses_strangers_closed_and_unknown,
                replay_is_all_or_nothing,
                history_pages_backwards,
                activity_tracks_the_unanswered_window,
                site_transitions_are_atomic,
                timers_fire_once_and_move,
                drafts_settings_and_latest_conversation,
                seqs_stay_contiguous_under_concurrent_appends,
            );
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let hub = Hub::new();
                let engine = $make(hub.clone()).await;
                super::$case(hub, engine).await;
            }
        )*
    };
}

conformance!(memory_engine, memory);
