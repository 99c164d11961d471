//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of the HTTP API, generated from the
//! handlers' annotations (`utoipa`) — the same code that serves the endpoints describes
//! them, and schemathesis checks every answer against it in the test command.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::directory::{
    actions, bans, canned, groups, operators, outcomes, params, queues, tags, webhooks as hooks,
};
use super::{access, conversations, reports, sessions, signing, sites, visitors, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chat-gateway HTTP API",
        version = "1",
        description = "The archive's conversations, messages from integrations, visitors, reports, API keys and tokens. Errors are RFC 9457 problem details. See docs/api.md."
    ),
    paths(
        conversations::list,
        conversations::one,
        conversations::messages,
        conversations::transcript,
        conversations::post_message,
        conversations::close,
        conversations::transfer,
        conversations::patch,
        conversations::create,
        visitors::one,
        visitors::export,
        visitors::erase,
        reports::summary,
        reports::operators,
        access::list_keys,
        access::create_key,
        access::revoke_key,
        access::mint,
        sessions::sign_in,
        sessions::revoke,
        signing::list,
        signing::create,
        signing::remove,
        sites::list,
        sites::create,
        sites::one,
        sites::patch,
        sites::remove,
        queues::list,
        queues::create,
        queues::one,
        queues::patch,
        queues::remove,
        groups::list,
        groups::create,
        groups::one,
        groups::patch,
        groups::remove,
        operators::list,
        operators::create,
        operators::one,
        operators::patch,
        operators::remove,
        tags::list,
        tags::create,
        tags::one,
        tags::patch,
        tags::remove,
        outcomes::list,
        outcomes::create,
        outcomes::one,
        outcomes::patch,
        outcomes::remove,
        params::list,
        params::create,
        params::one,
        params::patch,
        params::remove,
        canned::list,
        canned::create,
        canned::one,
        canned::patch,
        canned::remove,
        bans::list,
        bans::create,
        bans::one,
        bans::patch,
        bans::remove,
        hooks::list,
        hooks::create,
        hooks::one,
        hooks::patch,
        hooks::remove,
        webhooks::deliveries,
        webhooks::test,
        actions::list,
        actions::create,
        actions::one,
        actions::patch,
        actions::remove,
        webhooks::action_deliveries,
    ),
    modifiers(&Bearer),
    tags(
        (name = "conversations", description = "The archive of conversations, and what integrations do to them"),
        (name = "visitors", description = "Timelines, export and erasure"),
        (name = "reports", description = "Итоги: conversations and operators over a range"),
        (name = "access", description = "API keys and tokens"),
        (name = "webhooks", description = "Events POSTed to a site's receivers, signed as Standard Webhooks describes, with a delivery log"),
        (name = "actions", description = "Buttons in the console's conversation menu that POST the conversation, signed, to the site's systems"),
        (name = "sites", description = "The deployment's sites (tenants): made and deleted with a root key"),
        (name = "directory", description = "Lines, groups, staff, catalogues and bans: in effect on every node at once"),
    )
)]
pub struct ApiDoc;

/// `Authorization: Bearer <API key or staff token>`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (ck_<id>_<secret>) or a staff token of the site",
                    ))
                    .build(),
            ),
        );
    }
}

/// The description as JSON (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI description serialises")
    })
}

pub async fn serve() -> Response {
    let mut res = document().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
