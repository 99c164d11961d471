//! Sites: the widget's availability, settings changed at runtime (in effect on every node),
//! and bans.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::authz::{self, Access};
use super::{user_channel, Engine, Gateway, ServiceError};
use crate::auth::Principal;
use crate::bus::{Audience, BusMsg, Channel, Control};
use crate::clock::now_ms;
use crate::core::settings::SettingsErrors;
use crate::core::{
    self, Actor, Availability, Command, ConvId, Outcome, Settings, SiteId, VisitorId,
};
use crate::engine::SiteTx;
use crate::protocol::{CloseReason, ConvState, ErrorCode, Role, ServerFrame};

/// How long a node answers availability from what it last computed.
pub const AVAILABILITY_TTL: Duration = Duration::from_secs(1);

/// How long a ban lasts when the request does not say, and at most.
const BAN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const BAN_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Clone, Copy)]
pub(super) struct CachedAvailability {
    at: std::time::Instant,
    generation: u64,
    value: Availability,
}

/// Why a settings update failed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsUpdateError {
    #[error("no such site")]
    NoSite,
    #[error(transparent)]
    Invalid(SettingsErrors),
    #[error(transparent)]
    Service(ServiceError),
}

impl<E: Engine> Gateway<E> {
    /// The site's availability for the widget: computed at most once per
    /// [`AVAILABILITY_TTL`] per node (and again after this node changed the site), however
    /// many pages ask; concurrent askers wait for one computation. Every page with the
    /// widget polls it; reading the site's state for each poll would take its lock (and ask
    /// Redis) as often as pages load, in the way of the transitions that matter.
    pub async fn availability(&self, site: &SiteId) -> Result<Availability, ServiceError> {
        let s = self.site_or_refuse(site)?;
        let mut cached = s.availability.lock().await;
        let generation = s.generation.load(Ordering::Acquire);
        if let Some(c) = *cached {
            if c.generation == generation && c.at.elapsed() < AVAILABILITY_TTL {
                return Ok(c.value);
            }
        }
        let settings = s.settings();
        let value = {
            let mut tx = self.engine.begin(site).await?;
            core::availability(tx.state(), &settings)
        };
        *cached = Some(CachedAvailability {
            at: std::time::Instant::now(),
            generation,
            value,
        });
        Ok(value)
    }

    /// Applies a settings patch, stores it for every node, and lets routing react.
    pub async fn update_settings(
        &self,
        site: &SiteId,
        patch: &Map<String, Value>,
    ) -> Result<Arc<Settings>, SettingsUpdateError> {
        let s = self.site(site).ok_or(SettingsUpdateError::NoSite)?;
        let old = s.settings();
        let new = old
            .patched(patch, self.cfg.bounds)
            .map_err(SettingsUpdateError::Invalid)?;
        let retime = old.reassign_after != new.reassign_after
            || old.close_after_inactive != new.close_after_inactive;
        self.engine
            .save_settings(site, &new.to_json())
            .await
            .map_err(|e| SettingsUpdateError::Service(e.into()))?;
        let new = Arc::new(new);
        s.set_settings(new.clone(), self.cfg.bounds);
        // Every other node reloads them; a node that misses the message (its bus connection
        // was down) reloads every site's settings when it resubscribes.
        if let Err(e) = self
            .engine
            .publish(&Channel::Nodes, BusMsg::Settings(site.clone()))
            .await
        {
            tracing::warn!(site = %site, error = %e, "settings change not announced");
        }
        self.apply(site, Command::SettingsChanged { retime })
            .await
            .map_err(SettingsUpdateError::Service)?;
        // Open consoles on every node see the change at once.
        let frame = ServerFrame::Settings {
            settings: self.client_settings_of(site, Role::Supervisor, None),
        };
        if let Err(e) = self
            .engine
            .publish(
                &Channel::Staff(site.clone()),
                BusMsg::frame(Audience::Staff, frame),
            )
            .await
        {
            tracing::warn!(site = %site, error = %e, "settings change not told to staff");
        }
        Ok(new)
    }

    /// Loads settings stored by any node (at start, and when told they changed).
    pub async fn reload_settings(&self, site: &SiteId) -> Result<(), ServiceError> {
        let Some(s) = self.site(site) else {
            return Ok(());
        };
        if let Some(v) = self.engine.load_settings(site).await? {
            if let Some(obj) = v.as_object() {
                match s.base.patched(obj, self.cfg.bounds) {
                    Ok(new) => s.set_settings(Arc::new(new), self.cfg.bounds),
                    Err(e) => tracing::warn!(site = %site, error = %e, "stored settings rejected"),
                }
            }
        }
        Ok(())
    }

    /// Reloads every site's stored settings (at start).
    pub async fn reload_all_settings(&self) {
        for site in self.site_ids() {
            if let Err(e) = self.reload_settings(&site).await {
                tracing::warn!(site = %site, error = %e, "stored settings not loaded");
            }
        }
    }

    /// Reloads a site's settings whenever any node says they changed.
    pub async fn run_control(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Control>,
    ) {
        while let Some(c) = rx.recv().await {
            match c {
                Control::SettingsChanged(site) if site == crate::directory::sites::registry() => {
                    // Sites were made, changed or deleted.
                    if let Err(e) = self.reload_sites().await {
                        tracing::warn!(error = %e, "sites not reloaded");
                    }
                }
                Control::SettingsChanged(site) => {
                    // The site changed: its settings or its directory.
                    if let Err(e) = self.reload_settings(&site).await {
                        tracing::warn!(site = %site, error = %e, "settings not reloaded");
                    }
                    if let Err(e) = self.reload_directory(&site).await {
                        tracing::warn!(site = %site, error = %e, "directory not reloaded");
                    }
                }
                Control::AutoTag { site, conv, text } => {
                    self.auto_tag(&site, &conv, &text).await;
                }
            }
        }
    }

    /// Bans the visitor of a conversation: they cannot connect (4003) until the ban ends,
    /// their open conversation ends (outcome `banned`), and the connections they have are
    /// closed now, on every node. Returns the visitor and the end of the ban.
    pub async fn ban(
        &self,
        p: &Principal,
        conv: &ConvId,
        duration: Option<String>,
        reason: Option<String>,
    ) -> Result<(VisitorId, u64), ServiceError> {
        authz::staff(p)?;
        // The directory's `can_ban`: an operator it knows may ban only when allowed.
        if let Some(op) = p.operator() {
            if self.staff(&p.site, op.as_str()).is_some_and(|s| !s.can_ban) {
                return Err(ServiceError::refuse(
                    ErrorCode::Forbidden,
                    "this account may not ban visitors",
                ));
            }
        }
        let d = match duration.as_deref() {
            None => BAN_DEFAULT,
            Some(text) => humantime::parse_duration(text).map_err(|_| {
                ServiceError::refuse(ErrorCode::BadRequest, "duration is like \"24h\" or \"30m\"")
            })?,
        };
        if d < Duration::from_secs(60) || d > BAN_MAX {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "a ban lasts from one minute to a year",
            ));
        }
        let meta = self.authorize(p, conv, Access::Manage).await?;
        let visitor = meta.visitor.clone();
        let until = now_ms() + d.as_millis() as u64;
        self.engine.set_ban(&p.site, &visitor, Some(until)).await?;
        // With the archive, the ban also covers the device and the address the visitor
        // chatted from: a new visitor id (the browser's storage cleared) does not lift it.
        if self.archive.is_some() {
            let preview = meta.snapshot.visitor.preview.as_ref();
            let mut body = serde_json::Map::new();
            body.insert("visitor".into(), Value::from(visitor.as_str()));
            if let Some(d) = preview.and_then(|p| p.device_id.clone()) {
                body.insert("device".into(), Value::from(d));
            }
            if let Some(ip) = preview.and_then(|p| p.ip.clone()) {
                body.insert("ip".into(), Value::from(ip));
            }
            body.insert("until".into(), Value::from(until));
            if let Some(r) = &reason {
                body.insert("reason".into(), Value::from(r.clone()));
            }
            match self
                .dir_create::<crate::directory::Ban>(&p.site, body, p.id())
                .await
            {
                Ok(_) => {}
                Err(super::DirError::Service(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(site = %p.site, error = %e, "ban not kept in the directory")
                }
            }
            let data = serde_json::json!({
                "visitor": visitor.as_str(), "conv": conv.as_str(), "until": until,
                "by": p.id(), "reason": reason,
            });
            let events = super::webhooks::webhook_deliveries(
                &self.directory(&p.site),
                &p.site,
                "visitor.banned",
                &format!("{visitor}:banned:{until}"),
                now_ms(),
                data,
            );
            if let Some(store) = self.archive.as_ref().filter(|_| !events.is_empty()) {
                if let Err(e) = store.add_deliveries(&events, now_ms()).await {
                    tracing::warn!(site = %p.site, error = %e, "visitor.banned not sent to webhooks");
                }
            }
        }
        tracing::info!(site = %p.site, visitor = %visitor, by = %p.id(), until, reason = reason.as_deref().unwrap_or(""), "visitor banned");
        if meta.state != ConvState::Closed {
            // The staff member's right to do it was checked above.
            let closed = self
                .apply(
                    &p.site,
                    Command::Close {
                        by: Actor::System,
                        conv: conv.clone(),
                        outcome: Some(Outcome::Banned),
                        tags: Vec::new(),
                    },
                )
                .await;
            if let Err(ServiceError::Rejected(r)) = &closed {
                tracing::debug!(
                    reason = r.message,
                    "banned visitor's conversation not closed"
                );
            } else {
                closed?;
            }
        }
        self.engine
            .publish(
                &user_channel(&p.site, Role::Visitor, visitor.as_str()),
                BusMsg::Close(CloseReason::Forbidden),
            )
            .await?;
        Ok((visitor, until))
    }

    /// Lifts a visitor's ban (supervisors).
    pub async fn unban(&self, p: &Principal, visitor: &VisitorId) -> Result<(), ServiceError> {
        authz::supervisor(p)?;
        if visitor.as_str().is_empty() || visitor.as_str().len() > 256 {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "bad visitor id",
            ));
        }
        self.engine.set_ban(&p.site, visitor, None).await?;
        let named: Vec<String> = self
            .directory(&p.site)
            .bans
            .values()
            .filter(|b| b.visitor.as_deref() == Some(visitor.as_str()))
            .map(|b| b.id.clone())
            .collect();
        for id in named {
            match self.dir_delete::<crate::directory::Ban>(&p.site, &id).await {
                Ok(()) | Err(super::DirError::NotFound) => {}
                Err(super::DirError::Service(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(site = %p.site, error = %e, "ban not lifted in the directory")
                }
            }
        }
        Ok(())
    }

    /// Whether a visitor is banned from a site now (an engine that cannot answer does not
    /// stop them here: whatever they do next needs the engine anyway).
    /// Whether a ban of the site's directory holds for a visitor id or an address.
    pub fn banned_in_directory(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        ip: Option<&str>,
        device: Option<&str>,
    ) -> bool {
        let now = now_ms();
        self.directory(site)
            .bans
            .values()
            .any(|b| b.holds(now, visitor.as_str(), device, ip))
    }

    pub async fn is_banned(&self, site: &SiteId, visitor: &VisitorId) -> bool {
        self.engine
            .banned_until(site, visitor, now_ms())
            .await
            .ok()
            .flatten()
            .is_some()
    }
}
