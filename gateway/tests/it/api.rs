//! The HTTP API v1 on one node with its SQLite archive: keys and scopes, sites that never
//! leak into each other, problem details for bad input, idempotency, rate limits, and what
//! integrations do to live conversations (write as a bot, tag, transfer, close, start one).

use std::time::Duration;

use gateway::api::keys::{self, Scope};
use gateway::config::ArchiveConfig;
use gateway::protocol::{ConvEvent, ConvState, Encoding, Role, ServerFrame};
use serde_json::{json, Value};
use testsupport::HttpAnswer;

use crate::common::*;

pub(crate) struct Scratch(pub(crate) std::path::PathBuf);

impl Scratch {
    /// A fresh temp dir, removed when dropped.
    pub(crate) fn new(what: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cg-it-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node with an archive (SQLite in a temp dir) and two sites, `demo` and `other`.
pub(crate) async fn api_node(tweak: impl FnOnce(&mut gateway::config::Config)) -> (Node, Scratch) {
    let dir = Scratch::new("api");
    let db = dir.0.join("archive.db");
    let node = node_with(|c| {
        c.archive = ArchiveConfig::Sqlite(db);
        c.sites = sites(r#"[{"id": "demo", "queues": ["general", "vip"]}, {"id": "other"}]"#);
        tweak(c);
    })
    .await;
    (node, dir)
}

pub(crate) async fn key(node: &Node, site: Option<&str>, scopes: &[Scope]) -> String {
    let store = node.gw.archive().expect("an archive").clone();
    keys::create(&*store, site, "test key", scopes)
        .await
        .expect("key stored")
        .1
}

/// Calls the node's API as `auth`.
pub(crate) async fn call(
    node: &Node,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> HttpAnswer {
    let bearer = format!("Bearer {auth}");
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if !auth.is_empty() {
        headers.push(("Authorization", &bearer));
    }
    headers.extend_from_slice(extra);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    testsupport::http_full(&node.addr.to_string(), method, path, &headers, &body)
        .await
        .expect("the node answers")
}

pub(crate) async fn get(node: &Node, auth: &str, path: &str) -> HttpAnswer {
    call(node, auth, "GET", path, None, &[]).await
}

/// Polls a GET until `pred` holds on its JSON (the archive is written off the live path).
async fn get_until(
    node: &Node,
    auth: &str,
    path: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let a = get(node, auth, path).await;
        if a.status == 200 {
            let v = a.json();
            if pred(&v) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn assert_problem(a: &HttpAnswer, status: u16, kind: &str) -> Value {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(
        a.header("content-type"),
        Some("application/problem+json"),
        "{}",
        a.body
    );
    let p = a.json();
    assert_eq!(p["status"], status, "{p}");
    assert_eq!(p["type"], format!("urn:chat-gateway:problem:{kind}"), "{p}");
    p
}

#[tokio::test]
async fn keys_have_scopes_and_a_site_never_reaches_another() {
    let (node, _dir) = api_node(|_| {}).await;
    let read = key(&node, Some("demo"), &[Scope::Read]).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let other = key(&node, Some("other"), &[Scope::Admin]).await;
    let root = key(&node, None, &[Scope::Read]).await;
    let list = "/v1/sites/demo/conversations";

    let a = get(&node, "", list).await;
    assert_problem(&a, 401, "unauthorized");
    assert!(a.header("www-authenticate").is_some());
    assert_problem(&get(&node, "ck_nothing", list).await, 401, "unauthorized");
    let forged = format!(
        "{}{}",
        &read[..read.len() - 1],
        if read.ends_with('0') { '1' } else { '0' }
    );
    assert_problem(&get(&node, &forged, list).await, 401, "unauthorized");
    assert_problem(&get(&node, "not.a.jwt", list).await, 401, "unauthorized");

    assert_eq!(get(&node, &read, list).await.status, 200);
    assert_eq!(
        get(&node, &root, list).await.status,
        200,
        "a root key reads every site"
    );
    assert_eq!(
        get(&node, &root, "/v1/sites/other/conversations")
            .await
            .status,
        200
    );
    // Another site's key: the site does not exist for it.
    assert_problem(&get(&node, &other, list).await, 404, "not-found");
    assert_problem(
        &get(&node, &read, "/v1/sites/nope/conversations").await,
        404,
        "not-found",
    );
    // A read key writes nothing.
    let a = call(
        &node,
        &read,
        "POST",
        "/v1/sites/demo/api-keys",
        Some(json!({"name": "x", "scopes": ["read"]})),
        &[],
    )
    .await;
    assert_problem(&a, 403, "forbidden");

    // An admin makes a key; the secret is shown once, never listed.
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/api-keys",
        Some(json!({"name": "crm", "scopes": ["read", "bot"]})),
        &[],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let made = a.json();
    let new_key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(made["scopes"], json!(["read", "bot"]));
    let listed = get(&node, &admin, "/v1/sites/demo/api-keys").await.json();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == made["id"] && k.get("key").is_none()));
    assert!(
        !listed.to_string().contains(&new_key[16..]),
        "no secret in the list"
    );
    assert_eq!(get(&node, &new_key, list).await.status, 200);
    // Revoked: refused at once.
    let id = made["id"].as_str().unwrap();
    let a = call(
        &node,
        &admin,
        "DELETE",
        &format!("/v1/sites/demo/api-keys/{id}"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_problem(&get(&node, &new_key, list).await, 401, "unauthorized");
    let a = call(
        &node,
        &admin,
        "DELETE",
        &format!("/v1/sites/demo/api-keys/{id}"),
        None,
        &[],
    )
    .await;
    assert_problem(&a, 404, "not-found");
    // Another site's admin cannot revoke this site's key.
    let read_id = keys::parse_key(&read).unwrap().0;
    let a = call(
        &node,
        &other,
        "DELETE",
        &format!("/v1/sites/other/api-keys/{read_id}"),
        None,
        &[],
    )
    .await;
    assert_problem(&a, 404, "not-found");
    assert_eq!(get(&node, &read, list).await.status, 200);

    // Staff tokens: a supervisor administers their site, an operator reads, a visitor nothing.
    let sup = token("demo", Role::Supervisor, "sup1", "Sue");
    assert_eq!(
        get(&node, &sup, "/v1/sites/demo/api-keys").await.status,
        200
    );
    assert_problem(
        &get(&node, &sup, "/v1/sites/other/api-keys").await,
        404,
        "not-found",
    );
    let op = token("demo", Role::Operator, "op1", "Olga");
    assert_eq!(get(&node, &op, list).await.status, 200);
    assert_problem(
        &get(&node, &op, "/v1/sites/demo/api-keys").await,
        403,
        "forbidden",
    );
    let visitor = token("demo", Role::Visitor, "v1", "Ann");
    assert_problem(&get(&node, &visitor, list).await, 403, "forbidden");
    node.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_problem_details_naming_the_field() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let base = "/v1/sites/demo/conversations";
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("from=-5", "from"),
        ("state=lost", "state"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm9wZQ", "cursor"),
    ] {
        let a = get(&node, &admin, &format!("{base}?{q}")).await;
        let p = assert_problem(&a, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{q}: {p}");
    }
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/conversations/c_x/transfer",
        Some(json!({"to": {"operator": 5}})),
        &[],
    )
    .await;
    let p = assert_problem(&a, 422, "invalid");
    assert_eq!(p["errors"][0]["field"], "to.operator", "{p}");
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/conversations/c_x/transfer",
        Some(json!({"to": {}})),
        &[],
    )
    .await;
    assert_eq!(
        assert_problem(&a, 422, "invalid")["errors"][0]["field"],
        "to"
    );
    let raw = testsupport::http_full(
        &node.addr.to_string(),
        "POST",
        "/v1/sites/demo/conversations",
        &[("Authorization", &format!("Bearer {admin}"))],
        "{not json",
    )
    .await
    .unwrap();
    assert_problem(&raw, 422, "invalid");
    let big = "x".repeat(70_000);
    let raw = testsupport::http_full(
        &node.addr.to_string(),
        "POST",
        "/v1/sites/demo/conversations",
        &[("Authorization", &format!("Bearer {admin}"))],
        &big,
    )
    .await
    .unwrap();
    assert_problem(&raw, 413, "too-large");
    let a = call(&node, &admin, "PUT", base, None, &[]).await;
    assert_problem(&a, 405, "method-not-allowed");
    assert_problem(
        &get(&node, &admin, &format!("{base}/c_missing")).await,
        404,
        "not-found",
    );
    assert_problem(
        &get(&node, &admin, &format!("{base}/..%2F..%2Fetc")).await,
        404,
        "not-found",
    );
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/tokens",
        Some(json!({"role": "system", "sub": "x"})),
        &[],
    )
    .await;
    assert_eq!(
        assert_problem(&a, 422, "invalid")["errors"][0]["field"],
        "role"
    );
    let a = call(
        &node,
        &admin,
        "POST",
        "/v1/sites/demo/conversations",
        Some(json!({"visitor": "v{1}", "text": "hi"})),
        &[("Idempotency-Key", "bad key with spaces")],
    )
    .await;
    assert_eq!(
        assert_problem(&a, 422, "invalid")["errors"][0]["field"],
        "Idempotency-Key"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn each_caller_has_a_rate_limit_with_retry_after() {
    let (node, _dir) = api_node(|c| {
        c.api_rate_per_sec = 1.try_into().unwrap();
        c.api_rate_burst = 3.try_into().unwrap();
    })
    .await;
    let k1 = key(&node, Some("demo"), &[Scope::Read]).await;
    let k2 = key(&node, Some("demo"), &[Scope::Read]).await;
    let path = "/v1/sites/demo/conversations";
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&node, &k1, path).await);
    }
    let limited = statuses
        .iter()
        .find(|a| a.status == 429)
        .expect("the burst runs out");
    assert_problem(limited, 429, "rate-limited");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        get(&node, &k2, path).await.status,
        200,
        "another key has its own budget"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_bot_writes_tags_transfers_and_closes_a_live_conversation() {
    let (node, _dir) = api_node(|_| {}).await;
    let bot = key(&node, Some("demo"), &[Scope::Bot]).await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let msgs = format!("/v1/sites/demo/conversations/{conv}/messages");
    let a = call(
        &node,
        &bot,
        "POST",
        &msgs,
        Some(json!({"cid": "b1", "text": "Your order shipped", "name": "OrderBot"})),
        &[],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let seq = a.json()["seq"].as_u64().unwrap();
    let got = v.recv_until(|f| is_msg_text(f, "Your order shipped")).await;
    let ServerFrame::Msg(m) = got else {
        unreachable!()
    };
    assert_eq!(
        (m.from.role, m.from.name.as_deref(), m.seq),
        (Role::Bot, Some("OrderBot"), seq)
    );
    op.recv_until(|f| is_msg_text(f, "Your order shipped"))
        .await;
    // A retry stores nothing twice.
    let again = call(
        &node,
        &bot,
        "POST",
        &msgs,
        Some(json!({"cid": "b1", "text": "Your order shipped"})),
        &[],
    )
    .await;
    assert_eq!(again.json()["seq"], seq);
    // Newest messages are readable at once (the live log's tail), paged by cursor.
    let page = get(&node, &bot, &format!("{msgs}?limit=1")).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().expect("more").to_owned();
    let rest = get(&node, &bot, &format!("{msgs}?limit=500&cursor={next}"))
        .await
        .json();
    assert!(rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["seq"] == seq));
    assert!(rest["next_cursor"].is_null());

    // Tags change live: the operator sees them.
    let one = format!("/v1/sites/demo/conversations/{conv}");
    let a = call(
        &node,
        &bot,
        "PATCH",
        &one,
        Some(json!({"tags": ["shipping", "VIP"], "params": {"order": "A-17"}})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["tags"], json!(["shipping", "vip"]));
    op.recv_until(
        |f| matches!(f, ServerFrame::Conv { conv: c, .. } if c.tags == ["shipping", "vip"]),
    )
    .await;
    // Transfer to the other queue: waiting there now.
    let a = call(
        &node,
        &bot,
        "POST",
        &format!("{one}/transfer"),
        Some(json!({"to": {"queue": "vip"}, "note": "big customer"})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["queue"], "vip");
    let a = call(
        &node,
        &bot,
        "POST",
        &format!("{one}/transfer"),
        Some(json!({"to": {"queue": "nope"}})),
        &[],
    )
    .await;
    assert_problem(&a, 404, "not-found");
    // Close with an outcome: the visitor is told; closing again answers the same.
    let a = call(
        &node,
        &bot,
        "POST",
        &format!("{one}/close"),
        Some(json!({"outcome": "solved"})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["state"], "closed");
    v.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::Closed,
                ..
            }
        )
    })
    .await;
    let a = call(&node, &bot, "POST", &format!("{one}/close"), None, &[]).await;
    assert_eq!(a.json()["state"], "closed");
    // Nothing more is written into it.
    let a = call(
        &node,
        &bot,
        "POST",
        &msgs,
        Some(json!({"cid": "b2", "text": "late"})),
        &[],
    )
    .await;
    assert_problem(&a, 409, "conflict");
    // The archive has it whole, with its events.
    let d = get_until(&node, &bot, &one, "the archived close", |d| {
        d["state"] == "closed" && d["events"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_eq!(d["outcome"], "solved");
    assert_eq!(d["params"]["order"], "A-17");
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"transferred") && kinds.contains(&"closed"),
        "{kinds:?}"
    );
    // After the close, tags change in the archive.
    let a = call(
        &node,
        &bot,
        "PATCH",
        &one,
        Some(json!({"tags": ["done"]})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["tags"], json!(["done"]));
    let t = get(&node, &bot, &format!("{one}/transcript?format=text")).await;
    assert_eq!(t.status, 200);
    assert!(t.header("content-type").unwrap().starts_with("text/plain"));
    // Someone's conversation: never sniffed, scripted or cached.
    assert_eq!(t.header("x-content-type-options"), Some("nosniff"));
    assert!(t
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'") && c.contains("sandbox")));
    assert_eq!(t.header("cache-control"), Some("private, no-store"));
    assert!(
        t.body.contains("OrderBot: Your order shipped"),
        "{}",
        t.body
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_invitation_reaches_the_visitor_and_a_retried_one_starts_nothing_twice() {
    let (node, _dir) = api_node(|_| {}).await;
    let bot = key(&node, Some("demo"), &[Scope::Bot, Scope::Read]).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    // The visitor is on the site: their tab learns at once.
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v7", "Vera"),
    )
    .await;
    let body = json!({"visitor": "v7", "operator": "op1", "text": "Hello Vera, your invoice is ready", "email": "vera@example.com"});
    let first = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(body.clone()),
        &[("Idempotency-Key", "inv-1")],
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let started = first.json();
    let conv = started["conversation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(started["conversation"]["state"], "active");
    assert_eq!(started["message"]["from"]["role"], "operator");
    v.recv_until(|f| matches!(f, ServerFrame::Conv { conv: c, .. } if c.id == conv))
        .await;
    v.recv_until(|f| is_msg_text(f, "Hello Vera, your invoice is ready"))
        .await;
    op.recv_until(|f| matches!(f, ServerFrame::Conv { conv: c, .. } if c.id == conv && c.state == ConvState::Active)).await;
    // The visitor's tab was open before the conversation existed, so it was not counted
    // anywhere (a browsing visitor is no part of the site's state); attached to the
    // invitation, it counts itself, and the staff learn the visitor is here.
    op.recv_until(|f| {
        matches!(f, ServerFrame::Conv { event: ConvEvent::VisitorBack, conv: c, .. }
            if c.id == conv && c.visitor.online)
    })
    .await;
    // The retry answers the same, starts nothing.
    let again = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(body.clone()),
        &[("Idempotency-Key", "inv-1")],
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), started);
    // The same key with another body is the caller's mistake.
    let other = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(json!({"visitor": "v8", "text": "x"})),
        &[("Idempotency-Key", "inv-1")],
    )
    .await;
    assert_problem(&other, 422, "invalid");
    // Without a key, a second invitation finds the open conversation.
    let dup = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(body),
        &[],
    )
    .await;
    assert_problem(&dup, 409, "conflict");
    // A visitor who is away finds theirs when they come; an absent operator is refused.
    let a = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(json!({"visitor": "v9", "operator": "ghost", "text": "hi"})),
        &[],
    )
    .await;
    assert_problem(&a, 404, "not-found");
    let a = call(
        &node,
        &bot,
        "POST",
        "/v1/sites/demo/conversations",
        Some(json!({"visitor": "v9", "text": "We have news for you"})),
        &[],
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.json()["message"]["from"]["role"], "bot");
    let (_, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v9", "Val"),
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = &welcome else {
        panic!("{welcome:?}")
    };
    assert_eq!(conversations.len(), 1, "{welcome:?}");
    // One conversation of v7 in the archive, not two.
    let t = get_until(
        &node,
        &bot,
        "/v1/sites/demo/conversations?visitor=v7",
        "the invitation archived",
        |p| !p["items"].as_array().unwrap().is_empty(),
    )
    .await;
    assert_eq!(t["items"].as_array().unwrap().len(), 1);
    // The tab that counted itself is what keeps Vera present: closing it makes her away.
    drop(v);
    op.recv_until(|f| {
        matches!(f, ServerFrame::Conv { event: ConvEvent::VisitorAway, conv: c, .. }
            if c.id == conv && !c.visitor.online)
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn search_timeline_export_and_erasure() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v-erase").await;
    let r = v.rid();
    ok_seq(
        &v.request(req::send(r, &conv, "m1", "my passport number is 12345"))
            .await,
    );
    let r = op.rid();
    ok_seq(&op.request(req::send(r, &conv, "o1", "thanks, noted")).await);
    let found = get_until(
        &node,
        &admin,
        "/v1/sites/demo/conversations?q=passport",
        "the search hit",
        |p| p["items"].as_array().unwrap().len() == 1,
    )
    .await;
    assert_eq!(found["items"][0]["id"], conv);
    let tl = get(&node, &admin, "/v1/sites/demo/visitors/v-erase").await;
    assert_eq!(tl.status, 200, "{}", tl.body);
    assert_eq!(tl.json()["conversations"][0]["id"], conv);
    let ex = get_until(
        &node,
        &admin,
        "/v1/sites/demo/visitors/v-erase/export",
        "the export",
        |e| {
            e["conversations"][0]["messages"]
                .as_array()
                .is_some_and(|m| m.len() >= 3)
        },
    )
    .await;
    assert!(ex.to_string().contains("passport number"));
    // Erased: the open conversation closes, messages and details go, counts stay.
    let a = call(
        &node,
        &admin,
        "DELETE",
        "/v1/sites/demo/visitors/v-erase",
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.body);
    v.recv_until(|f| {
        matches!(
            f,
            ServerFrame::Conv {
                event: ConvEvent::Closed,
                ..
            }
        )
    })
    .await;
    let d = get_until(
        &node,
        &admin,
        &format!("/v1/sites/demo/conversations/{conv}"),
        "the archived close",
        |d| d["state"] == "closed",
    )
    .await;
    assert!(d["visitor"]["name"].is_null(), "{d}");
    let msgs = get(
        &node,
        &admin,
        &format!("/v1/sites/demo/conversations/{conv}/messages"),
    )
    .await
    .json();
    assert_eq!(msgs["items"], json!([]), "no message is left");
    let found = get(&node, &admin, "/v1/sites/demo/conversations?q=passport")
        .await
        .json();
    assert_eq!(found["items"], json!([]));
    let r = v.rid();
    let h = v.request(req::history(r, &conv, None, None)).await;
    assert!(
        !format!("{h:?}").contains("passport"),
        "the live log forgot it: {h:?}"
    );
    let rows = get(
        &node,
        &admin,
        "/v1/sites/demo/reports/summary?group_by=queue",
    )
    .await
    .json();
    assert_eq!(rows["totals"]["started"], 1, "still counted: {rows}");
    node.shutdown().await;
}

#[tokio::test]
async fn reports_count_answered_and_missed_conversations() {
    let (node, _dir) = api_node(|_| {}).await;
    let read = key(&node, Some("demo"), &[Scope::Read]).await;
    // One answered and closed.
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    let r = v.rid();
    ok_seq(&v.request(req::send(r, &conv, "m1", "hello")).await);
    let r = op.rid();
    ok_seq(&op.request(req::send(r, &conv, "o1", "hi there")).await);
    assert!(matches!(
        op.request_json(json!({"t": "close", "conv": conv, "outcome": "solved"}))
            .await,
        ServerFrame::Ok { .. }
    ));
    // One the visitor closed before anyone answered.
    let (mut v2, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Bob"),
    )
    .await;
    let r = v2.rid();
    let c2 = ok_conv_id(&v2.request(req::start(r)).await);
    let r = v2.rid();
    ok_seq(&v2.request(req::send(r, &c2, "m1", "anyone?")).await);
    assert!(matches!(
        v2.request_json(json!({"t": "close", "conv": c2})).await,
        ServerFrame::Ok { .. }
    ));
    let s = get_until(
        &node,
        &read,
        "/v1/sites/demo/reports/summary?group_by=day&utc_offset=%2B03:00",
        "both closes archived",
        |s| s["totals"]["closed"] == 2,
    )
    .await;
    let t = &s["totals"];
    assert_eq!(
        (
            t["started"].as_u64(),
            t["answered"].as_u64(),
            t["missed"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    assert!(t["first_response_ms"]["p50"].is_u64(), "{t}");
    assert_eq!(
        s["rows"].as_array().unwrap().len(),
        8,
        "every day of the default week has a row: {s}"
    );
    let by_op = get(
        &node,
        &read,
        "/v1/sites/demo/reports/summary?group_by=operator",
    )
    .await
    .json();
    let keys: Vec<&str> = by_op["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["", "op1"], "{by_op}");
    let ops = get(&node, &read, "/v1/sites/demo/reports/operators")
        .await
        .json();
    let row = ops["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operator"] == "op1")
        .expect("op1")
        .clone();
    assert_eq!(row["conversations"], 1);
    assert_eq!(row["name"], "Olga");
    assert!(row["online_ms"].as_u64().is_some());
    let bad = get(
        &node,
        &read,
        "/v1/sites/demo/reports/summary?group_by=hour&from=0",
    )
    .await;
    assert_problem(&bad, 422, "invalid");
    node.shutdown().await;
}

#[tokio::test]
async fn the_openapi_description_lists_every_route() {
    let (node, _dir) = api_node(|_| {}).await;
    let doc = get(&node, "", "/v1/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/sites/{site}/conversations",
        "/v1/sites/{site}/conversations/{id}",
        "/v1/sites/{site}/conversations/{id}/messages",
        "/v1/sites/{site}/conversations/{id}/transcript",
        "/v1/sites/{site}/conversations/{id}/close",
        "/v1/sites/{site}/conversations/{id}/transfer",
        "/v1/sites/{site}/visitors/{id}",
        "/v1/sites/{site}/visitors/{id}/export",
        "/v1/sites/{site}/reports/summary",
        "/v1/sites/{site}/reports/operators",
        "/v1/sites/{site}/api-keys",
        "/v1/sites/{site}/api-keys/{id}",
        "/v1/sites/{site}/tokens",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is described");
    }
    node.shutdown().await;
}
