//! Conversations: the archive's list (filters, full-text search), one conversation with its
//! events, its messages and transcript; and what integrations do to them — write as a bot,
//! close, transfer, change tags and details, start one with a known visitor.
//!
//! Reads go to the archive, and to the live engine for what the archive has not received yet
//! (a conversation started a moment ago, its newest messages).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::idempotency::once;
use super::{body, cursor, json, Acting, Api, ListPage, Need, Params, Problem};
use crate::archive::{ArchivedConversation, ConvFilter, ConversationDetail, Prechat};
use crate::core::{ConvId, OperatorId, QueueId, VisitorId, VisitorProfile};
use crate::protocol::{Conversation, Msg, TransferTarget};
use crate::service::{conv_id, Engine};
use crate::service::{Changed, Details};
use crate::transcript::{self, Format};

/// Lists the site's conversations, newest first, with filters and full-text search.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/conversations",
    tag = "conversations",
    params(
        ("site" = String, Path, description = "The site"),
        ("state" = Option<String>, Query, description = "queued, offered, active or closed"),
        ("queue" = Option<String>, Query),
        ("operator" = Option<String>, Query, description = "The operator who held it last"),
        ("visitor" = Option<String>, Query),
        ("tag" = Option<String>, Query),
        ("outcome" = Option<String>, Query),
        ("from" = Option<u64>, Query, description = "Created at or after (Unix ms)"),
        ("to" = Option<u64>, Query, description = "Created before (Unix ms)"),
        ("q" = Option<String>, Query, description = "Full-text search of messages and the visitor's name and e-mail"),
        ("limit" = Option<u64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
    ),
    responses(
        (status = 200, description = "Newest first", body = ListPage<ArchivedConversation>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Read).await?;
    let mut p = Params::new(raw.as_deref());
    let mut filter = ConvFilter {
        state: p.one_of("state", &["queued", "offered", "active", "closed"]),
        queue: p.text("queue", 128),
        operator: p.text("operator", 128),
        visitor: p.text("visitor", 128),
        tag: p.text("tag", 64),
        outcome: p.text("outcome", 128),
        from: p.number("from"),
        to: p.number("to"),
        q: p.text("q", 200),
    };
    let limit = p.limit();
    let after = p.cursor(super::read_conv_cursor);
    p.done()?;
    if let Some(own) = &who.own {
        // Operators see the conversations they held.
        filter.operator = Some(own.to_string());
    }
    let archive = api.gw.archive_or_refuse()?;
    let page = archive
        .conversations(&who.site, &filter, after, limit)
        .await?;
    Ok(json(
        StatusCode::OK,
        &ListPage {
            items: page.items,
            next_cursor: page.next.map(super::conv_cursor),
        },
    ))
}

/// A conversation the caller may see: as the archive keeps it, or (not archived yet) as the
/// live engine has it.
async fn visible<E: Engine>(
    api: &Api<E>,
    who: &Acting,
    id: &str,
) -> Result<(ConvId, ConversationDetail), Problem> {
    let hidden = || Problem::not_found("no such conversation");
    let conv = conv_id(id.to_owned()).map_err(|_| hidden())?;
    let archive = api.gw.archive_or_refuse()?;
    let detail = match archive.conversation(&who.site, conv.as_str()).await? {
        Some(d) => d,
        None => {
            let live = api
                .gw
                .live_conversation(&who.site, &conv)
                .await?
                .ok_or_else(hidden)?;
            from_live(live)
        }
    };
    if let Some(own) = &who.own {
        if !detail.held_by(own.as_str()) {
            return Err(hidden());
        }
    }
    Ok((conv, detail))
}

/// A live conversation in the archive's shape (its figures come with the archive).
fn from_live(c: Conversation) -> ConversationDetail {
    ConversationDetail {
        params: c.visitor.params.clone(),
        prechat: Prechat {
            name: c.visitor.name.clone(),
            email: c.visitor.email.clone(),
            phone: c.visitor.phone.clone(),
        },
        events: Vec::new(),
        summary: ArchivedConversation {
            closed_at: None,
            message_count: c.last_seq,
            first_response_ms: None,
            wait_ms: None,
            duration_ms: None,
            missed: false,
            conv: c,
        },
    }
}

/// One conversation with its parameters, pre-chat details and events.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/conversations/{id}",
    tag = "conversations",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "With its parameters, pre-chat details and events", body = ConversationDetail),
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
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Read).await?;
    let (_, detail) = visible(&api, &who, &id).await?;
    Ok(json(StatusCode::OK, &detail))
}

/// A conversation's messages in `seq` order, paged.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/conversations/{id}/messages",
    tag = "conversations",
    params(
        ("site" = String, Path), ("id" = String, Path),
        ("after" = Option<u64>, Query, description = "Messages after this seq"),
        ("limit" = Option<u64>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "From the previous page's next_cursor"),
    ),
    responses(
        (status = 200, description = "In seq order", body = ListPage<Msg>),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn messages<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Read).await?;
    let mut p = Params::new(raw.as_deref());
    let after = p.number("after");
    let limit = p.limit();
    let from_cursor = p.cursor(|s| s.parse::<u64>().ok());
    p.done()?;
    let (conv, _) = visible(&api, &who, &id).await?;
    let after = from_cursor.or(after).unwrap_or(0);
    let items = api
        .gw
        .messages_after(&who.site, &conv, after, limit)
        .await?;
    let next_cursor = (items.len() == limit)
        .then(|| items.last().map(|m| cursor(&m.seq.to_string())))
        .flatten();
    Ok(json(StatusCode::OK, &ListPage { items, next_cursor }))
}

/// The whole conversation as text, HTML or JSON.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/conversations/{id}/transcript",
    tag = "conversations",
    params(
        ("site" = String, Path), ("id" = String, Path),
        ("format" = Option<String>, Query, description = "text (default), html or json"),
        ("lang" = Option<String>, Query, description = "Language of system messages (else Accept-Language, else the site's)"),
    ),
    responses(
        (status = 200, description = "The whole conversation", content(
            (String = "text/plain"),
            (String = "text/html"),
            (serde_json::Value = "application/json"),
        )),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn transcript<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Read).await?;
    let mut p = Params::new(raw.as_deref());
    let format = p
        .one_of("format", &["text", "html", "json"])
        .and_then(|f| Format::parse(&f))
        .unwrap_or(Format::Text);
    let lang = p.text("lang", 35);
    p.done()?;
    let (conv, detail) = visible(&api, &who, &id).await?;
    // Rendering reads the whole conversation: one at a time per caller, a few a minute.
    let _slot = api
        .gw
        .abuse
        .transcript(format!("{}/{}", who.site, who.label))
        .map_err(|wait| Problem::too_many(wait.as_secs_f64().ceil().max(1.0) as u64))?;
    let messages = api.gw.whole_conversation(&who.site, &conv).await?;
    let lang = crate::http::reader_lang(lang.as_deref(), &headers)
        .or_else(|| api.gw.site(&who.site).map(|s| s.settings().language))
        .unwrap_or_default();
    let text = transcript::render(format, &detail.summary.conv, &messages, lang);
    Ok(crate::http::transcript_response(format, text, None))
}

/// A message from an integration.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewBotMessage {
    /// The client's id of the message: a retry with the same `cid` stores nothing twice.
    pub cid: String,
    pub text: String,
    /// The name the visitor sees (default: the key's name).
    #[serde(default)]
    pub name: Option<String>,
}

/// Where a message was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct Posted {
    pub seq: u64,
    pub ts: u64,
}

/// Writes into a conversation as a bot (idempotent by `cid`).
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/conversations/{id}/messages",
    tag = "conversations",
    params(("site" = String, Path), ("id" = String, Path)),
    request_body = NewBotMessage,
    responses(
        (status = 201, description = "Stored (or already stored under this cid)", body = Posted),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The conversation is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn post_message<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let who = match api.acting(&headers, &site, Need::Manage).await {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let scope = format!("{} POST {site}/conversations/{id}/messages", who.label);
    let gw = api.gw.clone();
    once(&gw, &scope, &headers, &bytes, || async {
        let m: NewBotMessage = body(&bytes)?;
        let mut p = who.principal.clone();
        if let Some(n) = m.name.filter(|n| !n.trim().is_empty()) {
            if n.chars().count() > 100 || n.chars().any(char::is_control) {
                return Err(Problem::field("name", "1 to 100 characters"));
            }
            p.name = Some(n);
        }
        let conv = conv_id(id.clone()).map_err(|_| Problem::not_found("no such conversation"))?;
        let msg = gw.send(&p, None, &conv, m.cid, m.text).await?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(Posted {
                seq: msg.seq,
                ts: msg.ts,
            })
            .expect("serialises"),
        ))
    })
    .await
}

/// How a conversation ends.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CloseRequest {
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

/// Closes a conversation with an outcome and tags.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/conversations/{id}/close",
    tag = "conversations",
    params(("site" = String, Path), ("id" = String, Path)),
    request_body = CloseRequest,
    responses(
        (status = 200, description = "Closed (closing again answers the same)", body = Conversation),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn close<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Manage).await?;
    let req: CloseRequest = body(&bytes)?;
    let conv = conv_id(id).map_err(|_| Problem::not_found("no such conversation"))?;
    let c = api
        .gw
        .close(
            &who.principal,
            &conv,
            req.outcome,
            req.tags.unwrap_or_default(),
        )
        .await?
        .ok_or_else(|| Problem::conflict("the conversation was not closed"))?;
    Ok(json(StatusCode::OK, &c))
}

/// Where a conversation goes: an operator or a queue.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TransferTo {
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub queue: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TransferRequest {
    pub to: TransferTo,
    /// A note for the staff who take it.
    #[serde(default)]
    pub note: Option<String>,
}

/// Transfers a conversation to an operator or a queue.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/conversations/{id}/transfer",
    tag = "conversations",
    params(("site" = String, Path), ("id" = String, Path)),
    request_body = TransferRequest,
    responses(
        (status = 200, description = "Transferred", body = Conversation),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The operator is offline or at capacity; it is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn transfer<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Manage).await?;
    let req: TransferRequest = body(&bytes)?;
    let to = match (req.to.operator, req.to.queue) {
        (Some(o), None) if !o.is_empty() => TransferTarget::Operator(o),
        (None, Some(q)) if !q.is_empty() => TransferTarget::Queue(q),
        _ => return Err(Problem::field("to", "exactly one of operator or queue")),
    };
    let conv = conv_id(id).map_err(|_| Problem::not_found("no such conversation"))?;
    let c = api.gw.transfer(&who.principal, &conv, to, req.note).await?;
    Ok(json(StatusCode::OK, &c))
}

/// Changes to a conversation: its tags (replaced), contact details, parameters (merged; an
/// empty value removes one). While it is open everyone in it sees the change; after, the
/// archive's record changes.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ConversationPatch {
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub params: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// Changes a conversation's tags, contact details or parameters.
#[utoipa::path(
    patch,
    path = "/v1/sites/{site}/conversations/{id}",
    tag = "conversations",
    params(("site" = String, Path), ("id" = String, Path)),
    request_body = ConversationPatch,
    responses(
        (status = 200, description = "Changed", body = Conversation),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed a moment ago and still on its way to the archive", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn patch<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Manage).await?;
    let req: ConversationPatch = body(&bytes)?;
    let details = Details {
        name: req.name,
        email: req.email,
        phone: req.phone,
        params: req.params.unwrap_or_default(),
        tags: req.tags,
    };
    check_details(&details)?;
    let conv = conv_id(id).map_err(|_| Problem::not_found("no such conversation"))?;
    let c = match api.gw.change(&who.principal, &conv, details).await? {
        Changed::Live(c) => *c,
        Changed::Archived(d) => d.summary.conv,
    };
    Ok(json(StatusCode::OK, &c))
}

/// The bounds of details as visitors have them (the same limits, named by field).
fn check_details(d: &Details) -> Result<(), Problem> {
    let profile = VisitorProfile {
        name: d.name.clone(),
        email: d.email.clone(),
        phone: d.phone.clone(),
        params: d.params.clone(),
        preview: None,
    };
    if let Err(r) = crate::core::check_profile(&profile) {
        return Err(Problem::field("body", r.message));
    }
    if let Some(tags) = &d.tags {
        if let Err(r) = crate::core::normalise_tags(tags) {
            return Err(Problem::field("tags", r.message));
        }
    }
    Ok(())
}

/// A conversation the staff or an integration start with a known visitor.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewConversation {
    /// The visitor's id (as their tokens carry it).
    pub visitor: String,
    #[serde(default)]
    pub queue: Option<String>,
    /// Given to this operator (present, with room); else it waits in the queue.
    #[serde(default)]
    pub operator: Option<String>,
    /// The first message: from the operator, or from the integration as a bot.
    pub text: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
}

/// A conversation started, and its first message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub conversation: Conversation,
    pub message: Msg,
}

/// Starts a conversation with a known visitor.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/conversations",
    tag = "conversations",
    params(
        ("site" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h answers the same and starts nothing"),
    ),
    request_body = NewConversation,
    responses(
        (status = 201, description = "Started; the visitor sees it when they are on the site", body = Started),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The visitor has an open conversation, or the operator is absent or full", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
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
    let who = match api.acting(&headers, &site, Need::Manage).await {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let scope = format!("{} POST {site}/conversations", who.label);
    let gw = api.gw.clone();
    once(&gw, &scope, &headers, &bytes, || async {
        let req: NewConversation = body(&bytes)?;
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && !s.chars().any(|c| c.is_control() || c == '{' || c == '}')
        };
        if !id_ok(&req.visitor) {
            return Err(Problem::field(
                "visitor",
                "1 to 128 bytes without control characters or braces",
            ));
        }
        if req.operator.as_deref().is_some_and(|o| !id_ok(o)) {
            return Err(Problem::field(
                "operator",
                "1 to 128 bytes without control characters or braces",
            ));
        }
        let profile = VisitorProfile {
            name: req.name,
            email: req.email,
            phone: req.phone,
            params: BTreeMap::new(),
            preview: None,
        };
        if let Err(r) = crate::core::check_profile(&profile) {
            return Err(Problem::field("body", r.message));
        }
        let (conversation, message) = gw
            .invite(
                &who.principal,
                VisitorId(req.visitor),
                req.queue.map(QueueId),
                req.operator.map(OperatorId),
                profile,
                req.text,
            )
            .await?;
        Ok((
            StatusCode::CREATED,
            serde_json::to_value(Started {
                conversation,
                message,
            })
            .expect("serialises"),
        ))
    })
    .await
}
