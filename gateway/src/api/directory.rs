//! The directory's collections (`api-v1.md`, "Directory"): lines, groups, staff, tags,
//! outcomes, parameters, canned responses and bans, each with list, create, read, patch and
//! delete. One generic implementation serves every collection ([`list`], [`create`],
//! [`one`], [`patch`], [`remove`]); the `collection!` macro gives each collection its
//! annotated handlers, so that the OpenAPI description names each one's schema.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::idempotency::once;
use super::{body, cursor, json, Api, FieldError, ListPage, Need, Params, Problem};
use crate::directory::{Directory, Entity, Invalid};
use crate::service::{DirError, Engine};

impl From<DirError> for Problem {
    fn from(e: DirError) -> Problem {
        match e {
            DirError::NoSite => Problem::not_found("no such site"),
            DirError::NotFound => Problem::not_found("no such item"),
            DirError::Exists => Problem::conflict("an item with this id exists"),
            DirError::Referenced(by) => Problem::conflict(&format!(
                "still referred to by {}; change those first",
                by.join(", ")
            )),
            DirError::Invalid(errors) => Problem::invalid(errors.into_iter().map(field).collect()),
            DirError::Service(e) => e.into(),
        }
    }
}

fn field(i: Invalid) -> FieldError {
    FieldError {
        field: i.field,
        message: i.message,
    }
}

fn object(bytes: &Bytes) -> Result<Map<String, Value>, Problem> {
    match body::<Value>(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(Problem::field("body", "a JSON object")),
    }
}

fn views<T: Entity>(dir: &Directory, after: Option<&str>, limit: usize) -> ListPage<Value> {
    let items: Vec<&T> = T::map(dir)
        .range::<str, _>((
            after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            std::ops::Bound::Unbounded,
        ))
        .map(|(_, v)| v)
        .take(limit + 1)
        .collect();
    let more = items.len() > limit;
    let items: Vec<&T> = items.into_iter().take(limit).collect();
    ListPage {
        next_cursor: more.then(|| cursor(items.last().expect("a full page").id())),
        items: items.into_iter().map(|i| i.view(dir)).collect(),
    }
}

/// Lists a collection, ordered by id.
pub async fn list<E: Engine, T: Entity>(
    api: Api<E>,
    site: String,
    headers: HeaderMap,
    raw: Option<String>,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::ReadAll).await?;
    api.gw.archive_or_refuse()?;
    let mut p = Params::new(raw.as_deref());
    let limit = p.limit();
    let after = p.cursor(|s| Some(s.to_owned()));
    p.done()?;
    let dir = api.gw.directory(&who.site);
    Ok(json(
        StatusCode::OK,
        &views::<T>(&dir, after.as_deref(), limit),
    ))
}

/// Creates an item.
pub async fn create<E: Engine, T: Entity>(
    api: Api<E>,
    site: String,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let who = match api.acting(&headers, &site, Need::Admin).await {
        Ok(w) => w,
        Err(p) => return p.into_response(),
    };
    let scope = format!("{} POST {site}/{}", who.label, T::KIND.as_str());
    let gw = api.gw.clone();
    once(&gw, &scope, &headers, &bytes, || async {
        let req = object(&bytes)?;
        let (item, dir) = gw.dir_create::<T>(&who.site, req, &who.label).await?;
        tracing::info!(site = %who.site, kind = T::KIND.as_str(), id = item.id(), by = %who.label, "directory item created");
        Ok((StatusCode::CREATED, item.view_created(&dir)))
    })
    .await
}

/// One item.
pub async fn one<E: Engine, T: Entity>(
    api: Api<E>,
    site: String,
    id: String,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::ReadAll).await?;
    api.gw.archive_or_refuse()?;
    let dir = api.gw.directory(&who.site);
    let item = T::map(&dir)
        .get(&id)
        .ok_or_else(|| Problem::not_found("no such item"))?;
    Ok(json(StatusCode::OK, &item.view(&dir)))
}

/// Changes the fields a request names.
pub async fn patch<E: Engine, T: Entity>(
    api: Api<E>,
    site: String,
    id: String,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    let req = object(&bytes)?;
    let (item, dir) = api.gw.dir_patch::<T>(&who.site, &id, req).await?;
    tracing::info!(site = %who.site, kind = T::KIND.as_str(), id = %id, by = %who.label, "directory item changed");
    Ok(json(StatusCode::OK, &item.view(&dir)))
}

/// Deletes an item nothing refers to.
pub async fn remove<E: Engine, T: Entity>(
    api: Api<E>,
    site: String,
    id: String,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::Admin).await?;
    api.gw.dir_delete::<T>(&who.site, &id).await?;
    tracing::info!(site = %who.site, kind = T::KIND.as_str(), id = %id, by = %who.label, "directory item deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The five annotated handlers of one collection.
macro_rules! collection {
    ($module:ident, $entity:ty, $view:ty, $input:ty, $list:literal, $item:literal, $tag:literal) => {
        pub mod $module {
            use super::*;

            #[allow(unused_imports)]
            use crate::directory::*;

            #[utoipa::path(get, path = $list, tag = $tag,
                params(("site" = String, Path),
                    ("limit" = Option<u32>, Query, minimum = 1, maximum = 500),
                    ("cursor" = Option<String>, Query)),
                responses(
                    (status = 200, description = "Ordered by id", body = ListPage<$view>),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, body = Problem, content_type = "application/problem+json"),
                    (status = 404, body = Problem, content_type = "application/problem+json"),
                    (status = 422, body = Problem, content_type = "application/problem+json"),
                    (status = 429, body = Problem, content_type = "application/problem+json"),
                    (status = 503, body = Problem, content_type = "application/problem+json"),
                ),
                security(("bearer" = [])))]
            pub async fn list<E: Engine>(
                State(api): State<Api<E>>,
                Path(site): Path<String>,
                headers: HeaderMap,
                RawQuery(raw): RawQuery,
            ) -> Result<Response, Problem> {
                super::list::<E, $entity>(api, site, headers, raw).await
            }

            #[utoipa::path(post, path = $list, tag = $tag,
                params(("site" = String, Path),
                    ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h answers the same")),
                request_body = $input,
                responses(
                    (status = 201, description = "Created, in effect on every node", body = $view),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, body = Problem, content_type = "application/problem+json"),
                    (status = 404, body = Problem, content_type = "application/problem+json"),
                    (status = 409, body = Problem, content_type = "application/problem+json"),
                    (status = 422, body = Problem, content_type = "application/problem+json"),
                    (status = 429, body = Problem, content_type = "application/problem+json"),
                    (status = 503, body = Problem, content_type = "application/problem+json"),
                ),
                security(("bearer" = [])))]
            pub async fn create<E: Engine>(
                State(api): State<Api<E>>,
                Path(site): Path<String>,
                headers: HeaderMap,
                bytes: Bytes,
            ) -> Response {
                super::create::<E, $entity>(api, site, headers, bytes).await
            }

            #[utoipa::path(get, path = $item, tag = $tag,
                params(("site" = String, Path), ("id" = String, Path)),
                responses(
                    (status = 200, description = "The item", body = $view),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, body = Problem, content_type = "application/problem+json"),
                    (status = 404, body = Problem, content_type = "application/problem+json"),
                    (status = 429, body = Problem, content_type = "application/problem+json"),
                    (status = 503, body = Problem, content_type = "application/problem+json"),
                ),
                security(("bearer" = [])))]
            pub async fn one<E: Engine>(
                State(api): State<Api<E>>,
                Path((site, id)): Path<(String, String)>,
                headers: HeaderMap,
            ) -> Result<Response, Problem> {
                super::one::<E, $entity>(api, site, id, headers).await
            }

            #[utoipa::path(patch, path = $item, tag = $tag,
                params(("site" = String, Path), ("id" = String, Path)),
                request_body(content = Object, description = "The fields to change"),
                responses(
                    (status = 200, description = "Changed, in effect on every node", body = $view),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, body = Problem, content_type = "application/problem+json"),
                    (status = 404, body = Problem, content_type = "application/problem+json"),
                    (status = 409, body = Problem, content_type = "application/problem+json"),
                    (status = 422, body = Problem, content_type = "application/problem+json"),
                    (status = 429, body = Problem, content_type = "application/problem+json"),
                    (status = 503, body = Problem, content_type = "application/problem+json"),
                ),
                security(("bearer" = [])))]
            pub async fn patch<E: Engine>(
                State(api): State<Api<E>>,
                Path((site, id)): Path<(String, String)>,
                headers: HeaderMap,
                bytes: Bytes,
            ) -> Result<Response, Problem> {
                super::patch::<E, $entity>(api, site, id, headers, bytes).await
            }

            #[utoipa::path(delete, path = $item, tag = $tag,
                params(("site" = String, Path), ("id" = String, Path)),
                responses(
                    (status = 204, description = "Deleted, on every node"),
                    (status = 401, body = Problem, content_type = "application/problem+json"),
                    (status = 403, body = Problem, content_type = "application/problem+json"),
                    (status = 404, body = Problem, content_type = "application/problem+json"),
                    (status = 409, body = Problem, content_type = "application/problem+json"),
                    (status = 429, body = Problem, content_type = "application/problem+json"),
                    (status = 503, body = Problem, content_type = "application/problem+json"),
                ),
                security(("bearer" = [])))]
            pub async fn remove<E: Engine>(
                State(api): State<Api<E>>,
                Path((site, id)): Path<(String, String)>,
                headers: HeaderMap,
            ) -> Result<Response, Problem> {
                super::remove::<E, $entity>(api, site, id, headers).await
            }

            /// The collection's routes.
            pub fn routes<E: Engine>(r: axum::Router<Api<E>>) -> axum::Router<Api<E>> {
                use axum::routing::get;
                r.route($list, get(list::<E>).post(create::<E>))
                    .route($item, get(one::<E>).patch(patch::<E>).delete(remove::<E>))
            }
        }
    };
}

collection!(
    queues,
    Queue,
    Queue,
    Queue,
    "/v1/sites/{site}/queues",
    "/v1/sites/{site}/queues/{id}",
    "directory"
);
collection!(
    groups,
    Group,
    Group,
    Group,
    "/v1/sites/{site}/groups",
    "/v1/sites/{site}/groups/{id}",
    "directory"
);
collection!(
    operators,
    Staff,
    StaffView,
    StaffInput,
    "/v1/sites/{site}/operators",
    "/v1/sites/{site}/operators/{id}",
    "directory"
);
collection!(
    tags,
    Tag,
    Tag,
    Tag,
    "/v1/sites/{site}/tags",
    "/v1/sites/{site}/tags/{id}",
    "directory"
);
collection!(
    outcomes,
    Outcome,
    Outcome,
    Outcome,
    "/v1/sites/{site}/outcomes",
    "/v1/sites/{site}/outcomes/{id}",
    "directory"
);
collection!(
    params,
    Param,
    Param,
    Param,
    "/v1/sites/{site}/params",
    "/v1/sites/{site}/params/{id}",
    "directory"
);
collection!(
    canned,
    Canned,
    Canned,
    Canned,
    "/v1/sites/{site}/canned",
    "/v1/sites/{site}/canned/{id}",
    "directory"
);
collection!(
    bans,
    Ban,
    Ban,
    Ban,
    "/v1/sites/{site}/bans",
    "/v1/sites/{site}/bans/{id}",
    "directory"
);

collection!(
    webhooks,
    Webhook,
    Webhook,
    Webhook,
    "/v1/sites/{site}/webhooks",
    "/v1/sites/{site}/webhooks/{id}",
    "webhooks"
);

collection!(
    actions,
    Action,
    Action,
    Action,
    "/v1/sites/{site}/actions",
    "/v1/sites/{site}/actions/{id}",
    "actions"
);

/// Every collection's routes.
pub fn routes<E: Engine>(r: axum::Router<Api<E>>) -> axum::Router<Api<E>> {
    let r = queues::routes(r);
    let r = groups::routes(r);
    let r = operators::routes(r);
    let r = tags::routes(r);
    let r = outcomes::routes(r);
    let r = params::routes(r);
    let r = canned::routes(r);
    let r = webhooks::routes(r);
    let r = actions::routes(r);
    bans::routes(r)
}
