//! E-mail through a real SMTP server (aiosmtpd, started by the test): transcripts at the
//! company, line and operator levels — one e-mail per address however many levels list it —
//! in the site's format and language with the visitor's words escaped; the missed-chat and
//! offline-form e-mails with what the visitor wrote; the visitor's own transcript on request,
//! in their language with the site's Reply-To; and an e-mail that waits out the mail
//! server's outage and then goes once.

use std::time::Duration;

use gateway::api::keys::Scope;
use gateway::config::ArchiveConfig;
use gateway::protocol::{ClientFrame, Encoding, Role, ServerFrame};
use serde_json::{json, Value};
use testsupport::{Received, SmtpServer};

use crate::api::{call, key, Scratch};
use crate::common::*;

const MAIL_WAIT: Duration = Duration::from_secs(20);

async fn mail_node(smtp: &SmtpServer, dir: &Scratch) -> Node {
    let db = dir.0.join("archive.db");
    let url = smtp.url();
    node_with(move |c| {
        c.archive = ArchiveConfig::Sqlite(db);
        c.sites = sites(r#"[{"id": "demo", "name": "Demo shop", "queues": ["general"]}]"#);
        c.mail = Some((
            gateway::mail::SmtpConfig::parse(&url).unwrap(),
            "Chat <chat@example.com>".into(),
        ));
    })
    .await
}

fn to(m: &Received) -> String {
    m.rcpt_tos.join(",").to_lowercase()
}

fn count_to(got: &[Received], addr: &str) -> usize {
    got.iter().filter(|m| to(m) == addr).count()
}

async fn close(c: &mut Client, conv: &str) {
    let r = c.rid();
    let ok = c
        .request(ClientFrame::Close {
            rid: Some(r),
            conv: conv.into(),
            outcome: None,
            tags: None,
        })
        .await;
    assert!(matches!(ok, ServerFrame::Ok { .. }), "{ok:?}");
}

#[tokio::test]
async fn transcripts_missed_chats_and_offline_messages_arrive_once_per_address() {
    let mut smtp = SmtpServer::start();
    let dir = Scratch::new("mail");
    let node = mail_node(&smtp, &dir).await;
    let admin = key(&node, Some("demo"), &[Scope::Admin]).await;
    let api = |method: &'static str, path: &'static str, body: Value| {
        let node = &node;
        let admin = admin.clone();
        async move {
            let a = call(node, &admin, method, path, Some(body), &[]).await;
            assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.body);
        }
    };
    api(
        "PATCH",
        "/v1/sites/demo",
        json!({"settings":{"transcript_emails":["Boss@Example.com","ops@example.com"],
               "missed_emails":["missed@example.com"],"offline_emails":["offline@example.com"],
               "transcript_format":"html","language":"ru","visitor_transcripts":true,
               "transcript_reply_to":"support@example.com"}}),
    )
    .await;
    api(
        "PATCH",
        "/v1/sites/demo/queues/general",
        json!({"transcript_emails":["boss@example.com","sales@example.com"]}),
    )
    .await;
    api(
        "POST",
        "/v1/sites/demo/operators",
        json!({"id":"op1","name":"Olga","role":"operator","email":"olga@example.com","transcript_copy":true}),
    )
    .await;

    // A message left in the offline form (nobody is online yet).
    let (mut off, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v-off", "Otto"),
    )
    .await;
    let r = off.rid();
    let started = off
        .request(ClientFrame::Start {
            rid: Some(r),
            queue: None,
            prechat: None,
            params: None,
            page: None,
            offline: true,
        })
        .await;
    let off_conv = ok_conv_id(&started);
    let r = off.rid();
    off.request(req::send(r, &off_conv, "o1", "Call me back: 555-0100"))
        .await;
    let got = smtp
        .wait_for("the offline e-mail", MAIL_WAIT, |g| {
            count_to(g, "offline@example.com") == 1
        })
        .await;
    let m = got.iter().find(|m| to(m) == "offline@example.com").unwrap();
    assert!(m.subject.starts_with("Сообщение из формы"), "{}", m.subject);
    assert!(
        m.text.as_deref().unwrap_or_default().contains("555-0100"),
        "{m:?}"
    );

    // A chat with the operator; the visitor's words hold markup.
    let mut p = pair(&node, Encoding::Json, "v1").await;
    let r = p.v.rid();
    p.v.request(req::send(
        r,
        &p.conv,
        "c1",
        "<b>hi</b> & <script>x</script>",
    ))
    .await;
    let r = p.op.rid();
    p.op.request(req::send(r, &p.conv, "c2", "Hello Ann")).await;
    // The visitor asks for the transcript before the end: it goes once the chat is closed.
    let r = p.v.rid();
    let asked =
        p.v.request(ClientFrame::MailTranscript {
            rid: Some(r),
            conv: p.conv.clone(),
            email: "ann@example.org".into(),
        })
        .await;
    assert!(matches!(asked, ServerFrame::Ok { .. }), "{asked:?}");
    // Not an address: refused at once.
    let r = p.v.rid();
    let bad =
        p.v.request(ClientFrame::MailTranscript {
            rid: Some(r),
            conv: p.conv.clone(),
            email: "ann@example.org\r\nBcc: all@example.org".into(),
        })
        .await;
    assert!(
        matches!(&bad, ServerFrame::Error { code, .. } if *code == gateway::protocol::ErrorCode::BadRequest),
        "{bad:?}"
    );
    close(&mut p.op, &p.conv).await;
    // Asked after the end too (the widget offers it there).
    let r = p.v.rid();
    let asked =
        p.v.request(ClientFrame::MailTranscript {
            rid: Some(r),
            conv: p.conv.clone(),
            email: "ann.again@example.org".into(),
        })
        .await;
    assert!(matches!(asked, ServerFrame::Ok { .. }), "{asked:?}");

    // Company, line and operator levels: boss is listed twice and gets one.
    let got = smtp
        .wait_for("the transcripts", MAIL_WAIT, |g| {
            [
                "boss@example.com",
                "ops@example.com",
                "sales@example.com",
                "olga@example.com",
                "ann@example.org",
                "ann.again@example.org",
            ]
            .iter()
            .all(|a| count_to(g, a) >= 1)
        })
        .await;
    for a in [
        "boss@example.com",
        "ops@example.com",
        "sales@example.com",
        "olga@example.com",
    ] {
        assert_eq!(count_to(&got, a), 1, "{a}: {got:#?}");
        let m = got.iter().find(|m| to(m) == a).unwrap();
        assert!(m.subject.starts_with("Запись чата"), "{}", m.subject);
        assert!(m.subject.contains(&p.conv), "{}", m.subject);
        assert_eq!(m.mail_from, "chat@example.com");
        // HTML with the text as its alternative; the visitor's markup is text in both.
        let html = m.html.as_deref().expect("an HTML part");
        assert!(
            html.contains("&lt;b&gt;hi&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
        let text = m.text.as_deref().expect("a text part");
        assert!(text.contains("<b>hi</b> & <script>x</script>"), "{text}");
        assert!(text.contains("Hello Ann"), "{text}");
    }
    // The visitor's own: in the site's language (their hello named none), replying to the
    // company's address.
    let mine = got.iter().find(|m| to(m) == "ann@example.org").unwrap();
    assert_eq!(mine.subject, "Ваш чат с Demo shop");
    assert_eq!(mine.reply_to, "support@example.com");
    assert!(mine
        .text
        .as_deref()
        .unwrap_or_default()
        .contains("Hello Ann"));
    assert!(got
        .iter()
        .all(|m| !m.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("bcc"))));

    // A missed chat (nobody answered) reaches missed@ with what the visitor wrote — while
    // the mail server is down for a while: it waits, then goes once.
    smtp.kill();
    let (mut lone, _) = Client::connect(
        &node,
        Encoding::Json,
        &token("demo", Role::Visitor, "v-missed", "Mia"),
    )
    .await;
    let r = lone.rid();
    let lone_conv = ok_conv_id(&lone.request(req::start(r)).await);
    let r = lone.rid();
    lone.request(req::send(r, &lone_conv, "m1", "Is anyone there?"))
        .await;
    close(&mut lone, &lone_conv).await;
    // The attempt fails while the server is away (recorded), then succeeds after it is back.
    let store = node.gw.archive().unwrap().clone();
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    loop {
        let tried = store
            .attempts(&format!("mail:{lone_conv}:missed:missed@example.com"))
            .await
            .unwrap();
        if tried.iter().any(|a| !a.ok) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let notice = store.deliveries("demo", &lone_conv, 10).await.unwrap();
            let mail = store
                .deliveries("demo", "missed@example.com", 10)
                .await
                .unwrap();
            let na = store.attempts(&format!("close:{lone_conv}")).await.unwrap();
            panic!("no failed attempt: notice {notice:?} {na:?} mail {mail:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    smtp.restart();
    // The retry waits its backoff (15 s at most for a first retry).
    let got = smtp
        .wait_for("the missed-chat e-mail", Duration::from_secs(40), |g| {
            count_to(g, "missed@example.com") == 1
        })
        .await;
    let m = got.iter().find(|m| to(m) == "missed@example.com").unwrap();
    assert!(m.subject.starts_with("Пропущенный чат"), "{}", m.subject);
    assert!(m.html.as_deref().unwrap().contains("Is anyone there?"));
    // The server has it; the gateway records its success right after the server's answer.
    let deadline = tokio::time::Instant::now() + MAIL_WAIT;
    let tried = loop {
        let tried = store
            .attempts(&format!("mail:{lone_conv}:missed:missed@example.com"))
            .await
            .unwrap();
        if tried.last().is_some_and(|a| a.ok) {
            break tried;
        }
        assert!(tokio::time::Instant::now() < deadline, "{tried:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(tried.iter().filter(|a| a.ok).count(), 1, "{tried:?}");
    assert_eq!(
        smtp.received()
            .iter()
            .filter(|m| to(m) == "missed@example.com")
            .count(),
        1,
        "sent once"
    );
}
