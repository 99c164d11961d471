//! The timing rules on Redis, fired by another node than the one whose transition armed
//! them: the node that took the conversation is killed right after, so only the other node
//! can fire the timer (`gateway/tests/it/rules.rs` covers the rules themselves in memory).

use serde_json::json;
use testsupport::RedisServer;

use crate::harness::*;
use crate::multinode::{nodes, operator, say, start, visitor, with, Store};

fn env(store: &Store, file: &tempfile_path::Path) -> Vec<(String, String)> {
    with(store.env(), &[("GATEWAY_SITES", file.0.to_str().unwrap())])
}

/// op1 (on node a) accepts a conversation whose visitor waits, node a dies at once; the
/// reassign timer its accept armed fires on node b and moves the conversation to op2 (op1's
/// operator grace is a minute: the move is the reassignment, not the grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassign_timer_armed_on_one_node_fires_on_another() {
    let store = Store::Single(RedisServer::start());
    let file = sites_file(json!({"reassign_after": "3s", "close_after_inactive": "off"}));
    let mut n = nodes(&env(&store, &file), &["a", "b"]);
    let mut op1 = operator(&n[0], "op1", "Olga").await;
    let _op2 = operator(&n[1], "op2", "Petr").await;
    let mut v = visitor(&n[1], "v1").await;
    let conv = start(&mut v).await;
    say(&mut v, &conv, "m1", "anyone?").await;
    let ok = op1.request(json!({"t": "accept", "conv": conv})).await;
    assert_eq!(ok["t"], "ok", "{ok}");
    n[0].kill();
    // First the visitor is told in words, then the conversation moves.
    v.recv_until("the system message", |f| {
        f["t"] == "msg" && f["code"] == "reassigned"
    })
    .await;
    let moved = v
        .recv_until("reassigned to op2", |f| {
            f["t"] == "conv" && f["event"] == "transferred" && f["reason"] == "reassigned"
        })
        .await;
    assert_eq!(moved["conv"]["operator"]["id"], "op2");
}

/// op1 (on node a) answers and node a dies; the visitor says nothing more, and node b closes
/// the conversation for inactivity, counted from op1's last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactivity_close_fires_on_another_node() {
    let store = Store::Single(RedisServer::start());
    let file = sites_file(json!({"close_after_inactive": "3s", "operator_grace": "1m"}));
    let mut n = nodes(&env(&store, &file), &["a", "b"]);
    let mut op1 = operator(&n[0], "op1", "Olga").await;
    let mut v = visitor(&n[1], "v1").await;
    let conv = start(&mut v).await;
    let ok = op1.request(json!({"t": "accept", "conv": conv})).await;
    assert_eq!(ok["t"], "ok", "{ok}");
    say(&mut v, &conv, "m1", "a question").await;
    say(&mut op1, &conv, "o1", "the answer").await;
    n[0].kill();
    let closed = v
        .recv_until("closed for inactivity", |f| {
            f["t"] == "conv" && f["event"] == "closed"
        })
        .await;
    assert_eq!(closed["reason"], "inactive", "{closed}");
    assert_eq!(closed["conv"]["outcome"], "inactive", "{closed}");
}
