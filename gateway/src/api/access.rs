//! Access: a site's API keys (listed without secrets, created with the secret shown once,
//! revoked at once on every node) and tokens minted for its staff and identified visitors.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::idempotency::once;
use super::keys::{self, parse_scopes};
use super::{body, json, Api, ListPage, Need, Problem};
use crate::archive::KeyRecord;
use crate::auth::Claims;
use crate::clock::now_ms;
use crate::protocol::Role;
use crate::service::Engine;

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `null`: a root key (every site).
    pub site: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> KeyView {
        KeyView {
            id: k.id,
            name: k.name,
            site: k.site,
            scopes: k.scopes,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A key just made: the whole key is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    #[serde(flatten)]
    pub view: KeyView,
    /// `ck_<id>_<secret>`, for `Authorization: Bearer`.
    pub key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewKey {
    pub name: String,
    /// `read`, `admin`, `bot`, `tokens`.
    pub scopes: Vec<String>,
}

/// Lists the site's API keys (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/api-keys",
    tag = "access",
    params(("site" = String, Path)),
    responses(
        (status = 200, description = "Oldest first, without secrets", body = ListPage<KeyView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_keys<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let archive = api.gw.archive_or_refuse()?;
    let items: Vec<KeyView> = archive
        .keys(Some(who.site.as_str()))
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect();
    Ok(json(
        StatusCode::OK,
        &ListPage {
            items,
            next_cursor: None,
        },
    ))
}

/// Makes an API key; its secret is shown this once.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/api-keys",
    tag = "access",
    params(
        ("site" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h answers the same key"),
    ),
    request_body = NewKey,
    responses(
        (status = 201, description = "The key, shown once", body = KeyCreated),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_key<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let who = match api.acting(&headers, &site, Need::Admin).await {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let scope = format!("{} POST {site}/api-keys", who.label);
    let gw = api.gw.clone();
    once(&gw, &scope, &headers, &bytes, || async {
        let req: NewKey = body(&bytes)?;
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Problem::field("name", "1 to 100 characters"));
        }
        let scopes = parse_scopes(&req.scopes).map_err(|e| Problem::field("scopes", e))?;
        let archive = gw.archive_or_refuse()?;
        let (record, key) =
            keys::create(&**archive, Some(who.site.as_str()), name, &scopes).await?;
        tracing::info!(site = %who.site, key = %record.id, by = %who.label, "API key created");
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(KeyCreated {
                view: record.into(),
                key,
            })
            .expect("serialises"),
        ))
    })
    .await
}

/// Revokes an API key at once, on every node.
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}/api-keys/{id}",
    tag = "access",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked: refused at once on every node"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let archive = api.gw.archive_or_refuse()?;
    if !archive.revoke_key(Some(who.site.as_str()), &id).await? {
        return Err(Problem::not_found("no such key"));
    }
    tracing::info!(site = %who.site, key = %id, by = %who.label, "API key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A token to mint.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewToken {
    /// `operator`, `supervisor` or `visitor`.
    pub role: String,
    /// The user's id in the site's own systems.
    pub sub: String,
    #[serde(default)]
    pub name: Option<String>,
    /// How long it is valid, like `"8h"` (default: 12 h; at most 30 days).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Operators: the queues they serve (default: all).
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// Operators: their limit of concurrent conversations.
    #[serde(default)]
    pub max_chats: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MintedToken {
    pub token: String,
    pub expires_at: u64,
}

const DEFAULT_TTL_MS: u64 = 12 * 3600 * 1000;
const MAX_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// Mints a protocol token for the site's staff or a visitor.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/tokens",
    tag = "access",
    params(("site" = String, Path)),
    request_body = NewToken,
    responses(
        (status = 201, description = "A protocol v1 token for the site", body = MintedToken),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "Tokens are signed by the site's backend (public-key mode)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn mint<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Tokens).await?;
    let req: NewToken = body(&bytes)?;
    let role = match req.role.as_str() {
        "operator" => Role::Operator,
        "supervisor" => Role::Supervisor,
        "visitor" => Role::Visitor,
        _ => return Err(Problem::field("role", "operator, supervisor or visitor")),
    };
    let ttl = match &req.ttl {
        None => DEFAULT_TTL_MS,
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if (1_000..=MAX_TTL_MS as u128).contains(&d.as_millis()) => d.as_millis() as u64,
            _ => {
                return Err(Problem::field(
                    "ttl",
                    "a duration from 1s to 30d, like \"8h\"",
                ))
            }
        },
    };
    let now = now_ms();
    let expires_at = (now + ttl) / 1000 * 1000;
    let claims = Claims {
        anon: false,
        sid: None,
        sub: req.sub,
        site: who.site.to_string(),
        role,
        name: req.name,
        exp: expires_at / 1000,
        iat: Some(now / 1000),
        queues: req.queues,
        max_chats: req.max_chats,
    };
    // What the gateway would refuse to read, it does not mint.
    if let Err(e) = crate::auth::check_claims(claims.clone()) {
        return Err(Problem::field("sub", e.to_string()));
    }
    let token = api.gw.auth().mint(&claims).map_err(|_| {
        Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-implemented",
            "Tokens are minted elsewhere",
        )
        .detail("this gateway verifies tokens with a public key; the site's backend signs them")
    })?;
    Ok(json(
        StatusCode::CREATED,
        &MintedToken { token, expires_at },
    ))
}
