//! Actions: a button of the console's conversation menu calls a test receiver with the
//! conversation, signed as a webhook call is (checked with an HMAC of our own), through the
//! receiver's outage under one `webhook-id`; its answer's note and link come back to the
//! staff as a note on the conversation. Who may run which action, and bad ones, refused.

use std::sync::atomic::Ordering;

use gateway::api::keys::Scope;
use gateway::protocol::{ClientFrame, ConvEvent, Encoding, ErrorCode, Role, ServerFrame};
use serde_json::{json, Value};

use crate::api::{api_node, assert_problem, call, get, key};
use crate::common::*;
use testsupport::webhook::{arrived, event, start_receiver, verified, Receiver};

fn action(rid: gateway::protocol::Rid, conv: &str, action: &str) -> ClientFrame {
    ClientFrame::Action {
        rid: Some(rid),
        conv: conv.into(),
        action: action.into(),
    }
}

fn refused(f: &ServerFrame) -> ErrorCode {
    match f {
        ServerFrame::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_action_creates_a_case_and_its_link_shows_in_the_conversation() {
    let (node, _dir) = api_node(|c| c.webhook_hosts = vec!["127.0.0.1".into()]).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let (rx, url) = start_receiver().await;
    let post = |body: Value| {
        let node = &node;
        let admin = admin.clone();
        async move {
            call(
                node,
                &admin,
                "POST",
                "/v1/sites/demo/actions",
                Some(body),
                &[],
            )
            .await
        }
    };

    // Bad ones are refused with the field named.
    let p = assert_problem(
        &post(json!({"name": "Create case", "url": "javascript:alert(1)"})).await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "url", "{p}");
    let p = assert_problem(
        &post(json!({"name": "Create case", "url": url, "queues": ["nowhere"]})).await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "queues[0]", "{p}");
    assert_problem(
        &post(json!({"name": "Create case", "url": url, "secret": "whsec_mine"})).await,
        422,
        "invalid",
    );
    let p = assert_problem(
        &post(json!({"name": "Create case", "url": "http://internal.example/x"})).await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "url", "{p}");

    // Made: one for the general line, one for the vip line only.
    let a = post(json!({"name": "Create case", "url": url, "queues": ["general"]})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let made = a.json();
    let case = made["id"].as_str().unwrap().to_owned();
    let secret = made["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{made}");
    let vip = post(json!({"name": "VIP desk", "url": url, "queues": ["vip"]})).await;
    let vip = vip.json()["id"].as_str().unwrap().to_owned();
    let listed = get(&node, &admin, "/v1/sites/demo/actions").await;
    assert!(
        !listed.body.contains(&secret),
        "never listed with its secret"
    );
    // A line an action names cannot be deleted from under it.
    let del = call(
        &node,
        &admin,
        "DELETE",
        "/v1/sites/demo/queues/vip",
        None,
        &[],
    )
    .await;
    assert_problem(&del, 409, "conflict");
    assert!(del.body.contains(&format!("actions {vip}")), "{}", del.body);

    // The staff see the actions in their settings.
    let (_, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "sup1", "Sam"),
    )
    .await;
    let ServerFrame::Welcome { settings, .. } = welcome else {
        panic!("{welcome:?}");
    };
    let names: Vec<&str> = settings.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"Create case"), "{names:?}");

    // A chat on the general line; the visitor says what is wrong.
    let mut p = pair(&node, Encoding::Json, "v-act").await;
    let r = p.v.rid();
    p.v.request(req::send(r, &p.conv, "c1", "my parcel is lost"))
        .await;

    // Refused: the visitor; an action of another line; an unknown one; an operator who does
    // not hold the conversation.
    let r = p.v.rid();
    assert_eq!(
        refused(&p.v.request(action(r, &p.conv, &case)).await),
        ErrorCode::Forbidden
    );
    let r = p.op.rid();
    assert_eq!(
        refused(&p.op.request(action(r, &p.conv, &vip)).await),
        ErrorCode::NotFound
    );
    let r = p.op.rid();
    assert_eq!(
        refused(&p.op.request(action(r, &p.conv, "nope")).await),
        ErrorCode::NotFound
    );
    let (mut other, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op2", "Petr"),
    )
    .await;
    let r = other.rid();
    assert_eq!(
        refused(&other.request(action(r, &p.conv, &case)).await),
        ErrorCode::Forbidden
    );

    // The receiver is down at first: the call is retried under the same webhook-id, and
    // the case's note and link reach the operator once it answers.
    rx.fail_with.store(503, Ordering::SeqCst);
    *rx.answer.lock() = Some(json!({"note": "Case 42 opened", "link": "https://crm.example/c/42"}));
    let r = p.op.rid();
    let ok = p.op.request(action(r, &p.conv, &case)).await;
    let ServerFrame::Ok { body, .. } = &ok else {
        panic!("{ok:?}")
    };
    let queued = serde_json::to_value(body).unwrap()["event"]
        .as_str()
        .expect("the event's id")
        .to_owned();
    let failed = rx_first(&rx, 503).await;
    assert_eq!(failed, queued);
    rx.fail_with.store(0, Ordering::SeqCst);
    let hit = arrived(&rx, "the action's call", |e| e["type"] == "action").await;
    assert_eq!(hit.id, queued, "retried under the same webhook-id");
    assert!(verified(&secret, &hit), "signed with the action's secret");
    let e = event(&hit);
    assert_eq!(e["data"]["action"]["id"], case.as_str());
    assert_eq!(e["data"]["by"]["id"], "op1");
    assert_eq!(e["data"]["conversation"]["id"], p.conv.as_str());
    assert!(
        e["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "my parcel is lost"),
        "{e}"
    );
    let noted =
        p.op.recv_until(|f| {
            matches!(f, ServerFrame::Conv { event: ConvEvent::Updated, conv, .. }
                if conv.notes.iter().any(|n| n.link.is_some()))
        })
        .await;
    let ServerFrame::Conv { conv, reason, .. } = noted else {
        unreachable!()
    };
    assert_eq!(reason.as_deref(), Some("note"));
    let n = conv.notes.last().unwrap();
    assert_eq!(n.text, "Case 42 opened");
    assert_eq!(n.link.as_deref(), Some("https://crm.example/c/42"));
    assert_eq!(n.by, "Create case");
    // The visitor never sees the note.
    let r = p.v.rid();
    let mine =
        p.v.request(ClientFrame::Get {
            rid: Some(r),
            conv: p.conv.clone(),
        })
        .await;
    assert!(!format!("{mine:?}").contains("Case 42"), "{mine:?}");

    // The action's log lists the run with its failed attempt (once the success is recorded:
    // the note may reach the operator first).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let run = loop {
        let log = get(
            &node,
            &admin,
            &format!("/v1/sites/demo/actions/{case}/deliveries"),
        )
        .await
        .json();
        let run = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["event"] == queued.as_str())
            .cloned()
            .expect("the run is in the log");
        if run["status"] != "pending" || tokio::time::Instant::now() > deadline {
            break run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "delivered", "{run}");
    assert_eq!(run["attempts"][0]["status"], 503, "{run}");
    let other_site = key(&node, Some("other"), &[Scope::Admin]).await;
    assert_problem(
        &get(
            &node,
            &other_site,
            &format!("/v1/sites/other/actions/{case}/deliveries"),
        )
        .await,
        404,
        "not-found",
    );
}

/// The id of the first call the receiver answered with `status`.
async fn rx_first(rx: &Receiver, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(h) = rx.hits.lock().iter().find(|h| h.answered == status) {
            return h.id.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
