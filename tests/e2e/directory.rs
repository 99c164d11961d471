//! The directory on two nodes sharing one Redis and one PostgreSQL: a change made through one
//! node's API is in effect on the other at once — a new line in its next `welcome`, a staff
//! account set inactive disconnected from it.

use serde_json::{json, Value};
use testsupport::{PgServer, RedisServer};

use crate::archive::api_key;
use crate::harness::*;
use crate::multinode::{operator, visitor, with, Store};

async fn api(node: &Node, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
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
