//! The faults a deployment meets: a node killed, a node drained, Redis restarted, and
//! settings changed on one node. Timers are short (`base_env`): node timeout 2 s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use testsupport::RedisServer;

use crate::harness::*;
use crate::multinode::{hears, in_queue, nodes, operator, say, start, visitor, with, Store};

fn sites(settings: Value) -> tempfile_path::Path {
    sites_file(settings)
}

fn env_with_sites(store: &Store, file: &tempfile_path::Path) -> Vec<(String, String)> {
    with(store.env(), &[("GATEWAY_SITES", file.0.to_str().unwrap())])
}

fn conv_event(f: &Value, conv: &str, event: &str) -> bool {
    f["t"] == "conv" && f["event"] == event && f["conv"]["id"] == conv
}

fn first_seq(msgs: &[Value]) -> u64 {
    msgs[0]["seq"].as_u64().unwrap()
}

/// The `msg` frames of one conversation that one client received, one slice per connection
/// in arrival order, deduplicated by `seq` as clients do: `seq` → (author role, cid, text).
/// A repeated `seq` must repeat the same message; on one connection seqs never go back
/// (repeats aside); a cid or a text under two seqs is a message stored or delivered twice.
fn exactly_once_by_seq(connections: &[&[Value]]) -> BTreeMap<u64, (String, String, String)> {
    let mut by_seq: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    for frames in connections {
        let mut newest = 0;
        let mut here = BTreeSet::new();
        for f in *frames {
            let seq = f["seq"].as_u64().expect("msg has a seq");
            let m = (
                f["from"]["role"].as_str().unwrap_or_default().to_owned(),
                f["cid"].as_str().unwrap_or_default().to_owned(),
                f["text"].as_str().unwrap_or_default().to_owned(),
            );
            match by_seq.get(&seq) {
                Some(kept) => assert_eq!(kept, &m, "seq {seq} delivered with another message"),
                None => {
                    by_seq.insert(seq, m);
                }
            }
            if here.insert(seq) {
                assert!(
                    seq > newest,
                    "seq {seq} after seq {newest} on one connection"
                );
                newest = seq;
            }
        }
    }
    let mut seq_of: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (seq, (role, cid, text)) in &by_seq {
        if role == "system" {
            continue;
        }
        for key in [(role.as_str(), cid.as_str()), ("text", text.as_str())] {
            if let Some(other) = seq_of.insert(key, *seq) {
                panic!("{key:?} under seq {other} and seq {seq}");
            }
        }
    }
    by_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_holding_a_visitor_is_killed_the_visitor_resumes_elsewhere_and_loses_nothing()
{
    let store = Store::Single(RedisServer::start());
    let file = sites(json!({"visitor_grace": "30s"}));
    let env = env_with_sites(&store, &file);
    let mut n = nodes(&env, &["a", "b", "c"]);
    let mut op = operator(&n[1], "op1", "Olga").await;
    let mut v = visitor(&n[0], "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    let seen = say(&mut v, &conv, "v-1", "before the crash").await;
    hears(&mut op, &conv, "before the crash").await;

    n[0].kill();
    assert_eq!(v.closed().await, None, "the socket just dies");
    // Within the node timeout the other nodes sweep the dead one.
    let away = op
        .recv_until("visitor_away", |f| conv_event(f, &conv, "visitor_away"))
        .await;
    assert_eq!(away["conv"]["visitor"]["online"], false);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            say(
                &mut op,
                &conv,
                &format!("o-{i}"),
                &format!("while away {i}"),
            )
            .await,
        );
    }
    let mut back = Client::connect(
        &n[2].ws_url(),
        &token("visitor", "v1", "v1"),
        json!({ conv.clone(): seen }),
    )
    .await;
    assert_eq!(back.welcome["conversations"][0]["recovered"], true);
    let got = read_msgs_until(&mut back, &conv, *sent.last().unwrap(), seen + 1).await;
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["while away 0", "while away 1", "while away 2"]);
    op.recv_until("visitor_back", |f| conv_event(f, &conv, "visitor_back"))
        .await;
    say(&mut back, &conv, "v-2", "still here").await;
    hears(&mut op, &conv, "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_holding_an_operator_is_killed_they_go_offline_and_their_chats_move_on() {
    let store = Store::Single(RedisServer::start());
    let file = sites(json!({"routing": "auto", "operator_grace": "3s", "visitor_grace": "60s"}));
    let env = env_with_sites(&store, &file);
    let mut n = nodes(&env, &["a", "b", "c"]);
    let mut sup = Client::connect(
        &n[1].ws_url(),
        &token("supervisor", "sup", "Sue"),
        json!({}),
    )
    .await;
    let mut o1 = operator(&n[0], "op1", "One").await;
    let mut v = visitor(&n[2], "v1").await;
    let conv = start(&mut v).await;
    let assigned = v
        .recv_until("assigned", |f| conv_event(f, &conv, "assigned"))
        .await;
    assert_eq!(assigned["conv"]["operator"]["id"], "op1");
    o1.recv_until("assigned to me", |f| conv_event(f, &conv, "assigned"))
        .await;
    let mut o2 = operator(&n[1], "op2", "Two").await;

    n[0].kill();
    // Never stuck online: supervisors see op1 go offline once the node is swept, within the
    // heartbeat timeout. A node beats every NODE_TIMEOUT / 5 and is dead after NODE_TIMEOUT
    // of silence, found at the next beat of another node (under 1.2 NODE_TIMEOUT); a node
    // judges others only once it has been connected for 2 NODE_TIMEOUT itself (these
    // started moments ago). So: two node timeouts, plus slack for a loaded machine.
    let bound = 2 * NODE_TIMEOUT + Duration::from_secs(2);
    let offline = tokio::time::timeout(
        bound,
        sup.recv_until("op1 offline", |f| {
            f["t"] == "operator" && f["id"] == "op1" && f["online"] == false
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("op1 still online {bound:?} after its node was killed"));
    assert_eq!(
        offline["load"], 1,
        "offline, still holding the chat: {offline}"
    );
    v.recv_until("operator_away", |f| conv_event(f, &conv, "operator_away"))
        .await;
    // After operator_grace the conversation goes back to the queue and on to op2.
    let moved = o2
        .recv_until("the conversation, now mine", |f| {
            f["t"] == "conv" && f["conv"]["id"] == conv && f["conv"]["operator"]["id"] == "op2"
        })
        .await;
    assert_eq!(moved["conv"]["state"], "active");
    let inactive = sup
        .recv_until("op1 inactive", |f| {
            f["t"] == "operator" && f["id"] == "op1" && f["status"] == "inactive"
        })
        .await;
    assert_eq!(inactive["online"], false, "{inactive}");
    say(&mut o2, &conv, "o2-1", "I am taking over").await;
    hears(&mut v, &conv, "I am taking over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_closes_with_1012_and_every_acked_message_arrives_exactly_once() {
    let store = Store::Single(RedisServer::start());
    let env = with(store.env(), &[("GATEWAY_DRAIN_WINDOW", "300ms")]);
    let mut n = nodes(&env, &["a", "b", "c"]);
    let mut a = n.remove(0);
    let (b, c) = (&n[0], &n[1]);
    let mut op = operator(&a, "op1", "Olga").await;
    let mut v = visitor(b, "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );

    // The visitor keeps writing while the operator's node drains.
    const N: usize = 40;
    let conv2 = conv.clone();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..N {
            acked.push((
                say(&mut v, &conv2, &format!("v-{i}"), &format!("m{i}")).await,
                i,
            ));
        }
        (v, acked)
    });
    let first = op
        .recv_until("the first message", |f| {
            f["t"] == "msg" && f["text"] == "m0"
        })
        .await;
    let drainer = std::thread::spawn(move || {
        let status = a.terminate();
        (a, status)
    });
    // Until the close, the operator keeps reading.
    let mut before: Vec<Value> = vec![first];
    loop {
        match tokio::time::timeout(WAIT, op.recv_or_close())
            .await
            .expect("drain in time")
        {
            Ok(f) if f["t"] == "msg" && f["conv"] == conv => before.push(f),
            Ok(_) => {}
            Err(code) => {
                assert_eq!(code, Some(1012), "drain closes with 1012");
                break;
            }
        }
    }
    let (_a, status) = drainer.join().unwrap();
    assert!(status.success(), "a drained node exits cleanly");
    let (mut v, acked) = writer.await.unwrap();
    assert_eq!(acked.len(), N);
    // The client resumes from the highest seq it holds without a gap, as clients do.
    let mut cursor = first_seq(&before) - 1;
    for m in &before {
        if m["seq"].as_u64().unwrap() == cursor + 1 {
            cursor += 1;
        }
    }
    let mut op = Client::connect(
        &c.ws_url(),
        &token("operator", "op1", "Olga"),
        json!({ conv.clone(): cursor }),
    )
    .await;
    assert_eq!(op.welcome["conversations"][0]["recovered"], true);
    let last = acked.last().unwrap().0;
    let after = read_msgs_until(&mut op, &conv, last, cursor + 1).await;
    let delivered = exactly_once_by_seq(&[&before, &after]);
    // Every acked message arrived under its acked seq; in seq order the visitor's messages
    // are m0..m39, each once.
    for (seq, i) in &acked {
        assert_eq!(
            delivered.get(seq).map(|m| (m.1.as_str(), m.2.as_str())),
            Some((format!("v-{i}").as_str(), format!("m{i}").as_str())),
            "acked seq {seq} (m{i})"
        );
    }
    let texts: Vec<&str> = delivered
        .values()
        .filter(|m| m.0 == "visitor")
        .map(|m| m.2.as_str())
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "every acked message once, in order");
    say(&mut op, &conv, "o-1", "back on node c").await;
    hears(&mut v, &conv, "back on node c").await;
}

/// Three nodes on one Redis (AOF on), with a client of the conversation on each: the
/// operator on a, the visitor on b, the visitor's second tab on c. Redis is killed and
/// restarted; nobody reconnects, and afterwards a message written through each node reaches
/// the clients on the two others: every node reconnected its commands and resubscribed its
/// channels by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_restarts_sends_fail_with_unavailable_then_everything_resumes() {
    let mut redis = RedisServer::start_durable();
    let env = with(base_env(), &[("GATEWAY_REDIS_URL", &redis.url())]);
    let n = nodes(&env, &["a", "b", "c"]);
    let mut op = operator(&n[0], "op1", "Olga").await;
    let mut v = visitor(&n[1], "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    let mut tab = Client::connect(
        &n[2].ws_url(),
        &token("visitor", "v1", "v1"),
        json!({ conv.clone(): 0 }),
    )
    .await;
    assert_eq!(tab.welcome["conversations"][0]["id"], conv);
    let mut acked = vec![say(&mut v, &conv, "v-0", "before").await];
    hears(&mut op, &conv, "before").await;
    hears(&mut tab, &conv, "before").await;

    redis.kill();
    for node in &n {
        http_until(&node.http("/readyz"), "not ready", |code, _| code == 503).await;
    }
    let refused = v
        .request(json!({"t": "send", "conv": conv, "cid": "v-1", "text": "during"}))
        .await;
    assert_eq!(refused["t"], "error", "{refused}");
    assert_eq!(refused["code"], "unavailable");
    let notice = v
        .recv_until("the unavailability notice", |f| f["t"] == "notice")
        .await;
    assert_eq!(notice["code"], "unavailable");
    assert!(!notice["text"].as_str().unwrap().is_empty());
    // A client arriving now cannot be welcomed: an `unavailable` error, then close 1013
    // (try again later, with backoff: docs/protocol.md §3.2, §9).
    let mut late = Client::open(&n[2].ws_url()).await;
    late.send(json!({"t": "hello", "token": token("visitor", "v2", "v2")}))
        .await;
    let first = tokio::time::timeout(WAIT, late.recv_or_close())
        .await
        .expect("an answer to hello")
        .expect("a frame before the close");
    assert_eq!(
        (&first["t"], &first["code"]),
        (&json!("error"), &json!("unavailable")),
        "{first}"
    );
    assert_eq!(late.closed().await, Some(1013));

    redis.restart();
    for node in &n {
        http_until(&node.http("/readyz"), "ready again", |code, _| code == 200).await;
    }
    // The client retries with the same cid (node b); then node a and node c write. Each
    // message reaches the clients on the two other nodes.
    acked.push(say(&mut v, &conv, "v-1", "during").await);
    hears(&mut op, &conv, "during").await;
    hears(&mut tab, &conv, "during").await;
    acked.push(say(&mut op, &conv, "o-1", "after, from a").await);
    hears(&mut v, &conv, "after, from a").await;
    hears(&mut tab, &conv, "after, from a").await;
    acked.push(say(&mut tab, &conv, "t-1", "after, from c").await);
    hears(&mut op, &conv, "after, from c").await;
    hears(&mut v, &conv, "after, from c").await;
    let h = v
        .request(json!({"t": "history", "conv": conv, "limit": 50}))
        .await;
    let stored: Vec<(u64, &str)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    for seq in &acked {
        assert!(
            stored.iter().any(|(s, _)| s == seq),
            "acked seq {seq} lost: {stored:?}"
        );
    }
    assert_eq!(
        stored.iter().filter(|(_, t)| *t == "during").count(),
        1,
        "the retried message is stored once: {stored:?}"
    );
    // Seqs stayed contiguous across the outage.
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_through_one_node_take_effect_on_all() {
    let store = Store::Single(RedisServer::start());
    let env = store.env();
    let n = nodes(&env, &["a", "b", "c"]);
    let sup = token("supervisor", "sup", "Sue");
    let auth = format!("Bearer {sup}");
    let (code, body) = http_request(
        "PATCH",
        &n[0].http("/v1/sites/demo/settings"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        r#"{"routing":"auto"}"#,
    )
    .await
    .expect("PATCH answered");
    assert_eq!(code, 200, "{body}");
    for node in &n[1..] {
        let url = node.http("/v1/sites/demo/settings");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, body) = http_request("GET", &url, &[("Authorization", &auth)], "")
                .await
                .expect("GET answered");
            if body.contains(r#""routing":"auto""#) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} kept {body}",
                node.name
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // And routing on another node now assigns directly.
    let mut op = operator(&n[2], "op1", "Olga").await;
    let mut v = visitor(&n[1], "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("auto-assigned", |f| conv_event(f, &conv, "assigned"))
        .await;
}
