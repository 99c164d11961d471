//! Webhooks to a real HTTP receiver started by the test: each event arrives signed as the
//! Standard Webhooks specification says (checked here with an HMAC of our own, not the
//! gateway's code), through the receiver's outage (a 500 for a while, then the same event
//! with the same `webhook-id`), with a delivery log in the API and a test event on demand.

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway::api::keys::Scope;
use gateway::protocol::{ClientFrame, Encoding, ServerFrame};
use serde_json::{json, Value};
use testsupport::webhook::{arrived, event, start_receiver, verified};

use crate::api::{api_node, assert_problem, call, get, key};
use crate::common::*;

#[tokio::test]
async fn events_arrive_signed_through_the_receivers_outage_with_a_log() {
    let (node, _dir) = api_node(|c| c.webhook_hosts = vec!["127.0.0.1".into()]).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let (rx, url) = start_receiver().await;
    let post = |path: &'static str, body: Value| {
        let node = &node;
        let admin = admin.clone();
        async move { call(node, &admin, "POST", path, Some(body), &[]).await }
    };

    // Bad ones are refused with the field named.
    let p = assert_problem(
        &post("/v1/sites/demo/webhooks", json!({"url":"ftp://x"})).await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "url", "{p}");
    let p = assert_problem(
        &post(
            "/v1/sites/demo/webhooks",
            json!({"url": url, "events":["conversation.exploded"]}),
        )
        .await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "events[0]", "{p}");
    assert_problem(
        &post(
            "/v1/sites/demo/webhooks",
            json!({"url": url, "secret":"whsec_mine"}),
        )
        .await,
        422,
        "invalid",
    );
    // Only the hosts the operator of the gateway allows (GATEWAY_WEBHOOK_HOSTS).
    let p = assert_problem(
        &post(
            "/v1/sites/demo/webhooks",
            json!({"url": "http://internal.example/admin"}),
        )
        .await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "url", "{p}");

    // Made: the secret is shown this once.
    let a = post(
        "/v1/sites/demo/webhooks",
        json!({"url": url, "events":["conversation.started","message.created","conversation.closed","visitor.banned"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let made = a.json();
    let hook = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{made}");
    let listed = get(&node, &admin, "/v1/sites/demo/webhooks").await;
    assert!(
        !listed.body.contains(&secret),
        "never listed with its secret"
    );

    // A conversation starts: its event arrives signed.
    let mut p = pair(&node, Encoding::Json, "v1").await;
    let started = arrived(&rx, "conversation.started", |e| {
        e["type"] == "conversation.started"
    })
    .await;
    assert!(verified(&secret, &started), "{started:?}");
    let e = event(&started);
    assert_eq!(e["id"], started.id.as_str());
    assert_eq!(e["site"], "demo");
    assert_eq!(e["data"]["conversation"]["id"], p.conv.as_str());

    // The receiver answers 500 for a while: the message's event waits, and then arrives
    // with the same webhook-id it failed with.
    rx.fail_with.store(500, Ordering::SeqCst);
    let r = p.v.rid();
    p.v.request(req::send(r, &p.conv, "c1", "hello hooks"))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let failed_id = loop {
        let hit = rx
            .hits
            .lock()
            .iter()
            .find(|h| {
                h.answered == 500
                    && event(h)["type"] == "message.created"
                    && event(h)["data"]["text"] == "hello hooks"
            })
            .cloned();
        if let Some(h) = hit {
            break h.id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    rx.fail_with.store(0, Ordering::SeqCst);
    let msg = arrived(&rx, "message.created", |e| {
        e["type"] == "message.created" && e["data"]["text"] == "hello hooks"
    })
    .await;
    assert_eq!(msg.id, failed_id, "retried under the same webhook-id");
    assert!(verified(&secret, &msg));
    assert_eq!(event(&msg)["data"]["from"]["role"], "visitor");

    // Closed: the event carries the outcome and the timings.
    let r = p.op.rid();
    let ok =
        p.op.request(ClientFrame::Close {
            rid: Some(r),
            conv: p.conv.clone(),
            outcome: Some("solved".into()),
            tags: None,
        })
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let closed = arrived(&rx, "conversation.closed", |e| {
        e["type"] == "conversation.closed"
    })
    .await;
    assert!(verified(&secret, &closed));
    let c = &event(&closed)["data"]["conversation"];
    assert_eq!(c["outcome"], "solved", "{c}");
    assert!(c["duration_ms"].as_u64().is_some(), "{c}");
    // Nothing it did not ask for (assigned).
    assert!(rx
        .hits
        .lock()
        .iter()
        .all(|h| event(h)["type"] != "conversation.assigned"));

    // A test event on demand; the log lists what went, with the failed attempt.
    let a = call(
        &node,
        &admin,
        "POST",
        &format!("/v1/sites/demo/webhooks/{hook}/test"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let test_id = a.json()["event"].as_str().unwrap().to_owned();
    let t = arrived(&rx, "webhook.test", |e| e["type"] == "webhook.test").await;
    assert_eq!(t.id, test_id);
    let log = get(
        &node,
        &admin,
        &format!("/v1/sites/demo/webhooks/{hook}/deliveries"),
    )
    .await
    .json();
    let items = log["items"].as_array().unwrap();
    let m = items
        .iter()
        .find(|d| d["event"] == failed_id.as_str())
        .expect("the message's delivery is in the log");
    assert_eq!(m["status"], "delivered", "{m}");
    let attempts = m["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{m}");
    assert_eq!(attempts[0]["ok"], false);
    assert_eq!(attempts[0]["status"], 500, "{m}");
    assert_eq!(attempts.last().unwrap()["ok"], true);
    assert_eq!(attempts.last().unwrap()["status"], 204, "{m}");
    assert_problem(
        &get(&node, &admin, "/v1/sites/demo/webhooks/nope/deliveries").await,
        404,
        "not-found",
    );
    let other = key(&node, Some("other"), &[Scope::Admin]).await;
    assert_problem(
        &get(
            &node,
            &other,
            &format!("/v1/sites/other/webhooks/{hook}/deliveries"),
        )
        .await,
        404,
        "not-found",
    );
}

/// A webhook whose every call fails for `GATEWAY_WEBHOOK_DISABLE_AFTER` (here at once) is
/// turned off, with why, and the site's supervisors are e-mailed (one each, in the site's
/// language); turned on again, it clears why and gets the next events.
#[tokio::test]
async fn a_webhook_failing_too_long_is_turned_off_and_the_supervisors_told() {
    let smtp = testsupport::SmtpServer::start();
    let url = smtp.url();
    let (node, _dir) = api_node(move |c| {
        c.webhook_hosts = vec!["127.0.0.1".into()];
        c.webhook_disable_after = Duration::from_millis(1);
        c.mail = Some((
            gateway::mail::SmtpConfig::parse(&url).unwrap(),
            "Chat <chat@example.com>".into(),
        ));
    })
    .await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let (rx, hook_url) = start_receiver().await;
    rx.fail_with.store(500, Ordering::SeqCst);
    for (id, role, email) in [
        ("sofia", "supervisor", "sofia@example.com"),
        ("olga", "operator", "olga@example.com"),
    ] {
        let a = call(
            &node,
            &admin,
            "POST",
            "/v1/sites/demo/operators",
            Some(json!({"id": id, "name": id, "role": role, "email": email})),
            &[],
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/webhooks",
        Some(json!({"url": hook_url, "events": ["conversation.started"]})),
        &[],
    )
    .await;
    let hook = a.json()["id"].as_str().unwrap().to_owned();
    let _p = pair(&node, Encoding::Json, "v-off").await;

    // Turned off, with why.
    let path = format!("/v1/sites/demo/webhooks/{hook}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let off = loop {
        let w = get(&node, &admin, &path).await.json();
        if w["active"] == false {
            break w;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not turned off: {w}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(off["disabled_at"].as_u64().is_some(), "{off}");
    assert!(
        off["disabled_reason"].as_str().unwrap().contains("500"),
        "{off}"
    );
    // The supervisor is told, the operator is not.
    let got = smtp
        .wait_for("the supervisor's e-mail", Duration::from_secs(20), |g| {
            g.iter().any(|m| m.rcpt_tos == ["sofia@example.com"])
        })
        .await;
    let m = got
        .iter()
        .find(|m| m.rcpt_tos == ["sofia@example.com"])
        .unwrap();
    assert!(m.subject.contains("Webhook turned off"), "{m:?}");
    assert!(m.subject.contains(&hook_url), "{m:?}");
    let text = m.text.clone().unwrap_or_default();
    assert!(text.contains(&hook), "{text}");
    assert!(text.contains("500"), "{text}");
    assert!(got.iter().all(|m| m.rcpt_tos != ["olga@example.com"]));
    // The event's delivery gave up with the reason.
    let log = get(&node, &admin, &format!("{path}/deliveries"))
        .await
        .json();
    let first = &log["items"][0];
    assert_eq!(first["status"], "failed", "{log}");
    assert!(
        first["last_error"].as_str().unwrap().contains("turned off"),
        "{log}"
    );
    // The server's fields are not the API's to set.
    let a = call(
        &node,
        &admin,
        "PATCH",
        &path,
        Some(json!({"disabled_reason": null, "disabled_at": 1})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.json()["disabled_at"].as_u64().is_some(), "{}", a.body);

    // On again: why is cleared, and the next event arrives.
    rx.fail_with.store(0, Ordering::SeqCst);
    let a = call(
        &node,
        &admin,
        "PATCH",
        &path,
        Some(json!({"active": true})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let on = a.json();
    assert!(
        on.get("disabled_at").is_none() && on.get("disabled_reason").is_none(),
        "{on}"
    );
    let _q = pair(&node, Encoding::Json, "v-on").await;
    arrived(&rx, "the next event", |e| {
        e["type"] == "conversation.started" && e["data"]["conversation"]["visitor"]["id"] == "v-on"
    })
    .await;
    // One e-mail: the webhook was turned off once.
    assert_eq!(
        smtp.received()
            .iter()
            .filter(|m| m.rcpt_tos == ["sofia@example.com"])
            .count(),
        1
    );
}

/// With no `GATEWAY_WEBHOOK_HOSTS`, a webhook or an action may not aim at this machine or a
/// private network: an address is refused when it is made, and a name that resolves inward
/// when it is called (so a name cannot be pointed inward after it was accepted).
#[tokio::test]
async fn webhooks_and_actions_cannot_aim_inward() {
    let (node, _dir) = api_node(|c| c.webhook_hosts = Vec::new()).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    for (path, url) in [
        ("/v1/sites/demo/webhooks", "http://127.0.0.1:9/hook"),
        (
            "/v1/sites/demo/webhooks",
            "http://169.254.169.254/latest/meta-data/",
        ),
        ("/v1/sites/demo/webhooks", "http://[::1]/hook"),
        ("/v1/sites/demo/webhooks", "http://10.0.0.7/hook"),
        ("/v1/sites/demo/actions", "http://192.168.1.1/case"),
    ] {
        let body = json!({"url": url, "name": "Case"});
        let body = if path.ends_with("webhooks") {
            json!({"url": url})
        } else {
            body
        };
        let p = assert_problem(
            &call(&node, &admin, "POST", path, Some(body), &[]).await,
            422,
            "invalid",
        );
        assert_eq!(p["errors"][0]["field"], "url", "{url}: {p}");
    }
    // A name of this machine too (a name that resolves inward later is refused when it is
    // called: `webhook::tests::a_name_that_resolves_inward_is_refused_unless_listed`).
    let p = assert_problem(
        &call(
            &node,
            &admin,
            "POST",
            "/v1/sites/demo/webhooks",
            Some(json!({"url": "http://localhost:8080/hook"})),
            &[],
        )
        .await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "url", "{p}");
}
