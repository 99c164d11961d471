//! A webhook receiver for tests: a real HTTP server on loopback that keeps every call (its
//! Standard Webhooks headers and body), answers what the test says (a failure for a while, or a
//! JSON answer such as an action's note), and checks signatures with an HMAC written here from
//! the specification, not with the gateway's code.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::Mac;
use serde_json::Value;

/// What the receiver got: one per request, failed ones included.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub ts: u64,
    pub signature: String,
    pub body: Bytes,
    pub answered: u16,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub hits: Arc<parking_lot::Mutex<Vec<Hit>>>,
    /// What it answers (0: 204, or 200 with `answer`).
    pub fail_with: Arc<AtomicU16>,
    /// The JSON it answers a successful call with (an action's note).
    pub answer: Arc<parking_lot::Mutex<Option<Value>>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = r.answer.lock().clone();
    let answered = match (r.fail_with.load(Ordering::SeqCst), &answer) {
        (0, None) => 204,
        (0, Some(_)) => 200,
        (s, _) => s,
    };
    r.hits.lock().push(Hit {
        id: h("webhook-id"),
        ts: h("webhook-timestamp").parse().unwrap_or(0),
        signature: h("webhook-signature"),
        body,
        answered,
    });
    let status = StatusCode::from_u16(answered).unwrap();
    match answer {
        Some(a) if answered == 200 => (status, axum::Json(a)).into_response(),
        _ => status.into_response(),
    }
}

pub async fn start_receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

/// The Standard Webhooks check, written here from the specification.
pub fn verified(secret: &str, hit: &Hit) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", hit.id, hit.ts).as_bytes());
    mac.update(&hit.body);
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    hit.signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

pub fn event(hit: &Hit) -> Value {
    serde_json::from_slice(&hit.body).unwrap()
}

/// Waits until the receiver got an event that `pred` picks (answered 2xx), and returns it.
pub async fn arrived(r: &Receiver, what: &str, pred: impl Fn(&Value) -> bool) -> Hit {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(h) = r
            .hits
            .lock()
            .iter()
            .find(|h| h.answered < 300 && pred(&event(h)))
        {
            return h.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; got {:?}",
            r.hits.lock().iter().map(event).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
