//! E-mails and webhook events through the faults a deployment meets: two nodes on one Redis
//! (append-only, so it keeps what it acknowledged) and one PostgreSQL, a real SMTP server and a
//! webhook receiver started here. The receiver answers 503 while a conversation happens; the
//! node the visitor was on is killed right after the close, and Redis is restarted. Once the
//! receiver recovers, every event of the conversation arrives signed, under one `webhook-id`
//! per event however often it was tried, and the transcript reaches each address once.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use testsupport::webhook::{event, start_receiver, verified};
use testsupport::{PgServer, RedisServer, SmtpServer};
use tokio::time::Instant;

use crate::archive::api_key;
use crate::directory::api;
use crate::harness::*;
use crate::multinode::{operator, start, visitor, with, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_mail_survive_a_node_killed_redis_restarted_and_a_receiver_down() {
    let store = Store::Single(RedisServer::start_durable());
    let pg = PgServer::start();
    let smtp = SmtpServer::start();
    let (rx, hook_url) = start_receiver().await;
    let smtp_url = smtp.url();
    let env = with(
        store.env(),
        &[
            ("GATEWAY_DATABASE_URL", &pg.url()),
            ("GATEWAY_SMTP_URL", &smtp_url),
            ("GATEWAY_MAIL_FROM", "Chat <chat@example.com>"),
            ("GATEWAY_DELIVERY_LEASE", "15s"),
            // The receiver is on this machine: only a listed host may be.
            ("GATEWAY_WEBHOOK_HOSTS", "127.0.0.1"),
        ],
    );
    let key = api_key(&env, "admin");
    let mut a = Node::start("a", &env);
    let b = Node::start("b", &env);

    // The company gets transcripts, its address listed twice in two spellings.
    let (status, body) = api(
        &b,
        &key,
        "PATCH",
        "/v1/sites/demo",
        json!({"settings": {"transcript_emails": ["boss@example.com", "Boss@Example.com", "ops@example.com"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, made) = api(
        &b,
        &key,
        "POST",
        "/v1/sites/demo/webhooks",
        json!({"url": hook_url}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["secret"].as_str().unwrap().to_owned();

    // The receiver is down while the conversation happens: the visitor on node a, the
    // operator on node b.
    rx.fail_with.store(503, Ordering::SeqCst);
    let mut olga = operator(&b, "op1", "Olga").await;
    let mut ann = visitor(&a, "v-fault").await;
    let conv = start(&mut ann).await;
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let ok = ann
            .request(json!({"t": "send", "conv": conv, "cid": format!("c{i}"), "text": text}))
            .await;
        assert_eq!(ok["t"], "ok", "{ok}");
    }
    let ok = olga.request(json!({"t": "accept", "conv": conv})).await;
    assert_eq!(ok["t"], "ok", "{ok}");
    let ok = olga
        .request(json!({"t": "send", "conv": conv, "cid": "o1", "text": "answer"}))
        .await;
    assert_eq!(ok["t"], "ok", "{ok}");
    let ok = olga.request(json!({"t": "close", "conv": conv})).await;
    assert_eq!(ok["t"], "ok", "{ok}");

    // Node a dies at once, whatever it was archiving or sending; Redis restarts.
    a.kill();
    let Store::Single(mut redis) = store else {
        unreachable!()
    };
    redis.kill();
    redis.restart();
    // A call failed before the receiver comes back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rx.hits.lock().iter().any(|h| h.answered == 503) {
        assert!(Instant::now() < deadline, "no call reached the receiver");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.fail_with.store(0, Ordering::SeqCst);

    // Every event of the conversation arrives, signed.
    let want = |hits: &[testsupport::webhook::Hit]| {
        let ok: Vec<Value> = hits
            .iter()
            .filter(|h| h.answered < 300)
            .map(event)
            .filter(|e| {
                e["data"]["conv"] == conv.as_str()
                    || e["data"]["conversation"]["id"] == conv.as_str()
            })
            .collect();
        let has = |t: &str| ok.iter().any(|e| e["type"] == t);
        let texts: Vec<&str> = ok
            .iter()
            .filter(|e| e["type"] == "message.created")
            .filter_map(|e| e["data"]["text"].as_str())
            .collect();
        has("conversation.started")
            && has("conversation.assigned")
            && has("conversation.closed")
            && ["one", "two", "three", "answer"]
                .iter()
                .all(|t| texts.contains(t))
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !want(&rx.hits.lock()) {
        assert!(
            Instant::now() < deadline,
            "not every event arrived: {:?}\n--- node b ---\n{}",
            rx.hits
                .lock()
                .iter()
                .map(|h| (h.answered, event(h)["type"].clone()))
                .collect::<Vec<_>>(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = rx.hits.lock().clone();
    // One id per event: a retried event carries the id it failed with, and the same body.
    let mut by_id: BTreeMap<String, Vec<&testsupport::webhook::Hit>> = BTreeMap::new();
    for h in &hits {
        assert!(
            verified(&secret, h),
            "a call not signed with the secret: {h:?}"
        );
        by_id.entry(h.id.clone()).or_default().push(h);
    }
    for (id, tries) in &by_id {
        let first = event(tries[0]);
        assert_eq!(first["id"], id.as_str());
        for t in tries {
            assert_eq!(event(t), first, "one id, one event");
        }
    }
    let retried = by_id
        .values()
        .filter(|t| t.iter().any(|h| h.answered == 503) && t.iter().any(|h| h.answered < 300))
        .count();
    assert!(retried > 0, "some event failed and then went through");
    let kinds: Vec<String> = by_id
        .values()
        .map(|t| event(t[0])["type"].as_str().unwrap().to_owned())
        .collect();
    let once = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(once("conversation.closed"), 1, "{kinds:?}");
    assert_eq!(once("conversation.started"), 1, "{kinds:?}");

    // The transcript: once to each address.
    let got = smtp
        .wait_for("the transcripts", Duration::from_secs(60), |g| {
            ["boss@example.com", "ops@example.com"].iter().all(|a| {
                g.iter()
                    .any(|m| m.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(a)))
            })
        })
        .await;
    let to = |a: &str| {
        got.iter()
            .filter(|m| m.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(a)))
            .collect::<Vec<_>>()
    };
    assert_eq!(to("boss@example.com").len(), 1, "{got:#?}");
    assert_eq!(to("ops@example.com").len(), 1, "{got:#?}");
    let text = to("boss@example.com")[0].text.clone().unwrap_or_default();
    for t in ["one", "two", "three", "answer"] {
        assert!(text.contains(t), "{text}");
    }
    drop(redis);
}
