//! The HTTP API v1 (`api-v1.md`): what a site's own systems, its administrators and the
//! console reach the gateway through — the archive's conversations, messages from
//! integrations, visitors' timelines and erasure, reports, API keys and tokens.
//!
//! Every error is a problem details document ([`Problem`]); lists page with an opaque cursor;
//! writes that create something honour `Idempotency-Key` ([`idempotency`]); each caller has a
//! rate limit ([`caller::Gatekeeper`]). `GET /v1/openapi.json` describes every endpoint; the
//! description is generated from the handlers' annotations ([`openapi`]).
//!
//! One file per resource: `conversations`, `visitors`, `reports`, `access` (keys and tokens),
//! `directory` (lines, groups, staff, catalogues, bans).

pub mod access;
pub mod caller;
pub mod conversations;
pub mod directory;
pub mod idempotency;
pub mod keys;
pub mod openapi;
mod problem;
pub mod reports;
pub mod sessions;
pub mod signing;
pub mod sites;
pub mod visitors;
pub mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use caller::{Acting, Caller, Gatekeeper, Need};
pub use problem::{FieldError, Problem};

use crate::service::{Engine, Gateway};

/// The largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Lists: the default and the largest page.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// What every API handler holds.
pub struct Api<E: Engine> {
    pub gw: Arc<Gateway<E>>,
    pub gate: Arc<Gatekeeper>,
}

impl<E: Engine> Clone for Api<E> {
    fn clone(&self) -> Self {
        Api {
            gw: self.gw.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<E: Engine> Api<E> {
    /// The caller of a request, acting on `site` as `need` requires.
    pub async fn acting(
        &self,
        headers: &axum::http::HeaderMap,
        site: &str,
        need: Need,
    ) -> Result<Acting, Problem> {
        let caller = self.gate.caller(&self.gw, headers).await?;
        let who = caller.on(&self.gw, site, need)?;
        let limit = self
            .gw
            .site(&who.site)
            .and_then(|s| s.settings().api_rate_per_sec);
        self.gate.site_rate(&who.site, limit)?;
        Ok(who)
    }
}

/// The API's routes.
pub fn router<E: Engine>(gw: Arc<Gateway<E>>) -> Router {
    let cfg = gw.config();
    let gate = Arc::new(Gatekeeper::new(cfg.api_rate_per_sec, cfg.api_rate_burst));
    let shrink = Arc::downgrade(&gate);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            match shrink.upgrade() {
                Some(g) => g.shrink(),
                None => return,
            }
        }
    });
    let api = Api { gw, gate };
    let site = "/v1/sites/{site}";
    directory::routes(Router::new())
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1/sites", get(sites::list::<E>).post(sites::create::<E>))
        .route(
            site,
            get(sites::one::<E>)
                .patch(sites::patch::<E>)
                .delete(sites::remove::<E>),
        )
        .route(
            &format!("{site}/conversations"),
            get(conversations::list::<E>).post(conversations::create::<E>),
        )
        .route(
            &format!("{site}/conversations/{{id}}"),
            get(conversations::one::<E>).patch(conversations::patch::<E>),
        )
        .route(
            &format!("{site}/conversations/{{id}}/messages"),
            get(conversations::messages::<E>).post(conversations::post_message::<E>),
        )
        .route(
            &format!("{site}/conversations/{{id}}/transcript"),
            get(conversations::transcript::<E>),
        )
        .route(
            &format!("{site}/conversations/{{id}}/close"),
            post(conversations::close::<E>),
        )
        .route(
            &format!("{site}/conversations/{{id}}/transfer"),
            post(conversations::transfer::<E>),
        )
        .route(
            &format!("{site}/visitors/{{id}}"),
            get(visitors::one::<E>).delete(visitors::erase::<E>),
        )
        .route(
            &format!("{site}/visitors/{{id}}/export"),
            get(visitors::export::<E>),
        )
        .route(
            &format!("{site}/reports/summary"),
            get(reports::summary::<E>),
        )
        .route(
            &format!("{site}/reports/operators"),
            get(reports::operators::<E>),
        )
        .route(
            &format!("{site}/api-keys"),
            get(access::list_keys::<E>).post(access::create_key::<E>),
        )
        .route(
            &format!("{site}/api-keys/{{id}}"),
            axum::routing::delete(access::revoke_key::<E>),
        )
        .route(&format!("{site}/tokens"), post(access::mint::<E>))
        .route(
            &format!("{site}/webhooks/{{id}}/deliveries"),
            get(webhooks::deliveries::<E>),
        )
        .route(
            &format!("{site}/webhooks/{{id}}/test"),
            post(webhooks::test::<E>),
        )
        .route(
            &format!("{site}/actions/{{id}}/deliveries"),
            get(webhooks::action_deliveries::<E>),
        )
        .route(&format!("{site}/sessions"), post(sessions::sign_in::<E>))
        .route(
            &format!("{site}/signing-keys"),
            get(signing::list::<E>).post(signing::create::<E>),
        )
        .route(
            &format!("{site}/signing-keys/{{kid}}"),
            axum::routing::delete(signing::remove::<E>),
        )
        .route(
            &format!("{site}/sessions/{{id}}"),
            axum::routing::delete(sessions::revoke::<E>),
        )
        .layer(axum::middleware::map_response(as_problem))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Errors answered before a handler ran (a body too large, a method the route does not
/// have, a path that does not parse) as problem details too.
async fn as_problem(res: Response) -> Response {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let mut p = Problem::new(status, kind, title);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        p = p.detail(format!("request bodies are at most {MAX_BODY} bytes"));
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = p.into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// A JSON answer with a status.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).expect("an answer serialises");
    let mut res = (status, bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A JSON body as `T`; a wrong field is named (`422`). An empty body reads as `{}`.
pub fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Problem> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        let msg = e.inner().to_string();
        // serde's "at line 1 column 9" helps nobody reading a field error.
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        Problem::field(&field, msg)
    })
}

/// A request's query parameters, checked one by one; every wrong one is named.
pub struct Params {
    pairs: Vec<(String, String)>,
    errors: Vec<FieldError>,
}

impl Params {
    pub fn new(raw: Option<&str>) -> Params {
        Params {
            pairs: form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            errors: Vec::new(),
        }
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: name.to_owned(),
            message: message.into(),
        });
    }

    /// A text parameter of at most `max` bytes (absent or empty: `None`).
    pub fn text(&mut self, name: &str, max: usize) -> Option<String> {
        let v = self.raw(name)?.to_owned();
        if v.is_empty() {
            return None;
        }
        if v.len() > max || v.chars().any(char::is_control) {
            self.fail(
                name,
                format!("at most {max} bytes without control characters"),
            );
            return None;
        }
        Some(v)
    }

    /// A non-negative integer parameter.
    pub fn number(&mut self, name: &str) -> Option<u64> {
        let v = self.raw(name)?.to_owned();
        if v.is_empty() {
            return None;
        }
        match v.parse::<u64>() {
            Ok(n) if n <= i64::MAX as u64 => Some(n),
            _ => {
                self.fail(name, "expected a non-negative integer");
                None
            }
        }
    }

    /// One of the listed words.
    pub fn one_of(&mut self, name: &str, allowed: &[&str]) -> Option<String> {
        let v = self.raw(name)?.to_owned();
        if v.is_empty() {
            return None;
        }
        if allowed.contains(&v.as_str()) {
            Some(v)
        } else {
            self.fail(name, format!("expected one of {}", allowed.join(", ")));
            None
        }
    }

    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&mut self) -> usize {
        match self.number("limit") {
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
            Some(_) => {
                self.fail("limit", format!("1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
            None => DEFAULT_LIMIT,
        }
    }

    /// `cursor`, decoded by `decode`.
    pub fn cursor<T>(&mut self, decode: impl Fn(&str) -> Option<T>) -> Option<T> {
        let v = self.raw("cursor")?.to_owned();
        if v.is_empty() {
            return None;
        }
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| decode(&s));
        if decoded.is_none() {
            self.fail("cursor", "not a cursor this list gave");
        }
        decoded
    }

    /// Reports a combination of parameters that is wrong.
    pub fn reject(&mut self, name: &str, message: &str) {
        self.fail(name, message);
    }

    /// `Ok` if every parameter read was right.
    pub fn done(self) -> Result<(), Problem> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Problem::invalid(self.errors))
        }
    }
}

/// Reads a conversation list's cursor: `<created_at>:<id>` (see [`conv_cursor`]).
pub fn read_conv_cursor(s: &str) -> Option<(u64, String)> {
    let (t, id) = s.split_once(':')?;
    Some((t.parse::<u64>().ok()?, id.to_owned()))
}

/// The cursor after a conversation list's last item.
pub fn conv_cursor((created_at, id): (u64, String)) -> String {
    cursor(&format!("{created_at}:{id}"))
}

/// An opaque cursor for `text`.
pub fn cursor(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
}

/// A page of a list as the API answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    /// Where the next page starts (`?cursor=`); `null` on the last page.
    pub next_cursor: Option<String>,
}
