//! Sites made at runtime through the API with a root key: a site set up from nothing —
//! lines, groups, staff with passwords, keys — serving visitors and operators with no
//! restart and no hand-minted token; its keys and tokens worthless on any other site;
//! renamed and re-keyed; deleted, with its connections closed and its id never reused; and
//! still there after the node restarts.

use gateway::api::keys::Scope;
use gateway::config::ArchiveConfig;
use gateway::protocol::{Encoding, OperatorStatus, Role, ServerFrame};
use serde_json::{json, Value};

use crate::api::{assert_problem, call, get, key, Scratch};
use crate::common::*;

async fn post(node: &Node, auth: &str, path: &str, body: Value) -> testsupport::HttpAnswer {
    call(node, auth, "POST", path, Some(body), &[]).await
}

/// A visitor token for a widget key, as the widget gets one (`None`: refused, with the
/// status).
async fn visitor_session(node: &Node, widget_key: &str, origin: &str) -> Result<String, u16> {
    let a = testsupport::http_full(
        &node.addr.to_string(),
        "POST",
        "/v1/visitor/session",
        &[("Content-Type", "application/json"), ("Origin", origin)],
        &json!({ "site": widget_key }).to_string(),
    )
    .await
    .expect("the node answers");
    if a.status == 200 {
        Ok(a.json()["token"].as_str().unwrap().to_owned())
    } else {
        Err(a.status)
    }
}

fn site_node(db: std::path::PathBuf) -> impl FnOnce(&mut gateway::config::Config) {
    move |c| {
        c.archive = ArchiveConfig::Sqlite(db);
        c.sites = sites(r#"[{"id": "demo", "queues": ["general"]}]"#);
    }
}

#[tokio::test]
async fn an_administrator_sets_up_a_site_from_nothing_and_deletes_it() {
    let dir = Scratch::new("sites");
    let db = dir.0.join("archive.db");
    let node = node_with(site_node(db.clone())).await;
    let root = key(&node, None, &[Scope::Admin]).await;
    let root_reader = key(&node, None, &[Scope::Read]).await;
    let demo_admin = key(&node, Some("demo"), &[Scope::Admin]).await;

    // Only a root key with the admin scope makes sites.
    for who in [&demo_admin, &root_reader] {
        assert_problem(
            &post(&node, who, "/v1/sites", json!({"id":"acme"})).await,
            403,
            "forbidden",
        );
    }
    assert_problem(&get(&node, "", "/v1/sites").await, 401, "unauthorized");
    // Every bad field is named; a widget key is no one else's.
    let p = assert_problem(
        &post(&node, &root, "/v1/sites", json!({"id":"a b","name":"","queues":[],"widget_key":"demo","settings":{"routing":"sideways"}})).await,
        422,
        "invalid",
    );
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["id", "name", "queues", "settings.routing"] {
        assert!(fields.contains(&f), "{f} not named: {p}");
    }
    let p = assert_problem(
        &post(
            &node,
            &root,
            "/v1/sites",
            json!({"id":"acme","widget_key":"demo"}),
        )
        .await,
        422,
        "invalid",
    );
    assert_eq!(p["errors"][0]["field"], "widget_key", "{p}");
    assert_problem(
        &post(&node, &root, "/v1/sites", json!({"name":"no id"})).await,
        422,
        "invalid",
    );
    assert_problem(
        &post(
            &node,
            &root,
            "/v1/sites",
            json!({"id":"acme","colour":"red"}),
        )
        .await,
        422,
        "invalid",
    );

    // The site, made with a root key.
    let a = post(
        &node,
        &root,
        "/v1/sites",
        json!({"id":"acme","name":"Acme Ltd","widget_key":"acme-widget",
               "allowed_origins":["https://acme.example"],"settings":{"language":"ru"}}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let made = a.json();
    assert_eq!(made["name"], "Acme Ltd");
    assert_eq!(made["widget_key"], "acme-widget");
    assert_eq!(made["allowed_origins"], json!(["https://acme.example"]));
    assert_eq!(made["settings"]["language"], "ru");
    assert_problem(
        &post(&node, &root, "/v1/sites", json!({"id":"acme"})).await,
        409,
        "conflict",
    );
    let listed = get(&node, &root, "/v1/sites").await.json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "demo"]);

    // Set up through the API alone: a group, a line it serves, a staff account with a
    // password, an admin key of the site's own.
    for (path, body) in [
        (
            "operators",
            json!({"id":"ann","name":"Ann","role":"operator","email":"ann@acme.example","password":"correct horse"}),
        ),
        (
            "groups",
            json!({"id":"sales-team","name":"Sales","members":["ann"]}),
        ),
        (
            "queues",
            json!({"id":"sales","name":"Sales","operator_groups":["sales-team"]}),
        ),
    ] {
        let a = post(&node, &root, &format!("/v1/sites/acme/{path}"), body).await;
        assert_eq!(a.status, 201, "{path}: {}", a.body);
    }
    let a = post(
        &node,
        &root,
        "/v1/sites/acme/api-keys",
        json!({"name":"acme admin","scopes":["admin"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let acme_admin = a.json()["key"].as_str().unwrap().to_owned();

    // Ann signs in with her password and serves the site's lines.
    let a = post(
        &node,
        "",
        "/v1/sites/acme/sessions",
        json!({"email":"ann@acme.example","password":"correct horse"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ann_token = a.json()["token"].as_str().unwrap().to_owned();
    let (mut ann, w) = Client::connect(&node, Encoding::Json, &ann_token).await;
    let ServerFrame::Welcome { settings, me, .. } = &w else {
        panic!("{w:?}")
    };
    assert_eq!(me.role, Role::Operator);
    assert_eq!(settings.queues, ["general", "sales"]);
    let r = ann.rid();
    let ok = ann.request(req::status(r, OperatorStatus::Active)).await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");

    // A visitor of a page the site allows gets a token from its widget key and chats.
    assert_eq!(
        visitor_session(&node, "acme-widget", "https://evil.example").await,
        Err(403)
    );
    let vt = visitor_session(&node, "acme-widget", "https://acme.example")
        .await
        .expect("a visitor token");
    let (mut visitor, _) = Client::connect(&node, Encoding::Json, &vt).await;
    let r = visitor.rid();
    let conv = ok_conv_id(&visitor.request(req::start(r)).await);
    let r = ann.rid();
    let ok = ann.request(req::accept(r, &conv)).await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let r = visitor.rid();
    visitor
        .request(req::send(r, &conv, "c1", "hello acme"))
        .await;
    ann.recv_until(|f| is_msg_text(f, "hello acme")).await;

    // Nothing of one site reaches the other: keys, staff tokens, widget keys.
    assert_problem(
        &get(&node, &acme_admin, "/v1/sites/demo/operators").await,
        404,
        "not-found",
    );
    assert_problem(
        &get(&node, &demo_admin, "/v1/sites/acme/operators").await,
        404,
        "not-found",
    );
    assert_problem(
        &get(&node, &demo_admin, "/v1/sites/acme").await,
        404,
        "not-found",
    );
    assert_problem(
        &get(&node, &ann_token, "/v1/sites/demo/conversations").await,
        404,
        "not-found",
    );

    // The site's own admin reads and changes it (not its id, not its lines from here).
    let a = get(&node, &acme_admin, "/v1/sites/acme").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["name"], "Acme Ltd");
    let patch = |body: Value| {
        let node = &node;
        let auth = acme_admin.clone();
        async move { call(node, &auth, "PATCH", "/v1/sites/acme", Some(body), &[]).await }
    };
    assert_problem(&patch(json!({"id":"acme2"})).await, 422, "invalid");
    assert_problem(&patch(json!({"queues":["x"]})).await, 422, "invalid");
    assert_problem(&patch(json!({"widget_key":"demo"})).await, 422, "invalid");
    let a = patch(json!({"name":"Acme Group","widget_key":"acme-2","settings":{"language":"cs"}}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["settings"]["language"], "cs");
    assert_eq!(
        visitor_session(&node, "acme-widget", "https://acme.example").await,
        Err(404),
        "the old widget key is let go"
    );
    assert!(visitor_session(&node, "acme-2", "https://acme.example")
        .await
        .is_ok());

    // Deleted by a root key only: its sockets close, its keys and id are gone for good.
    assert_problem(
        &call(&node, &acme_admin, "DELETE", "/v1/sites/acme", None, &[]).await,
        403,
        "forbidden",
    );
    let a = call(&node, &root, "DELETE", "/v1/sites/acme", None, &[]).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(ann.closed().await, Some(4003));
    assert_eq!(visitor.closed().await, Some(4003));
    assert_problem(&get(&node, &root, "/v1/sites/acme").await, 404, "not-found");
    assert_problem(
        &get(&node, &acme_admin, "/v1/sites/acme/operators").await,
        401,
        "unauthorized",
    );
    assert_eq!(
        visitor_session(&node, "acme-2", "https://acme.example").await,
        Err(404)
    );
    let mut again = Client::open(&node, Encoding::Json).await;
    again
        .send(&gateway::protocol::ClientFrame::Hello {
            token: ann_token.clone(),
            cursors: Default::default(),
            lang: None,
            device: None,
        })
        .await;
    assert_eq!(again.closed().await, Some(4003));
    assert_problem(
        &post(&node, &root, "/v1/sites", json!({"id":"acme"})).await,
        409,
        "conflict",
    );
    // Its widget key is free again.
    let a = post(
        &node,
        &root,
        "/v1/sites",
        json!({"id":"beta","widget_key":"acme-2"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    node.shutdown().await;

    // After a restart: made sites are served, deleted ones stay deleted, the file does not
    // bring back what the registry holds.
    let node = node_with(site_node(db)).await;
    let listed = get(&node, &root, "/v1/sites").await.json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["beta", "demo"]);
    assert!(visitor_session(&node, "acme-2", "http://127.0.0.1")
        .await
        .is_ok());
    let a = get(&node, &root, "/v1/sites/beta/queues").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["items"][0]["id"], "general");
    node.shutdown().await;
}
