//! A one-node install (the in-memory engine, a data dir) restarted with SIGTERM — an upgrade —
//! keeps its generated secret, its open and its closed conversations: the visitor and the
//! operator resume where they were.

use serde_json::{json, Value};

use crate::harness::*;
use crate::multinode::{in_queue, say};

fn env(data: &TempDir) -> Vec<(String, String)> {
    let mut env = base_env();
    // The generated secret is what a one-node install runs on.
    env.retain(|(k, _)| k != "GATEWAY_JWT_SECRET");
    env.push(("GATEWAY_DATA_DIR".into(), data.path()));
    env
}

fn kept_secret(data: &TempDir) -> String {
    std::fs::read_to_string(data.0.join("secret")).expect("the generated secret is kept")
}

async fn connect(node: &Node, secret: &str, role: &str, id: &str, cursors: Value) -> Client {
    Client::connect(
        &node.ws_url(),
        &token_signed(secret, role, id, id, json!({})),
        cursors,
    )
    .await
}

#[tokio::test]
async fn a_one_node_install_restarted_with_sigterm_keeps_its_conversations() {
    let data = TempDir::new("restart");
    let mut node = Node::start("solo", &env(&data));
    let secret = kept_secret(&data);
    let mut op = connect(&node, &secret, "operator", "op1", json!({})).await;
    assert_eq!(
        op.request(json!({"t": "status", "status": "active"})).await["t"],
        "ok"
    );
    // One conversation closed, one open and answered.
    let mut gone = connect(&node, &secret, "visitor", "v-closed", json!({})).await;
    let closed = gone.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.recv_until("the first in the queue", |f| in_queue(f, &closed))
        .await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": closed})).await["t"],
        "ok"
    );
    say(&mut gone, &closed, "c1", "thanks, that was all").await;
    let ok = op
        .request(json!({"t": "close", "conv": closed, "outcome": "solved"}))
        .await;
    assert_eq!(ok["t"], "ok", "{ok}");
    let mut v = connect(&node, &secret, "visitor", "v-open", json!({})).await;
    let conv = v.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.recv_until("the second in the queue", |f| in_queue(f, &conv))
        .await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    say(&mut v, &conv, "v1", "my order is late").await;
    let seen = say(&mut op, &conv, "o1", "let me look").await;

    let status = node.terminate();
    assert!(status.success(), "a clean exit: {status}\n{}", node.logs());
    assert!(
        data.0.join("memory-state.msgpack").exists(),
        "{}",
        node.logs()
    );
    let node = Node::start("solo", &env(&data));
    node.wait_for_log("state of the last run restored");
    assert_eq!(
        kept_secret(&data),
        secret,
        "the same secret after the restart"
    );

    // The old tokens still work; both sides resume the open conversation.
    let mut op = connect(
        &node,
        &secret,
        "operator",
        "op1",
        json!({ conv.clone(): seen }),
    )
    .await;
    let mine = &op.welcome["conversations"];
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == conv && c["state"] == "active"),
        "the operator still has the conversation: {mine}"
    );
    let mut v = connect(
        &node,
        &secret,
        "visitor",
        "v-open",
        json!({ conv.clone(): seen }),
    )
    .await;
    let c = &v.welcome["conversations"][0];
    assert_eq!(c["id"], conv, "{}", v.welcome);
    assert_eq!(c["state"], "active");
    assert_eq!(c["recovered"], true, "nothing was missed: {c}");
    // The conversation goes on, numbered after what came before.
    let next = say(&mut v, &conv, "v2", "still there?").await;
    assert_eq!(next, seen + 1);
    let m = op
        .recv_until("the visitor's next message", |f| {
            f["t"] == "msg" && f["text"] == "still there?"
        })
        .await;
    assert_eq!(m["seq"], next);
    // The closed one is still readable, whole.
    let mut gone = connect(&node, &secret, "visitor", "v-closed", json!({})).await;
    let h = gone.request(json!({"t": "history", "conv": closed})).await;
    assert_eq!(h["t"], "ok", "{h}");
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"thanks, that was all"), "{h}");
}

#[tokio::test]
async fn a_state_file_that_cannot_be_read_is_set_aside_and_the_node_starts_empty() {
    let data = TempDir::new("restart-bad");
    std::fs::write(data.0.join("memory-state.msgpack"), b"not a state file").unwrap();
    let node = Node::start("solo", &env(&data));
    node.wait_for_log("state of the last run not restored");
    assert!(data.0.join("memory-state.unreadable").exists());
    assert!(!data.0.join("memory-state.msgpack").exists());
    // And it serves.
    let mut v = connect(&node, &kept_secret(&data), "visitor", "v1", json!({})).await;
    assert_eq!(v.request(json!({"t": "start"})).await["t"], "ok");
}
