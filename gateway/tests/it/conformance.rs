//! The engine conformance suite: every case is written once, generic over [`Engine`], and run
//! against each engine: the in-memory engine, the Redis engine on its own `redis-server`
//! (one per case), and the Redis engine on a three-master Redis Cluster (one cluster, the
//! cases in turn, flushed between them).
//!
//! A case gets a [`Fixture`]: the engine under test and a second engine on the same store, as
//! another node would see it. Engines are made with a log capped at [`LOG_CAP`] messages so
//! that trimming is exercised.
//!
//! No case returns early on an engine it cannot apply to. The cases come in three lists (see
//! the `conformance!` call at the end): every engine; several nodes (two engines that can race
//! and die — the in-memory engine is one node); and a store the test can wipe and edit behind
//! the engine's back (Redis and Redis Cluster). On an engine a list does not apply to, its
//! cases are generated as ignored tests whose reason says why, so a run lists them by name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use gateway::bus::Channel;
use gateway::config::RedisConfig;
use gateway::core::{
    self, Command, ConvId, NodeId, OperatorId, QueueId, Settings, SiteId, TimerKind, VisitorId,
};
use gateway::engine::memory::{MemoryConfig, MemoryEngine};
use gateway::engine::redis::{RedisEngine, RedisOptions};
use gateway::engine::{
    AppendOutcome, AppendRefusal, ConvMeta, Engine, EngineError, NewMessage, Replay, SiteTx,
    TIMER_LEASE_MS,
};
use gateway::hub::{ConnShared, Hub};
use gateway::outbox::{OutboxEntry, OutboxItem, ARCHIVE_GROUP};
use gateway::protocol::{
    Author, ConvState, Conversation, Encoding, OperatorRef, Role, VisitorView,
};
use testsupport::{RedisCluster, RedisServer};

pub const LOG_CAP: usize = 5;
/// Short, so that a node life that stops beating is named dead within a second or two.
const REDIS_NODE_TIMEOUT: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(10);

/// What a case runs against.
pub struct Fixture<E> {
    /// The hub of `e`'s node: what `e` publishes reaches its subscribers.
    pub hub: Arc<Hub>,
    pub e: E,
    /// Another node on the same store.
    pub other: E,
    /// A node whose archive reads the outbox (logs keep what it does not hold yet), on the
    /// same store for Redis, on a store of its own for the in-memory engine.
    pub archived: E,
    /// Keeps a per-case Redis alive.
    _server: Option<RedisServer>,
    /// The ports of the store's Redis masters, for a case that edits it behind the engine's
    /// back (empty: the in-memory engine).
    store: Vec<u16>,
}

impl<E> Fixture<E> {
    /// Runs a command on the store: on the master that holds `key` (a cluster answers
    /// `-MOVED` on the others), or on every master when `key` is `None`.
    fn store_command(&self, key: Option<&str>, cmd: &str) -> String {
        assert!(!self.store.is_empty(), "this case needs a Redis store");
        let mut last = String::new();
        for &port in &self.store {
            last = testsupport::command(port, cmd).expect("the store answers");
            if key.is_some() && !last.starts_with("-MOVED") {
                return last;
            }
        }
        last
    }
}

fn site() -> SiteId {
    SiteId::from("s")
}

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
        offline: false,
        notes: vec![],
        read: None,
        last_message: None,
        activity: None,
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
        site: site(),
        conv: ConvId::from(conv),
        cid: cid.map(str::to_owned),
        from: author(role, id),
        text: text.into(),
        ts,
        code: None,
        args: None,
    }
}

async fn put<E: Engine>(e: &E, conv: &str, state: ConvState, op: Option<&str>, version: u64) {
    e.put_meta(
        &ConvId::from(conv),
        ConvMeta::from_snapshot(&snapshot(conv, state, op)),
        version,
    )
    .await
    .unwrap();
}

async fn open_conv<E: Engine>(e: &E, conv: &str) {
    put(e, conv, ConvState::Active, Some("op1"), 1).await;
}

fn stored(o: AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored(a) => a.msg.seq,
        other => panic!("expected stored, got {other:?}"),
    }
}

/// A local listener on a conversation's channel, to see what the engine publishes; returns
/// once the node receives that channel.
async fn listen<E: Engine>(f: &Fixture<E>, conv: &str, id: u64) -> gateway::hub::Outbox {
    let (c, rx) = ConnShared::new(
        core::ConnId(id),
        Role::Operator,
        Encoding::Json,
        None,
        1 << 20,
        1 << 20,
        0,
    );
    f.hub.register(c);
    let ch = Channel::Conv(ConvId::from(conv));
    f.hub.subscribe(core::ConnId(id), ch.clone());
    f.e.wait_subscribed(&[ch]).await.unwrap();
    rx
}

/// The seqs of the next `n` `msg` frames a listener receives.
async fn published_seqs(rx: &mut gateway::hub::Outbox, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a published message in time")
            .expect("listener open");
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if v["t"] == "msg" {
            out.push(v["seq"].as_u64().unwrap());
        }
    }
    out
}

/// Runs one command through the core against the engine, retrying on conflict.
async fn transition<E: Engine>(e: &E, cmd: Command) -> Result<(), core::Reject> {
    let settings = Settings::default();
    let queues = vec![QueueId::from("general")];
    loop {
        let mut tx = e.begin(&site()).await.unwrap();
        let ctx = core::Ctx {
            lines: gateway::core::no_lines(),
            settings: &settings,
            queues: &queues,
            now: 1000,
        };
        core::handle(tx.state(), ctx, cmd.clone())?;
        match tx.commit(&[], &[]).await {
            Ok(()) => return Ok(()),
            Err(EngineError::Conflict) => continue,
            Err(err) => panic!("{err}"),
        }
    }
}

async fn read_state<E: Engine>(e: &E) -> core::SiteState {
    let mut tx = e.begin(&site()).await.unwrap();
    tx.state().clone()
}

pub async fn append_assigns_contiguous_seqs_and_publishes_in_order<E: Engine>(f: Fixture<E>) {
    open_conv(&f.e, "c1").await;
    let mut rx = listen(&f, "c1", 1).await;
    for i in 0..4u64 {
        let (role, id) = if i % 2 == 0 {
            (Role::Visitor, "v1")
        } else {
            (Role::Operator, "op1")
        };
        // Every other message through the other node: one sequence for the conversation.
        let e = if i % 2 == 0 { &f.e } else { &f.other };
        let seq = stored(
            e.append(msg("c1", role, id, Some(&format!("m{i}")), "hi", 10 + i))
                .await
                .unwrap(),
        );
        assert_eq!(seq, i + 1);
    }
    assert_eq!(f.e.last_seq(&ConvId::from("c1")).await.unwrap(), 4);
    assert_eq!(published_seqs(&mut rx, 4).await, vec![1, 2, 3, 4]);
}

pub async fn append_is_idempotent_by_cid<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
    let mut rx = listen(&f, "c1", 1).await;
    let a = stored(
        e.append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 1))
            .await
            .unwrap(),
    );
    match f
        .other
        .append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 2))
        .await
        .unwrap()
    {
        AppendOutcome::Duplicate(m) => assert_eq!((m.seq, m.ts, m.text.as_str()), (a, 1, "once")),
        other => panic!("{other:?}"),
    }
    // The same cid from another author is another message.
    let b = stored(
        e.append(msg("c1", Role::Operator, "op1", Some("x"), "mine", 3))
            .await
            .unwrap(),
    );
    assert_eq!(b, a + 1);
    // The visitor's retry after the operator used the same cid is still the visitor's.
    match e
        .append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 4))
        .await
        .unwrap()
    {
        AppendOutcome::Duplicate(m) => assert_eq!(m.seq, a),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        published_seqs(&mut rx, 2).await,
        vec![a, b],
        "nothing twice"
    );
    // A retry after its message left the capped log is still not stored again.
    for i in 0..LOG_CAP as u64 + 1 {
        stored(
            e.append(msg(
                "c1",
                Role::Visitor,
                "v1",
                Some(&format!("f{i}")),
                "fill",
                10 + i,
            ))
            .await
            .unwrap(),
        );
    }
    let last = e.last_seq(&ConvId::from("c1")).await.unwrap();
    match f
        .other
        .append(msg("c1", Role::Visitor, "v1", Some("x"), "once", 99))
        .await
        .unwrap()
    {
        AppendOutcome::Duplicate(m) => assert_eq!((m.seq, m.text.as_str()), (a, "once")),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.last_seq(&ConvId::from("c1")).await.unwrap(), last);
}

pub async fn append_refuses_strangers_closed_and_unknown<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
    let r = |o: AppendOutcome| match o {
        AppendOutcome::Refused(r) => r,
        other => panic!("{other:?}"),
    };
    for (role, id) in [
        (Role::Visitor, "v2"),
        (Role::Operator, "op2"),
        (Role::Supervisor, "s"),
    ] {
        assert_eq!(
            r(e.append(msg("c1", role, id, None, "x", 1)).await.unwrap()),
            AppendRefusal::Forbidden,
            "{role:?} {id}"
        );
    }
    assert_eq!(
        r(e.append(msg("nope", Role::Visitor, "v1", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::NotFound
    );
    // Another site's conversation is "not found", not "forbidden": ids do not leak.
    let mut foreign = msg("c1", Role::Visitor, "v1", None, "x", 1);
    foreign.site = SiteId::from("other");
    assert_eq!(r(e.append(foreign).await.unwrap()), AppendRefusal::NotFound);
    // Queued: the visitor may write, no operator may.
    put(e, "c1", ConvState::Queued, None, 2).await;
    assert_eq!(
        r(e.append(msg("c1", Role::Operator, "op1", None, "x", 1))
            .await
            .unwrap()),
        AppendRefusal::Forbidden
    );
    put(e, "c1", ConvState::Closed, Some("op1"), 3).await;
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

pub async fn conversation_records_never_go_back_in_time<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    put(e, "c1", ConvState::Active, Some("op1"), 5).await;
    // A record from an earlier transition arrives late (another node was slower).
    put(&f.other, "c1", ConvState::Queued, None, 4).await;
    let m = e.meta(&ConvId::from("c1")).await.unwrap().unwrap();
    assert_eq!(
        (m.state, m.operator),
        (ConvState::Active, Some(OperatorId::from("op1")))
    );
    // The same transition may write twice (two events); the second wins.
    put(e, "c1", ConvState::Closed, Some("op1"), 5).await;
    let m = f.other.meta(&ConvId::from("c1")).await.unwrap().unwrap();
    assert_eq!(m.state, ConvState::Closed);
    assert!(e.meta(&ConvId::from("nope")).await.unwrap().is_none());
}

pub async fn replay_is_all_or_nothing<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
    let c = ConvId::from("c1");
    assert_eq!(e.replay(&c, 0).await.unwrap(), Replay::Recovered(vec![]));
    assert_eq!(
        e.replay(&ConvId::from("none"), 3).await.unwrap(),
        Replay::Lost
    );
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
        Replay::Recovered(m) => {
            assert_eq!(m.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
            assert_eq!(m[0].text, "t1");
            assert_eq!(m[0].cid.as_deref(), Some("m1"));
        }
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
    match f.other.replay(&c, 2).await.unwrap() {
        Replay::Recovered(m) => assert_eq!(
            m.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7]
        ),
        Replay::Lost => panic!("lost at the edge"),
    }
}

pub async fn history_pages_backwards<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
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
    let seqs =
        |p: &gateway::engine::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    let p = e.history(&c, None, 2).await.unwrap();
    assert_eq!(seqs(&p), vec![3, 4]);
    assert!(!p.complete);
    let p = e.history(&c, Some(3), 10).await.unwrap();
    assert_eq!(seqs(&p), vec![1, 2]);
    assert_eq!(p.messages[0].text, "t0");
    assert!(p.complete);
    for before in [0, 1] {
        let p = e.history(&c, Some(before), 10).await.unwrap();
        assert!(p.messages.is_empty() && p.complete, "before {before}");
    }
    let p = e.history(&ConvId::from("none"), None, 10).await.unwrap();
    assert!(p.messages.is_empty() && p.complete);
    // Past the cap, the oldest page still says it is the last one.
    for i in 4..8u64 {
        e.append(msg(
            "c1",
            Role::Visitor,
            "v1",
            Some(&format!("m{i}")),
            "t",
            i,
        ))
        .await
        .unwrap();
    }
    let p = e.history(&c, None, 50).await.unwrap();
    assert_eq!(seqs(&p), vec![4, 5, 6, 7, 8]);
    assert!(p.complete);
}

pub async fn activity_tracks_the_unanswered_window<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
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
    let a = f.other.activity(&c).await.unwrap();
    assert_eq!((a.last_ts, a.unanswered_since), (300, None));
    e.append(msg("c1", Role::Operator, "op1", Some("d"), "more", 350))
        .await
        .unwrap();
    assert!(started(
        e.append(msg("c1", Role::Visitor, "v1", Some("e"), "q3", 400))
            .await
            .unwrap()
    ));
    // System messages are nobody's activity.
    e.append(msg("c1", Role::System, "system", Some("f"), "note", 500))
        .await
        .unwrap();
    let a = f.other.activity(&c).await.unwrap();
    // Each side's last and first message, and the wait that started again at 400; the
    // same rules as `core::Activity::record`.
    let mut expected = gateway::core::Activity::default();
    for (role, ts) in [
        (Role::Visitor, 100),
        (Role::Visitor, 200),
        (Role::Operator, 300),
        (Role::Operator, 350),
        (Role::Visitor, 400),
        (Role::System, 500),
    ] {
        expected.record(role, ts);
    }
    assert_eq!(a, expected);
    assert_eq!(
        (a.operator_ts, a.visitor_ts, a.unanswered_since),
        (Some(350), Some(400), Some(400))
    );
    assert_eq!(a.first_response_ms(), Some(200));
}

/// Summaries carry the last seq, the visitor's last message (cut at a character boundary)
/// and each side's read mark, which never goes back.
pub async fn summaries_carry_the_last_message_and_read_marks<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
    let long = format!("{}é tail", "a".repeat(199));
    e.append(msg("c1", Role::Visitor, "v1", Some("a"), &long, 100))
        .await
        .unwrap();
    e.append(msg("c1", Role::Operator, "op1", Some("b"), "answer", 200))
        .await
        .unwrap();
    e.set_read(&ConvId::from("c1"), true, 2).await.unwrap();
    e.set_read(&ConvId::from("c1"), true, 1).await.unwrap();
    e.set_read(&ConvId::from("c1"), false, 1).await.unwrap();
    // A conversation nobody stored gets no marks (and no record).
    e.set_read(&ConvId::from("nope"), true, 5).await.unwrap();
    let s = f
        .other
        .summaries(&[ConvId::from("c1"), ConvId::from("nope")])
        .await
        .unwrap();
    assert_eq!(s[0].last_seq, 2);
    let last = s[0].last_visitor.as_ref().unwrap();
    assert_eq!(
        (last.text.as_str(), last.ts),
        ("a".repeat(199).as_str(), 100)
    );
    assert_eq!((s[0].read.visitor, s[0].read.staff), (2, 1));
    assert_eq!(s[1], gateway::engine::Summary::default());
    assert!(f.other.meta(&ConvId::from("nope")).await.unwrap().is_none());
}

/// Two nodes race to accept one conversation; the core on each side decides; exactly one
/// wins, and both nodes then see the same state.
pub async fn site_transitions_are_atomic<E: Engine>(f: Fixture<E>) {
    let n = NodeId::from("n1");
    for op in ["a", "b"] {
        transition(
            &f.e,
            Command::OperatorConnected {
                op: OperatorId::from(op),
                node: n.clone(),
                name: op.into(),
                max_chats: None,
                queues: None,
            },
        )
        .await
        .unwrap();
    }
    transition(
        &f.e,
        Command::Start {
            visitor: VisitorId::from("v"),
            node: n.clone(),
            conv: ConvId::from("c"),
            queue: None,
            profile: Box::default(),
            previous: None,
            offline: false,
        },
    )
    .await
    .unwrap();
    let (x, y) = tokio::join!(
        transition(
            &f.e,
            Command::Accept {
                op: OperatorId::from("a"),
                conv: ConvId::from("c")
            }
        ),
        transition(
            &f.other,
            Command::Accept {
                op: OperatorId::from("b"),
                conv: ConvId::from("c")
            }
        ),
    );
    assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "{x:?} {y:?}");
    let winner = if x.is_ok() { "a" } else { "b" };
    for e in [&f.e, &f.other] {
        let mut tx = e.begin(&site()).await.unwrap();
        core::check_invariants(tx.state(), &Settings::default()).unwrap();
        let c = &tx.state().convs[&ConvId::from("c")];
        assert_eq!(c.state, ConvState::Active);
        assert_eq!(c.operator, Some(OperatorId::from(winner)));
    }
}

/// Many transitions from two nodes at once: none is lost, the versions line up, and the
/// state both nodes read afterwards is the same.
pub async fn concurrent_transitions_from_two_nodes_all_land<E: Engine>(f: Fixture<E>) {
    let connect = |i: u32, on_other: bool| {
        let e = if on_other { &f.other } else { &f.e };
        let cmd = arrives(VisitorId(format!("v{i}")));
        async move { transition(e, cmd).await.unwrap() }
    };
    futures_util::future::join_all((0..40).map(|i| connect(i, i % 2 == 1))).await;
    let (a, b) = (read_state(&f.e).await, read_state(&f.other).await);
    assert_eq!(a.visitors.len(), 40);
    assert_eq!(a, b);
    assert_eq!(a.version, b.version);
    assert!(a.version >= 40, "version {}", a.version);
}

/// A transition that is not committed (its node lost the race) leaves nothing behind.
pub async fn a_lost_race_leaves_no_trace<E: Engine>(f: Fixture<E>) {
    transition(&f.e, arrives(VisitorId::from("v0")))
        .await
        .unwrap();
    let mut tx = f.e.begin(&site()).await.unwrap();
    let before = tx.state().clone();
    let ctx = core::Ctx {
        lines: gateway::core::no_lines(),
        settings: &Settings::default(),
        queues: &[QueueId::from("general")],
        now: 1,
    };
    core::handle(tx.state(), ctx, arrives(VisitorId::from("ghost"))).unwrap();
    drop(tx); // never committed
    transition(&f.other, arrives(VisitorId::from("v1")))
        .await
        .unwrap();
    let mut tx = f.e.begin(&site()).await.unwrap();
    let st = tx.state();
    assert!(!st.visitors.contains_key(&VisitorId::from("ghost")));
    assert!(st.visitors.contains_key(&VisitorId::from("v1")));
    assert!(st.visitors.contains_key(&VisitorId::from("v0")));
    assert!(st.version > before.version);
}

pub async fn timers_fire_once_and_move<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    let s = site();
    let k1 = TimerKind::Offer(ConvId::from("c1"));
    let k2 = TimerKind::VisitorGrace(VisitorId::from("v1"));
    e.set_timer(&s, &k1, 100, false).await.unwrap();
    e.set_timer(&s, &k1, 300, false).await.unwrap(); // moved
    e.set_timer(&s, &k2, 200, false).await.unwrap();
    e.set_timer(&s, &k2, 50, true).await.unwrap(); // kept: only if absent
    assert_eq!(e.next_timer().await.unwrap(), Some(200));
    assert!(e.due_timers(150, 10).await.unwrap().is_empty());
    let (a, b) = tokio::join!(e.due_timers(250, 10), f.other.due_timers(250, 10));
    let fired: Vec<_> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(fired.len(), 1, "claimed exactly once: {fired:?}");
    assert_eq!((&fired[0].site, &fired[0].kind), (&s, &k2));
    e.finish_timer(&fired[0]).await.unwrap();
    e.cancel_timer(&s, &k1).await.unwrap();
    assert!(e
        .due_timers(250 + 2 * TIMER_LEASE_MS, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(e.next_timer().await.unwrap(), None);
}

/// A claimer that dies before finishing: the timer comes back after the lease, on any node.
/// A timer set again meanwhile is not removed by finishing the old claim.
pub async fn unfinished_timers_fire_again_after_the_lease<E: Engine>(f: Fixture<E>) {
    let s = site();
    let k = TimerKind::Inactive(ConvId::from("c1"));
    f.e.set_timer(&s, &k, 100, false).await.unwrap();
    let first = f.e.due_timers(100, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(f
        .other
        .due_timers(100 + TIMER_LEASE_MS - 1, 10)
        .await
        .unwrap()
        .is_empty());
    let again = f.other.due_timers(100 + TIMER_LEASE_MS, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].kind, k);
    // The transition set it again for later; finishing the claim keeps the new one.
    f.other.set_timer(&s, &k, 500_000, false).await.unwrap();
    f.other.finish_timer(&again[0]).await.unwrap();
    assert_eq!(f.e.next_timer().await.unwrap(), Some(500_000));
}

pub async fn drafts_settings_and_latest_conversation<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    let s = site();
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
        f.other.drafts(&s, &op).await.unwrap(),
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
    assert_eq!(f.other.load_settings(&s).await.unwrap(), Some(v));
    let v1 = VisitorId::from("v1");
    assert_eq!(e.visitor_latest(&s, &v1).await.unwrap(), None);
    e.set_visitor_latest(&s, &v1, &ConvId::from("c9"))
        .await
        .unwrap();
    assert_eq!(
        f.other.visitor_latest(&s, &v1).await.unwrap(),
        Some(ConvId::from("c9"))
    );
    e.ping().await.unwrap();
}

pub async fn seqs_stay_contiguous_under_concurrent_appends<E: Engine>(f: Fixture<E>) {
    open_conv(&f.e, "c1").await;
    let (e, other) = (&f.e, &f.other);
    let tasks = (0..40u64).map(|i| async move {
        let (role, id) = if i % 2 == 0 {
            (Role::Visitor, "v1")
        } else {
            (Role::Operator, "op1")
        };
        let e = if i % 3 == 0 { other } else { e };
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
    assert_eq!(
        e.last_seqs(&[ConvId::from("c1"), ConvId::from("none")])
            .await
            .unwrap(),
        vec![40, 0]
    );
}

/// One append of the seq property: who writes, which of a few cids (so that retries, and
/// one cid used by both authors, are frequent), through which node, in which concurrent task.
#[derive(Debug, Clone)]
pub struct SeqOp {
    operator: bool,
    cid: u8,
    other_node: bool,
    task: u8,
}

const SEQ_TASKS: u8 = 4;

fn seq_ops() -> impl proptest::strategy::Strategy<Value = Vec<SeqOp>> {
    use proptest::prelude::*;
    proptest::collection::vec(
        (any::<bool>(), 0..10u8, any::<bool>(), 0..SEQ_TASKS).prop_map(
            |(operator, cid, other_node, task)| SeqOp {
                operator,
                cid,
                other_node,
                task,
            },
        ),
        1..60,
    )
}

/// The seq property, one case: `ops` split into concurrent tasks (each appends its share in
/// order), on a fresh conversation. Every distinct (author, cid) is stored exactly once and
/// every retry answers with that message; the stored seqs are exactly 1..=n; each task
/// sees its new messages' seqs increase; the channel publishes 1..=n once each, in order;
/// the capped log holds the last messages, contiguous, as stored.
pub async fn seqs_stay_contiguous_under_random_appends<E: Engine + Clone>(
    f: &Fixture<E>,
    conv: &str,
    listener: u64,
    ops: Vec<SeqOp>,
) {
    open_conv(&f.e, conv).await;
    let mut rx = listen(f, conv, listener).await;
    let tasks: Vec<_> = (0..SEQ_TASKS)
        .map(|t| {
            let mine: Vec<SeqOp> = ops.iter().filter(|o| o.task == t).cloned().collect();
            let (e, other) = (f.e.clone(), f.other.clone());
            let conv = conv.to_owned();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for op in mine {
                    let (role, id) = if op.operator {
                        (Role::Operator, "op1")
                    } else {
                        (Role::Visitor, "v1")
                    };
                    let cid = format!("c{}", op.cid);
                    let engine = if op.other_node { &other } else { &e };
                    let text = format!("{id}/{cid}");
                    let o = engine
                        .append(msg(&conv, role, id, Some(&cid), &text, 1))
                        .await
                        .unwrap();
                    out.push((format!("{id}/{cid}"), o));
                }
                out
            })
        })
        .collect();
    let mut stored: std::collections::BTreeMap<String, u64> = Default::default();
    let mut retries: Vec<(String, u64, String)> = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        let mut newest = 0;
        for (key, o) in t.expect("task") {
            match o {
                AppendOutcome::Stored(a) => {
                    assert_eq!(a.msg.text, key);
                    assert!(a.msg.seq > newest, "a task's seqs go back: {key}");
                    newest = a.msg.seq;
                    assert!(
                        stored.insert(key.clone(), a.msg.seq).is_none(),
                        "{key} stored twice"
                    );
                }
                AppendOutcome::Duplicate(m) => retries.push((key, m.seq, m.text)),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
    for (key, seq, text) in retries {
        assert_eq!(
            (stored.get(&key), text.as_str()),
            (Some(&seq), key.as_str()),
            "a retry of {key} answered with another message"
        );
    }
    let n = stored.len() as u64;
    let mut seqs: Vec<u64> = stored.values().copied().collect();
    seqs.sort();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "stored seqs");
    assert_eq!(f.other.last_seq(&ConvId::from(conv)).await.unwrap(), n);
    assert_eq!(
        published_seqs(&mut rx, n as usize).await,
        (1..=n).collect::<Vec<_>>()
    );
    f.hub.unregister(core::ConnId(listener));
    let page = f.e.history(&ConvId::from(conv), None, 50).await.unwrap();
    let kept = n.min(LOG_CAP as u64);
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        ((n - kept + 1)..=n).collect::<Vec<_>>()
    );
    for m in &page.messages {
        assert_eq!(stored.get(&m.text), Some(&m.seq), "{m:?}");
    }
}

/// Runs the seq property for `cases` random cases against one fixture (a conversation per
/// case), on a runtime of its own: proptest's runner is synchronous.
fn run_seq_property<E, Fut>(cases: u32, make: impl FnOnce() -> Fut)
where
    E: Engine + Clone,
    Fut: std::future::Future<Output = Fixture<E>>,
{
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(make());
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&seq_ops(), |ops| {
            let i = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rt.block_on(seqs_stay_contiguous_under_random_appends(
                &f,
                &format!("p{i}"),
                1_000 + i,
                ops,
            ));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The seq property on the in-memory engine, and on the Redis engine (fewer cases: each
/// case is a few dozen round trips to a real redis-server).
mod seq_property {
    #[test]
    fn memory_engine() {
        super::run_seq_property(256, || async { super::memory_fixture() });
    }

    #[test]
    fn redis_engine() {
        super::run_seq_property(64, super::redis_fixture);
    }
}

/// Checks a site out and connects a visitor in it (not committed yet).
async fn connect_tx<E: Engine>(e: &E, v: &str) -> E::Tx {
    let mut tx = e.begin(&site()).await.unwrap();
    let ctx = core::Ctx {
        lines: gateway::core::no_lines(),
        settings: &Settings::default(),
        queues: &[QueueId::from("general")],
        now: 1,
    };
    core::handle(tx.state(), ctx, arrives(VisitorId::from(v))).unwrap();
    tx
}

/// A transition's timers are stored with it, atomically: the winner's land, the loser's
/// do not.
pub async fn timers_are_committed_with_their_transition<E: Engine>(f: Fixture<E>) {
    let k = TimerKind::Offer(ConvId::from("c1"));
    let mut tx = connect_tx(&f.e, "v1").await;
    tx.commit(&[(k.clone(), Some(500))], &[]).await.unwrap();
    drop(tx);
    assert_eq!(f.other.next_timer().await.unwrap(), Some(500));
    let mut tx = connect_tx(&f.other, "v2").await;
    tx.commit(&[(k.clone(), None)], &[]).await.unwrap();
    drop(tx);
    assert_eq!(f.e.next_timer().await.unwrap(), None);
}

/// Two nodes race on a site's transition: the loser's timers are not stored with it.
pub async fn a_lost_race_stores_none_of_its_timers<E: Engine>(f: Fixture<E>) {
    let mut a = connect_tx(&f.e, "v3").await;
    let mut b = connect_tx(&f.other, "v4").await;
    a.commit(&[(TimerKind::Inactive(ConvId::from("a")), Some(700))], &[])
        .await
        .unwrap();
    assert!(matches!(
        b.commit(&[(TimerKind::Inactive(ConvId::from("b")), Some(600))], &[])
            .await,
        Err(EngineError::Conflict)
    ));
    drop((a, b));
    assert_eq!(f.e.next_timer().await.unwrap(), Some(700));
}

/// Redis loses its data and another node starts a new history: a copy of the old history is
/// reloaded whole, never patched with the new one's changes.
pub async fn a_copy_from_before_a_data_loss_is_reloaded_whole<E: Engine>(f: Fixture<E>) {
    for v in ["old1", "old2"] {
        connect_tx(&f.e, v).await.commit(&[], &[]).await.unwrap();
    }
    // The other node reads the old history.
    assert_eq!(read_state(&f.other).await.visitors.len(), 2);
    assert_eq!(f.store_command(None, "FLUSHALL"), "+OK");
    for v in ["new1", "new2", "new3"] {
        connect_tx(&f.e, v).await.commit(&[], &[]).await.unwrap();
    }
    let st = read_state(&f.other).await;
    let mut names: Vec<&str> = st.visitors.keys().map(VisitorId::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["new1", "new2", "new3"],
        "no trace of the lost history"
    );
}

/// A conversation whose record fell behind its log (it should never happen; a restored
/// backup could do it): the append fails without storing anything or keeping its cid, and the
/// retry with the same cid is stored once, after the log's last message.
pub async fn a_record_behind_its_log_heals_on_the_next_append<E: Engine>(f: Fixture<E>) {
    let e = &f.e;
    open_conv(e, "c1").await;
    for i in 0..3 {
        stored(
            e.append(msg(
                "c1",
                Role::Visitor,
                "v1",
                Some(&format!("a{i}")),
                "x",
                1,
            ))
            .await
            .unwrap(),
        );
    }
    let meta = gateway::engine::redis::keys::conv_meta(&ConvId::from("c1"));
    assert_eq!(
        f.store_command(Some(&meta), &format!("HSET {meta} seq 1")),
        ":0"
    );
    let retry = || msg("c1", Role::Visitor, "v1", Some("late"), "late", 2);
    assert!(
        e.append(retry()).await.is_err(),
        "the log is ahead of seq 2"
    );
    let seq = stored(e.append(retry()).await.unwrap());
    assert_eq!(seq, 4, "after the log's last message");
    match e.append(retry()).await.unwrap() {
        AppendOutcome::Duplicate(m) => assert_eq!(m.seq, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.other.last_seq(&ConvId::from("c1")).await.unwrap(), 4);
}

/// A visitor starts a conversation (a transition that adds to the state).
fn arrives(visitor: VisitorId) -> Command {
    Command::Start {
        conv: ConvId(format!("c_{visitor}")),
        visitor,
        node: NodeId::from("n1~1"),
        queue: None,
        profile: Box::default(),
        previous: None,
        offline: false,
    }
}

fn entry(conv: &str, up_to: u64) -> OutboxEntry {
    OutboxEntry::Messages {
        conv: ConvId::from(conv),
        up_to,
    }
}

fn entries(items: &[OutboxItem]) -> Vec<OutboxEntry> {
    items.iter().map(|i| i.entry.clone()).collect()
}

/// A transition's outbox entries are stored with it; entries outside a transition too; each
/// is handed to one consumer of a group until acknowledged, again after its lease when not,
/// and goes once acknowledged.
pub async fn outbox_entries_are_claimed_once_and_again_after_their_lease<E: Engine>(f: Fixture<E>) {
    let e = &f.archived;
    let mut tx = e.begin(&site()).await.unwrap();
    core::handle(
        tx.state(),
        core::Ctx {
            lines: gateway::core::no_lines(),
            settings: &Settings::default(),
            queues: &[QueueId::from("general")],
            now: 1,
        },
        arrives(VisitorId::from("v")),
    )
    .unwrap();
    tx.commit(&[], &[entry("a", 1), entry("a", 2)])
        .await
        .unwrap();
    drop(tx);
    e.push_outbox(&site(), &[entry("b", 7)]).await.unwrap();
    let first = e
        .claim_outbox(ARCHIVE_GROUP, "n1", 10, 60_000)
        .await
        .unwrap();
    assert_eq!(
        entries(&first),
        [entry("a", 1), entry("a", 2), entry("b", 7)]
    );
    assert!(first.iter().all(|i| i.site == site()));
    // Claimed and not acknowledged: nobody else gets them within the lease.
    assert!(e
        .claim_outbox(ARCHIVE_GROUP, "n2", 10, 60_000)
        .await
        .unwrap()
        .is_empty());
    e.ack_outbox(ARCHIVE_GROUP, &first[..2]).await.unwrap();
    // The third's consumer "died": after its lease it is handed out again, once.
    let deadline = tokio::time::Instant::now() + WAIT;
    let again = loop {
        let got = e.claim_outbox(ARCHIVE_GROUP, "n2", 10, 50).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never handed out again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entries(&again), [entry("b", 7)]);
    e.ack_outbox(ARCHIVE_GROUP, &again).await.unwrap();
    e.trim_outbox().await.unwrap();
    assert!(e
        .claim_outbox(ARCHIVE_GROUP, "n3", 10, 0)
        .await
        .unwrap()
        .is_empty());
}

/// With an archive, a log keeps every message the archive does not hold yet, whatever its
/// cap; once marked archived it goes back to its cap. `read_log` returns what a log holds.
pub async fn a_log_keeps_what_the_archive_does_not_hold_yet<E: Engine>(f: Fixture<E>) {
    let e = &f.archived;
    open_conv(e, "c1").await;
    for i in 1..=12u64 {
        stored(
            e.append(msg(
                "c1",
                Role::Visitor,
                "v1",
                Some(&format!("k{i}")),
                &format!("m{i}"),
                i,
            ))
            .await
            .unwrap(),
        );
    }
    let c = ConvId::from("c1");
    let all = e.read_log(&c, 0, 100).await.unwrap();
    assert_eq!(
        all.len(),
        12,
        "nothing archived yet: all kept, past the cap of {LOG_CAP}"
    );
    assert_eq!(
        e.read_log(&c, 4, 3)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [5, 6, 7]
    );
    e.mark_archived(&c, 9, false).await.unwrap();
    let kept: Vec<u64> = e
        .read_log(&c, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(kept, [8, 9, 10, 11, 12], "back to the cap");
    // Without an archive the cap holds as before.
    open_conv(&f.e, "c2").await;
    for i in 1..=12u64 {
        stored(
            f.e.append(msg(
                "c2",
                Role::Visitor,
                "v1",
                Some(&format!("k{i}")),
                "x",
                i,
            ))
            .await
            .unwrap(),
        );
    }
    assert_eq!(
        f.e.read_log(&ConvId::from("c2"), 0, 100)
            .await
            .unwrap()
            .len(),
        LOG_CAP
    );
}

/// A ban holds until its time, on every node, and can be lifted.
pub async fn bans_hold_until_their_time<E: Engine>(f: Fixture<E>) {
    let (s, v) = (site(), VisitorId::from("v1"));
    // Real times: the Redis engine lets its key expire at the ban's end, by Redis' clock.
    let now = gateway::clock::now_ms();
    assert_eq!(f.e.banned_until(&s, &v, now).await.unwrap(), None);
    let until = now + 3_600_000;
    f.e.set_ban(&s, &v, Some(until)).await.unwrap();
    assert_eq!(
        f.other.banned_until(&s, &v, now).await.unwrap(),
        Some(until)
    );
    assert_eq!(
        f.other.banned_until(&s, &v, until).await.unwrap(),
        None,
        "over at its time"
    );
    assert_eq!(
        f.e.banned_until(&SiteId::from("elsewhere"), &v, now)
            .await
            .unwrap(),
        None,
        "a ban is per site"
    );
    f.other.set_ban(&s, &v, None).await.unwrap();
    assert_eq!(f.e.banned_until(&s, &v, now).await.unwrap(), None);
}

/// A queue's listing slot is the site's: within it one node lists, the others wait for the
/// next slot; other queues and sites have slots of their own.
pub async fn a_listing_slot_is_claimed_by_one_node<E: Engine>(f: Fixture<E>) {
    let (s, q) = (site(), QueueId::from("general"));
    assert!(f.e.claim_listing(&s, &q, 60_000).await.unwrap());
    assert!(!f.other.claim_listing(&s, &q, 60_000).await.unwrap());
    assert!(!f.e.claim_listing(&s, &q, 60_000).await.unwrap());
    assert!(f
        .other
        .claim_listing(&s, &QueueId::from("billing"), 60_000)
        .await
        .unwrap());
    assert!(f
        .other
        .claim_listing(&SiteId::from("elsewhere"), &q, 60_000)
        .await
        .unwrap());
}

/// A node that keeps proving it is alive is never named dead, least of all to itself.
pub async fn a_live_node_is_never_named_dead<E: Engine>(f: Fixture<E>) {
    use gateway::engine::Heartbeat;
    let me = NodeId::from("a~1");
    assert_eq!(f.e.heartbeat(&me).await.unwrap(), Heartbeat::Alive);
    assert_eq!(f.e.heartbeat(&me).await.unwrap(), Heartbeat::Alive);
    assert!(f.e.dead_nodes(&me).await.unwrap().is_empty());
}

/// Node lives prove they are alive; the engine names the ones that stopped (never the asker),
/// and a life that was swept and forgotten learns it was evicted at its next heartbeat.
pub async fn dead_nodes_are_named_once_swept_they_are_forgotten<E: Engine>(f: Fixture<E>) {
    use gateway::engine::Heartbeat;
    let (me, other) = (NodeId::from("a~1"), NodeId::from("b~1"));
    assert_eq!(f.e.heartbeat(&me).await.unwrap(), Heartbeat::Alive);
    assert_eq!(f.other.heartbeat(&other).await.unwrap(), Heartbeat::Alive);
    // `other` stops beating; `me` keeps beating until it names `other`.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert_eq!(f.e.heartbeat(&me).await.unwrap(), Heartbeat::Alive);
        let dead = f.e.dead_nodes(&me).await.unwrap();
        assert!(!dead.contains(&me), "never oneself: {dead:?}");
        if dead.contains(&other) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{other} never named dead"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.e.forget_node(&other).await.unwrap();
    assert!(!f.e.dead_nodes(&me).await.unwrap().contains(&other));
    assert_eq!(
        f.other.heartbeat(&other).await.unwrap(),
        Heartbeat::Evicted,
        "a swept life learns it"
    );
    // A new life of that node joins afresh.
    let again = NodeId::from("b~2");
    assert_eq!(f.other.heartbeat(&again).await.unwrap(), Heartbeat::Alive);
}

pub fn memory_fixture() -> Fixture<MemoryEngine> {
    let hub = Hub::new();
    let e = MemoryEngine::new(
        hub.clone(),
        MemoryConfig {
            max_log: LOG_CAP,
            ..MemoryConfig::default()
        },
    );
    let archived = MemoryEngine::new(
        Hub::new(),
        MemoryConfig {
            max_log: LOG_CAP,
            archive: true,
            ..MemoryConfig::default()
        },
    );
    Fixture {
        hub,
        other: e.clone(),
        archived,
        e,
        _server: None,
        store: Vec::new(),
    }
}

async fn redis_engine(redis: RedisConfig) -> (Arc<Hub>, RedisEngine) {
    redis_engine_with(redis, false).await
}

async fn redis_engine_with(redis: RedisConfig, archive: bool) -> (Arc<Hub>, RedisEngine) {
    let hub = Hub::new();
    let e = RedisEngine::connect(
        RedisOptions {
            redis,
            max_log: LOG_CAP,
            retention: Duration::from_secs(3600),
            node_timeout: REDIS_NODE_TIMEOUT,
            archive,
        },
        vec![site()],
        hub.clone(),
        Duration::from_secs(10),
    )
    .await
    .expect("redis engine connects");
    (hub, e)
}

fn redis_config(urls: String, cluster: bool) -> RedisConfig {
    RedisConfig {
        urls: urls.split(',').map(str::to_owned).collect(),
        cluster,
        timeout: Duration::from_secs(2),
    }
}

pub async fn redis_fixture() -> Fixture<RedisEngine> {
    let server = RedisServer::start();
    let store = vec![server.port];
    let cfg = redis_config(server.url(), false);
    let (hub, e) = redis_engine(cfg.clone()).await;
    let (_, other) = redis_engine(cfg.clone()).await;
    let (_, archived) = redis_engine_with(cfg, true).await;
    Fixture {
        hub,
        e,
        other,
        archived,
        _server: Some(server),
        store,
    }
}

async fn cluster_fixture(cluster: &RedisCluster) -> Fixture<RedisEngine> {
    cluster.flush();
    let cfg = redis_config(cluster.urls(), true);
    let (hub, e) = redis_engine(cfg.clone()).await;
    let (_, other) = redis_engine(cfg.clone()).await;
    let (_, archived) = redis_engine_with(cfg, true).await;
    Fixture {
        hub,
        e,
        other,
        archived,
        _server: None,
        store: cluster.nodes.iter().map(|n| n.port).collect(),
    }
}

/// Runs every case against one engine (one test per case), and against a Redis Cluster
/// (one test running the cases in turn on one cluster). Cases of `several_nodes` and
/// `editable_store` are ignored tests on the in-memory engine, with the reason as their
/// ignore message.
macro_rules! conformance {
    (
        every_engine: [$($case:ident),* $(,)?],
        several_nodes: [$($multi:ident),* $(,)?],
        editable_store: [$($edit:ident),* $(,)?] $(,)?
    ) => {
        mod memory_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::memory_fixture()).await;
                }
            )*
            $(
                #[test]
                #[ignore = "not applicable: the in-memory engine is one node, which cannot race another or die"]
                fn $multi() {}
            )*
            $(
                #[test]
                #[ignore = "not applicable: the in-memory engine has no store to wipe or edit behind its back"]
                fn $edit() {}
            )*
        }

        mod redis_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::redis_fixture().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $multi() {
                    super::$multi(super::redis_fixture().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $edit() {
                    super::$edit(super::redis_fixture().await).await;
                }
            )*
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_cluster_engine_passes_every_case() {
            let cluster = RedisCluster::start();
            $(
                eprintln!("cluster case {}", stringify!($case));
                $case(cluster_fixture(&cluster).await).await;
            )*
            $(
                eprintln!("cluster case {}", stringify!($multi));
                $multi(cluster_fixture(&cluster).await).await;
            )*
            $(
                eprintln!("cluster case {}", stringify!($edit));
                $edit(cluster_fixture(&cluster).await).await;
            )*
        }
    };
}

conformance!(
    every_engine: [
        append_assigns_contiguous_seqs_and_publishes_in_order,
        append_is_idempotent_by_cid,
        append_refuses_strangers_closed_and_unknown,
        conversation_records_never_go_back_in_time,
        replay_is_all_or_nothing,
        history_pages_backwards,
        activity_tracks_the_unanswered_window,
        summaries_carry_the_last_message_and_read_marks,
        site_transitions_are_atomic,
        concurrent_transitions_from_two_nodes_all_land,
        a_lost_race_leaves_no_trace,
        timers_fire_once_and_move,
        unfinished_timers_fire_again_after_the_lease,
        drafts_settings_and_latest_conversation,
        seqs_stay_contiguous_under_concurrent_appends,
        a_live_node_is_never_named_dead,
        bans_hold_until_their_time,
        timers_are_committed_with_their_transition,
        outbox_entries_are_claimed_once_and_again_after_their_lease,
        a_log_keeps_what_the_archive_does_not_hold_yet,
    ],
    several_nodes: [
        a_listing_slot_is_claimed_by_one_node,
        a_lost_race_stores_none_of_its_timers,
        dead_nodes_are_named_once_swept_they_are_forgotten,
    ],
    editable_store: [
        a_copy_from_before_a_data_loss_is_reloaded_whole,
        a_record_behind_its_log_heals_on_the_next_append,
    ],
);
