//! The archive's conformance suite: every case written once against `archive::Store` and run
//! on SQLite (a file in a temporary directory) and on PostgreSQL (a real server started for
//! the suite, a fresh database per case).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use gateway::archive::{
    self, ConvFilter, ConvRecord, KeyRecord, OperatorRecord, Remembered, ReportQuery, Store,
};
use gateway::core::SiteId;
use gateway::protocol::{Author, ConvState, Conversation, Msg, OperatorRef, Role, VisitorView};
use testsupport::PgServer;

fn site() -> SiteId {
    SiteId::from("s")
}

fn conv(id: &str, state: ConvState, operator: Option<&str>, created: u64) -> Conversation {
    Conversation {
        id: id.into(),
        site: "s".into(),
        queue: "general".into(),
        state,
        visitor: VisitorView {
            id: format!("v-{id}"),
            name: Some("Ann Smith".into()),
            online: true,
            preview: None,
            email: Some("ann@example.com".into()),
            phone: Some("+420 123".into()),
            params: BTreeMap::from([("plan".into(), "gold".into())]),
        },
        operator: operator.map(|o| OperatorRef {
            id: o.into(),
            name: o.to_uppercase(),
        }),
        last_seq: 0,
        tags: vec![],
        created_at: created,
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

fn record(c: &Conversation, version: u64, event: &str, ts: u64) -> ConvRecord {
    ConvRecord {
        version,
        key: format!("{version}.0"),
        event: event.into(),
        reason: None,
        ts,
        conv: c.clone(),
    }
}

fn msg(conv: &str, seq: u64, role: Role, text: &str, ts: u64) -> Msg {
    Msg {
        conv: conv.into(),
        seq,
        from: Author {
            role,
            id: match role {
                Role::Visitor => format!("v-{conv}"),
                Role::Operator => "op1".into(),
                _ => "system".into(),
            },
            name: None,
        },
        text: text.into(),
        ts,
        cid: Some(format!("k{seq}")),
        code: None,
        args: None,
    }
}

/// A conversation's life: queued at `t`, the visitor writes at t+1s, assigned to op1 at
/// t+2s, op1 answers at t+5s, closed at t+60s.
async fn lifecycle(s: &dyn Store, id: &str, t: u64) {
    let queued = conv(id, ConvState::Queued, None, t);
    s.record_conversation(&record(&queued, 1, "queued", t))
        .await
        .unwrap();
    s.record_messages(
        &site(),
        &[msg(id, 1, Role::Visitor, "I need a refund", t + 1_000)],
    )
    .await
    .unwrap();
    let active = conv(id, ConvState::Active, Some("op1"), t);
    s.record_conversation(&record(&active, 2, "assigned", t + 2_000))
        .await
        .unwrap();
    s.record_messages(
        &site(),
        &[
            msg(id, 2, Role::System, "OP1 joined", t + 2_000),
            msg(id, 3, Role::Operator, "Sure, which order?", t + 5_000),
        ],
    )
    .await
    .unwrap();
    let mut closed = conv(id, ConvState::Closed, Some("op1"), t);
    closed.outcome = Some("solved".into());
    closed.tags = vec!["refund".into()];
    s.record_conversation(&record(&closed, 3, "closed", t + 60_000))
        .await
        .unwrap();
}

pub async fn a_conversation_is_archived_whole_with_its_figures(s: &dyn Store) {
    lifecycle(s, "c1", 1_000_000).await;
    let d = s.conversation(&site(), "c1").await.unwrap().unwrap();
    let a = &d.summary;
    assert_eq!(a.conv.state, ConvState::Closed);
    assert_eq!(a.conv.outcome.as_deref(), Some("solved"));
    assert_eq!(a.message_count, 3);
    assert_eq!(a.conv.last_seq, 3);
    assert_eq!(a.closed_at, Some(1_060_000));
    assert_eq!(a.first_response_ms, Some(4_000));
    assert_eq!(a.wait_ms, Some(2_000));
    assert_eq!(a.duration_ms, Some(60_000));
    assert!(!a.missed);
    assert_eq!(d.params["plan"], "gold");
    assert_eq!(d.prechat.email.as_deref(), Some("ann@example.com"));
    let kinds: Vec<&str> = d.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "assigned", "closed"]);
    assert_eq!(d.events[1].to.as_deref(), Some("op1"));
    assert_eq!(s.archived_seq("c1").await.unwrap(), 3);
    assert!(s
        .conversation(&SiteId::from("other"), "c1")
        .await
        .unwrap()
        .is_none());
}

/// Records and messages arrive in any order and any number of times: the newest snapshot
/// wins, each event and message is stored once, the figures come out the same.
pub async fn writes_are_idempotent_and_order_does_not_matter(s: &dyn Store) {
    let t = 2_000_000;
    let mut closed = conv("c1", ConvState::Closed, Some("op1"), t);
    closed.outcome = Some("solved".into());
    let active = conv("c1", ConvState::Active, Some("op1"), t);
    let queued = conv("c1", ConvState::Queued, None, t);
    let msgs = [
        msg("c1", 1, Role::Visitor, "hello", t + 1_000),
        msg("c1", 2, Role::Operator, "hi", t + 3_000),
    ];
    // Messages first, then the close, then older records, each twice.
    for _ in 0..2 {
        s.record_messages(&site(), &msgs).await.unwrap();
        s.record_conversation(&record(&closed, 3, "closed", t + 9_000))
            .await
            .unwrap();
        s.record_conversation(&record(&queued, 1, "queued", t))
            .await
            .unwrap();
        s.record_conversation(&record(&active, 2, "assigned", t + 2_000))
            .await
            .unwrap();
    }
    let d = s.conversation(&site(), "c1").await.unwrap().unwrap();
    assert_eq!(
        d.summary.conv.state,
        ConvState::Closed,
        "the newest snapshot wins"
    );
    assert_eq!(d.events.len(), 3, "each event once");
    assert_eq!(d.summary.message_count, 2, "each message once");
    assert_eq!(d.summary.first_response_ms, Some(2_000));
    assert_eq!(d.summary.wait_ms, Some(2_000));
    let m = s.messages(&site(), "c1", 0, 10).await.unwrap();
    assert_eq!(m.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
}

/// A conversation longer than any live log is kept whole, and pages by `seq`.
pub async fn messages_page_in_seq_order_and_a_long_conversation_is_kept_whole(s: &dyn Store) {
    let c = conv("long", ConvState::Active, Some("op1"), 10);
    s.record_conversation(&record(&c, 1, "assigned", 10))
        .await
        .unwrap();
    let all: Vec<Msg> = (1..=1_500)
        .map(|i| {
            msg(
                "long",
                i,
                if i % 2 == 0 {
                    Role::Operator
                } else {
                    Role::Visitor
                },
                &format!("m{i}"),
                100 + i,
            )
        })
        .collect();
    for chunk in all.chunks(500) {
        s.record_messages(&site(), chunk).await.unwrap();
    }
    let mut seen = 0;
    let mut after = 0;
    loop {
        let page = s.messages(&site(), "long", after, 400).await.unwrap();
        if page.is_empty() {
            break;
        }
        for m in &page {
            seen += 1;
            assert_eq!(m.seq, seen);
        }
        after = page.last().unwrap().seq;
    }
    assert_eq!(seen, 1_500);
    assert_eq!(s.archived_seq("long").await.unwrap(), 1_500);
    assert!(s
        .messages(&SiteId::from("other"), "long", 0, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Lists are newest first, filter by every field the API names, and a cursor continues a
/// list without repeating or skipping anything.
pub async fn lists_filter_and_page_with_a_cursor(s: &dyn Store) {
    for i in 0..25u64 {
        let id = format!("c{i:02}");
        let mut c = conv(
            &id,
            if i % 2 == 0 {
                ConvState::Closed
            } else {
                ConvState::Active
            },
            Some(if i % 3 == 0 { "op1" } else { "op2" }),
            1_000 + i * 10,
        );
        c.queue = if i < 5 {
            "vip".into()
        } else {
            "general".into()
        };
        c.tags = if i % 5 == 0 {
            vec!["refund".into()]
        } else {
            vec![]
        };
        c.outcome = (i % 2 == 0).then(|| "solved".into());
        s.record_conversation(&record(&c, 1, "assigned", 1_000 + i * 10))
            .await
            .unwrap();
    }
    // Same created_at for two: the id breaks the tie, the cursor keeps them apart.
    let twin = conv("c99", ConvState::Active, None, 1_000 + 24 * 10);
    s.record_conversation(&record(&twin, 1, "queued", 1_240))
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .conversations(&site(), &ConvFilter::default(), after, 7)
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|c| c.conv.id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(ids.len(), 26);
    assert_eq!(&ids[..3], ["c99", "c24", "c23"]);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 26, "no repeats");
    let count = |f: ConvFilter| async move {
        s.conversations(&site(), &f, None, 100)
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(
        count(ConvFilter {
            state: Some("closed".into()),
            ..Default::default()
        })
        .await,
        13
    );
    assert_eq!(
        count(ConvFilter {
            queue: Some("vip".into()),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(ConvFilter {
            operator: Some("op1".into()),
            ..Default::default()
        })
        .await,
        9
    );
    assert_eq!(
        count(ConvFilter {
            visitor: Some("v-c03".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ConvFilter {
            tag: Some("refund".into()),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(ConvFilter {
            outcome: Some("solved".into()),
            ..Default::default()
        })
        .await,
        13
    );
    assert_eq!(
        count(ConvFilter {
            from: Some(1_100),
            to: Some(1_200),
            ..Default::default()
        })
        .await,
        10
    );
    assert_eq!(
        s.conversations(&SiteId::from("other"), &ConvFilter::default(), None, 100)
            .await
            .unwrap()
            .items
            .len(),
        0,
        "another site sees nothing"
    );
}

/// Full-text search finds messages' words and the visitor's name and e-mail; a query full of
/// the search syntax's operators is only words.
pub async fn search_finds_message_words_and_visitor_names(s: &dyn Store) {
    lifecycle(s, "c1", 1_000).await;
    let mut other = conv("c2", ConvState::Queued, None, 2_000);
    other.visitor.name = Some("Boris Novák".into());
    other.visitor.email = Some("boris@example.cz".into());
    s.record_conversation(&record(&other, 1, "queued", 2_000))
        .await
        .unwrap();
    s.record_messages(
        &site(),
        &[msg("c2", 1, Role::Visitor, "Доставка не пришла", 2_100)],
    )
    .await
    .unwrap();
    let q = |text: &str| {
        let f = ConvFilter {
            q: Some(text.into()),
            ..Default::default()
        };
        async move {
            s.conversations(&site(), &f, None, 10)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.conv.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(q("refund").await, ["c1"]);
    assert_eq!(q("доставка").await, ["c2"], "any language, any case");
    assert_eq!(q("Boris").await, ["c2"]);
    assert_eq!(q("ann@example.com").await, ["c1"]);
    assert!(q("nothing-like-this").await.is_empty());
    for hostile in [
        r#"" OR 1=1 --"#,
        "NEAR(refund",
        "*",
        "'; DROP TABLE messages; --",
        "   ",
    ] {
        let _ = q(hostile).await;
    }
    assert_eq!(q("refund").await, ["c1"], "still there");
}

/// Erasing a visitor takes their messages and details; the conversation stays as a count.
pub async fn erasing_a_visitor_keeps_only_counts(s: &dyn Store) {
    lifecycle(s, "c1", 1_000).await;
    lifecycle(s, "c2", 5_000).await;
    assert_eq!(s.erase_visitor(&site(), "v-c1", 100_000).await.unwrap(), 1);
    let d = s.conversation(&site(), "c1").await.unwrap().unwrap();
    assert_eq!(d.summary.conv.visitor.name, None);
    assert_eq!(d.prechat.email, None);
    assert!(d.params.is_empty());
    assert!(s.messages(&site(), "c1", 0, 10).await.unwrap().is_empty());
    let f = ConvFilter {
        q: Some("Ann".into()),
        ..Default::default()
    };
    let found: Vec<String> = s
        .conversations(&site(), &f, None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.conv.id)
        .collect();
    assert_eq!(found, ["c2"], "no longer found by name");
    let rows = s
        .report_rows(
            &site(),
            &ReportQuery {
                from: 0,
                to: 10_000_000,
                queue: None,
                operator: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "still counted");
    assert_eq!(
        s.messages(&site(), "c2", 0, 10).await.unwrap().len(),
        3,
        "others untouched"
    );
}

/// Report rows carry each conversation's figures; operator records the last state before the
/// range and the changes in it.
pub async fn reports_read_figures_and_operator_changes(s: &dyn Store) {
    lifecycle(s, "c1", 1_000).await;
    let missed = conv("c2", ConvState::Closed, None, 3_000);
    s.record_conversation(&record(&missed, 1, "closed", 4_000))
        .await
        .unwrap();
    s.record_messages(&site(), &[msg("c2", 1, Role::Visitor, "hello?", 3_100)])
        .await
        .unwrap();
    let rows = s
        .report_rows(
            &site(),
            &ReportQuery {
                from: 0,
                to: 10_000_000,
                queue: None,
                operator: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].answered && rows[0].closed && rows[0].first_response_ms == Some(4_000));
    assert!(!rows[1].answered && rows[1].closed);
    let only_op1 = s
        .report_rows(
            &site(),
            &ReportQuery {
                from: 0,
                to: 10_000_000,
                queue: None,
                operator: Some("op1".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(only_op1.len(), 1);
    for (ts, status, online) in [
        (100, "inactive", true),
        (200, "active", true),
        (5_000, "away", true),
        (9_000, "away", false),
    ] {
        s.record_operator(&OperatorRecord {
            site: site(),
            operator: "op1".into(),
            name: "Olga".into(),
            status: status.into(),
            online,
            ts,
        })
        .await
        .unwrap();
    }
    let recs = s
        .operator_records(
            &site(),
            &ReportQuery {
                from: 1_000,
                to: 8_000,
                queue: None,
                operator: None,
            },
        )
        .await
        .unwrap();
    let ts: Vec<u64> = recs.iter().map(|r| r.ts).collect();
    assert_eq!(
        ts,
        [200, 5_000],
        "the state at the start, then the changes in the range"
    );
}

/// Retention: conversations closed before the horizon go with their messages; open ones and
/// later ones stay.
pub async fn the_sweeper_removes_what_retention_lets_go(s: &dyn Store) {
    lifecycle(s, "old", 1_000).await;
    lifecycle(s, "new", 100_000).await;
    let open = conv("open", ConvState::Active, Some("op1"), 500);
    s.record_conversation(&record(&open, 1, "assigned", 500))
        .await
        .unwrap();
    assert_eq!(s.sweep(&site(), 100_000).await.unwrap(), 1);
    assert!(s.conversation(&site(), "old").await.unwrap().is_none());
    assert!(s.messages(&site(), "old", 0, 10).await.unwrap().is_empty());
    assert!(s.conversation(&site(), "new").await.unwrap().is_some());
    assert!(s.conversation(&site(), "open").await.unwrap().is_some());
}

/// Writers side by side (the archiver's batches, the API's patches and sweeps) each wait
/// their turn: none is refused because another one wrote meanwhile.
pub async fn writers_side_by_side_each_wait_their_turn(s: &dyn Store) {
    let patch = archive::ConvPatch {
        tags: Some(vec!["seen".into()]),
        by: "op1".into(),
        ts: 90_000,
        ..Default::default()
    };
    let writers = (0..8u64).map(|w| {
        let patch = &patch;
        async move {
            for n in 0..10u64 {
                let id = format!("c{w}-{n}");
                lifecycle(s, &id, 1_000 + w * 100 + n).await;
                let patched = s.patch_conversation(&site(), &id, patch).await.unwrap();
                assert!(matches!(patched, archive::Patched::Done(_)), "{id}");
                s.sweep(&site(), 1).await.unwrap();
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let f = ConvFilter {
        tag: Some("seen".into()),
        ..Default::default()
    };
    let all = s.conversations(&site(), &f, None, 100).await.unwrap().items;
    assert_eq!(all.len(), 80, "every conversation is kept, patched");
}

/// Keys are stored by hash, listed per site (or root), revoked at once.
pub async fn api_keys_are_kept_listed_and_revoked(s: &dyn Store) {
    let k = |id: &str, site: Option<&str>| KeyRecord {
        id: id.into(),
        site: site.map(str::to_owned),
        name: format!("key {id}"),
        scopes: vec!["read".into(), "bot".into()],
        hash: format!("hash-{id}"),
        created_at: 10,
        last_used_at: None,
    };
    s.put_key(&k("a", Some("s"))).await.unwrap();
    s.put_key(&k("b", Some("s"))).await.unwrap();
    s.put_key(&k("r", None)).await.unwrap();
    assert_eq!(s.key("a").await.unwrap().unwrap().scopes, ["read", "bot"]);
    assert_eq!(s.keys(Some("s")).await.unwrap().len(), 2);
    assert_eq!(s.keys(None).await.unwrap().len(), 1);
    s.touch_key("a", 99).await.unwrap();
    assert_eq!(s.key("a").await.unwrap().unwrap().last_used_at, Some(99));
    assert!(
        !s.revoke_key(Some("other"), "a").await.unwrap(),
        "not another site's"
    );
    assert!(s.revoke_key(Some("s"), "a").await.unwrap());
    assert!(s.key("a").await.unwrap().is_none());
    assert!(!s.revoke_key(Some("s"), "a").await.unwrap());
}

/// An idempotent answer is remembered once, found within its window, and forgotten after.
pub async fn idempotent_answers_are_remembered_once(s: &dyn Store) {
    let r = Remembered {
        status: 201,
        body: "{\"seq\":1}".into(),
    };
    assert!(s.remember("key1", "k", &r, 100).await.unwrap());
    assert!(!s
        .remember(
            "key1",
            "k",
            &Remembered {
                status: 500,
                body: "x".into()
            },
            101
        )
        .await
        .unwrap());
    assert_eq!(s.remembered("key1", "k", 50).await.unwrap(), Some(r));
    assert_eq!(
        s.remembered("key1", "k", 200).await.unwrap(),
        None,
        "too old"
    );
    assert_eq!(
        s.remembered("key2", "k", 0).await.unwrap(),
        None,
        "per scope"
    );
    assert_eq!(s.forget_remembered(150).await.unwrap(), 1);
    assert_eq!(s.remembered("key1", "k", 0).await.unwrap(), None);
}

async fn sqlite_store() -> (archive::SqlStore, std::path::PathBuf) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cg-archive-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = archive::sqlite::open(&dir.join("archive.db"))
        .await
        .expect("sqlite archive");
    (store, dir)
}

/// One PostgreSQL for the whole suite; each case gets a database of its own.
fn pg() -> &'static PgServer {
    static PG: OnceLock<PgServer> = OnceLock::new();
    PG.get_or_init(PgServer::start)
}

async fn pg_store(case: &str) -> archive::SqlStore {
    use sqlx::Connection;
    let server = pg();
    let mut admin = sqlx::PgConnection::connect(&server.url())
        .await
        .expect("admin connection");
    let db = format!("case_{case}");
    sqlx::Executor::execute(&mut admin, format!("DROP DATABASE IF EXISTS {db}").as_str())
        .await
        .unwrap();
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {db}").as_str())
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", server.port);
    archive::postgres::open(&url, std::time::Duration::from_secs(10))
        .await
        .expect("postgres archive")
}

/// What reaches the archive after an erasure about a conversation from before it (a close
/// still in the outbox, a late batch of messages) is kept without the visitor; a conversation
/// they start afterwards is kept as usual.
pub async fn what_arrives_after_an_erasure_is_kept_without_the_visitor(s: &dyn Store) {
    let open = conv("c1", ConvState::Active, Some("op1"), 1_000);
    s.record_conversation(&record(&open, 1, "assigned", 1_000))
        .await
        .unwrap();
    assert_eq!(s.erase_visitor(&site(), "v-c1", 2_000).await.unwrap(), 1);
    let mut closed = conv("c1", ConvState::Closed, Some("op1"), 1_000);
    closed.outcome = Some("solved".into());
    s.record_conversation(&record(&closed, 2, "closed", 3_000))
        .await
        .unwrap();
    s.record_messages(
        &site(),
        &[msg("c1", 1, Role::Visitor, "my address is", 1_500)],
    )
    .await
    .unwrap();
    let d = s.conversation(&site(), "c1").await.unwrap().unwrap();
    assert_eq!(d.summary.conv.state, ConvState::Closed, "the close is kept");
    assert_eq!(d.summary.conv.visitor.name, None, "without the visitor");
    assert_eq!(d.prechat.email, None);
    assert!(s.messages(&site(), "c1", 0, 10).await.unwrap().is_empty());
    // The same visitor id, back later, in a new conversation.
    let mut again = conv("c1", ConvState::Queued, None, 10_000);
    again.id = "c9".into();
    s.record_conversation(&record(&again, 3, "queued", 10_000))
        .await
        .unwrap();
    s.record_messages(
        &site(),
        &[msg("c9", 1, Role::Visitor, "hello again", 10_500)],
    )
    .await
    .unwrap();
    let d = s.conversation(&site(), "c9").await.unwrap().unwrap();
    assert_eq!(d.summary.conv.visitor.name.as_deref(), Some("Ann Smith"));
    assert_eq!(s.messages(&site(), "c9", 0, 10).await.unwrap().len(), 1);
}

/// A closed conversation's tags, contact details and parameters change after the fact, with
/// an event; an open one is not the archive's to change.
pub async fn a_closed_conversation_is_patched_with_an_event(s: &dyn Store) {
    lifecycle(s, "c1", 1_000).await;
    let patch = archive::ConvPatch {
        tags: Some(vec!["billing".into(), "vip".into()]),
        email: Some("new@example.com".into()),
        params: BTreeMap::from([("plan".into(), String::new()), ("crm".into(), "77".into())]),
        by: "op1".into(),
        ts: 90_000,
        ..Default::default()
    };
    let archive::Patched::Done(d) = s.patch_conversation(&site(), "c1", &patch).await.unwrap()
    else {
        panic!("patched")
    };
    assert_eq!(d.summary.conv.tags, ["billing", "vip"]);
    assert_eq!(d.prechat.email.as_deref(), Some("new@example.com"));
    assert_eq!(
        d.prechat.name.as_deref(),
        Some("Ann Smith"),
        "absent fields stay"
    );
    assert_eq!(d.params, BTreeMap::from([("crm".into(), "77".into())]));
    let last = d.events.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.by.as_deref()),
        ("updated", Some("op1"))
    );
    let f = ConvFilter {
        tag: Some("vip".into()),
        ..Default::default()
    };
    assert_eq!(
        s.conversations(&site(), &f, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let open = conv("c2", ConvState::Active, Some("op1"), 5_000);
    s.record_conversation(&record(&open, 1, "assigned", 5_000))
        .await
        .unwrap();
    assert_eq!(
        s.patch_conversation(&site(), "c2", &patch).await.unwrap(),
        archive::Patched::Open
    );
    assert_eq!(
        s.patch_conversation(&SiteId::from("other"), "c1", &patch)
            .await
            .unwrap(),
        archive::Patched::NotFound,
        "another site's conversation is not found"
    );
}

macro_rules! archive_conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, dir) = super::sqlite_store().await;
                    super::$case(&store).await;
                    drop(store);
                    let _ = std::fs::remove_dir_all(dir);
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let store = super::pg_store(stringify!($case)).await;
                    super::$case(&store).await;
                }
            )*
        }
    };
}

archive_conformance!(
    a_conversation_is_archived_whole_with_its_figures,
    writes_are_idempotent_and_order_does_not_matter,
    messages_page_in_seq_order_and_a_long_conversation_is_kept_whole,
    lists_filter_and_page_with_a_cursor,
    search_finds_message_words_and_visitor_names,
    erasing_a_visitor_keeps_only_counts,
    reports_read_figures_and_operator_changes,
    the_sweeper_removes_what_retention_lets_go,
    writers_side_by_side_each_wait_their_turn,
    api_keys_are_kept_listed_and_revoked,
    idempotent_answers_are_remembered_once,
    what_arrives_after_an_erasure_is_kept_without_the_visitor,
    a_closed_conversation_is_patched_with_an_event,
    the_directory_keeps_items_with_a_version_per_site,
    staff_sessions_are_kept_and_revoked,
    deliveries_are_made_once_claimed_once_and_retried,
);

pub async fn the_directory_keeps_items_with_a_version_per_site(s: &dyn Store) {
    use gateway::archive::Put;
    use gateway::directory::Kind;
    let demo = site();
    let other = SiteId::from("other");
    assert_eq!(s.directory(&demo).await.unwrap(), (0, vec![]));
    let g = |name: &str| format!(r#"{{"id":"g1","name":"{name}"}}"#);
    assert_eq!(
        s.put_entry(&demo, Kind::Groups, "g1", &g("G"), true, 1)
            .await
            .unwrap(),
        Put::Done
    );
    assert_eq!(
        s.put_entry(&demo, Kind::Groups, "g1", &g("Again"), true, 2)
            .await
            .unwrap(),
        Put::Exists
    );
    assert_eq!(
        s.put_entry(&demo, Kind::Groups, "none", &g("X"), false, 2)
            .await
            .unwrap(),
        Put::Missing
    );
    assert_eq!(
        s.put_entry(&demo, Kind::Groups, "g1", &g("H"), false, 3)
            .await
            .unwrap(),
        Put::Done
    );
    // The same id in another collection and on another site: separate items.
    assert_eq!(
        s.put_entry(
            &demo,
            Kind::Outcomes,
            "g1",
            r#"{"id":"g1","name":"O"}"#,
            true,
            4
        )
        .await
        .unwrap(),
        Put::Done
    );
    assert_eq!(
        s.put_entry(&other, Kind::Groups, "g1", &g("Theirs"), true, 5)
            .await
            .unwrap(),
        Put::Done
    );
    let (version, rows) = s.directory(&demo).await.unwrap();
    assert_eq!(
        version, 3,
        "every change bumps the version; refused ones do not"
    );
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.kind.as_str(), r.body.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("groups", g("H").as_str()),
            ("outcomes", r#"{"id":"g1","name":"O"}"#)
        ]
    );
    assert_eq!(s.directory(&other).await.unwrap().0, 1);
    assert!(s.delete_entry(&demo, Kind::Groups, "g1").await.unwrap());
    assert!(!s.delete_entry(&demo, Kind::Groups, "g1").await.unwrap());
    let (version, rows) = s.directory(&demo).await.unwrap();
    assert_eq!((version, rows.len()), (4, 1));
    assert_eq!(
        s.directory(&other).await.unwrap().1.len(),
        1,
        "another site's item stays"
    );
}

pub async fn staff_sessions_are_kept_and_revoked(s: &dyn Store) {
    use gateway::archive::SessionRecord;
    let rec = SessionRecord {
        id: "s1".into(),
        site: site().to_string(),
        staff: "op1".into(),
        created_at: 1,
        expires_at: 100,
        revoked_at: None,
    };
    s.put_session(&rec).await.unwrap();
    s.put_session(&SessionRecord {
        id: "s2".into(),
        ..rec.clone()
    })
    .await
    .unwrap();
    s.put_session(&SessionRecord {
        id: "s3".into(),
        staff: "op2".into(),
        ..rec.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.session("s1").await.unwrap(), Some(rec.clone()));
    assert_eq!(s.session("none").await.unwrap(), None);
    assert_eq!(
        s.revoke_sessions(&SiteId::from("other"), Some("s1"), None, 5)
            .await
            .unwrap(),
        0,
        "another site's revocation reaches nothing"
    );
    assert_eq!(
        s.revoke_sessions(&site(), Some("s1"), None, 5)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.session("s1").await.unwrap().unwrap().revoked_at, Some(5));
    assert_eq!(
        s.revoke_sessions(&site(), None, Some("op1"), 6)
            .await
            .unwrap(),
        1,
        "s2; s1 already"
    );
    assert_eq!(s.session("s3").await.unwrap().unwrap().revoked_at, None);
}

pub async fn deliveries_are_made_once_claimed_once_and_retried(s: &dyn Store) {
    use gateway::archive::{Attempt, NewDelivery};
    let d = |id: &str, target: &str, due_at: u64| NewDelivery {
        id: id.into(),
        site: "demo".into(),
        kind: "mail".into(),
        target: target.into(),
        body: format!(r#"{{"id":"{id}"}}"#),
        due_at,
    };
    let batch = [d("m1", "a@example.com", 10), d("m2", "b@example.com", 50)];
    assert_eq!(s.add_deliveries(&batch, 5).await.unwrap(), 2);
    // The same cause again makes nothing new.
    assert_eq!(s.add_deliveries(&batch[..1], 6).await.unwrap(), 0);

    // Only what is due; a claimed one is no one else's until its lease ends.
    let got = s.claim_deliveries(20, 1_000, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["m1"]
    );
    assert_eq!((got[0].attempts, got[0].created_at), (0, 5));
    assert!(s
        .claim_deliveries(60, 1_000, 10)
        .await
        .unwrap()
        .iter()
        .all(|x| x.id == "m2"));
    assert!(
        s.claim_deliveries(500, 1_000, 10).await.unwrap().is_empty(),
        "both leased"
    );

    // A failure: due again at its retry time, the attempt on record.
    let failed = Attempt {
        at: 600,
        ok: false,
        status: None,
        error: Some("connection refused".into()),
        ms: 3,
    };
    s.delivery_attempted("m1", &failed, Some(2_000))
        .await
        .unwrap();
    assert!(
        s.claim_deliveries(1_000, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "m1 not due, m2 leased"
    );
    let again = s.claim_deliveries(2_100, 1_000, 10).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|x| (x.id.as_str(), x.attempts))
            .collect::<Vec<_>>(),
        [("m2", 0), ("m1", 1)],
        "the longest due first"
    );
    let done = Attempt {
        at: 2_200,
        ok: true,
        status: Some(200),
        error: None,
        ms: 4,
    };
    s.delivery_attempted("m1", &done, None).await.unwrap();
    // Given up: never handed out again.
    s.delivery_attempted("m2", &failed, None).await.unwrap();
    assert!(s
        .claim_deliveries(999_999, 1_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.attempts("m1").await.unwrap(), [failed.clone(), done]);

    // A target's log, newest first.
    let log = s.deliveries("demo", "a@example.com", 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].attempts, log[0].done_at, log[0].failed_at),
        (2, Some(2_200), None)
    );
    let log = s.deliveries("demo", "b@example.com", 10).await.unwrap();
    assert_eq!(log[0].failed_at, Some(600));
    assert_eq!(log[0].last_error.as_deref(), Some("connection refused"));
    assert!(s
        .deliveries("other", "a@example.com", 10)
        .await
        .unwrap()
        .is_empty());
    // When a target last got something: never, for one whose every delivery failed.
    assert_eq!(
        s.last_delivered("demo", "a@example.com").await.unwrap(),
        Some(2_200)
    );
    assert_eq!(
        s.last_delivered("demo", "b@example.com").await.unwrap(),
        None
    );
    assert_eq!(
        s.last_delivered("other", "a@example.com").await.unwrap(),
        None
    );
}
