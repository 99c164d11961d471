//! Conversations reach the archive through the outbox, whole, off the live path (in memory;
//! `tests/e2e/archive.rs` does it on Redis and PostgreSQL with nodes killed).

use std::time::Duration;

use gateway::archive::{ConvFilter, Store};
use gateway::config::ArchiveConfig;
use gateway::core::SiteId;
use gateway::protocol::{ConvState, Encoding, Role, ServerFrame};
use serde_json::json;

use crate::common::*;

fn scratch(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "cg-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Polls the archive until `pred` holds for the conversation (the archiver works off the
/// live path), with a deadline.
async fn archived_until(
    store: &dyn Store,
    conv: &str,
    what: &str,
    pred: impl Fn(&gateway::archive::ConversationDetail) -> bool,
) -> gateway::archive::ConversationDetail {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(d) = store
            .conversation(&SiteId::from("demo"), conv)
            .await
            .unwrap()
        {
            if pred(&d) {
                return d;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A conversation three times longer than the live log's cap is archived whole: every
/// message in order, its events and figures, once it closed.
#[tokio::test]
async fn a_closed_conversation_is_archived_whole_past_the_log_cap() {
    let dir = scratch("archive");
    let db = dir.join("archive.db");
    let node = node_with(|c| {
        c.archive = ArchiveConfig::Sqlite(db.clone());
        c.max_log = 20;
    })
    .await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    for i in 0..30 {
        let r = v.rid();
        ok_seq(
            &v.request(req::send(
                r,
                &conv,
                &format!("v{i}"),
                &format!("question {i}"),
            ))
            .await,
        );
        let r = op.rid();
        ok_seq(
            &op.request(req::send(
                r,
                &conv,
                &format!("o{i}"),
                &format!("answer {i}"),
            ))
            .await,
        );
    }
    let ok = op
        .request_json(json!({"t": "close", "conv": conv, "outcome": "solved", "tags": ["billing"]}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let store = node.gw.archive().expect("an archive").clone();
    let d = archived_until(&*store, &conv, "the whole conversation", |d| {
        d.summary.conv.state == ConvState::Closed
            && d.summary.message_count == d.summary.conv.last_seq
            && d.summary.conv.last_seq >= 62
    })
    .await;
    assert_eq!(d.summary.conv.outcome.as_deref(), Some("solved"));
    assert_eq!(d.summary.conv.tags, ["billing"]);
    assert!(d.summary.first_response_ms.is_some() && d.summary.duration_ms.is_some());
    let kinds: Vec<&str> = d.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"queued"));
    assert_eq!(kinds.last(), Some(&"closed"));
    let msgs = store
        .messages(&SiteId::from("demo"), &conv, 0, 500)
        .await
        .unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=d.summary.conv.last_seq).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert!(
        msgs.iter().any(|m| m.text == "question 0"),
        "the beginning the live log let go"
    );
    assert!(msgs
        .iter()
        .any(|m| m.code.as_deref() == Some("operator_joined")));
    // Searchable by what was said.
    let found = store
        .conversations(
            &SiteId::from("demo"),
            &ConvFilter {
                q: Some("answer".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// An open conversation's messages reach the archive too, within moments, while it goes on.
#[tokio::test]
async fn an_open_conversation_is_archived_as_it_goes() {
    let dir = scratch("archive-open");
    let node = node_with(|c| c.archive = ArchiveConfig::Sqlite(dir.join("archive.db"))).await;
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
        &v.request(req::send(r, &conv, "m1", "is anybody there"))
            .await,
    );
    let store = node.gw.archive().unwrap().clone();
    let d = archived_until(
        &*store,
        &conv,
        "the waiting conversation and its message",
        |d| d.summary.message_count == 1,
    )
    .await;
    assert_eq!(d.summary.conv.state, ConvState::Queued);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
