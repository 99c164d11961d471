//! The rules a business notices in its first hour, through a real node (the in-memory
//! engine; `tests/e2e/rules.rs` runs them on Redis with timers fired by another node):
//! reassignment when the operator is silent, the inactivity close, and the visitor's language
//! in notices, system messages and transcripts.

use gateway::protocol::{ClientFrame, ConvEvent, Encoding, OperatorStatus, Role, ServerFrame};
use serde_json::json;

use crate::common::*;

/// A node whose demo site has these settings (short timers allowed).
async fn node_with_settings(settings: serde_json::Value) -> Node {
    let sites_json = json!([{ "id": "demo", "queues": ["general", "vip"], "settings": settings }]);
    node_with(|c| c.sites = sites(&sites_json.to_string())).await
}

async fn start(v: &mut Client) -> String {
    let r = v.rid();
    ok_conv_id(&v.request(req::start(r)).await)
}

async fn say(c: &mut Client, conv: &str, cid: &str, text: &str) -> u64 {
    let r = c.rid();
    ok_seq(&c.request(req::send(r, conv, cid, text)).await)
}

async fn visitor(node: &Node, id: &str) -> Client {
    Client::connect(node, Encoding::Json, &token("demo", Role::Visitor, id, id))
        .await
        .0
}

/// A visitor whose `hello` says its language.
async fn visitor_speaking(node: &Node, id: &str, lang: &str) -> Client {
    let mut c = Client::open(node, Encoding::Json).await;
    c.send(&ClientFrame::Hello {
        token: token("demo", Role::Visitor, id, id),
        cursors: Default::default(),
        lang: Some(lang.into()),
        device: None,
    })
    .await;
    assert!(matches!(c.recv().await, ServerFrame::Welcome { .. }));
    c
}

async fn accept(op: &mut Client, conv: &str) {
    op.recv_until(
        |f| matches!(f, ServerFrame::Queue { waiting, .. } if waiting.iter().any(|c| c.id == conv)),
    )
    .await;
    let r = op.rid();
    assert_eq!(ok_conv_id(&op.request(req::accept(r, conv)).await), conv);
}

/// Waits for the `conv` event of `conv` that `pred` wants; returns its operator's id.
async fn conv_event(
    c: &mut Client,
    conv: &str,
    pred: impl Fn(ConvEvent, Option<&str>) -> bool,
) -> Option<String> {
    match c
        .recv_until(|f| {
            matches!(f, ServerFrame::Conv { event, conv: x, reason }
                if x.id == conv && pred(*event, reason.as_deref()))
        })
        .await
    {
        ServerFrame::Conv { conv, .. } => conv.operator.map(|o| o.id),
        _ => unreachable!(),
    }
}

/// Manual routing: the visitor writes before anyone accepts. The accept arms the reassign
/// timer (the old code armed it only for a message arriving while already active, so it
/// never fired here); op1 stays silent, and the conversation moves to op2, with a system
/// message that says why in a code.
#[tokio::test]
async fn reassign_after_moves_a_conversation_its_operator_ignores_in_manual_routing() {
    let node =
        node_with_settings(json!({"reassign_after": "1s", "close_after_inactive": "off"})).await;
    let mut op1 = Client::active_operator(&node, "op1", "Olga").await;
    let mut op2 = Client::active_operator(&node, "op2", "Petr").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    say(&mut v, &conv, "m1", "is anyone there?").await;
    accept(&mut op1, &conv).await;
    let to = conv_event(&mut v, &conv, |e, r| {
        e == ConvEvent::Transferred && r == Some("reassigned")
    })
    .await;
    assert_eq!(to.as_deref(), Some("op2"));
    let note = v
        .recv_until(|f| matches!(f, ServerFrame::Msg(m) if m.code.as_deref() == Some("operator_joined") && m.args.as_ref().is_some_and(|a| a["name"] == "Petr")))
        .await;
    let ServerFrame::Msg(joined) = note else {
        unreachable!()
    };
    assert_eq!(joined.text, "Petr joined the conversation");
    // op2 got it; op1 lost it.
    conv_event(&mut op2, &conv, |e, _| e == ConvEvent::Transferred).await;
    let r = op1.rid();
    assert!(matches!(
        op1.request(req::send(r, &conv, "late", "sorry, here now"))
            .await,
        ServerFrame::Error { .. }
    ));
    node.shutdown().await;
}

/// After a transfer the new operator's silence moves the conversation on too — never back to
/// the operator who had it.
#[tokio::test]
async fn reassign_after_follows_a_transfer_and_never_returns() {
    let node =
        node_with_settings(json!({"reassign_after": "1s", "close_after_inactive": "off"})).await;
    let mut op1 = Client::active_operator(&node, "op1", "Olga").await;
    let op2 = Client::active_operator(&node, "op2", "Petr").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    accept(&mut op1, &conv).await;
    // op1 speaks first, so nobody waits on op1 (its timer finds nothing to do).
    say(&mut op1, &conv, "o1", "hello, I pass you on to a colleague").await;
    let ok = op1
        .request_json(json!({"t": "transfer", "conv": conv, "to": {"operator": "op2"}}))
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
    say(&mut v, &conv, "m2", "hello again").await;
    // op2 is silent; the only other operator already had it: nobody to move it to, so it
    // stays with op2, until op3 comes.
    let mut op3 = Client::active_operator(&node, "op3", "Ivan").await;
    let to = conv_event(&mut v, &conv, |e, r| {
        e == ConvEvent::Transferred && r == Some("reassigned")
    })
    .await;
    assert_eq!(to.as_deref(), Some("op3"), "never back to op1");
    conv_event(&mut op3, &conv, |e, _| e == ConvEvent::Transferred).await;
    drop(op2);
    node.shutdown().await;
}

/// `close_after_inactive` closes an active conversation that long after the operator's last
/// word when the visitor has not answered, and neither a visitor waiting in the queue nor one
/// whose operator never answered (the old clock counted from `start` and closed both).
#[tokio::test]
async fn close_after_inactive_counts_from_the_operators_last_word_only() {
    let node = node_with_settings(json!({"close_after_inactive": "1s"})).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut waiting = visitor(&node, "w").await;
    let queued = start(&mut waiting).await;
    say(&mut waiting, &queued, "w1", "I wait in the queue").await;
    let mut ignored = visitor(&node, "i").await;
    let unanswered = start(&mut ignored).await;
    say(&mut ignored, &unanswered, "i1", "hello?").await;
    accept(&mut op, &unanswered).await;
    let mut quiet = visitor(&node, "q").await;
    let answered = start(&mut quiet).await;
    accept(&mut op, &answered).await;
    say(&mut quiet, &answered, "q1", "a question").await;
    say(&mut op, &answered, "o1", "the answer").await;
    // The visitor who got an answer and said nothing more is closed…
    conv_event(&mut quiet, &answered, |e, r| {
        e == ConvEvent::Closed && r == Some("inactive")
    })
    .await;
    // …and by then the other two are still open, as each side sees them.
    // (A visitor writing into a closed conversation would land in a new one.)
    for (v, conv) in [(&mut waiting, &queued), (&mut ignored, &unanswered)] {
        let r = v.rid();
        let ok = v.request(req::send(r, conv, "again", "still here")).await;
        let ServerFrame::Ok { body, .. } = ok else {
            panic!("{ok:?}")
        };
        assert!(
            matches!(body, gateway::protocol::OkBody::Sent { conv: ref c, .. } if c == conv),
            "written into the same open conversation: {body:?}"
        );
    }
    node.shutdown().await;
}

/// A changed `close_after_inactive` applies to a running conversation at once.
#[tokio::test]
async fn a_changed_inactivity_setting_applies_to_running_conversations() {
    let node = node_with_settings(json!({"close_after_inactive": "1h"})).await;
    let Pair {
        mut op,
        mut v,
        conv,
    } = pair(&node, Encoding::Json, "v1").await;
    say(&mut op, &conv, "o1", "anything else?").await;
    let sup = token("demo", Role::Supervisor, "s1", "Sam");
    let (code, body) = testsupport::http(
        &node.addr.to_string(),
        "PATCH",
        "/v1/sites/demo/settings",
        &[
            ("Authorization", &format!("Bearer {sup}")),
            ("Content-Type", "application/json"),
        ],
        r#"{"close_after_inactive":"1s"}"#,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    conv_event(&mut v, &conv, |e, r| {
        e == ConvEvent::Closed && r == Some("inactive")
    })
    .await;
    node.shutdown().await;
}

/// What a visitor speaking `lang` is told when nobody can answer.
async fn notice(node: &Node, visitor: &str, lang: &str) -> String {
    let mut v = visitor_speaking(node, visitor, lang).await;
    let conv = start(&mut v).await;
    say(&mut v, &conv, "m1", "hello?").await;
    match v
        .recv_until(|f| matches!(f, ServerFrame::Notice { .. }))
        .await
    {
        ServerFrame::Notice { text, .. } => text,
        _ => unreachable!(),
    }
}

/// The unavailability notice in the visitor's language: the default text in English, Russian
/// (the seed's) and Czech; a language the site has no words for gets the site's language; a
/// site may give one text for everyone or its own per language.
#[tokio::test]
async fn the_unavailability_notice_speaks_the_visitors_language() {
    let node = node().await;
    assert!(notice(&node, "en", "en-GB")
        .await
        .starts_with("Sorry, the chat is unavailable"));
    assert_eq!(
        notice(&node, "ru", "ru").await,
        "По техническим причинам чат недоступен. Мы уже работаем над исправлением."
    );
    assert!(notice(&node, "cs", "cs-CZ")
        .await
        .starts_with("Chat je z technických důvodů"));
    assert!(
        notice(&node, "de", "de").await.starts_with("Sorry"),
        "the site's language"
    );
    node.shutdown().await;
    let node = node_with_settings(json!({
        "language": "ru",
        "unavailable_text": {"en": "Nobody is here.", "cs": "Nikdo tu není."}
    }))
    .await;
    assert_eq!(notice(&node, "cs", "cs").await, "Nikdo tu není.");
    assert_eq!(
        notice(&node, "ru", "ru").await,
        "Nobody is here.",
        "falls back to English"
    );
    node.shutdown().await;
    let node = node_with_settings(json!({"unavailable_text": "One text for all."})).await;
    assert_eq!(notice(&node, "ru", "ru").await, "One text for all.");
    node.shutdown().await;
}

/// `welcome` carries the notice in the reader's language, and the site's language.
#[tokio::test]
async fn welcome_settings_speak_the_readers_language() {
    let node = node().await;
    let mut c = Client::open(&node, Encoding::Json).await;
    c.send(&ClientFrame::Hello {
        token: token("demo", Role::Visitor, "v1", "v1"),
        cursors: Default::default(),
        lang: Some("ru-RU".into()),
        device: None,
    })
    .await;
    let ServerFrame::Welcome { settings, .. } = c.recv().await else {
        panic!("no welcome")
    };
    assert!(settings
        .unavailable_text
        .starts_with("По техническим причинам"));
    assert_eq!(settings.language.as_deref(), Some("en"));
    node.shutdown().await;
}

/// System messages carry a code and arguments; their `text` is in the site's language; a
/// transcript renders them in its reader's language.
#[tokio::test]
async fn system_messages_have_codes_and_transcripts_render_them_in_the_readers_language() {
    let node = node_with_settings(json!({"language": "cs"})).await;
    let mut op = Client::active_operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    accept(&mut op, &conv).await;
    let joined = match v
        .recv_until(|f| matches!(f, ServerFrame::Msg(m) if m.code.is_some()))
        .await
    {
        ServerFrame::Msg(m) => m,
        _ => unreachable!(),
    };
    assert_eq!(joined.code.as_deref(), Some("operator_joined"));
    assert_eq!(joined.args.as_ref().unwrap()["name"], "Olga");
    assert_eq!(joined.text, "Operátor Olga se připojil ke konverzaci");
    say(&mut v, &conv, "m1", "ahoj").await;
    let r = op.rid();
    assert!(matches!(
        op.request_json(json!({"t": "close", "conv": conv})).await,
        ServerFrame::Ok { .. }
    ));
    let _ = r;
    let closed = match v
        .recv_until(|f| matches!(f, ServerFrame::Msg(m) if m.code.as_deref() == Some("closed")))
        .await
    {
        ServerFrame::Msg(m) => m,
        _ => unreachable!(),
    };
    assert_eq!(closed.text, "Konverzace byla ukončena");
    let vt = token("demo", Role::Visitor, "v1", "v1");
    let get = |q: &'static str, lang: Option<&'static str>| {
        let addr = node.addr.to_string();
        let vt = vt.clone();
        let conv = conv.clone();
        async move {
            let auth = format!("Bearer {vt}");
            let mut h = vec![("Authorization", auth.as_str())];
            if let Some(l) = lang {
                h.push(("Accept-Language", l));
            }
            testsupport::http(
                &addr,
                "GET",
                &format!("/v1/conversations/{conv}/transcript?{q}"),
                &h,
                "",
            )
            .await
            .unwrap()
        }
    };
    let (code, text) = get("format=text&lang=ru", None).await;
    assert_eq!(code, 200);
    assert!(
        text.contains("Оператор Olga присоединился к разговору"),
        "{text}"
    );
    assert!(text.contains("Разговор завершён"), "{text}");
    let (_, text) = get("format=text", Some("en-US,en;q=0.9")).await;
    assert!(text.contains("Olga joined the conversation"), "{text}");
    let (_, text) = get("format=text", None).await;
    assert!(
        text.contains("Konverzace byla ukončena"),
        "the site's language: {text}"
    );
    let (_, json) = get("format=json", None).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["code"] == "closed"));
    let _ = OperatorStatus::Active;
    node.shutdown().await;
}
