//! Who calls the HTTP API, and what they may do on a site: an API key (its scopes, its site or
//! every site for a root key), or a protocol v1 staff token (a supervisor administers their
//! site; an operator reads the conversations they may see). Another site's resources answer
//! 404, never 403, so that ids do not leak across sites.
//!
//! Each caller has its own rate limit (GCRA, `governor`); a key's `last_used_at` is written at
//! most once a minute per node.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::keys::{hash_secret, parse_key, same_hash, Scope};
use super::Problem;
use crate::auth::{Principal, User};
use crate::clock::now_ms;
use crate::core::{BotId, OperatorId, SiteId};
use crate::service::{Engine, Gateway};

/// How often a key's `last_used_at` is written (per node).
const TOUCH_EVERY_MS: u64 = 60_000;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Key {
        id: String,
        name: String,
        /// `None`: a root key (every site).
        site: Option<SiteId>,
        scopes: Vec<Scope>,
    },
    Staff(Principal),
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read conversations, visitors, reports (`read`, `bot`, `admin`; supervisors;
    /// operators their own conversations).
    Read,
    /// Read reports and visitors (`read`, `admin`; supervisors).
    ReadAll,
    /// Write messages, close, transfer, tag, start conversations (`bot`, `admin`;
    /// supervisors).
    Manage,
    /// Administer the site (`admin`; supervisors).
    Admin,
    /// Mint tokens (`tokens`, `admin`).
    Tokens,
}

/// A caller acting on one site.
#[derive(Debug, Clone)]
pub struct Acting {
    pub site: SiteId,
    /// As the service layer sees the caller (a key acts as an integration: `User::Bot`).
    pub principal: Principal,
    /// An operator reads only conversations they held.
    pub own: Option<OperatorId>,
    /// The caller's stable label (rate limits, remembered answers).
    pub label: String,
}

impl Caller {
    /// Whether the caller is a key with the scope.
    pub fn has(&self, scope: Scope) -> bool {
        matches!(self, Caller::Key { scopes, .. } if scopes.contains(&scope))
    }

    /// A stable label of the caller.
    pub fn label(&self) -> String {
        match self {
            Caller::Key { id, .. } => format!("key:{id}"),
            Caller::Staff(p) => format!("staff:{}:{}:{}", p.site, p.role().as_str(), p.id()),
        }
    }

    /// The caller on `site`, if it may do what `need` says there.
    pub fn on<E: Engine>(
        &self,
        gw: &Gateway<E>,
        site: &str,
        need: Need,
    ) -> Result<Acting, Problem> {
        let site = SiteId::from(site);
        let hidden = || Problem::not_found("no such site");
        if gw.site(&site).is_none() {
            return Err(hidden());
        }
        let label = self.label();
        match self {
            Caller::Key {
                id,
                name,
                site: key_site,
                scopes,
            } => {
                if key_site.as_ref().is_some_and(|s| s != &site) {
                    return Err(hidden());
                }
                let has = |s: Scope| scopes.contains(&s) || scopes.contains(&Scope::Admin);
                let ok = match need {
                    Need::Read => has(Scope::Read) || has(Scope::Bot),
                    Need::ReadAll => has(Scope::Read),
                    Need::Manage => has(Scope::Bot),
                    Need::Admin => has(Scope::Admin),
                    Need::Tokens => has(Scope::Tokens),
                };
                if !ok {
                    return Err(Problem::forbidden(&format!(
                        "this key's scopes ({}) do not allow this",
                        scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                Ok(Acting {
                    principal: Principal {
                        site: site.clone(),
                        user: User::Bot(BotId(id.clone())),
                        name: Some(name.clone()),
                        queues: None,
                        max_chats: None,
                        session: None,
                    },
                    site,
                    own: None,
                    label,
                })
            }
            Caller::Staff(p) => {
                if p.site != site {
                    return Err(hidden());
                }
                let own = match (&p.user, need) {
                    (User::Supervisor(_), Need::Tokens) => {
                        return Err(Problem::forbidden("tokens are minted with an API key"))
                    }
                    (User::Supervisor(_), _) => None,
                    (User::Operator(op), Need::Read) => Some(op.clone()),
                    (User::Operator(_), _) => {
                        return Err(Problem::forbidden("a supervisor of this site may do this"))
                    }
                    _ => return Err(Problem::forbidden("staff tokens only")),
                };
                Ok(Acting {
                    principal: p.clone(),
                    site,
                    own,
                    label,
                })
            }
        }
    }
}

/// Authenticates requests and keeps each caller to its rate.
pub struct Gatekeeper {
    limiter: DefaultKeyedRateLimiter<String>,
    /// Staff sign-in attempts.
    pub sign_in: super::sessions::SignInLimits,
    /// Sites' own limits (`api_rate_per_sec`), every caller of a site together: the rate
    /// each was made with, and the limiter.
    sites: DashMap<crate::core::SiteId, (u32, governor::DefaultDirectRateLimiter)>,
    clock: DefaultClock,
    touched: DashMap<String, u64>,
}

impl Gatekeeper {
    pub fn new(per_sec: NonZeroU32, burst: NonZeroU32) -> Gatekeeper {
        Gatekeeper {
            limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            sign_in: Default::default(),
            sites: DashMap::new(),
            clock: DefaultClock::default(),
            touched: DashMap::new(),
        }
    }

    /// The caller behind `Authorization: Bearer …`, within its rate.
    pub async fn caller<E: Engine>(
        &self,
        gw: &Gateway<E>,
        headers: &HeaderMap,
    ) -> Result<Caller, Problem> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthorized("Authorization: Bearer <API key or staff token> required")
            })?;
        let caller = if token.starts_with("ck_") {
            self.key(gw, token).await?
        } else {
            let p = gw
                .verify_token(token)
                .map_err(|_| Problem::unauthorized("invalid or expired token"))?;
            if !p.is_staff() {
                return Err(Problem::forbidden("staff tokens only"));
            }
            if gw.site(&p.site).is_none() {
                return Err(Problem::not_found("no such site"));
            }
            match gw.admit_staff(p).await {
                Ok(p) => Caller::Staff(p),
                Err((crate::protocol::CloseReason::TryAgainLater, m)) => {
                    return Err(Problem::unavailable(m))
                }
                Err((crate::protocol::CloseReason::Forbidden, m)) => {
                    return Err(Problem::forbidden(m))
                }
                Err((_, m)) => return Err(Problem::unauthorized(m)),
            }
        };
        if let Err(not_until) = self.limiter.check_key(&caller.label()) {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(Problem::too_many(wait.as_secs_f64().ceil() as u64));
        }
        Ok(caller)
    }

    async fn key<E: Engine>(&self, gw: &Gateway<E>, key: &str) -> Result<Caller, Problem> {
        let bad = || Problem::unauthorized("unknown or revoked API key");
        let (id, secret) = parse_key(key).ok_or_else(bad)?;
        let store = gw.archive_or_refuse()?;
        let rec = store.key(id).await?.ok_or_else(bad)?;
        if !same_hash(&hash_secret(secret), &rec.hash) {
            return Err(bad());
        }
        let now = now_ms();
        let due = self
            .touched
            .get(id)
            .is_none_or(|t| now.saturating_sub(*t) >= TOUCH_EVERY_MS);
        if due {
            self.touched.insert(id.to_owned(), now);
            let store: Arc<dyn crate::archive::Store> = store.clone();
            let id = id.to_owned();
            // Off the request's path: the answer does not wait for it.
            tokio::spawn(async move {
                if let Err(e) = store.touch_key(&id, now).await {
                    tracing::debug!(error = %e, "key use not recorded");
                }
            });
        }
        let scopes = rec
            .scopes
            .iter()
            .filter_map(|s| s.parse::<Scope>().ok())
            .collect();
        Ok(Caller::Key {
            id: rec.id,
            name: rec.name,
            site: rec.site.map(SiteId),
            scopes,
        })
    }

    /// Drops the state of callers that are back to full burst (called now and then).
    /// Counts a request against its site's `api_rate_per_sec`, when the site sets one.
    pub fn site_rate(
        &self,
        site: &crate::core::SiteId,
        per_sec: Option<u32>,
    ) -> Result<(), Problem> {
        let Some(rate) = per_sec.and_then(NonZeroU32::new) else {
            return Ok(());
        };
        let mut entry = self
            .sites
            .entry(site.clone())
            .or_insert_with(|| (rate.get(), RateLimiter::direct(Quota::per_second(rate))));
        if entry.0 != rate.get() {
            *entry = (rate.get(), RateLimiter::direct(Quota::per_second(rate)));
        }
        entry.1.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Problem::too_many(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }

    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.sign_in.shrink();
        let horizon = now_ms().saturating_sub(10 * TOUCH_EVERY_MS);
        self.touched.retain(|_, t| *t >= horizon);
    }
}
