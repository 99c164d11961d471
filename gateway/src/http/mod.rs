//! The HTTP edge: health, readiness, metrics, the visitor session endpoint, site availability
//! and settings, transcripts, and the compiled-in widget, console and demo page.

pub mod assets;
pub mod serve;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{Claims, Principal};
use crate::clock::now_ms;
use crate::core::{Availability, SiteId};
use crate::i18n::Lang;
use crate::protocol::Role;
use crate::service::Engine;
use crate::service::{conv_id, new_visitor_id, Access, Gateway, SettingsUpdateError};
use crate::transcript::{self, Format};
use crate::ws::{self, IpLimits, WsState};

pub struct AppState<E: Engine> {
    pub gw: Arc<Gateway<E>>,
    pub metrics: Option<PrometheusHandle>,
}

impl<E: Engine> Clone for AppState<E> {
    fn clone(&self) -> Self {
        AppState {
            gw: self.gw.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Every route of the gateway.
pub fn router<E: Engine>(state: AppState<E>, tasks: ws::tokio_util_tracker::Tracker) -> Router {
    let st_gw = state.gw.clone();
    let ws_state = WsState {
        gw: state.gw.clone(),
        limits: Arc::new(IpLimits::default()),
        tasks,
    };
    let api = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<E>))
        .route("/metrics", get(metrics_text::<E>))
        .route(
            "/v1/visitor/session",
            post(visitor_session::<E>).options(preflight),
        )
        .route(
            "/v1/sites/{site}/availability",
            get(availability::<E>).options(preflight),
        )
        .route(
            "/v1/sites/{site}/settings",
            get(get_settings::<E>).patch(patch_settings::<E>),
        )
        .route("/v1/conversations/{conv}/transcript", get(transcript::<E>))
        .with_state(state);
    let socket = Router::new()
        .route("/v1/ws", get(ws::upgrade::<E>))
        .with_state(ws_state);
    api.merge(socket)
        .merge(crate::api::router(st_gw))
        .merge(assets::router())
}

async fn readyz<E: Engine>(State(st): State<AppState<E>>) -> Response {
    if st.gw.refuses_clients() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match st.gw.ready().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "engine not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "engine unavailable").into_response()
        }
    }
}

/// `/metrics` on the client port: only when no metrics listener is set, and only to this
/// machine — a loopback peer whose request no proxy forwarded — so that the node's figures
/// (sites, conversations, errors) are not public.
async fn metrics_text<E: Engine>(
    State(st): State<AppState<E>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    if st.gw.config().metrics_listen.is_some() || !peer.ip().is_loopback() || forwarded {
        return (
            StatusCode::NOT_FOUND,
            "metrics are served on GATEWAY_METRICS_LISTEN, or to this machine only",
        )
            .into_response();
    }
    render_metrics(st.metrics.as_ref())
}

/// The Prometheus text of the node's metrics.
pub fn render_metrics(metrics: Option<&PrometheusHandle>) -> Response {
    match metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

/// `429` with `Retry-After` (whole seconds) and a JSON error body.
fn too_many(wait: std::time::Duration, message: &str) -> Response {
    let mut res = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// A JSON error body: `{"error": code, "message": text}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// CORS for the widget's calls from the customer's pages: the origin is echoed when the
/// site allows it.
fn cors(mut res: Response, origin: Option<&HeaderValue>) -> Response {
    if let Some(o) = origin {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    res
}

async fn preflight(headers: HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    cors(res, headers.get(header::ORIGIN))
}

#[derive(Deserialize)]
struct SessionRequest {
    site: String,
    #[serde(default)]
    visitor_token: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /v1/visitor/session`: a token for an anonymous visitor; the previous token keeps the id.
async fn visitor_session<E: Engine>(
    State(st): State<AppState<E>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let origin = headers.get(header::ORIGIN);
    if let Err(wait) = st.gw.abuse.session(peer.ip()) {
        return cors(
            too_many(wait, "too many visitor sessions from this address"),
            origin,
        );
    }
    let req: SessionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return cors(
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expected {{\"site\": \"<widget key>\"}}: {e}"),
                ),
                origin,
            )
        }
    };
    let Some(site) = st.gw.site_by_key(&req.site) else {
        return cors(
            error(StatusCode::NOT_FOUND, "not_found", "unknown widget key"),
            origin,
        );
    };
    if !site
        .settings()
        .origin_allowed(origin.and_then(|o| o.to_str().ok()))
    {
        // Readable by the refused page, so its widget can stop instead of retrying blindly.
        return cors(
            error(StatusCode::FORBIDDEN, "forbidden", "origin not allowed"),
            origin,
        );
    }
    let now = now_ms();
    // The visitor id a previous token carries over: only from a token the gateway made for an
    // anonymous visitor, expired at most `GATEWAY_VISITOR_RENEW_WITHIN` ago. A valid token of
    // the site's own (a logged-in customer's) still names who is asking, for the ban check.
    let within = st.gw.config().visitor_renew_within.as_millis() as u64;
    let of_site = |p: &crate::auth::Principal| p.visitor().is_some() && p.site == site.id;
    let previous = req
        .visitor_token
        .as_deref()
        .and_then(|t| st.gw.verify_token_renewable(t, within).ok())
        .filter(of_site);
    let asking = previous.clone().or_else(|| {
        req.visitor_token
            .as_deref()
            .and_then(|t| st.gw.verify_token(t).ok())
            .filter(of_site)
    });
    if let Some(v) = asking.as_ref().and_then(|p| p.visitor()) {
        if st.gw.is_banned(&site.id, v).await {
            return cors(
                error(StatusCode::FORBIDDEN, "banned", "this visitor is banned"),
                origin,
            );
        }
    }
    let (id, name) = match previous {
        Some(p) => (p.id().to_owned(), p.name),
        None => (new_visitor_id().0, None),
    };
    let name = req
        .name
        .map(|n| n.chars().take(100).collect::<String>())
        .filter(|n| !n.is_empty())
        .or(name);
    let exp = (now + st.gw.config().visitor_token_ttl.as_millis() as u64) / 1000;
    let claims = Claims {
        anon: true,
        sid: None,
        sub: id.clone(),
        site: site.id.0.clone(),
        role: Role::Visitor,
        name,
        exp,
        iat: Some(now / 1000),
        queues: None,
        max_chats: None,
    };
    match st.gw.auth().mint(&claims) {
        Ok(token) => cors(
            Json(json!({"token": token, "visitor_id": id, "expires_at": exp * 1000}))
                .into_response(),
            origin,
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot mint visitor token");
            cors(
                error(
                    StatusCode::NOT_IMPLEMENTED,
                    "unavailable",
                    "this gateway does not issue visitor tokens; the site's backend mints them",
                ),
                origin,
            )
        }
    }
}

async fn availability<E: Engine>(
    State(st): State<AppState<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Response {
    let origin = headers.get(header::ORIGIN);
    let site = st
        .gw
        .site_by_key(&site)
        .map(|s| s.id.clone())
        .unwrap_or(SiteId(site));
    let Some(s) = st.gw.site(&site) else {
        return cors(
            error(StatusCode::NOT_FOUND, "not_found", "unknown site"),
            origin,
        );
    };
    let when_away = match s.settings().widget_when_away {
        crate::core::settings::WhenAway::Busy => "busy",
        crate::core::settings::WhenAway::Offline => "offline",
    };
    let res = match st.gw.availability(&site).await {
        Ok(a) => {
            let status = match a {
                Availability::Online => "online",
                Availability::Busy => "busy",
                Availability::Offline => "offline",
            };
            Json(json!({"status": status, "widget_when_away": when_away})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "availability unknown");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "offline", "widget_when_away": when_away})),
            )
                .into_response()
        }
    };
    cors(res, origin)
}

/// The principal behind `Authorization: Bearer <token>`.
fn bearer<E: Engine>(gw: &Gateway<E>, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authorization: Bearer <token> required",
            ))
        })?;
    gw.verify_token(token.trim()).map_err(|_| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid or expired token",
        ))
    })
}

fn supervisor_of<E: Engine>(
    gw: &Gateway<E>,
    headers: &HeaderMap,
    site: &str,
) -> Result<Principal, Box<Response>> {
    let p = bearer(gw, headers)?;
    if !p.is_supervisor() || p.site.0 != site {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a supervisor token of this site is required",
        )));
    }
    Ok(p)
}

async fn get_settings<E: Engine>(
    State(st): State<AppState<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = supervisor_of(&st.gw, &headers, &site) {
        return *r;
    }
    match st.gw.site(&SiteId(site)) {
        Some(s) => Json(s.settings().to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", "unknown site"),
    }
}

/// `PATCH /v1/sites/<site>/settings`: changes take effect without a restart.
async fn patch_settings<E: Engine>(
    State(st): State<AppState<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = supervisor_of(&st.gw, &headers, &site) {
        return *r;
    }
    let patch: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "expected a JSON object of settings",
            )
        }
    };
    match st.gw.update_settings(&SiteId(site), &patch).await {
        Ok(s) => Json(s.to_json()).into_response(),
        Err(SettingsUpdateError::NoSite) => {
            error(StatusCode::NOT_FOUND, "not_found", "unknown site")
        }
        Err(SettingsUpdateError::Invalid(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "bad_request", "message": e.to_string(), "errors": e.0})),
        )
            .into_response(),
        Err(SettingsUpdateError::Service(e)) => {
            tracing::warn!(error = %e, "settings not applied");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "settings could not be stored; retry",
            )
        }
    }
}

#[derive(Deserialize)]
struct TranscriptQuery {
    #[serde(default)]
    format: Option<String>,
    /// The reader's language for system messages (else `Accept-Language`, else the site's).
    #[serde(default)]
    lang: Option<String>,
}

/// `GET /v1/conversations/<id>/transcript?format=text|html|json` with a bearer token of the
/// visitor or of the site's staff.
async fn transcript<E: Engine>(
    State(st): State<AppState<E>>,
    Path(conv): Path<String>,
    Query(q): Query<TranscriptQuery>,
    headers: HeaderMap,
) -> Response {
    let p = match bearer(&st.gw, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let authorized = match conv_id(conv) {
        Ok(conv) => st
            .gw
            .authorize(&p, &conv, Access::Read)
            .await
            .map(|meta| (conv, meta)),
        Err(e) => Err(e),
    };
    let (conv, meta) = match authorized {
        Ok(m) => m,
        Err(e) => {
            let (code, message) = e.client_error();
            let (status, label) = match code {
                crate::protocol::ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                crate::protocol::ErrorCode::Unavailable => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                }
                _ => (StatusCode::FORBIDDEN, "forbidden"),
            };
            return error(status, label, message);
        }
    };
    // Rendering reads the whole conversation: one at a time per reader, a few a minute.
    let _slot = match st.gw.abuse.transcript(format!("{}/{}", p.site, p.id())) {
        Ok(slot) => slot,
        Err(wait) => return too_many(wait, "one transcript at a time; try again shortly"),
    };
    let messages = match st.gw.whole_conversation(&p.site, &conv).await {
        Ok(m) => m,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "retry"),
    };
    let snapshot = if p.visitor().is_some() {
        st.gw.for_visitor(meta.snapshot)
    } else {
        meta.snapshot
    };
    let lang = reader_lang(q.lang.as_deref(), &headers)
        .or_else(|| st.gw.site(&p.site).map(|s| s.settings().language))
        .unwrap_or_default();
    let Some(format) = Format::parse(q.format.as_deref().unwrap_or("text")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "format is text, html or json",
        );
    };
    let body = transcript::render(format, &snapshot, &messages, lang);
    let attachment = format!("transcript-{conv}.{}", format.extension());
    transcript_response(format, body, Some(&attachment))
}

/// A transcript as an answer: its type, never sniffed as another; no script, no loads and a
/// sandbox for the HTML one (visitor text is escaped, and this holds even if it were not); not
/// kept by caches (it is someone's conversation); a download named `attachment` if given.
pub fn transcript_response(format: Format, body: String, attachment: Option<&str>) -> Response {
    let mut res = Response::new(Body::from(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Some(v) = attachment
        .and_then(|n| HeaderValue::from_str(&format!("attachment; filename=\"{n}\"")).ok())
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// The reader's language: `?lang=`, else the browser's first `Accept-Language` choice.
pub fn reader_lang(param: Option<&str>, headers: &HeaderMap) -> Option<Lang> {
    param.and_then(Lang::parse).or_else(|| {
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Lang::from_accept_language)
    })
}
