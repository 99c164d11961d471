//! Sites themselves (`api-v1.md`, "Directory"): a deployment's tenants, made, listed and
//! deleted with a root key (`admin` scope, no site); a site's own administrators (its
//! `admin` keys and supervisors) may read and change their site. Every change is in effect
//! on every node when the answer comes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::caller::Caller;
use super::idempotency::once;
use super::keys::Scope;
use super::{body, json, Api, ListPage, Need, Problem};
use crate::core::SiteId;
use crate::directory::sites::SiteRecord;
use crate::service::{Engine, Gateway, SiteChange};

/// A site to make, or the fields of one to change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    /// Required when making a site: 1 to 64 letters, digits, `-`, `_` or `.`; never
    /// changed, and never given to another site once deleted.
    #[serde(default)]
    pub id: Option<String>,
    /// Default: the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The key the widget's script tag names the site by (`data-site`). Default: a random
    /// `wk_…`. No two sites share one.
    #[serde(default)]
    pub widget_key: Option<String>,
    /// Making a site only: the lines it starts with, the first the default (default:
    /// `["general"]`). Lines are then managed under `/v1/sites/{site}/queues`.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// Which pages may embed the widget: a list of origins, or `"*"` for any.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_origins: Option<Value>,
    /// Any site setting (as `PATCH /v1/sites/{site}/settings` takes them).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Map<String, Value>>,
}

impl SiteInput {
    fn change(self) -> (Option<String>, SiteChange) {
        let mut settings = self.settings.unwrap_or_default();
        if let Some(o) = self.allowed_origins {
            settings.insert("allowed_origins".into(), o);
        }
        (
            self.id,
            SiteChange {
                name: self.name,
                widget_key: self.widget_key,
                queues: self.queues,
                settings,
            },
        )
    }
}

/// A site.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub widget_key: String,
    /// `null`: any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Every setting, as in effect now.
    #[schema(value_type = Object)]
    pub settings: Value,
    pub created_at: u64,
}

fn view<E: Engine>(gw: &Gateway<E>, r: SiteRecord) -> SiteView {
    let settings = gw.site(&SiteId(r.id.clone())).map(|s| s.settings());
    SiteView {
        allowed_origins: settings.as_ref().and_then(|s| s.allowed_origins.clone()),
        settings: settings
            .map(|s| s.to_json())
            .unwrap_or(Value::Object(r.settings)),
        id: r.id,
        name: r.name,
        widget_key: r.widget_key,
        created_at: r.created_at,
    }
}

impl<E: Engine> Api<E> {
    /// A root key with the `admin` scope (sites are made and deleted with nothing less).
    /// Returns the caller's label.
    async fn root(&self, headers: &HeaderMap) -> Result<String, Problem> {
        match self.gate.caller(&self.gw, headers).await? {
            c @ Caller::Key { site: None, .. } if c.has(Scope::Admin) => Ok(c.label()),
            _ => Err(Problem::forbidden(
                "a root key with the admin scope may do this",
            )),
        }
    }
}

/// Every site.
#[utoipa::path(
    get,
    path = "/v1/sites",
    tag = "sites",
    responses(
        (status = 200, description = "By id", body = ListPage<SiteView>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list<E: Engine>(
    State(api): State<Api<E>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    api.root(&headers).await?;
    let items = api
        .gw
        .site_records()
        .await?
        .into_iter()
        .map(|r| view(&api.gw, r))
        .collect();
    Ok(json(
        StatusCode::OK,
        &ListPage {
            items,
            next_cursor: None,
        },
    ))
}

/// Makes a site: serving on every node when the answer comes, with its first lines.
#[utoipa::path(
    post,
    path = "/v1/sites",
    tag = "sites",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h answers the same"),
    ),
    request_body = SiteInput,
    responses(
        (status = 201, description = "Made", body = SiteView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create<E: Engine>(
    State(api): State<Api<E>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let label = match api.root(&headers).await {
        Ok(l) => l,
        Err(p) => return p.into_response(),
    };
    let gw = api.gw.clone();
    once(
        &gw,
        &format!("{label} POST sites"),
        &headers,
        &bytes,
        || async {
            let req: SiteInput = body(&bytes)?;
            let (id, change) = req.change();
            let id = id.ok_or_else(|| Problem::field("id", "required"))?;
            let rec = gw.create_site(id, change).await?;
            Ok((
                StatusCode::CREATED,
                serde_json::to_value(view(&gw, rec)).expect("serialises"),
            ))
        },
    )
    .await
}

/// One site (a root key, or the site's own administrators).
#[utoipa::path(
    get,
    path = "/v1/sites/{site}",
    tag = "sites",
    params(("site" = String, Path)),
    responses(
        (status = 200, description = "The site", body = SiteView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn one<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let rec = api.gw.site_record(who.site.as_str()).await?;
    Ok(json(StatusCode::OK, &view(&api.gw, rec)))
}

/// Changes a site's name, widget key, allowed origins or settings (a root key, or the
/// site's own administrators).
#[utoipa::path(
    patch,
    path = "/v1/sites/{site}",
    tag = "sites",
    params(("site" = String, Path)),
    request_body = SiteInput,
    responses(
        (status = 200, description = "The site as it is now", body = SiteView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn patch<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let req: SiteInput = body(&bytes)?;
    let (id, change) = req.change();
    if id.is_some_and(|i| i != who.site.as_str()) {
        return Err(Problem::field("id", "cannot be changed"));
    }
    let rec = api.gw.patch_site(who.site.as_str(), change).await?;
    tracing::info!(site = %who.site, by = %who.label, "site changed");
    Ok(json(StatusCode::OK, &view(&api.gw, rec)))
}

/// Deletes a site: its connections are closed on every node, its keys revoked, and its
/// closed conversations erased from the archive. Its id is never given out again.
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}",
    tag = "sites",
    params(("site" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
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
    Path(site): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let label = api.root(&headers).await?;
    api.gw.delete_site(&site).await?;
    tracing::info!(site = %site, by = %label, "site deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
