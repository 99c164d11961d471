//! The directory on two nodes sharing one Redis and one PostgreSQL: a change made through one
//! node's API is in effect on the other at once — a new line in its next `welcome`, a staff
//! account set inactive disconnected from it; a site made through one node serves visitors
//! and staff on the other, its conversations archived, and deleted through one node, its
//! sockets on the other close.

use std::time::Duration;

use serde_json::{json, Value};
use testsupport::{PgServer, RedisServer};
use tokio::time::Instant;

use crate::archive::{api_key, key_for};
use crate::harness::*;
use crate::multinode::{operator, visitor, with, Store};

/// Calls a node's HTTP API with `key`: the status and the JSON answer (`null` when none).
pub(crate) async fn api(
    node: &Node,
    key: &str,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let (status, text) = http_request(
        method,
        &node.http(path),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
    .expect("the node answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_directory_change_on_one_node_is_in_effect_on_the_other_at_once() {
    let store = Store::Single(RedisServer::start());
    let pg = PgServer::start();
    let env = with(store.env(), &[("GATEWAY_DATABASE_URL", &pg.url())]);
    let key = api_key(&env, "admin");
    let a = Node::start("a", &env);
    let b = Node::start("b", &env);

    // Olga works on node b; her account is made on node a.
    let (status, body) = api(
        &a,
        &key,
        "POST",
        "/v1/sites/demo/operators",
        json!({"id": "op1", "name": "Olga", "role": "operator"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut olga = operator(&b, "op1", "Olga").await;

    // A line made on node a is in node b's next welcome.
    let (status, body) = api(
        &a,
        &key,
        "POST",
        "/v1/sites/demo/queues",
        json!({"id": "billing", "name": "Billing"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v = visitor(&b, "v1").await;
    let queues = v.welcome["settings"]["queues"].clone();
    assert!(
        queues
            .as_array()
            .is_some_and(|q| q.iter().any(|x| x == "billing")),
        "node b's welcome lists the new line: {queues}"
    );

    // Set inactive on node a: Olga's socket on node b closes, and she cannot come back there.
    let (status, body) = api(
        &a,
        &key,
        "PATCH",
        "/v1/sites/demo/operators/op1",
        json!({"active": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(olga.closed().await, Some(4003), "{}", b.logs());
    let mut again = Client::open(&b.ws_url()).await;
    again
        .send(json!({"t": "hello", "token": token("operator", "op1", "Olga")}))
        .await;
    assert_eq!(again.closed().await, Some(4003));
}

#[tokio::test]
async fn a_site_made_on_one_node_serves_on_the_other_at_once_and_goes_with_its_deletion() {
    let store = Store::Single(RedisServer::start());
    let pg = PgServer::start();
    let env = with(store.env(), &[("GATEWAY_DATABASE_URL", &pg.url())]);
    let root = key_for(&env, None, "admin");
    let a = Node::start("a", &env);
    let b = Node::start("b", &env);

    let (status, body) = api(
        &a,
        &root,
        "POST",
        "/v1/sites",
        json!({"id": "acme", "name": "Acme", "widget_key": "acme-widget"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        &a,
        &root,
        "POST",
        "/v1/sites/acme/api-keys",
        json!({"name": "backend", "scopes": ["tokens", "read"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let backend = body["key"].as_str().unwrap().to_owned();

    // On node b at once: the widget key, the site's backend minting an operator's token.
    let (status, text) = http_request(
        "POST",
        &b.http("/v1/visitor/session"),
        &[("Content-Type", "application/json")],
        &json!({"site": "acme-widget"}).to_string(),
    )
    .await
    .expect("node b answers");
    assert_eq!(status, 200, "{text}");
    let vt = serde_json::from_str::<Value>(&text).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = api(
        &b,
        &backend,
        "POST",
        "/v1/sites/acme/tokens",
        json!({"role": "operator", "sub": "op1", "name": "Olga"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut olga = Client::connect(&b.ws_url(), body["token"].as_str().unwrap(), json!({})).await;
    assert_eq!(
        olga.request(json!({"t": "status", "status": "active"}))
            .await["t"],
        "ok"
    );
    let mut v = Client::connect(&b.ws_url(), &vt, json!({})).await;
    let conv = v.request(json!({"t": "start"})).await["conv"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        olga.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    let sent = v
        .request(json!({"t": "send", "conv": conv, "cid": "c1", "text": "hello acme"}))
        .await;
    assert_eq!(sent["t"], "ok", "{sent}");
    // Its message reaches the archive (found by its words): node b's engine works the new
    // site's outbox.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = api(
            &a,
            &backend,
            "GET",
            "/v1/sites/acme/conversations?q=hello",
            Value::Null,
        )
        .await;
        if status == 200
            && page["items"]
                .as_array()
                .is_some_and(|m| m.iter().any(|c| c["id"] == conv))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not archived: {status} {page}\n{}",
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Deleted through node a: node b closes the site's sockets and refuses its keys.
    let (status, body) = api(&a, &root, "DELETE", "/v1/sites/acme", Value::Null).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(olga.closed().await, Some(4003), "{}", b.logs());
    assert_eq!(v.closed().await, Some(4003));
    let (status, _) = api(
        &b,
        &backend,
        "GET",
        "/v1/sites/acme/conversations",
        Value::Null,
    )
    .await;
    assert_eq!(status, 401);
}
