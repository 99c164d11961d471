//! The directory at runtime: each node holds every site's [`Directory`], changes go to the
//! archive's database and then to every node (the site's change message on the nodes'
//! channel, which already makes every node reload the site's settings), and what a change
//! means for live connections happens at once: a staff account set inactive, deleted, or
//! moved to another role is disconnected on every node.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{user_channel, Engine, Gateway, ServiceError};
use crate::archive::Put;
use crate::auth::{Principal, User};
use crate::bus::{BusMsg, Channel};
use crate::clock::now_ms;
use crate::core::{ConvId, QueueId, SiteId};
use crate::directory::{merge, Directory, Entity, Invalid, Kind, Queue, Staff, StaffRole};
use crate::protocol::{CloseReason, Role};

/// Why a directory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("no such site")]
    NoSite,
    #[error("no such item")]
    NotFound,
    #[error("an item with this id exists")]
    Exists,
    #[error("still referred to by {}", .0.join(", "))]
    Referenced(Vec<String>),
    #[error("invalid fields")]
    Invalid(Vec<Invalid>),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::archive::ArchiveError> for DirError {
    fn from(e: crate::archive::ArchiveError) -> Self {
        DirError::Service(e.into())
    }
}

impl<E: Engine> Gateway<E> {
    /// A site's directory as this node holds it (empty for an unknown site).
    pub fn directory(&self, site: &SiteId) -> Arc<Directory> {
        self.site(site)
            .map(|s| s.directory.read().clone())
            .unwrap_or_default()
    }

    /// Loads a site's directory from the archive (at start, after any node changed it, and
    /// after the bus reconnected); returns the directory it replaced, or the one in place
    /// when that is as new as what was read.
    pub async fn reload_directory(&self, site: &SiteId) -> Result<Arc<Directory>, ServiceError> {
        let (Some(s), Some(store)) = (self.site(site), self.archive.as_ref()) else {
            return Ok(Arc::default());
        };
        let (version, rows) = store.directory(site).await?;
        let current = s.directory.read().clone();
        if current.newer_or_same(version) {
            return Ok(current);
        }
        let mut new = Directory::from_rows(version, &rows);
        new.lines = if new.has_lines() {
            // The sites file's order first (its first line is where a conversation goes when
            // the widget names none), then the lines made since, by id.
            let mut lines: Vec<QueueId> = s
                .queues
                .iter()
                .filter(|q| new.queues.contains_key(q.as_str()))
                .cloned()
                .collect();
            lines.extend(
                new.queues
                    .keys()
                    .map(|q| QueueId(q.clone()))
                    .filter(|q| !s.queues.contains(q)),
            );
            lines
        } else {
            s.queues.clone()
        };
        let new = Arc::new(new);
        // Reloads run side by side (a change made here, another node's announcement): one
        // that read an older version than the one in place by now must not put it back.
        let old = {
            let mut current = s.directory.write();
            if current.newer_or_same(version) {
                return Ok(current.clone());
            }
            std::mem::replace(&mut *current, new.clone())
        };
        s.refresh_lines(self.cfg.bounds);
        s.changed();
        self.directory_changed(site, &old, &new).await;
        Ok(old)
    }

    /// What a new directory means for live connections: staff who may no longer be here
    /// are disconnected (this node's connections: every node runs this on reload).
    async fn directory_changed(&self, site: &SiteId, old: &Directory, new: &Directory) {
        // A new ban of a visitor id ends their connections here at once (an address is
        // refused at its next hello).
        for (id, ban) in &new.bans {
            if old.bans.contains_key(id) {
                continue;
            }
            if let Some(v) = &ban.visitor {
                self.hub.dispatch(
                    &user_channel(site, Role::Visitor, v),
                    &BusMsg::Close(CloseReason::Forbidden),
                );
            }
        }
        for (id, was) in &old.operators {
            let gone = match new.operators.get(id) {
                None => true,
                Some(now) => (was.active && !now.active) || was.role != now.role,
            };
            if gone {
                let role = match was.role {
                    StaffRole::Operator => Role::Operator,
                    StaffRole::Supervisor => Role::Supervisor,
                };
                self.hub.dispatch(
                    &user_channel(site, role, id),
                    &BusMsg::Close(CloseReason::Forbidden),
                );
            }
        }
    }

    /// Seeds a fresh site's directory from the sites file: its queues become lines served by
    /// every operator. A site whose directory was ever written is left as it is.
    pub async fn seed_directory(&self, site: &SiteId) -> Result<(), ServiceError> {
        let (Some(s), Some(store)) = (self.site(site), self.archive.as_ref()) else {
            return Ok(());
        };
        if store.directory(site).await?.0 != 0 {
            return Ok(());
        }
        let now = now_ms();
        for q in &s.queues {
            let line = Queue {
                id: q.to_string(),
                name: q.to_string(),
                operator_groups: Vec::new(),
                supervisor_groups: Vec::new(),
                settings: Map::new(),
                transcript_emails: Vec::new(),
            };
            let body = serde_json::to_string(&line).expect("serialises");
            store
                .put_entry(site, Kind::Queues, &line.id, &body, true, now)
                .await?;
        }
        Ok(())
    }

    /// Loads every site's directory (at start, seeding fresh ones).
    pub async fn load_directories(&self) {
        for site in self.site_ids() {
            if let Err(e) = self.seed_directory(&site).await {
                tracing::warn!(site = %site, error = %e, "directory not seeded");
            }
            if let Err(e) = self.reload_directory(&site).await {
                tracing::warn!(site = %site, error = %e, "directory not loaded");
            }
        }
    }

    /// Creates an item from a request's JSON; `by` names who did it.
    pub async fn dir_create<T: Entity>(
        &self,
        site: &SiteId,
        mut body: Map<String, Value>,
        by: &str,
    ) -> Result<(T, Arc<Directory>), DirError> {
        self.site(site).ok_or(DirError::NoSite)?;
        T::prepare(&mut body, None).map_err(DirError::Invalid)?;
        let mut item: T = read(body)?;
        item.created(now_ms(), by);
        self.dir_write(site, item, true).await
    }

    /// Changes the fields of an item that `patch` names.
    pub async fn dir_patch<T: Entity>(
        &self,
        site: &SiteId,
        id: &str,
        mut patch: Map<String, Value>,
    ) -> Result<(T, Arc<Directory>), DirError> {
        self.site(site).ok_or(DirError::NoSite)?;
        let dir = self.fresh_directory(site).await?;
        let old = T::map(&dir).get(id).ok_or(DirError::NotFound)?;
        if let Some(v) = patch.get(T::ID_FIELD) {
            if v.as_str() != Some(id) {
                return Err(DirError::Invalid(vec![Invalid::new(
                    T::ID_FIELD,
                    "cannot be changed",
                )]));
            }
        }
        T::prepare(&mut patch, Some(old)).map_err(DirError::Invalid)?;
        let mut json = match serde_json::to_value(old).expect("serialises") {
            Value::Object(m) => m,
            _ => unreachable!("entities are objects"),
        };
        merge(&mut json, patch);
        let item: T = read(json)?;
        self.dir_write(site, item, false).await
    }

    /// Deletes an item nothing refers to.
    pub async fn dir_delete<T: Entity>(&self, site: &SiteId, id: &str) -> Result<(), DirError> {
        self.site(site).ok_or(DirError::NoSite)?;
        let dir = self.fresh_directory(site).await?;
        let refs = T::referrers(&dir, id);
        if !refs.is_empty() {
            return Err(DirError::Referenced(refs));
        }
        let store = self.archive_or_refuse()?;
        if !store.delete_entry(site, T::KIND, id).await? {
            return Err(DirError::NotFound);
        }
        self.announce_directory(site).await;
        Ok(())
    }

    async fn dir_write<T: Entity>(
        &self,
        site: &SiteId,
        item: T,
        create: bool,
    ) -> Result<(T, Arc<Directory>), DirError> {
        let dir = self.fresh_directory(site).await?;
        let mut errors = item.check(&dir);
        errors.extend(self.check_line_settings(site, &item));
        errors.extend(self.check_webhook_host(&item));
        if !errors.is_empty() {
            return Err(DirError::Invalid(errors));
        }
        let store = self.archive_or_refuse()?;
        let body = serde_json::to_string(&item).expect("serialises");
        match store
            .put_entry(site, T::KIND, item.id(), &body, create, now_ms())
            .await?
        {
            Put::Done => {}
            Put::Exists => return Err(DirError::Exists),
            Put::Missing => return Err(DirError::NotFound),
        }
        let dir = self.announce_directory(site).await;
        Ok((item, dir))
    }

    /// Turns a failing webhook off (the deliveries loop, once its calls all failed for
    /// `GATEWAY_WEBHOOK_DISABLE_AFTER`), with when and why; `Some` (the webhook as it is now)
    /// when this call turned it off, `None` when it was off or gone already.
    pub(super) async fn disable_webhook(
        &self,
        site: &SiteId,
        id: &str,
        reason: &str,
    ) -> Result<Option<crate::directory::Webhook>, DirError> {
        let dir = self.fresh_directory(site).await?;
        let Some(w) = dir.webhooks.get(id).filter(|w| w.active) else {
            return Ok(None);
        };
        let mut off = w.clone();
        off.active = false;
        off.disabled_at = Some(now_ms());
        off.disabled_reason = Some(reason.chars().take(500).collect());
        let (off, _) = self.dir_write(site, off, false).await?;
        Ok(Some(off))
    }

    /// A webhook's or an action's host, checked against `GATEWAY_WEBHOOK_HOSTS`.
    fn check_webhook_host<T: Entity>(&self, item: &T) -> Vec<Invalid> {
        if !matches!(T::KIND, Kind::Webhooks | Kind::Actions) {
            return Vec::new();
        }
        let Ok(Value::Object(json)) = serde_json::to_value(item) else {
            return Vec::new();
        };
        match json.get("url").and_then(Value::as_str) {
            Some(url) if !crate::webhook::host_allowed(&self.cfg.webhook_hosts, url) => {
                vec![Invalid::new(
                    "url",
                    "this gateway calls nothing on that host (GATEWAY_WEBHOOK_HOSTS)",
                )]
            }
            _ => Vec::new(),
        }
    }

    /// A line's settings, checked as the site's settings would be with them applied.
    fn check_line_settings<T: Entity>(&self, site: &SiteId, item: &T) -> Vec<Invalid> {
        if T::KIND != Kind::Queues {
            return Vec::new();
        }
        let Ok(Value::Object(json)) = serde_json::to_value(item) else {
            return Vec::new();
        };
        let Some(Value::Object(settings)) = json.get("settings") else {
            return Vec::new();
        };
        let Some(s) = self.site(site) else {
            return Vec::new();
        };
        match s.settings().patched(settings, self.cfg.bounds) {
            Ok(_) => Vec::new(),
            Err(e) => settings_invalid(e),
        }
    }

    /// The directory as the database holds it now (checks of a change are made against it,
    /// not against a copy another node may just have changed).
    async fn fresh_directory(&self, site: &SiteId) -> Result<Arc<Directory>, DirError> {
        self.archive_or_refuse()?;
        self.reload_directory(site).await?;
        Ok(self.directory(site))
    }

    /// After a change: this node reloads at once, and every other node is told.
    pub(super) async fn announce_directory(&self, site: &SiteId) -> Arc<Directory> {
        if let Err(e) = self.reload_directory(site).await {
            tracing::warn!(site = %site, error = %e, "directory not reloaded after a change");
        }
        if let Err(e) = self
            .engine
            .publish(&Channel::Nodes, BusMsg::Settings(site.clone()))
            .await
        {
            tracing::warn!(site = %site, error = %e, "directory change not announced");
        }
        // Open consoles see new lines and catalogues at once.
        let frame = crate::protocol::ServerFrame::Settings {
            settings: self.client_settings_of(site, Role::Supervisor, None),
        };
        self.publish_to(
            &Channel::Staff(site.clone()),
            BusMsg::frame(crate::bus::Audience::Staff, frame),
        )
        .await;
        self.directory(site)
    }

    /// A staff member's token checked against the directory: an account set inactive (or
    /// given another role) is refused, and the lines the directory gives an operator, and
    /// their `max_chats`, replace what the token says. Staff the directory does not know
    /// keep what their token says (tokens minted by a site's own backend).
    pub fn staff_from_directory(&self, mut p: Principal) -> Result<Principal, &'static str> {
        let (role, id) = match &p.user {
            User::Operator(o) => (StaffRole::Operator, o.as_str()),
            User::Supervisor(s) => (StaffRole::Supervisor, s.as_str()),
            _ => return Ok(p),
        };
        let dir = self.directory(&p.site);
        let Some(staff) = dir.operators.get(id) else {
            return Ok(p);
        };
        if !staff.active {
            return Err("this account is inactive");
        }
        if staff.role != role {
            return Err("this account's role changed; sign in again");
        }
        match &p.user {
            User::Operator(o) if dir.has_lines() => p.queues = Some(dir.queues_served_by(o)),
            // A supervisor in supervisor groups moderates those lines only; one in none, the
            // whole site.
            User::Supervisor(s) => p.queues = dir.queues_moderated_by(s.as_str()),
            _ => {}
        }
        if staff.max_chats.is_some() {
            p.max_chats = staff.max_chats;
        }
        if p.name.is_none() {
            p.name = Some(staff.name.clone());
        }
        Ok(p)
    }

    /// Verifies a token signed with the gateway's key or with a current signing key of the
    /// site it names.
    pub fn verify_token(&self, token: &str) -> Result<Principal, crate::auth::AuthError> {
        let now = now_ms();
        self.auth.verify_with(token, &|site, kid| {
            self.directory(&SiteId::from(site)).key_current(kid, now)
        })
    }

    /// [`Gateway::verify_token`] for a token whose expiry may have passed, but not by more
    /// than `max_age_ms`.
    pub fn verify_token_renewable(
        &self,
        token: &str,
        max_age_ms: u64,
    ) -> Result<Principal, crate::auth::AuthError> {
        let now = now_ms();
        self.auth
            .verify_renewable(token, now, max_age_ms, &|site, kid| {
                self.directory(&SiteId::from(site)).key_current(kid, now)
            })
    }

    /// A staff member's token checked as [`Gateway::staff_from_directory`] does, and, for a
    /// token of a password sign-in, its session: refused once revoked or expired.
    pub async fn admit_staff(
        &self,
        p: Principal,
    ) -> Result<Principal, (CloseReason, &'static str)> {
        if let Some(sid) = &p.session {
            let Some(store) = self.archive.as_ref() else {
                return Err((CloseReason::Unauthorized, "sessions need the archive"));
            };
            match store.session(sid).await {
                Ok(Some(s))
                    if s.site == p.site.as_str()
                        && s.staff == p.id()
                        && s.revoked_at.is_none()
                        && s.expires_at > now_ms() => {}
                Ok(_) => return Err((CloseReason::Unauthorized, "this session has ended")),
                Err(e) => {
                    tracing::warn!(error = %e, "session not checked");
                    return Err((CloseReason::TryAgainLater, "temporarily unavailable"));
                }
            }
        }
        self.staff_from_directory(p)
            .map_err(|m| (CloseReason::Forbidden, m))
    }

    /// The site's lines: the directory's, or the sites file's when it has none.
    pub fn lines(&self, site: &SiteId) -> Vec<QueueId> {
        self.directory(site).lines.clone()
    }

    /// Publishes on a channel of every node; a failure is logged (what it would have told
    /// happens anyway where it matters: a refused token stays refused).
    pub async fn publish_to(&self, ch: &Channel, msg: BusMsg) {
        if let Err(e) = self.engine.publish(ch, msg).await {
            tracing::warn!(error = %e, "not published");
        }
    }

    /// An outcome and tags given by staff, checked against the site's catalogues: when the
    /// site has outcomes, an outcome must be one of its active ones; when it has tags, every
    /// tag added must be one of its active ones (an inactive tag stays on the conversations
    /// that have it, and is offered to no one).
    pub fn check_catalogue(
        &self,
        site: &SiteId,
        outcome: Option<&str>,
        tags: &[String],
    ) -> Result<(), ServiceError> {
        let dir = self.directory(site);
        if let Some(o) = outcome {
            if !dir.outcomes.is_empty() && !dir.outcomes.get(o).is_some_and(|x| x.active) {
                return Err(ServiceError::refuse(
                    crate::protocol::ErrorCode::BadRequest,
                    "the outcome is not one of the site's outcomes",
                ));
            }
        }
        if !dir.tags.is_empty()
            && tags
                .iter()
                .any(|t| !dir.tags.get(t.trim()).is_some_and(|x| x.active))
        {
            return Err(ServiceError::refuse(
                crate::protocol::ErrorCode::BadRequest,
                "a tag is not one of the site's tags",
            ));
        }
        Ok(())
    }

    /// Tags the site's catalogue adds by themselves when a message (lower-cased) of a
    /// conversation of `queue` contains one of their keywords, and that the conversation
    /// lacks.
    pub fn auto_tags(
        &self,
        site: &SiteId,
        queue: &str,
        have: &[String],
        lower: &str,
    ) -> Vec<String> {
        self.directory(site)
            .keywords
            .iter()
            .filter(|k| {
                (k.queues.is_empty() || k.queues.iter().any(|q| q == queue))
                    && !have.contains(&k.tag)
                    && k.found_in(lower)
            })
            .map(|k| k.tag.clone())
            .collect()
    }

    /// After a message is stored: when its text holds a keyword of one of the site's tags,
    /// the node's control loop tags the conversation (off the sender's path; the message is
    /// acknowledged already). A site without keyword tags costs a map lookup.
    pub(super) fn note_keywords(&self, site: &SiteId, conv: &ConvId, text: &str) {
        let dir = self.directory(site);
        if dir.keywords.is_empty() {
            return;
        }
        let lower = text.to_lowercase();
        if dir.keywords.iter().any(|k| k.found_in(&lower)) {
            self.hub.control(crate::bus::Control::AutoTag {
                site: site.clone(),
                conv: conv.clone(),
                text: lower,
            });
        }
    }

    /// Adds the tags a message's keywords call for to its conversation, if it is open.
    pub async fn auto_tag(&self, site: &SiteId, conv: &ConvId, text: &str) {
        let meta = match self.engine.meta(conv).await {
            Ok(Some(m)) if m.state != crate::protocol::ConvState::Closed => m,
            _ => return,
        };
        let add = self.auto_tags(site, &meta.snapshot.queue, &meta.snapshot.tags, text);
        if add.is_empty() {
            return;
        }
        let cmd = crate::core::Command::Tag {
            conv: conv.clone(),
            add,
            remove: Vec::new(),
        };
        if let Err(e) = self.apply(site, cmd).await {
            tracing::debug!(conv = %conv, error = %e, "keyword tags not added");
        }
    }

    /// A staff account by id.
    pub fn staff(&self, site: &SiteId, id: &str) -> Option<Staff> {
        self.directory(site).operators.get(id).cloned()
    }
}

fn read<T: Entity>(body: Map<String, Value>) -> Result<T, DirError> {
    serde_path_to_error::deserialize::<_, T>(Value::Object(body)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        DirError::Invalid(vec![Invalid::new(&field, e.inner().to_string())])
    })
}

/// A settings patch's errors as the fields of the item that holds it (`settings.<key>`).
pub(super) fn settings_invalid(e: crate::core::settings::SettingsErrors) -> Vec<Invalid> {
    e.0.into_iter()
        .map(|e| Invalid::new(&format!("settings.{}", e.key), e.message))
        .collect()
}
