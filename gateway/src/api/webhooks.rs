//! A webhook's and an action's delivery log, and a webhook's "send test event" (`api-v1.md`,
//! "Webhooks"); webhooks and actions themselves are directory collections
//! (`api/directory.rs`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::{json, Api, ListPage, Need, Problem};
use crate::archive::Attempt;
use crate::service::Engine;

/// The most deliveries a log lists (the newest).
const LOG_MAX: usize = 100;

/// One event sent (or being sent) to a webhook, or one run of an action.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// The event's id (`webhook-id`).
    pub event: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: u64,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// When it is due again (pending).
    pub next_at: Option<u64>,
    pub last_error: Option<String>,
    pub attempts: Vec<Attempt>,
}

/// A webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "Newest first (at most 100)", body = ListPage<WebhookDelivery>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    log(api, site, id, headers, |d, id| d.webhooks.contains_key(id)).await
}

/// An action's runs, newest first, each with its attempts.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/actions/{id}/deliveries",
    tag = "actions",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "Newest first (at most 100)", body = ListPage<WebhookDelivery>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn action_deliveries<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    log(api, site, id, headers, |d, id| d.actions.contains_key(id)).await
}

/// The deliveries to a target of the directory (`exists` says whether it is one).
async fn log<E: Engine>(
    api: Api<E>,
    site: String,
    id: String,
    headers: HeaderMap,
    exists: fn(&crate::directory::Directory, &str) -> bool,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let store = api.gw.archive_or_refuse()?;
    if !exists(&api.gw.directory(&who.site), &id) {
        return Err(Problem::not_found("no such item"));
    }
    let mut items = Vec::new();
    for d in store.deliveries(who.site.as_str(), &id, LOG_MAX).await? {
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap_or_default();
        let event = &body["event"];
        items.push(WebhookDelivery {
            event: event["id"].as_str().unwrap_or_default().to_owned(),
            kind: event["type"].as_str().unwrap_or_default().to_owned(),
            created_at: d.created_at,
            status: if d.done_at.is_some() {
                "delivered"
            } else if d.failed_at.is_some() {
                "failed"
            } else {
                "pending"
            }
            .into(),
            next_at: (d.done_at.is_none() && d.failed_at.is_none()).then_some(d.next_at),
            last_error: d.last_error,
            attempts: store.attempts(&d.id).await?,
        });
    }
    Ok(json(
        StatusCode::OK,
        &ListPage {
            items,
            next_cursor: None,
        },
    ))
}

/// What a test event was sent as.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    /// The event's id (`webhook-id`); its delivery shows in the log.
    pub event: String,
}

/// Sends a `webhook.test` event to the webhook now.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/webhooks/{id}/test",
    tag = "webhooks",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 202, description = "On its way", body = TestSent),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn test<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let event = api
        .gw
        .test_webhook(&who.site, &id)
        .await
        .map_err(|e| match e {
            crate::service::DirError::NotFound => Problem::not_found("no such webhook"),
            other => other.into(),
        })?;
    Ok(json(StatusCode::ACCEPTED, &TestSent { event }))
}
