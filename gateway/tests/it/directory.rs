//! The directory through the HTTP API on one node with its SQLite archive: collections
//! created, checked, patched and deleted; lines deciding which operators serve what; staff
//! signing in with a password, sessions revoked, accounts set inactive and disconnected at
//! once; and nothing of one site reachable from another.

use gateway::api::keys::Scope;
use gateway::protocol::{ClientFrame, Encoding, Role, ServerFrame};
use serde_json::{json, Value};

use crate::api::{api_node, assert_problem, call, get, key};
use crate::common::*;

async fn post(node: &Node, auth: &str, path: &str, body: Value) -> testsupport::HttpAnswer {
    call(node, auth, "POST", path, Some(body), &[]).await
}

/// Says hello with `token` and returns the close code it is refused with.
async fn refused(node: &Node, token: &str) -> Option<u16> {
    let mut c = Client::open(node, Encoding::Json).await;
    c.send(&ClientFrame::Hello {
        token: token.into(),
        cursors: Default::default(),
        lang: None,
        device: None,
    })
    .await;
    c.closed().await
}

fn queues_of(welcome: &ServerFrame) -> Vec<String> {
    match welcome {
        ServerFrame::Welcome { settings, .. } => settings.queues.clone(),
        other => panic!("not a welcome: {other:?}"),
    }
}

#[tokio::test]
async fn collections_are_created_checked_patched_and_deleted() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let read = key(&node, Some("demo"), &[Scope::Read]).await;
    let other = key(&node, Some("other"), &[Scope::Admin]).await;

    // The sites file seeded the lines of a fresh site.
    let lines = get(&node, &read, "/v1/sites/demo/queues").await.json();
    let ids: Vec<&str> = lines["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["general", "vip"]);

    let a = post(&node, &admin, "/v1/sites/demo/operators", json!({"id":"ann","name":"Ann","role":"operator","email":"ann@example.com","password":"long enough 1"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ann = a.json();
    assert_eq!(ann["has_password"], true);
    assert!(ann.get("password").is_none() && ann.get("password_hash").is_none());
    assert!(!a.body.contains("argon2"), "no hash shown");

    // Every bad field is named; a reference to nothing is a bad field.
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/groups",
        json!({"id":"sales","name":"","members":["ann","ghost"]}),
    )
    .await;
    let p = assert_problem(&a, 422, "invalid");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "members[1]"], "{p}");
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/groups",
        json!({"id":"sales","name":"Sales","members":["ann"],"colour":"red"}),
    )
    .await;
    assert_problem(&a, 422, "invalid");
    assert_problem(
        &post(&node, &admin, "/v1/sites/demo/groups", json!([1, 2])).await,
        422,
        "invalid",
    );
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/groups",
        json!({"id":"sales","name":"Sales","members":["ann"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/groups",
            json!({"id":"sales","name":"Again"}),
        )
        .await,
        409,
        "conflict",
    );

    // A line's settings are checked as settings.
    let a = post(&node, &admin, "/v1/sites/demo/queues", json!({"id":"sales","name":"Sales","operator_groups":["sales"],"settings":{"accept_timeout":"soon","language":"ru"}})).await;
    let p = assert_problem(&a, 422, "invalid");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"settings.language") && fields.contains(&"settings.accept_timeout"),
        "{p}"
    );
    let a = post(&node, &admin, "/v1/sites/demo/queues", json!({"id":"sales","name":"Sales","operator_groups":["sales"],"settings":{"accept_timeout":"20s"}})).await;
    assert_eq!(a.status, 201, "{}", a.body);

    // What is referred to is not deleted; the answer says by what.
    let a = call(
        &node,
        &admin,
        "DELETE",
        "/v1/sites/demo/groups/sales",
        None,
        &[],
    )
    .await;
    let p = assert_problem(&a, 409, "conflict");
    assert!(
        p["detail"].as_str().unwrap().contains("queues sales"),
        "{p}"
    );
    let ann = get(&node, &read, "/v1/sites/demo/operators/ann")
        .await
        .json();
    assert_eq!(ann["groups"], json!(["sales"]));

    // Patch: only the fields named; the id stays.
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/queues/sales",
        Some(json!({"name":"Sales line"})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["operator_groups"], json!(["sales"]));
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/queues/sales",
        Some(json!({"id":"other"})),
        &[],
    )
    .await;
    assert_problem(&a, 422, "invalid");
    assert_problem(
        &call(
            &node,
            &admin,
            "PATCH",
            "/v1/sites/demo/queues/nope",
            Some(json!({})),
            &[],
        )
        .await,
        404,
        "not-found",
    );

    // Tags: the server stamps who made them; bans get an id.
    let a = post(&node, &admin, "/v1/sites/demo/tags", json!({"name":"refund","color":"#ff0000","auto":{"keywords":["money back"],"queues":["sales"]},"created_by":"forged"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_ne!(a.json()["created_by"], "forged");
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/tags",
            json!({"name":"x","color":"red"}),
        )
        .await,
        422,
        "invalid",
    );
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/bans",
        json!({"device":"dev-1","reason":"spam"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(!a.json()["id"].as_str().unwrap().is_empty());
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/bans",
            json!({"reason":"nobody"}),
        )
        .await,
        422,
        "invalid",
    );
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/bans",
            json!({"ip":"not an ip"}),
        )
        .await,
        422,
        "invalid",
    );

    // Pages, in id order.
    for i in 0..3 {
        assert_eq!(
            post(
                &node,
                &admin,
                "/v1/sites/demo/outcomes",
                json!({"id": format!("o{i}"), "name": "Done"})
            )
            .await
            .status,
            201
        );
    }
    let page = get(&node, &read, "/v1/sites/demo/outcomes?limit=2")
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &node,
        &read,
        &format!("/v1/sites/demo/outcomes?limit=2&cursor={next}"),
    )
    .await
    .json();
    assert_eq!(rest["items"][0]["id"], "o2");
    assert!(rest["next_cursor"].is_null());

    // Scopes, and sites that never meet.
    assert_problem(
        &post(
            &node,
            &read,
            "/v1/sites/demo/outcomes",
            json!({"id":"x","name":"X"}),
        )
        .await,
        403,
        "forbidden",
    );
    assert_problem(
        &get(&node, &other, "/v1/sites/demo/operators").await,
        404,
        "not-found",
    );
    let theirs = get(&node, &other, "/v1/sites/other/operators").await.json();
    assert_eq!(theirs["items"], json!([]));
    // Deleted: gone, and the next delete finds nothing.
    assert_eq!(
        call(
            &node,
            &admin,
            "DELETE",
            "/v1/sites/demo/outcomes/o0",
            None,
            &[]
        )
        .await
        .status,
        204
    );
    assert_problem(
        &call(
            &node,
            &admin,
            "DELETE",
            "/v1/sites/demo/outcomes/o0",
            None,
            &[],
        )
        .await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn lines_decide_what_an_operator_serves_and_inactive_staff_are_cut_off() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    for body in [
        json!({"id":"ann","name":"Ann","role":"operator","max_chats":2}),
        json!({"id":"bob","name":"Bob","role":"operator"}),
    ] {
        assert_eq!(
            post(&node, &admin, "/v1/sites/demo/operators", body)
                .await
                .status,
            201
        );
    }
    assert_eq!(
        post(
            &node,
            &admin,
            "/v1/sites/demo/groups",
            json!({"id":"vips","name":"VIP team","members":["ann"]})
        )
        .await
        .status,
        201
    );
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/queues/vip",
        Some(json!({"operator_groups":["vips"]})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Whatever their tokens say, Bob serves the open line only, Ann both.
    let (mut bob, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "bob", "Bob"),
    )
    .await;
    let (_ann, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "ann", "Ann"),
    )
    .await;
    let r = bob.rid();
    let ok = bob
        .request(req::status(r, gateway::protocol::OperatorStatus::Active))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let listing = bob
        .recv_until(|f| matches!(f, ServerFrame::Queue { .. }))
        .await;
    let ServerFrame::Queue { queue, .. } = &listing else {
        unreachable!()
    };
    assert_eq!(queue, "general", "bob is not shown the vip line");

    // A new line is in effect at once: the next welcome lists it.
    assert_eq!(
        post(
            &node,
            &admin,
            "/v1/sites/demo/queues",
            json!({"id":"billing","name":"Billing"})
        )
        .await
        .status,
        201
    );
    let (_c, w) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "V"),
    )
    .await;
    assert_eq!(
        queues_of(&w),
        ["general", "vip", "billing"],
        "the sites file's order first"
    );

    // Set inactive: disconnected at once, and refused from then on.
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/operators/bob",
        Some(json!({"active":false})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(bob.closed().await, Some(4003));
    assert_eq!(
        refused(&node, &token("demo", Role::Operator, "bob", "Bob")).await,
        Some(4003)
    );
    // A token claiming another role than the account's is refused too.
    assert_eq!(
        refused(&node, &token("demo", Role::Supervisor, "ann", "Ann")).await,
        Some(4003)
    );
}

#[tokio::test]
async fn staff_sign_in_with_a_password_and_sessions_end_when_revoked() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let a = post(&node, &admin, "/v1/sites/demo/operators", json!({"id":"sue","name":"Sue","role":"supervisor","email":"Sue@Example.com","password":"correct horse"})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(
        post(
            &node,
            &admin,
            "/v1/sites/demo/operators",
            json!({"id":"nopw","name":"No password","role":"operator","email":"nopw@example.com"})
        )
        .await
        .status,
        201
    );

    let sign_in = |email: &'static str, pw: &'static str| {
        let node = &node;
        async move {
            post(
                node,
                "",
                "/v1/sites/demo/sessions",
                json!({"email": email, "password": pw}),
            )
            .await
        }
    };
    assert_problem(
        &sign_in("sue@example.com", "wrong horse").await,
        401,
        "unauthorized",
    );
    assert_problem(
        &sign_in("nobody@example.com", "correct horse").await,
        401,
        "unauthorized",
    );
    assert_problem(&sign_in("nopw@example.com", "").await, 422, "invalid");
    assert_problem(
        &post(
            &node,
            "",
            "/v1/sites/other/sessions",
            json!({"email":"sue@example.com","password":"correct horse"}),
        )
        .await,
        401,
        "unauthorized",
    );
    let a = sign_in("sue@example.com", "correct horse").await;
    assert_eq!(a.status, 201, "{}", a.body);
    let made = a.json();
    let tok = made["token"].as_str().unwrap().to_owned();
    let session = made["session"].as_str().unwrap().to_owned();
    assert_eq!(made["staff"]["id"], "sue");

    // The token works on the socket and the API, as a supervisor of this site only.
    let (mut ws, w) = Client::connect(&node, Encoding::Json, &tok).await;
    let ServerFrame::Welcome { me, .. } = &w else {
        unreachable!()
    };
    assert_eq!(me.role, Role::Supervisor);
    assert_eq!(
        get(&node, &tok, "/v1/sites/demo/operators").await.status,
        200
    );
    assert_problem(
        &get(&node, &tok, "/v1/sites/other/operators").await,
        404,
        "not-found",
    );

    // Revoked by its owner: the socket closes, the token is refused everywhere.
    let a = call(
        &node,
        &tok,
        "DELETE",
        &format!("/v1/sites/demo/sessions/{session}"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(ws.closed().await, Some(4001));
    assert_eq!(refused(&node, &tok).await, Some(4001));
    assert_problem(
        &get(&node, &tok, "/v1/sites/demo/operators").await,
        401,
        "unauthorized",
    );

    // Too many tries for one account: 429 with Retry-After, even with the right password.
    let mut limited = None;
    for _ in 0..8 {
        let a = sign_in("sue@example.com", "wrong horse").await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
    }
    let a = limited.expect("attempts are limited");
    assert!(a.header("retry-after").is_some());
    assert_eq!(
        sign_in("sue@example.com", "correct horse").await.status,
        429
    );
}

/// A token signed by a site's backend with the site's own key.
fn site_token(secret: &str, kid: &str, site: &str, role: Role, sub: &str) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid.into());
    let claims = json!({"sub": sub, "site": site, "role": role.as_str(), "exp": gateway::clock::now_ms() / 1000 + 3600});
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn each_site_signs_its_own_tokens_and_keys_rotate() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let other_admin = key(&node, Some("other"), &[Scope::Admin]).await;
    let a = post(&node, &admin, "/v1/sites/demo/signing-keys", json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let k1 = a.json();
    let (kid1, secret1) = (
        k1["kid"].as_str().unwrap().to_owned(),
        k1["secret"].as_str().unwrap().to_owned(),
    );
    assert_eq!(k1["algorithm"], "HS256");
    let listed = get(&node, &admin, "/v1/sites/demo/signing-keys").await;
    assert!(
        !listed.body.contains(&secret1),
        "never listed with its secret"
    );

    // The site's backend signs a supervisor token with it: valid on its site...
    let t = site_token(&secret1, &kid1, "demo", Role::Supervisor, "boss");
    let (_ws, w) = Client::connect(&node, Encoding::Json, &t).await;
    assert!(matches!(w, ServerFrame::Welcome { .. }));
    assert_eq!(get(&node, &t, "/v1/sites/demo/operators").await.status, 200);
    // ...and worthless on another, whatever it claims.
    let forged = site_token(&secret1, &kid1, "other", Role::Supervisor, "boss");
    assert_eq!(refused(&node, &forged).await, Some(4001));
    assert_problem(
        &get(&node, &forged, "/v1/sites/other/operators").await,
        401,
        "unauthorized",
    );
    let made = post(
        &node,
        &other_admin,
        "/v1/sites/other/signing-keys",
        json!({}),
    )
    .await
    .json();
    let forged = site_token(
        &secret1,
        made["kid"].as_str().unwrap(),
        "other",
        Role::Supervisor,
        "boss",
    );
    assert_eq!(
        refused(&node, &forged).await,
        Some(4001),
        "another site's key id with this site's secret"
    );

    // Rotation: a new key retires the old one after a window; both verify meanwhile.
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/signing-keys",
        json!({"retire_others_after": "1h"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let k2 = a.json();
    let t2 = site_token(
        k2["secret"].as_str().unwrap(),
        k2["kid"].as_str().unwrap(),
        "demo",
        Role::Operator,
        "o2",
    );
    assert!(matches!(
        Client::connect(&node, Encoding::Json, &t2).await.1,
        ServerFrame::Welcome { .. }
    ));
    assert!(matches!(
        Client::connect(&node, Encoding::Json, &t).await.1,
        ServerFrame::Welcome { .. }
    ));
    let keys = get(&node, &admin, "/v1/sites/demo/signing-keys")
        .await
        .json();
    let old = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid1.as_str())
        .unwrap()
        .clone();
    assert!(old["retires_at"].as_u64().is_some(), "{old}");
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/signing-keys",
            json!({"retire_others_after": "soon"}),
        )
        .await,
        422,
        "invalid",
    );
    // Deleted: refused at once.
    let a = call(
        &node,
        &admin,
        "DELETE",
        &format!("/v1/sites/demo/signing-keys/{kid1}"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(refused(&node, &t).await, Some(4001));
    assert!(matches!(
        Client::connect(&node, Encoding::Json, &t2).await.1,
        ServerFrame::Welcome { .. }
    ));
}

#[tokio::test]
async fn bans_hold_by_visitor_and_address_and_only_allowed_operators_ban() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    // A visitor banned in the directory is cut off at once and refused after.
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "pest", "P"),
    )
    .await;
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/bans",
        json!({"visitor":"pest","reason":"spam"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(v.closed().await, Some(4003));
    assert_eq!(
        refused(&node, &token("demo", Role::Visitor, "pest", "P")).await,
        Some(4003)
    );
    // By address: a fresh visitor id from that address is refused too (tests connect from
    // 127.0.0.1); lifting the ban lets them in.
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/bans",
        json!({"ip":"127.0.0.1"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ip_ban = a.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        refused(&node, &token("demo", Role::Visitor, "fresh", "F")).await,
        Some(4003)
    );
    let a = call(
        &node,
        &admin,
        "DELETE",
        &format!("/v1/sites/demo/bans/{ip_ban}"),
        None,
        &[],
    )
    .await;
    assert_eq!(a.status, 204);
    let (mut fresh, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "fresh", "F"),
    )
    .await;

    // An operator without `can_ban` may not ban the visitor of their own conversation.
    assert_eq!(
        post(
            &node,
            &admin,
            "/v1/sites/demo/operators",
            json!({"id":"op1","name":"Op","role":"operator","can_ban":false})
        )
        .await
        .status,
        201
    );
    let mut op = Client::active_operator(&node, "op1", "Op").await;
    let r = fresh.rid();
    let conv = ok_conv_id(&fresh.request(req::start(r)).await);
    let r = op.rid();
    let ok = op.request(req::accept(r, &conv)).await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let no = op.request_json(json!({"t": "ban", "conv": conv})).await;
    assert!(
        matches!(&no, ServerFrame::Error { code, .. } if *code == gateway::protocol::ErrorCode::Forbidden),
        "{no:?}"
    );
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/operators/op1",
        Some(json!({"can_ban":true})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200);
    let yes = op.request_json(json!({"t": "ban", "conv": conv})).await;
    assert!(matches!(yes, ServerFrame::Ok { .. }), "{yes:?}");
}

/// Says hello as a visitor of the demo site from a device: the open client, or the close
/// code it was refused with.
async fn visitor_from(node: &Node, id: &str, device: &str) -> Result<Client, Option<u16>> {
    let mut c = Client::open(node, Encoding::Json).await;
    c.send(&ClientFrame::Hello {
        token: token("demo", Role::Visitor, id, id),
        cursors: Default::default(),
        lang: None,
        device: Some(device.into()),
    })
    .await;
    match c.recv_or_closed().await {
        Ok(ServerFrame::Welcome { .. }) => Ok(c),
        Ok(other) => panic!("not a welcome: {other:?}"),
        Err(code) => Err(Some(code)),
    }
}

#[tokio::test]
async fn a_ban_from_a_conversation_covers_the_visitors_device_and_address() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let mut op = Client::active_operator(&node, "op1", "Op").await;
    let mut v = visitor_from(&node, "pest", "device-abc123")
        .await
        .expect("welcome");
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let r = op.rid();
    let ok = op.request(req::accept(r, &conv)).await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let ok = op
        .request_json(json!({"t": "ban", "conv": conv, "reason": "spam"}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    assert_eq!(v.closed().await, Some(4003));

    // The directory keeps the ban with the visitor's device and address.
    let bans = get(&node, &admin, "/v1/sites/demo/bans").await.json();
    let ban = &bans["items"][0];
    assert_eq!(ban["visitor"], "pest", "{bans}");
    assert_eq!(ban["device"], "device-abc123", "{bans}");
    assert_eq!(ban["ip"], "127.0.0.1", "{bans}");
    assert_eq!(ban["reason"], "spam", "{bans}");
    assert!(ban["until"].as_u64().is_some(), "{bans}");

    // A new visitor id (the browser's storage cleared) on the same device is refused, by
    // the device alone once the address is lifted (an office shares one); another device is
    // let in.
    let a = call(
        &node,
        &admin,
        "PATCH",
        &format!("/v1/sites/demo/bans/{}", ban["id"].as_str().unwrap()),
        Some(json!({"ip": null})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        visitor_from(&node, "pest-again", "device-abc123")
            .await
            .err(),
        Some(Some(4003))
    );
    assert!(visitor_from(&node, "neighbour", "device-xyz789")
        .await
        .is_ok());
    // A device id that is not one: 4000.
    assert_eq!(
        visitor_from(&node, "odd", "no spaces allowed").await.err(),
        Some(Some(4000))
    );
    // A supervisor's unban lifts it whole: the device is let in again.
    let (mut sup, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "boss", "Boss"),
    )
    .await;
    let ok = sup
        .request_json(json!({"t": "unban", "visitor": "pest"}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    let bans = get(&node, &admin, "/v1/sites/demo/bans").await.json();
    assert_eq!(bans["items"], json!([]), "{bans}");
    assert!(visitor_from(&node, "pest-again", "device-abc123")
        .await
        .is_ok());
}

#[tokio::test]
async fn canned_responses_of_the_directory_reach_the_console_with_their_lines() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let a = post(
        &node,
        &admin,
        "/v1/sites/demo/canned",
        json!({"shortcut":"vipwelcome","text":"Welcome, {{visitor.name}}","queues":["vip"]}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert!(
        !a.json()["id"].as_str().unwrap().is_empty(),
        "an id is made"
    );
    assert_problem(
        &post(
            &node,
            &admin,
            "/v1/sites/demo/canned",
            json!({"shortcut":"has space","text":"x","queues":["nope"]}),
        )
        .await,
        422,
        "invalid",
    );
    let (_op, w) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "o1", "O"),
    )
    .await;
    let ServerFrame::Welcome { settings, .. } = &w else {
        unreachable!()
    };
    let c = settings
        .canned
        .iter()
        .find(|c| c.shortcut == "vipwelcome")
        .expect("listed");
    assert_eq!(c.queues, ["vip"]);
    // Visitors are never sent the staff's canned responses.
    let (_v, w) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "V"),
    )
    .await;
    let ServerFrame::Welcome { settings, .. } = &w else {
        unreachable!()
    };
    assert!(settings.canned.is_empty());
}

#[tokio::test]
async fn catalogues_decide_tags_and_outcomes_and_keywords_tag_by_themselves() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    for (path, body) in [
        (
            "tags",
            json!({"name":"refund","auto":{"keywords":["Money Back"],"queues":["general"]}}),
        ),
        (
            "tags",
            json!({"name":"vip-only","auto":{"keywords":["money"],"queues":["vip"]}}),
        ),
        ("tags", json!({"name":"old","active":false})),
        ("tags", json!({"name":"billing"})),
        ("outcomes", json!({"id":"solved","name":"Solved"})),
        (
            "outcomes",
            json!({"id":"retired","name":"Retired","active":false}),
        ),
    ] {
        let a = post(&node, &admin, &format!("/v1/sites/demo/{path}"), body).await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let mut p = pair(&node, Encoding::Json, "v1").await;
    // A keyword in the visitor's words (any case) tags the conversation; a tag of another
    // line's keywords does not.
    let r = p.v.rid();
    p.v.request(req::send(r, &p.conv, "c1", "I want my MONEY BACK now"))
        .await;
    let tagged = p
        .op
        .recv_until(|f| matches!(f, ServerFrame::Conv { conv, .. } if conv.tags.contains(&"refund".to_owned())))
        .await;
    let ServerFrame::Conv { conv, .. } = tagged else {
        unreachable!()
    };
    assert_eq!(conv.tags, ["refund"]);

    // Staff add only active tags of the catalogue.
    let r = p.op.rid();
    let no =
        p.op.request(ClientFrame::Tag {
            rid: Some(r),
            conv: p.conv.clone(),
            add: vec!["old".into()],
            remove: vec![],
        })
        .await;
    assert!(matches!(no, ServerFrame::Error { .. }), "{no:?}");
    let r = p.op.rid();
    let no =
        p.op.request(ClientFrame::Tag {
            rid: Some(r),
            conv: p.conv.clone(),
            add: vec!["made-up".into()],
            remove: vec![],
        })
        .await;
    assert!(matches!(no, ServerFrame::Error { .. }), "{no:?}");
    let r = p.op.rid();
    let ok =
        p.op.request(ClientFrame::Tag {
            rid: Some(r),
            conv: p.conv.clone(),
            add: vec!["billing".into()],
            remove: vec![],
        })
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    // Outcomes: one of the active ones.
    for bad in ["retired", "whatever"] {
        let no =
            p.op.request_json(json!({"t":"close","conv": p.conv, "outcome": bad}))
                .await;
        assert!(matches!(no, ServerFrame::Error { .. }), "{bad}: {no:?}");
    }
    let ok =
        p.op.request_json(json!({"t":"close","conv": p.conv, "outcome": "solved"}))
            .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
}

#[tokio::test]
async fn supervisor_groups_moderate_their_lines_only() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    for (path, body) in [
        (
            "operators",
            json!({"id":"sue","name":"Sue","role":"supervisor"}),
        ),
        (
            "operators",
            json!({"id":"max","name":"Max","role":"supervisor"}),
        ),
        (
            "groups",
            json!({"id":"vip-sups","name":"VIP supervisors","members":["sue"]}),
        ),
    ] {
        let a = post(&node, &admin, &format!("/v1/sites/demo/{path}"), body).await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let a = call(
        &node,
        &admin,
        "PATCH",
        "/v1/sites/demo/queues/vip",
        Some(json!({"supervisor_groups":["vip-sups"]})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let start_in = |queue: Option<&'static str>, visitor: &'static str| {
        let node = &node;
        async move {
            let (mut v, _) = Client::connect(
                node,
                Encoding::Json,
                &token("demo", Role::Visitor, visitor, "V"),
            )
            .await;
            let mut frame = json!({"t": "start"});
            if let Some(q) = queue {
                frame["queue"] = q.into();
            }
            let conv = ok_conv_id(&v.request_json(frame).await);
            (v, conv)
        }
    };
    let (_v1, general) = start_in(None, "v1").await;
    let (_v2, vip) = start_in(Some("vip"), "v2").await;
    // Sue moderates the vip line only; Max, in no supervisor group, the whole site.
    let (mut sue, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "sue", "Sue"),
    )
    .await;
    let (mut max, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "max", "Max"),
    )
    .await;
    assert!(matches!(
        watch(&mut sue, &vip).await,
        ServerFrame::Ok { .. }
    ));
    let no = watch(&mut sue, &general).await;
    assert!(matches!(no, ServerFrame::Error { .. }), "{no:?}");
    assert!(matches!(
        watch(&mut max, &general).await,
        ServerFrame::Ok { .. }
    ));
    assert!(matches!(
        watch(&mut max, &vip).await,
        ServerFrame::Ok { .. }
    ));
}

async fn watch(c: &mut Client, conv: &str) -> ServerFrame {
    c.request_json(json!({"t": "watch", "conv": conv, "on": true}))
        .await
}

#[tokio::test]
async fn a_site_is_held_to_its_own_limits() {
    let (node, _dir) = api_node(|c| {
        c.sites = sites(
            r#"[{"id": "demo", "queues": ["general"], "settings": {"max_waiting": 1, "max_connections": 3, "api_rate_per_sec": 2}},
                {"id": "other"}]"#,
        );
    })
    .await;
    // Conversations waiting: the second start is refused while the first waits.
    let (mut v1, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "V"),
    )
    .await;
    let first = v1.request_json(json!({"t": "start"})).await;
    assert!(matches!(first, ServerFrame::Ok { .. }), "{first:?}");
    let (mut v2, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "V"),
    )
    .await;
    let second = v2.request_json(json!({"t": "start"})).await;
    assert!(
        matches!(&second, ServerFrame::Error { code, .. } if *code == gateway::protocol::ErrorCode::Capacity),
        "{second:?}"
    );
    // Connections: the site's third is its last on this node; another site is not affected.
    let (_v3, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v3", "V"),
    )
    .await;
    assert_eq!(
        refused(&node, &token("demo", Role::Visitor, "v4", "V")).await,
        Some(4029)
    );
    let (_o, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("other", Role::Visitor, "v4", "V"),
    )
    .await;
    // One leaves: a place is free again.
    drop(v2);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = Client::open(&node, Encoding::Json).await;
        c.send(&ClientFrame::Hello {
            token: token("demo", Role::Visitor, "v5", "V"),
            cursors: Default::default(),
            lang: None,
            device: None,
        })
        .await;
        if matches!(c.recv_or_closed().await, Ok(ServerFrame::Welcome { .. })) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
    }
    // The API: every caller of the site together, 2 a second (burst 2).
    let a = key(&node, Some("demo"), &[Scope::Read]).await;
    let b = key(&node, Some("demo"), &[Scope::Read]).await;
    let other = key(&node, Some("other"), &[Scope::Read]).await;
    let mut statuses = Vec::new();
    for k in [&a, &b, &a, &b] {
        statuses.push(get(&node, k, "/v1/sites/demo/queues").await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        get(&node, &other, "/v1/sites/other/queues").await.status,
        200
    );
}

/// The JSON of a frame (to read what its conversation holds).
fn frame_json(f: &ServerFrame) -> Value {
    serde_json::to_value(f).expect("a frame serialises")
}

#[tokio::test]
async fn operators_change_the_parameters_the_site_marks_editable_during_and_after() {
    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    for body in [
        json!({"code":"order","label":"Order","editable":true}),
        json!({"code":"vip","label":"VIP","editable":false}),
    ] {
        let a = post(&node, &admin, "/v1/sites/demo/params", body).await;
        assert_eq!(a.status, 201, "{}", a.body);
    }
    let mut p = pair(&node, Encoding::Json, "v1").await;
    let edit = |conv: &str, params: Value| json!({"t":"identify","conv":conv,"params":params});
    let is_code = |f: &ServerFrame, want: gateway::protocol::ErrorCode| matches!(f, ServerFrame::Error { code, .. } if *code == want);

    // The operator holding it changes an editable parameter, not another.
    let ok =
        p.op.request_json(edit(&p.conv, json!({"order":"A-1"})))
            .await;
    assert_eq!(
        frame_json(&ok)["conv"]["visitor"]["params"]["order"],
        "A-1",
        "{ok:?}"
    );
    let no = p.op.request_json(edit(&p.conv, json!({"vip":"yes"}))).await;
    assert!(
        is_code(&no, gateway::protocol::ErrorCode::Forbidden),
        "{no:?}"
    );
    // Nor the visitor's details, nor without naming the conversation.
    let no =
        p.op.request_json(json!({"t":"identify","conv":p.conv,"prechat":{"name":"X"}}))
            .await;
    assert!(
        is_code(&no, gateway::protocol::ErrorCode::BadRequest),
        "{no:?}"
    );
    // Another operator, not in it: refused.
    let (mut other, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op2", "Oleg"),
    )
    .await;
    let no = other
        .request_json(edit(&p.conv, json!({"order":"B-2"})))
        .await;
    assert!(matches!(no, ServerFrame::Error { .. }), "{no:?}");
    // A supervisor changes any of them.
    let (mut sup, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Supervisor, "boss", "Boss"),
    )
    .await;
    let ok = sup.request_json(edit(&p.conv, json!({"vip":"yes"}))).await;
    assert_eq!(
        frame_json(&ok)["conv"]["visitor"]["params"]["vip"],
        "yes",
        "{ok:?}"
    );

    // After the close, in the archive: the operator who held it still may.
    let r = p.op.rid();
    let closed =
        p.op.request(gateway::protocol::ClientFrame::Close {
            rid: Some(r),
            conv: p.conv.clone(),
            outcome: None,
            tags: None,
        })
        .await;
    assert!(matches!(closed, ServerFrame::Ok { .. }), "{closed:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f =
            p.op.request_json(edit(&p.conv, json!({"order":"A-2"})))
                .await;
        if matches!(f, ServerFrame::Ok { .. }) {
            break;
        }
        // Closed a moment ago: still on its way to the archive (conflict), or the archive is
        // busy with that write (unavailable): both say "retry".
        assert!(
            (is_code(&f, gateway::protocol::ErrorCode::Conflict)
                || is_code(&f, gateway::protocol::ErrorCode::Unavailable))
                && tokio::time::Instant::now() < deadline,
            "{f:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let d = get(
        &node,
        &admin,
        &format!("/v1/sites/demo/conversations/{}", p.conv),
    )
    .await
    .json();
    assert_eq!(d["params"]["order"], "A-2", "{d}");
    let no = other
        .request_json(edit(&p.conv, json!({"order":"B-3"})))
        .await;
    assert!(
        is_code(&no, gateway::protocol::ErrorCode::NotFound),
        "{no:?}"
    );
}

/// Reloads of a site's directory run side by side (the one after a change made here, and the
/// ones other nodes' announcements start): whichever finishes last, the node's copy never
/// goes back to a version older than one it held. A stale copy put back would lift a ban or
/// bring back a removed operator on this node until the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reload_never_puts_back_an_older_directory() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (node, _dir) = api_node(|_| {}).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let site = gateway::core::SiteId::from("demo");
    let done = Arc::new(AtomicBool::new(false));
    // Reloads that keep running while the directory changes.
    let reloaders: Vec<_> = (0..4)
        .map(|_| {
            let (gw, site, done) = (node.gw.clone(), site.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    gw.reload_directory(&site).await.expect("reloads");
                }
            })
        })
        .collect();
    // Every version the node's copy shows, in the order it shows them.
    let watcher = {
        let (gw, site, done) = (node.gw.clone(), site.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen = vec![gw.directory(&site).version];
            while !done.load(Ordering::Relaxed) {
                let v = gw.directory(&site).version;
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for i in 0..40 {
        let a = post(
            &node,
            &admin,
            "/v1/sites/demo/canned",
            json!({"shortcut": format!("c{i}"), "text": "hello"}),
        )
        .await;
        assert_eq!(a.status, 201, "{}", a.body);
        // The change is in this node's copy when its call answers.
        let dir = node.gw.directory(&site);
        assert!(
            dir.canned.values().any(|c| c.shortcut == format!("c{i}")),
            "c{i} missing from version {}",
            dir.version
        );
    }
    done.store(true, Ordering::Relaxed);
    for r in reloaders {
        r.await.expect("reloader");
    }
    let seen = watcher.await.expect("watcher");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "the copy went back: {seen:?}"
    );
}
