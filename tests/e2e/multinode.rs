//! Several nodes on one Redis, and on a three-master Redis Cluster.

use serde_json::{json, Value};
use testsupport::{RedisCluster, RedisServer};

use crate::harness::*;

/// Where the nodes' shared state lives.
pub(crate) enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        let mut env = base_env();
        match self {
            Store::Single(r) => env.push(("GATEWAY_REDIS_URL".into(), r.url())),
            Store::Cluster(c) => env.push(("GATEWAY_REDIS_URL".into(), c.urls())),
        }
        env
    }
}

pub(crate) fn with(
    mut env: Vec<(String, String)>,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(x, _)| x != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

pub(crate) fn nodes(env: &[(String, String)], names: &[&str]) -> Vec<Node> {
    names.iter().map(|n| Node::start(n, env)).collect()
}

pub(crate) async fn operator(node: &Node, id: &str, name: &str) -> Client {
    let mut c = Client::connect(&node.ws_url(), &token("operator", id, name), json!({})).await;
    let ok = c.request(json!({"t": "status", "status": "active"})).await;
    assert_eq!(ok["t"], "ok", "{ok}");
    c
}

pub(crate) async fn visitor(node: &Node, id: &str) -> Client {
    Client::connect(&node.ws_url(), &token("visitor", id, id), json!({})).await
}

/// Starts a conversation; returns its id.
pub(crate) async fn start(v: &mut Client) -> String {
    let ok = v.request(json!({"t": "start"})).await;
    assert_eq!(ok["t"], "ok", "{ok}");
    ok["conv"]["id"].as_str().unwrap().to_owned()
}

pub(crate) fn in_queue(f: &Value, conv: &str) -> bool {
    f["t"] == "queue"
        && f["waiting"]
            .as_array()
            .is_some_and(|w| w.iter().any(|c| c["id"] == conv))
}

/// Sends a message and returns its seq (asserting the ack).
pub(crate) async fn say(c: &mut Client, conv: &str, cid: &str, text: &str) -> u64 {
    let ok = c
        .request(json!({"t": "send", "conv": conv, "cid": cid, "text": text}))
        .await;
    assert_eq!(ok["t"], "ok", "{ok}");
    ok["seq"].as_u64().unwrap()
}

pub(crate) async fn hears(c: &mut Client, conv: &str, text: &str) -> Value {
    c.recv_until(&format!("msg {text:?}"), |f| {
        f["t"] == "msg" && f["conv"] == conv && f["text"] == text
    })
    .await
}

async fn cross_node_chat(env: &[(String, String)]) {
    let n = nodes(env, &["a", "b", "c"]);
    let mut op = operator(&n[1], "op1", "Olga").await;
    let mut v = visitor(&n[0], "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("the conversation in the queue", |f| in_queue(f, &conv))
        .await;
    let acc = op.request(json!({"t": "accept", "conv": conv})).await;
    assert_eq!(acc["t"], "ok", "{acc}");
    v.recv_until("assigned", |f| f["t"] == "conv" && f["event"] == "assigned")
        .await;
    say(&mut v, &conv, "v-1", "hello from node a").await;
    hears(&mut op, &conv, "hello from node a").await;
    say(&mut op, &conv, "o-1", "hello from node b").await;
    let m = hears(&mut v, &conv, "hello from node b").await;
    assert_eq!(m["from"]["role"], "operator");
    // A third node sees the same conversation: the visitor's second tab.
    let mut tab = Client::connect(
        &n[2].ws_url(),
        &token("visitor", "v1", "v1"),
        json!({ conv.clone(): 0 }),
    )
    .await;
    assert_eq!(tab.welcome["conversations"][0]["recovered"], true);
    say(&mut op, &conv, "o-2", "both tabs").await;
    hears(&mut tab, &conv, "both tabs").await;
    hears(&mut v, &conv, "both tabs").await;
}

async fn accept_race(env: &[(String, String)]) {
    let n = nodes(env, &["a", "b", "c"]);
    let mut o1 = operator(&n[0], "op1", "One").await;
    let mut o2 = operator(&n[1], "op2", "Two").await;
    let mut v = visitor(&n[2], "v1").await;
    let conv = start(&mut v).await;
    o1.recv_until("queued", |f| in_queue(f, &conv)).await;
    o2.recv_until("queued", |f| in_queue(f, &conv)).await;
    let (a, b) = tokio::join!(
        o1.request(json!({"t": "accept", "conv": conv})),
        o2.request(json!({"t": "accept", "conv": conv})),
    );
    let oks = [&a, &b].iter().filter(|f| f["t"] == "ok").count();
    assert_eq!(oks, 1, "exactly one winner: {a} / {b}");
    let loser = if a["t"] == "ok" { &b } else { &a };
    assert_eq!(loser["code"], "taken", "{loser}");
    let (loser_client, winner) = if a["t"] == "ok" {
        (&mut o2, "op1")
    } else {
        (&mut o1, "op2")
    };
    // The loser sees it leave the queue.
    loser_client
        .recv_until("the queue without it", |f| {
            f["t"] == "queue" && !in_queue(f, &conv)
        })
        .await;
    let assigned = v
        .recv_until("assigned", |f| f["t"] == "conv" && f["event"] == "assigned")
        .await;
    assert_eq!(assigned["conv"]["operator"]["id"], winner);
}

async fn resume_on_another_node(env: &[(String, String)]) {
    let n = nodes(env, &["a", "b", "c"]);
    let mut op = operator(&n[0], "op1", "Olga").await;
    let mut v = visitor(&n[1], "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    let seen = say(&mut v, &conv, "v-1", "first").await;
    hears(&mut op, &conv, "first").await;
    drop(v);
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(say(&mut op, &conv, &format!("o-{i}"), &format!("missed {i}")).await);
    }
    let mut back = Client::connect(
        &n[2].ws_url(),
        &token("visitor", "v1", "v1"),
        json!({ conv.clone(): seen }),
    )
    .await;
    let c = &back.welcome["conversations"][0];
    assert_eq!(c["id"], conv);
    assert_eq!(c["recovered"], true);
    let got = read_msgs_until(&mut back, &conv, *sent.last().unwrap(), seen + 1).await;
    let texts: Vec<&str> = got
        .iter()
        .filter(|m| m["from"]["role"] == "operator")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_on_one_node_and_an_operator_on_another_chat_both_ways() {
    let store = Store::Single(RedisServer::start());
    cross_node_chat(&store.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_on_two_nodes_race_to_accept_and_exactly_one_wins() {
    let store = Store::Single(RedisServer::start());
    accept_race(&store.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_resumes_on_another_node_with_exactly_the_missed_messages() {
    let store = Store::Single(RedisServer::start());
    resume_on_another_node(&store.env()).await;
}

/// The same three cases on one three-master cluster, flushed between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_nodes_chat_race_and_resume() {
    let store = Store::Cluster(RedisCluster::start());
    let Store::Cluster(cluster) = &store else {
        unreachable!()
    };
    cross_node_chat(&store.env()).await;
    cluster.flush();
    accept_race(&store.env()).await;
    cluster.flush();
    resume_on_another_node(&store.env()).await;
}

/// How many scripts Redis has run so far (`INFO commandstats`).
fn scripts_run(redis: &RedisServer) -> u64 {
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let info = testsupport::command(port, "INFO commandstats").expect("INFO answered");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Every page with the widget polls availability. A node answers from what it computed at
/// most a second ago (and afresh after its own changes), so a burst of polls does not read
/// the site's state from Redis one by one; another node's change still shows within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_polls_do_not_read_redis_each_and_follow_other_nodes() {
    let store = Store::Single(RedisServer::start());
    let n = nodes(&store.env(), &["a", "b"]);
    let Store::Single(redis) = &store else {
        unreachable!()
    };
    let url = n[1].http("/v1/sites/demo/availability");
    http_until(&url, "offline", |code, body| {
        code == 200 && body.contains("\"offline\"")
    })
    .await;
    // 300 polls in a burst: without the node's short memory each would run a script.
    let before = scripts_run(redis);
    for _ in 0..300 {
        let (code, body) = http_get(&url).await.expect("availability answered");
        assert_eq!(code, 200, "{body}");
    }
    let ran = scripts_run(redis) - before;
    assert!(
        ran < 100,
        "{ran} scripts ran in Redis during 300 availability polls"
    );
    // An operator goes active on node a: node b says so within its second.
    let started = tokio::time::Instant::now();
    let _op = operator(&n[0], "op1", "Olga").await;
    http_until(&url, "online", |code, body| {
        code == 200 && body.contains("\"online\"")
    })
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "node b showed the operator after {:?}",
        started.elapsed()
    );
}
