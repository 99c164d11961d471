//! Staff sign-in with e-mail and password: a session (kept in the archive's database,
//! revocable) and a protocol v1 token that names it (`sid`), which the console connects
//! with as with any staff token. Attempts are limited per account and per address; an
//! unknown e-mail costs the same time as a wrong password and gets the same answer.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{body, json, Api, Caller, Need, Problem};
use crate::archive::SessionRecord;
use crate::auth::Claims;
use crate::bus::BusMsg;
use crate::clock::now_ms;
use crate::core::SiteId;
use crate::directory::{password, Entity, StaffRole, StaffView};
use crate::protocol::{CloseReason, Role};
use crate::service::{user_channel, Engine};

/// How long a session lasts.
const SESSION_MS: u64 = 12 * 3600 * 1000;

/// Sign-in attempts: per account and per address.
pub struct SignInLimits {
    account: DefaultKeyedRateLimiter<String>,
    address: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Default for SignInLimits {
    fn default() -> Self {
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        SignInLimits {
            // Five tries a minute for one account, thirty for one address.
            account: RateLimiter::keyed(Quota::per_minute(n(5))),
            address: RateLimiter::keyed(Quota::per_minute(n(30))),
            clock: DefaultClock::default(),
        }
    }
}

impl SignInLimits {
    fn check(&self, account: String, address: Option<String>) -> Result<(), Problem> {
        let wait = |not_until: governor::NotUntil<_>| {
            Problem::too_many(not_until.wait_time_from(self.clock.now()).as_secs().max(1))
        };
        if let Some(a) = address {
            self.address.check_key(&a).map_err(wait)?;
        }
        self.account.check_key(&account).map_err(wait)
    }

    pub fn shrink(&self) {
        self.account.retain_recent();
        self.address.retain_recent();
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignIn {
    pub email: String,
    pub password: String,
}

/// A session just made, and the token to connect with.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    /// A protocol v1 token for this person, naming the session.
    pub token: String,
    /// The session's id (to revoke it).
    pub session: String,
    pub expires_at: u64,
    pub staff: StaffView,
}

/// Signs a staff member in with e-mail and password.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/sessions",
    tag = "access",
    params(("site" = String, Path)),
    request_body = SignIn,
    responses(
        (status = 201, description = "Signed in", body = SessionCreated),
        (status = 401, description = "Wrong e-mail or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is inactive", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 501, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn sign_in<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    ext: Extensions,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let site = SiteId::from(site.as_str());
    if api.gw.site(&site).is_none() {
        return Err(Problem::not_found("no such site"));
    }
    let req: SignIn = body(&bytes)?;
    let email = req.email.trim().to_lowercase();
    if email.is_empty() || email.len() > 254 {
        return Err(Problem::field("email", "an e-mail address"));
    }
    if req.password.is_empty() || req.password.len() > 1024 {
        return Err(Problem::field("password", "1 to 1024 bytes"));
    }
    let store = api.gw.archive_or_refuse()?.clone();
    let address = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    api.gate
        .sign_in
        .check(format!("{site}\n{email}"), address)?;
    let dir = api.gw.directory(&site);
    let staff = dir.staff_by_email(&email).cloned();
    let hash = staff
        .as_ref()
        .and_then(|s| s.password_hash.clone())
        .unwrap_or_else(|| password::decoy().to_owned());
    let matches = password::verify_blocking(req.password, hash).await;
    let wrong = || Problem::unauthorized("wrong e-mail or password");
    let staff = match staff {
        Some(s) if matches && s.password_hash.is_some() => s,
        _ => {
            tracing::info!(site = %site, "sign-in refused");
            return Err(wrong());
        }
    };
    if !staff.active {
        return Err(Problem::forbidden("this account is inactive"));
    }
    let now = now_ms();
    let session = SessionRecord {
        id: crate::directory::random_hex(16),
        site: site.to_string(),
        staff: staff.id.clone(),
        created_at: now,
        expires_at: now + SESSION_MS,
        revoked_at: None,
    };
    let claims = Claims {
        anon: false,
        sub: staff.id.clone(),
        site: site.to_string(),
        role: match staff.role {
            StaffRole::Operator => Role::Operator,
            StaffRole::Supervisor => Role::Supervisor,
        },
        name: Some(staff.name.clone()),
        exp: session.expires_at / 1000,
        iat: Some(now / 1000),
        queues: None,
        max_chats: None,
        sid: Some(session.id.clone()),
    };
    let token = api.gw.auth().mint(&claims).map_err(|_| {
        Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "not-implemented",
            "Tokens are minted elsewhere",
        )
        .detail(
            "this gateway verifies tokens with a public key; sign in through the site's own system",
        )
    })?;
    store.put_session(&session).await?;
    tracing::info!(site = %site, staff = %staff.id, session = %session.id, "signed in");
    let view: StaffView =
        serde_json::from_value(staff.view(&dir)).expect("a staff view reads back");
    Ok(json(
        StatusCode::CREATED,
        &SessionCreated {
            token,
            session: session.id,
            expires_at: session.expires_at,
            staff: view,
        },
    ))
}

/// Ends a session: its token is refused from now on, on every node, and its person's
/// connections are closed (their other sessions reconnect).
#[utoipa::path(
    delete,
    path = "/v1/sites/{site}/sessions/{id}",
    tag = "access",
    params(("site" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke<E: Engine>(
    State(api): State<Api<E>>,
    Path((site, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let caller = api.gate.caller(&api.gw, &headers).await?;
    // One's own session may always be ended; anyone else's by the site's administrators.
    let own = matches!(&caller, Caller::Staff(p) if p.session.as_deref() == Some(id.as_str()));
    let who = caller.on(&api.gw, &site, if own { Need::Read } else { Need::Admin })?;
    let store = api.gw.archive_or_refuse()?;
    let Some(s) = store
        .session(&id)
        .await?
        .filter(|s| s.site == who.site.as_str())
    else {
        return Err(Problem::not_found("no such session"));
    };
    store
        .revoke_sessions(&who.site, Some(&id), None, now_ms())
        .await?;
    let role = match api.gw.staff(&who.site, &s.staff).map(|s| s.role) {
        Some(StaffRole::Supervisor) => Role::Supervisor,
        _ => Role::Operator,
    };
    api.gw
        .publish_to(
            &user_channel(&who.site, role, &s.staff),
            BusMsg::Close(CloseReason::Unauthorized),
        )
        .await;
    tracing::info!(site = %who.site, session = %id, by = %who.label, "session revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
