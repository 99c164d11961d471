//! Operators beyond their conversations, over real sockets: an operator reaches a waiting
//! conversation only in a line it serves, an active one only if it holds it, and a closed one
//! only if it held it last (reading: or talks to its visitor now). The holes this closes: a ban
//! of a closed conversation's visitor by an operator who never held it (cutting that visitor's
//! live chat with someone else), a `close` of another's closed conversation that answered with
//! its contact details, and tags or bans on waiting conversations of lines not served.

use gateway::protocol::{Encoding, ErrorCode, Role, ServerFrame};
use serde_json::{json, Value};

use crate::common::*;

fn operator_serving(sub: &str, queues: &[&str]) -> String {
    gateway::auth::Auth::hs256(SECRET.as_bytes())
        .mint(&gateway::auth::Claims {
            anon: false,
            sid: None,
            sub: sub.into(),
            site: "demo".into(),
            role: Role::Operator,
            name: Some(sub.into()),
            exp: gateway::clock::now_ms() / 1000 + 3600,
            iat: None,
            queues: Some(queues.iter().map(|q| (*q).to_owned()).collect()),
            max_chats: None,
        })
        .unwrap()
}

async fn answer(c: &mut Client, frame: Value) -> Result<ServerFrame, ErrorCode> {
    match c.request_json(frame).await {
        ServerFrame::Error { code, .. } => Err(code),
        ok => Ok(ok),
    }
}

#[tokio::test]
async fn an_operator_reaches_only_what_it_serves_holds_or_held() {
    let node = node_with(|c| {
        c.sites = sites(r#"[{"id": "demo", "queues": ["general", "vip"]}]"#);
    })
    .await;
    // op1 (every line) chats with v1 and closes; v1's e-mail is in the conversation.
    let mut p = pair(&node, Encoding::Json, "v1").await;
    let ok = answer(
        &mut p.v,
        json!({"t": "identify", "email": "ann@example.org", "conv": p.conv}),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    let ok = answer(&mut p.op, json!({"t": "close", "conv": p.conv})).await;
    assert!(ok.is_ok(), "{ok:?}");
    // v2 waits in the general line.
    let (mut v2, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v2", "Bo"),
    )
    .await;
    let r = v2.rid();
    let waiting = ok_conv_id(&v2.request(req::start(r)).await);

    let (mut vip, _) =
        Client::connect(&node, Encoding::Json, &operator_serving("op_vip", &["vip"])).await;
    let (mut general, _) = Client::connect(
        &node,
        Encoding::Json,
        &operator_serving("op_general", &["general"]),
    )
    .await;

    // A waiting conversation of a line it does not serve: not to be read, tagged, banned or
    // closed.
    for frame in [
        json!({"t": "tag", "conv": waiting, "add": ["spam"]}),
        json!({"t": "ban", "conv": waiting}),
        json!({"t": "close", "conv": waiting}),
        json!({"t": "get", "conv": waiting}),
        json!({"t": "history", "conv": waiting}),
    ] {
        assert_eq!(
            answer(&mut vip, frame.clone()).await.err(),
            Some(ErrorCode::Forbidden),
            "{frame}"
        );
    }
    // ... and an operator of its line may.
    let ok = answer(
        &mut general,
        json!({"t": "tag", "conv": waiting, "add": ["spam"]}),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    let ok = answer(&mut general, json!({"t": "get", "conv": waiting})).await;
    assert!(ok.is_ok(), "{ok:?}");

    // A closed conversation it never held: no ban, no close (which answered with the
    // visitor's contact details), no reading.
    for frame in [
        json!({"t": "ban", "conv": p.conv}),
        json!({"t": "close", "conv": p.conv}),
        json!({"t": "get", "conv": p.conv}),
        json!({"t": "tag", "conv": p.conv, "add": ["x"]}),
    ] {
        let got = answer(&mut general, frame.clone()).await;
        assert_eq!(
            got.as_ref().err(),
            Some(&ErrorCode::Forbidden),
            "{frame}: {got:?}"
        );
        assert!(!format!("{got:?}").contains("ann@example.org"));
    }
    // The operator who held it may still see it.
    let ok = answer(&mut p.op, json!({"t": "get", "conv": p.conv})).await;
    assert!(ok.is_ok(), "{ok:?}");
    node.shutdown().await;
}
