//! The archive on PostgreSQL shared by two nodes on one Redis: a conversation closed on one
//! node whose process is killed at once is in the archive, whole (past the live log's cap),
//! through the other node's HTTP API.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testsupport::{PgServer, RedisServer};

use crate::harness::*;
use crate::multinode::{in_queue, operator, say, visitor, with, Store};

/// Makes an API key with the gateway's own CLI, against the archive `env` names.
pub(crate) fn api_key(env: &[(String, String)], scopes: &str) -> String {
    key_for(env, Some("demo"), scopes)
}

/// An API key made with the `gateway api-key` command: of a site, or a root key (`None`).
pub(crate) fn key_for(env: &[(String, String)], site: Option<&str>, scopes: &str) -> String {
    let mut args = vec!["api-key", "create"];
    match site {
        Some(s) => args.extend(["--site", s]),
        None => args.push("--root"),
    }
    args.extend(["--scope", scopes, "--name", "e2e"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(&args)
        .output()
        .expect("gateway api-key runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn api_get(node: &Node, key: &str, path: &str) -> Option<(u16, Value)> {
    let auth = format!("Bearer {key}");
    let (status, body) =
        http_request("GET", &node.http(path), &[("Authorization", &auth)], "").await?;
    Some((status, serde_json::from_str(&body).ok()?))
}

#[tokio::test]
async fn a_conversation_closed_on_a_node_killed_at_once_is_archived_whole_through_another() {
    let store = Store::Single(RedisServer::start());
    let pg = PgServer::start();
    let env = with(
        store.env(),
        &[
            ("GATEWAY_DATABASE_URL", &pg.url()),
            ("GATEWAY_MAX_LOG", "10"),
        ],
    );
    let key = api_key(&env, "read");
    let mut a = Node::start("a", &env);
    let b = Node::start("b", &env);
    let mut op = operator(&a, "op1", "Olga").await;
    let mut v = visitor(&a, "v1").await;
    let conv = v.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    for i in 0..15 {
        say(&mut v, &conv, &format!("v{i}"), &format!("question {i}")).await;
        say(&mut op, &conv, &format!("o{i}"), &format!("answer {i}")).await;
    }
    let closed = op
        .request(json!({"t": "close", "conv": conv, "outcome": "solved"}))
        .await;
    assert_eq!(closed["t"], "ok", "{closed}");
    // Killed before its archiver could write (or acknowledge) what it claimed.
    a.kill();
    // Whatever node a claimed and never acknowledged is claimed again after its lease (30 s).
    let deadline = Instant::now() + Duration::from_secs(75);
    let detail = loop {
        if let Some((200, d)) =
            api_get(&b, &key, &format!("/v1/sites/demo/conversations/{conv}")).await
        {
            // From the archive (the live engine's answer has no events), whole.
            let archived = d["events"].as_array().is_some_and(|e| !e.is_empty());
            if archived
                && d["state"] == "closed"
                && d["message_count"] == d["last_seq"]
                && d["last_seq"].as_u64() >= Some(32)
            {
                break d;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not archived through node b:\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["outcome"], "solved");
    let last = detail["last_seq"].as_u64().unwrap();
    let (status, page) = api_get(
        &b,
        &key,
        &format!("/v1/sites/demo/conversations/{conv}/messages?limit=500"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let seqs: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let texts: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"question 0"),
        "the beginning the live log let go"
    );
    // Searchable on PostgreSQL.
    let (_, found) = api_get(&b, &key, "/v1/sites/demo/conversations?q=answer")
        .await
        .unwrap();
    assert_eq!(found["items"][0]["id"], conv, "{found}");
}

/// The messages the archive holds of a conversation, through a node's API (`None` while the
/// archive cannot answer).
async fn archived_seqs(node: &Node, key: &str, conv: &str) -> Option<Vec<u64>> {
    let (status, page) = api_get(
        node,
        key,
        &format!("/v1/sites/demo/conversations/{conv}/messages?limit=500"),
    )
    .await?;
    (status == 200).then(|| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    })
}

/// Waits until the archive (not the live engine) holds the conversation closed, with every
/// message up to `last`.
async fn until_archived_whole(node: &Node, key: &str, conv: &str, last: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, d)) =
            api_get(node, key, &format!("/v1/sites/demo/conversations/{conv}")).await
        {
            let archived = d["events"].as_array().is_some_and(|e| !e.is_empty());
            if archived && d["state"] == "closed" && d["message_count"].as_u64() == Some(last) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not archived whole:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seqs = archived_seqs(node, key, conv).await.expect("readable");
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

/// PostgreSQL down under traffic: the chat goes on (nothing slow on the message path), the
/// API says 503, and once it is back every message reaches the archive, once.
#[tokio::test]
async fn a_postgresql_outage_delays_the_archive_and_loses_nothing() {
    let redis = RedisServer::start();
    let mut pg = PgServer::start();
    let mut env = base_env();
    env.push(("GATEWAY_REDIS_URL".into(), redis.url()));
    env.push(("GATEWAY_DATABASE_URL".into(), pg.url()));
    let key = api_key(&env, "read");
    let node = Node::start("a", &env);
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = v.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    for i in 0..10 {
        say(&mut v, &conv, &format!("a{i}"), &format!("before {i}")).await;
    }
    pg.kill();
    for i in 0..10 {
        say(&mut v, &conv, &format!("b{i}"), &format!("during {i}")).await;
        say(&mut op, &conv, &format!("c{i}"), &format!("answer {i}")).await;
    }
    let (status, _) = http_request(
        "GET",
        &node.http(&format!("/v1/sites/demo/conversations/{conv}")),
        &[("Authorization", &format!("Bearer {key}"))],
        "",
    )
    .await
    .expect("the node answers");
    assert_eq!(status, 503, "the archive is down: the API says so");
    let closed = op
        .request(json!({"t": "close", "conv": conv, "outcome": "solved"}))
        .await;
    assert_eq!(closed["t"], "ok", "{closed}");
    let last = closed["conv"]["last_seq"].as_u64().unwrap();
    pg.restart();
    until_archived_whole(&node, &key, &conv, last).await;
}

/// Redis restarted (with its AOF) right after a close: the outbox entry survives and the
/// archive gets the conversation whole.
#[tokio::test]
async fn a_redis_restart_after_a_close_loses_nothing_on_the_way_to_the_archive() {
    let mut redis = RedisServer::start_durable();
    let pg = PgServer::start();
    let mut env = base_env();
    env.push(("GATEWAY_REDIS_URL".into(), redis.url()));
    env.push(("GATEWAY_DATABASE_URL".into(), pg.url()));
    let key = api_key(&env, "read");
    let node = Node::start("a", &env);
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = v.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    for i in 0..10 {
        say(&mut v, &conv, &format!("v{i}"), &format!("question {i}")).await;
        say(&mut op, &conv, &format!("o{i}"), &format!("answer {i}")).await;
    }
    let closed = op.request(json!({"t": "close", "conv": conv})).await;
    assert_eq!(closed["t"], "ok", "{closed}");
    let last = closed["conv"]["last_seq"].as_u64().unwrap();
    redis.restart();
    until_archived_whole(&node, &key, &conv, last).await;
}
