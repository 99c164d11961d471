//! Visitors: the contact's timeline (their details and every conversation of theirs), an
//! export of everything stored about them, and erasure.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{json, Api, Need, Params, Problem};
use crate::archive::{ArchivedConversation, ConvFilter, ConversationDetail};
use crate::clock::now_ms;
use crate::core::{ConvId, VisitorId};
use crate::protocol::Msg;
use crate::service::Engine;

/// A visitor and their conversations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitorTimeline {
    pub id: String,
    /// From their latest conversation.
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub banned: bool,
    pub conversations: Vec<ArchivedConversation>,
    /// More conversations (`?cursor=`); `null` when these are all.
    pub next_cursor: Option<String>,
}

/// Everything stored about a visitor.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitorExport {
    pub id: String,
    pub site: String,
    pub exported_at: u64,
    pub conversations: Vec<ExportedConversation>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedConversation {
    pub conversation: ConversationDetail,
    pub messages: Vec<Msg>,
}

/// The most conversations an export holds.
const EXPORT_MAX: usize = 1000;

fn visitor_id(id: &str) -> Result<VisitorId, Problem> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
        return Err(Problem::not_found("no such visitor"));
    }
    Ok(VisitorId::from(id))
}

/// A visitor's details and conversations (the contact's timeline).
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/visitors/{id}",
    tag = "visitors",
    params(
        ("site" = String, Path), ("id" = String, Path),
        ("limit" = Option<u64>, Query, description = "Conversations per page: 1 to 500, default 50"),
        ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = VisitorTimeline),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn one<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::ReadAll).await?;
    let mut p = Params::new(raw.as_deref());
    let limit = p.limit();
    let after = p.cursor(super::read_conv_cursor);
    p.done()?;
    let visitor = visitor_id(&id)?;
    let archive = api.gw.archive_or_refuse()?;
    let filter = ConvFilter {
        visitor: Some(visitor.to_string()),
        ..ConvFilter::default()
    };
    let page = archive
        .conversations(&who.site, &filter, after.clone(), limit)
        .await?;
    if page.items.is_empty() && after.is_none() {
        return Err(Problem::not_found("no such visitor"));
    }
    let latest = page.items.first().map(|c| c.conv.visitor.clone());
    Ok(json(
        StatusCode::OK,
        &VisitorTimeline {
            id: visitor.to_string(),
            name: latest.as_ref().and_then(|v| v.name.clone()),
            email: latest.as_ref().and_then(|v| v.email.clone()),
            phone: latest.as_ref().and_then(|v| v.phone.clone()),
            banned: api.gw.is_banned(&who.site, &visitor).await,
            conversations: page.items,
            next_cursor: page.next.map(super::conv_cursor),
        },
    ))
}

/// Everything stored about a visitor.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/visitors/{id}/export",
    tag = "visitors",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "Every conversation with every message", body = VisitorExport),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn export<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let visitor = visitor_id(&id)?;
    let archive = api.gw.archive_or_refuse()?;
    let filter = ConvFilter {
        visitor: Some(visitor.to_string()),
        ..ConvFilter::default()
    };
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = archive
            .conversations(&who.site, &filter, after, 500)
            .await?;
        ids.extend(page.items.into_iter().map(|c| c.conv.id));
        match page.next {
            Some(n) if ids.len() < EXPORT_MAX => after = Some(n),
            _ => break,
        }
    }
    if ids.is_empty() {
        return Err(Problem::not_found("no such visitor"));
    }
    let mut conversations = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(conversation) = archive.conversation(&who.site, &id).await? else {
            continue;
        };
        let messages = api.gw.whole_conversation(&who.site, &ConvId(id)).await?;
        conversations.push(ExportedConversation {
            conversation,
            messages,
        });
    }
    Ok(json(
        StatusCode::OK,
        &VisitorExport {
            id: visitor.to_string(),
            site: who.site.to_string(),
            exported_at: now_ms(),
            conversations,
        },
    ))
}

/// Erases a visitor: messages and details go, counts stay.
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}/visitors/{id}",
    tag = "visitors",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Erased: their messages and details are gone; their conversations remain as counts in reports"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn erase<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let visitor = visitor_id(&id)?;
    api.gw.erase_visitor(&who.principal, &visitor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
