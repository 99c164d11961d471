//! A site's token signing keys: what the site's backend signs its users' tokens with
//! (HS256, `kid` in the header). Each site has its own, so nothing one site holds makes a
//! token another site accepts. Rotation without downtime: make a new key (optionally
//! retiring the others after a window), move the backend to it, delete the old one.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::idempotency::once;
use super::{body, json, Api, ListPage, Need, Problem};
use crate::clock::now_ms;
use crate::directory::SigningKey;
use crate::service::Engine;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSigningKey {
    /// Retire every other current key of the site after this long, like `"24h"` (default:
    /// they stay until deleted).
    #[serde(default)]
    pub retire_others_after: Option<String>,
}

/// A key just made: its secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyCreated {
    pub kid: String,
    pub created_at: u64,
    pub retires_at: Option<u64>,
    pub created_by: String,
    /// The HS256 secret (use the 64 characters as they are).
    pub secret: String,
    /// Always `HS256`.
    pub algorithm: String,
}

/// The site's signing keys (never their secrets).
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/signing-keys",
    tag = "access",
    params(("site" = String, Path)),
    responses(
        (status = 200, description = "By key id", body = ListPage<SigningKey>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    api.gw.archive_or_refuse()?;
    let dir = api.gw.directory(&who.site);
    Ok(json(
        StatusCode::OK,
        &ListPage {
            items: dir.signing_keys.values().cloned().collect(),
            next_cursor: None,
        },
    ))
}

/// Makes a signing key for the site; its secret is shown this once.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/signing-keys",
    tag = "access",
    params(
        ("site" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h answers the same"),
    ),
    request_body = NewSigningKey,
    responses(
        (status = 201, description = "The key and its secret, shown once", body = SigningKeyCreated),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 501, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let who = match api.acting(&headers, &site, Need::Admin).await {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let scope = format!("{} POST {site}/signing-keys", who.label);
    let gw = api.gw.clone();
    once(&gw, &scope, &headers, &bytes, || async {
        let req: NewSigningKey = body(&bytes)?;
        let retire = match &req.retire_others_after {
            None => None,
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) if d.as_secs() <= 90 * 24 * 3600 => Some(d.as_millis() as u64),
                _ => {
                    return Err(Problem::field(
                        "retire_others_after",
                        "a duration up to 90 days, like \"24h\"",
                    ))
                }
            },
        };
        if gw.auth().site_secret(who.site.as_str(), "probe").is_none() {
            return Err(Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "not-implemented",
                "Tokens are signed elsewhere",
            )
            .detail("this gateway verifies tokens with a public key; it has no site keys"));
        }
        let before = gw.directory(&who.site);
        let placeholder: Map<String, Value> = match json!({
            "kid": "", "created_at": 0, "retires_at": null, "created_by": ""
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let (key, _) = gw
            .dir_create::<SigningKey>(&who.site, placeholder, &who.label)
            .await?;
        if let Some(after) = retire {
            let at = now_ms() + after;
            for old in before.signing_keys.values() {
                if old.retires_at.is_none_or(|r| r > at) {
                    let mut patch = Map::new();
                    patch.insert("retires_at".into(), json!(at));
                    gw.dir_patch::<SigningKey>(&who.site, &old.kid, patch)
                        .await?;
                }
            }
        }
        let secret = gw
            .auth()
            .site_secret(who.site.as_str(), &key.kid)
            .expect("checked above");
        tracing::info!(site = %who.site, kid = %key.kid, by = %who.label, "signing key created");
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(SigningKeyCreated {
                kid: key.kid,
                created_at: key.created_at,
                retires_at: key.retires_at,
                created_by: key.created_by,
                secret,
                algorithm: "HS256".into(),
            })
            .expect("serialises"),
        ))
    })
    .await
}

/// Retires a signing key at once: tokens it signed are refused from now on, on every node.
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}/signing-keys/{kid}",
    tag = "access",
    params(("site" = String, Path), ("kid" = String, Path)),
    responses(
        (status = 204, description = "Retired"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, kid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    api.gw.dir_delete::<SigningKey>(&who.site, &kid).await?;
    tracing::info!(site = %who.site, kid = %kid, by = %who.label, "signing key retired");
    Ok(StatusCode::NO_CONTENT.into_response())
}
