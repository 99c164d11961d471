//! What one visitor or one address may cost the node, over real sockets and HTTP: a
//! start/close loop is stopped with a `rate_limited` error frame (another visitor is not),
//! anonymous sessions from one address answer 429 with `Retry-After`, and transcripts are
//! rendered a few a minute per reader.

use gateway::abuse::AbuseLimits;
use gateway::protocol::{Encoding, ErrorCode, Role, ServerFrame};
use serde_json::json;

use crate::common::*;

async fn tight() -> Node {
    node_with(|c| {
        c.abuse = AbuseLimits {
            sessions_per_ip_minute: 3,
            starts_per_visitor_hour: 6,
            starts_per_ip_hour: 3000,
        };
    })
    .await
}

#[tokio::test]
async fn a_start_and_close_loop_is_stopped_and_other_visitors_are_not() {
    let node = tight().await;
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v1", "Ann"),
    )
    .await;
    // The hour's six, a third of them at once: two conversations, then a refusal.
    let mut last = String::new();
    for _ in 0..2 {
        let r = v.rid();
        last = ok_conv_id(&v.request(req::start(r)).await);
        let closed = v.request_json(json!({"t": "close", "conv": last})).await;
        assert!(matches!(closed, ServerFrame::Ok { .. }), "{closed:?}");
    }
    // Writing into the closed one would start a new conversation: it counts too.
    let r = v.rid();
    match v.request(req::send(r, &last, "again", "hello?")).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("a message reopened past the limit: {other:?}"),
    }
    let r = v.rid();
    match v.request(req::start(r)).await {
        ServerFrame::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(message.contains("too many conversations"), "{message}");
        }
        other => panic!("a third start went through: {other:?}"),
    }
    // The connection stays open and another visitor starts as usual.
    let r = v.rid();
    assert!(matches!(
        v.request(req::history(r, "c_nope", None, None)).await,
        ServerFrame::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    let (mut w, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Bo"),
    )
    .await;
    let r = w.rid();
    ok_conv_id(&w.request(req::start(r)).await);
    node.shutdown().await;
}

#[tokio::test]
async fn anonymous_sessions_and_transcripts_are_limited_per_address_and_reader() {
    let node = tight().await;
    let addr = node.addr.to_string();
    let session = || async {
        testsupport::http_full(
            &addr,
            "POST",
            "/v1/visitor/session",
            &[],
            r#"{"site":"demo"}"#,
        )
        .await
        .expect("answered")
    };
    for _ in 0..3 {
        assert_eq!(session().await.status, 200);
    }
    let refused = session().await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(refused.body.contains("rate_limited"), "{}", refused.body);

    // A visitor's transcript: five at once, then 429 for that reader only.
    let (mut v, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v9", "Ann"),
    )
    .await;
    let r = v.rid();
    let conv = ok_conv_id(&v.request(req::start(r)).await);
    let bearer = format!("Bearer {}", token("demo", Role::Visitor, "v9", "Ann"));
    let path = format!("/v1/conversations/{conv}/transcript");
    let get = |auth: String| {
        let addr = addr.clone();
        let path = path.clone();
        async move {
            testsupport::http_full(&addr, "GET", &path, &[("Authorization", &auth)], "")
                .await
                .expect("answered")
        }
    };
    for _ in 0..5 {
        assert_eq!(get(bearer.clone()).await.status, 200);
    }
    let refused = get(bearer.clone()).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    let staff = format!("Bearer {}", token("demo", Role::Supervisor, "sup", "Sam"));
    assert_eq!(get(staff).await.status, 200, "another reader");
    node.shutdown().await;
}
