//! One visitor must never hurt the staff: what a visitor stores is bounded by size, frames
//! the staff receive never outgrow what their sockets can write, and a listing skips what
//! does not fit instead of stopping at it.

use std::collections::BTreeMap;

use gateway::protocol::{
    ClientFrame, Encoding, ErrorCode, OkBody, Page, Prechat, Role, ServerFrame,
};
use serde_json::json;

use crate::common::*;

fn error_code(f: &ServerFrame) -> Option<ErrorCode> {
    match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

async fn visitor(node: &Node, id: &str) -> Client {
    Client::connect(node, Encoding::Json, &token("demo", Role::Visitor, id, id))
        .await
        .0
}

fn params(n: usize, len: usize, tag: &str) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| (format!("{tag}{i}"), "x".repeat(len)))
        .collect()
}

/// A visitor starting with everything it may carry: parameters up to the budget, a long page
/// URL and referrer.
async fn heavy_start(v: &mut Client, long_urls: bool) -> String {
    let r = v.rid();
    let url = if long_urls {
        format!("https://shop.example/{}", "p".repeat(1900))
    } else {
        "https://shop.example/".into()
    };
    let f = ClientFrame::Start {
        rid: Some(r),
        queue: None,
        prechat: Some(Prechat {
            name: Some("N".repeat(100)),
            email: Some(format!("{}@example.com", "e".repeat(150))),
            phone: None,
        }),
        params: Some(params(7, 1000, "k")),
        page: Some(Page {
            url: Some(url.clone()),
            title: None,
            referrer: Some(url),
        }),
        offline: false,
    };
    ok_conv_id(&v.request(f).await)
}

/// Parameters are bounded by their size in all, also when `identify` adds to them frame by
/// frame (before, fifty parameters of a kilobyte each were fine, and every frame could add
/// more until the count ran out); control characters are refused where they have no business.
#[tokio::test]
async fn a_visitor_cannot_store_more_than_its_budget() {
    let node = node().await;
    let mut v = visitor(&node, "v1").await;
    let conv = heavy_start(&mut v, false).await;
    let identify = |v: &mut Client, p: BTreeMap<String, String>, name: Option<&str>| {
        let r = v.rid();
        ClientFrame::Identify {
            rid: Some(r),
            conv: Some(conv.clone()),
            prechat: name.map(|n| Prechat {
                name: Some(n.into()),
                email: None,
                phone: None,
            }),
            params: Some(p),
        }
    };
    let f = identify(&mut v, params(1, 1000, "more"), None);
    assert!(
        matches!(v.request(f).await, ServerFrame::Ok { .. }),
        "8 KiB in all is fine"
    );
    let f = identify(&mut v, params(1, 500, "over"), None);
    assert_eq!(error_code(&v.request(f).await), Some(ErrorCode::TooLarge));
    let f = identify(
        &mut v,
        BTreeMap::from([("bad\nname".into(), "x".into())]),
        None,
    );
    assert_eq!(error_code(&v.request(f).await), Some(ErrorCode::BadRequest));
    let f = identify(&mut v, BTreeMap::new(), Some("Ann\u{7}\u{1b}[31m"));
    assert_eq!(error_code(&v.request(f).await), Some(ErrorCode::BadRequest));
    // A value may hold line breaks (an address).
    let f = identify(
        &mut v,
        BTreeMap::from([("k0".into(), "Main St 1\nPrague".into())]),
        None,
    );
    assert!(matches!(v.request(f).await, ServerFrame::Ok { .. }));
    node.shutdown().await;
}

/// An operator holding many conversations of visitors who carry all they may still gets
/// `welcome` when they reconnect: the conversations that do not fit in it follow as `conv`
/// frames (before, one frame carried them all, larger than the socket could write, and the
/// operator was dropped before `welcome`, on every reconnect).
#[tokio::test]
async fn an_operator_with_many_heavy_conversations_still_gets_welcome() {
    const N: usize = 24;
    let sites_json = json!([{"id": "demo", "settings": {"max_chats": 50}}]);
    let node = node_with(|c| c.sites = sites(&sites_json.to_string())).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut visitors = Vec::new();
    for i in 0..N {
        let mut v = visitor(&node, &format!("v{i}")).await;
        let conv = heavy_start(&mut v, true).await;
        let r = op.rid();
        assert_eq!(ok_conv_id(&op.request(req::accept(r, &conv)).await), conv);
        visitors.push(v);
    }
    drop(op);
    let (mut again, welcome) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Operator, "op1", "Olga"),
    )
    .await;
    let ServerFrame::Welcome { conversations, .. } = welcome else {
        unreachable!()
    };
    let mut known: Vec<String> = conversations.into_iter().map(|c| c.id).collect();
    assert!(known.len() < N, "not all in one frame");
    for f in again.until_pong().await {
        if let ServerFrame::Conv { conv, reason, .. } = f {
            if reason.as_deref() == Some("welcome") {
                known.push(conv.id);
            }
        }
    }
    known.sort();
    known.dedup();
    assert_eq!(
        known.len(),
        N,
        "every held conversation, in welcome or after it"
    );
    node.shutdown().await;
}

/// A queue listing meets a conversation too large for the frame: it is skipped and the
/// others are listed (before, the listing stopped at it and listed nobody); listings leave out
/// parameters, which `get` returns.
#[tokio::test]
async fn a_listing_skips_what_does_not_fit_and_get_fetches_it_whole() {
    // A small budget: one list frame holds 4 KiB.
    let node = node_with(|c| c.outbound_max_bytes = 16 * 1024).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut heavy = visitor(&node, "heavy").await;
    let big = heavy_start(&mut heavy, true).await;
    let mut light = Vec::new();
    for i in 0..3 {
        let mut v = visitor(&node, &format!("light{i}")).await;
        let r = v.rid();
        let f = ClientFrame::Start {
            rid: Some(r),
            queue: None,
            prechat: None,
            params: Some(BTreeMap::from([("plan".into(), "gold".into())])),
            page: None,
            offline: false,
        };
        ok_conv_id(&v.request(f).await);
        light.push(v);
    }
    let listing = op
        .recv_until(|f| matches!(f, ServerFrame::Queue { count: Some(4), .. }))
        .await;
    let ServerFrame::Queue { waiting, .. } = listing else {
        unreachable!()
    };
    assert_eq!(waiting.len(), 3, "the three that fit, not nobody");
    assert!(waiting.iter().all(|c| c.id != big));
    assert!(
        waiting.iter().all(|c| c.visitor.params.is_empty()),
        "no params in listings"
    );
    let answer = op
        .request_json(json!({"t": "get", "conv": waiting[0].id}))
        .await;
    let ServerFrame::Ok {
        body: OkBody::Conv { conv },
        ..
    } = answer
    else {
        panic!("{answer:?}")
    };
    assert_eq!(conv.visitor.params["plan"], "gold");
    // A visitor gets only their own, and without what is for staff.
    let mine = light[0]
        .request_json(json!({"t": "get", "conv": waiting[0].id}))
        .await;
    let theirs = light[0]
        .request_json(json!({"t": "get", "conv": big}))
        .await;
    assert_eq!(error_code(&theirs), Some(ErrorCode::NotFound));
    if let ServerFrame::Ok {
        body: OkBody::Conv { conv },
        ..
    } = mine
    {
        assert!(conv.visitor.params.is_empty());
    }
    node.shutdown().await;
}

/// Canned responses go to every operator in `welcome`: their size is bounded.
#[tokio::test]
async fn canned_responses_are_bounded_by_size() {
    let node = node().await;
    let sup = token("demo", Role::Supervisor, "s1", "Sam");
    let many: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"shortcut": format!("c{i}"), "text": "t".repeat(1000)}))
        .collect();
    let (code, body) = testsupport::http(
        &node.addr.to_string(),
        "PATCH",
        "/v1/sites/demo/settings",
        &[("Authorization", &format!("Bearer {sup}"))],
        &json!({"canned": many}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("canned"), "{body}");
    node.shutdown().await;
}
