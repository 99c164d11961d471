//! The gateway's use cases, generic over the engine: run a core transition atomically, then
//! carry out its effects; authorise every conversation a frame names; store and route
//! messages; keep presence, timers and the census running.
//!
//! The WebSocket and HTTP edges call only the methods of [`Gateway`] (it has no public
//! fields); the core decides, the engine stores and publishes, the hub delivers to local
//! sockets, and this module is the glue that is the same for every engine. The use cases live
//! in one file each:
//!
//! - `transitions` — the begin → core → commit → effects loop, and effects retried after an
//!   engine hiccup;
//! - `authz` — who may touch which conversation;
//! - `session` — a connection's life: counted in presence, `welcome` with replay, detached;
//! - `conversations` — start, send, history, typing, read receipts, identify, close, drafts;
//! - `staff` — status, accept, decline, transfer, assign, tags, queue listings, snapshots;
//! - `sites` — availability, settings, bans;
//! - `registry` — sites made, changed and deleted at runtime;
//! - `integrations` — what the HTTP API adds: messages read through the archive and the live
//!   log, invitations, edits of details and tags, erasure;
//! - `notify` — e-mail: notices made by the archiver, worked off into deliveries, sent;
//! - `timers`, `presence`, `census` — the background loops.

mod actions;
mod archiver;
mod authz;
mod census;
mod conversations;
mod directory;
mod integrations;
mod notify;
mod presence;
mod registry;
mod session;
mod sites;
mod staff;
mod timers;
mod transitions;
mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

pub use authz::Access;
pub use conversations::preview_from;
pub use directory::DirError;
pub use integrations::{Changed, Details, WHOLE_MAX};
pub use notify::GIVE_UP_AFTER_MS;
pub use registry::SiteChange;
pub use session::Cursors;
pub use sites::SettingsUpdateError;

use crate::archive::Store;
use crate::auth::Auth;
use crate::bus::{Channel, ConnRef};
use crate::clock::now_ms;
use crate::config::{Config, SiteConfig};
use crate::core::{ConnId, ConvId, NodeId, QueueId, Reject, Settings, SiteId, VisitorId};
use crate::engine::EngineError;
use crate::hub::{ConnShared, Hub};
use crate::metrics as m;
use crate::protocol::{ErrorCode, Role};

pub use crate::engine::Engine;

/// Why a request failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}", .0.message)]
    Rejected(Reject),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

impl ServiceError {
    pub(crate) fn refuse(code: ErrorCode, message: &'static str) -> ServiceError {
        ServiceError::Rejected(Reject { code, message })
    }

    /// The error code and message for the client; engine details stay in the log.
    pub fn client_error(&self) -> (ErrorCode, &'static str) {
        match self {
            ServiceError::Rejected(r) => (r.code, r.message),
            ServiceError::Engine(_) | ServiceError::Archive(_) => {
                (ErrorCode::Unavailable, "temporarily unavailable; retry")
            }
        }
    }
}

impl From<Reject> for ServiceError {
    fn from(r: Reject) -> Self {
        ServiceError::Rejected(r)
    }
}

/// A site this node serves, and its live settings.
pub struct Site {
    pub id: SiteId,
    /// The lines the site was seeded with, in order (see `SiteRecord::queues`).
    queues: Vec<QueueId>,
    /// What the site starts from when no node has stored newer settings.
    base: Settings,
    /// Its name and widget key (changed through the sites API).
    card: RwLock<Arc<SiteCard>>,
    settings: RwLock<Arc<Settings>>,
    /// The widget's availability as last computed here (see [`Gateway::availability`]).
    availability: tokio::sync::Mutex<Option<sites::CachedAvailability>>,
    /// Bumped by every change this node makes to the site (a transition, new settings), so
    /// that its own changes show at once; other nodes' show within
    /// [`sites::AVAILABILITY_TTL`].
    generation: AtomicU64,
    /// The site's lines, staff and catalogues as last loaded (see `service/directory.rs`).
    directory: RwLock<Arc<crate::directory::Directory>>,
    /// The settings of lines that override some of the site's (kept with the settings and
    /// the directory they come from).
    line_settings: RwLock<Arc<crate::core::LineSettings>>,
    /// This node's connections of the site (for `max_connections`).
    conns: Arc<std::sync::atomic::AtomicU32>,
    /// Held while a committed transition's effects go out (see `Gateway::apply`): taken, in
    /// turn, before the site's state is let go, so that effects leave in commit order while
    /// the next transition already commits.
    effects: Arc<tokio::sync::Mutex<()>>,
}

/// What a site is called, and the key its widget names it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCard {
    pub name: String,
    pub widget_key: String,
}

/// The sites this node serves, by id and by widget key. Sites come and go at runtime (the
/// sites API); a reader takes the `Arc` of one site and lets the lock go at once.
#[derive(Default)]
struct Registry {
    sites: HashMap<SiteId, Arc<Site>>,
    by_key: HashMap<String, SiteId>,
}

/// One connection counted against its site's `max_connections` on this node, until dropped.
pub struct SiteSlot(Arc<std::sync::atomic::AtomicU32>);

impl Drop for SiteSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Site {
    fn new(cfg: &SiteConfig) -> Site {
        Site {
            id: cfg.id.clone(),
            queues: cfg.queues.clone(),
            base: cfg.settings.clone(),
            card: RwLock::new(Arc::new(SiteCard {
                name: cfg.name.clone(),
                widget_key: cfg.widget_key.clone(),
            })),
            settings: RwLock::new(Arc::new(cfg.settings.clone())),
            availability: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            directory: RwLock::new(Arc::new(crate::directory::Directory::with_lines(
                cfg.queues.clone(),
            ))),
            line_settings: RwLock::default(),
            conns: Arc::default(),
            effects: Arc::default(),
        }
    }

    pub fn card(&self) -> Arc<SiteCard> {
        self.card.read().clone()
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    fn set_settings(&self, new: Arc<Settings>, bounds: crate::core::settings::Bounds) {
        *self.settings.write() = new;
        self.refresh_lines(bounds);
        self.changed();
    }

    /// Recomputes the lines' settings: the site's, with each line's overrides on top (an
    /// override that no longer applies — checked when it was written — is skipped).
    fn refresh_lines(&self, bounds: crate::core::settings::Bounds) {
        let site = self.settings();
        let dir = self.directory.read().clone();
        let mut lines = crate::core::LineSettings::new();
        for q in dir.queues.values().filter(|q| !q.settings.is_empty()) {
            match site.patched(&q.settings, bounds) {
                Ok(s) => {
                    lines.insert(crate::core::QueueId(q.id.clone()), s);
                }
                Err(e) => tracing::warn!(line = %q.id, error = %e, "line settings skipped"),
            }
        }
        *self.line_settings.write() = Arc::new(lines);
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Registry {
    fn insert(&mut self, site: Site) {
        let key = site.card().widget_key.clone();
        let id = site.id.clone();
        self.by_key.insert(key, id.clone());
        self.sites.insert(id, Arc::new(site));
    }
}

/// One gateway node's use cases. Edges hold it in an `Arc` and call its methods.
pub struct Gateway<E: Engine> {
    engine: E,
    /// The archive (`None`: none is configured).
    archive: Option<Arc<dyn Store>>,
    notes: archiver::Notes,
    hub: Arc<Hub>,
    auth: Auth,
    cfg: Config,
    node: NodeId,
    registry: RwLock<Registry>,
    /// The mail server, when one is configured (`GATEWAY_SMTP_URL`).
    mailer: Option<crate::mail::Mailer>,
    /// Calls webhooks (one connection pool for the node).
    webhooks: crate::webhook::Caller,
    /// The sites the census labelled last (see `census.rs`).
    census_sites: parking_lot::Mutex<Vec<String>>,
    /// Limits on sessions, starts and transcripts per address and visitor.
    pub abuse: crate::abuse::Abuse,
    /// Wakes this node's deliveries loop when it queued something to send now (an action).
    deliveries_due: tokio::sync::Notify,
    next_conn: AtomicU64,
    listings: staff::Listings,
    retries: transitions::Retries,
    draining: AtomicBool,
    /// The node's current life, under which its connections are counted in the sites'
    /// presence and its heartbeat is written: `<node>~<random>`. A new life begins when the
    /// others declared this one dead (it was cut off): what the old life counted is swept,
    /// and nothing late from the old life can touch what the new one counts.
    life: RwLock<NodeId>,
}

/// A fresh life id for a node.
fn new_life(node: &NodeId) -> NodeId {
    use rand::Rng;
    NodeId(format!("{node}~{:08x}", rand::rng().random::<u32>()))
}

impl<E: Engine> Gateway<E> {
    pub fn new(
        engine: E,
        archive: Option<Arc<dyn Store>>,
        hub: Arc<Hub>,
        auth: Auth,
        cfg: Config,
        node: NodeId,
    ) -> Gateway<E> {
        hub.set_node(node.clone());
        let mailer = cfg.mail.as_ref().and_then(|(smtp, from)| {
            crate::mail::Mailer::new(smtp, from)
                .map_err(|e| tracing::error!(error = %e, "no e-mail"))
                .ok()
        });
        let abuse = crate::abuse::Abuse::new(cfg.abuse);
        let webhooks = crate::webhook::Caller::new(cfg.webhook_hosts.clone());
        let mut registry = Registry::default();
        for s in &cfg.sites {
            registry.insert(Site::new(s));
        }
        Gateway {
            engine,
            archive,
            notes: archiver::Notes::default(),
            hub,
            auth,
            cfg,
            registry: RwLock::new(registry),
            census_sites: Default::default(),
            deliveries_due: tokio::sync::Notify::new(),
            abuse,
            mailer,
            webhooks,
            next_conn: AtomicU64::new(1),
            listings: staff::Listings::default(),
            retries: transitions::Retries::default(),
            draining: AtomicBool::new(false),
            life: RwLock::new(new_life(&node)),
            node,
        }
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The archive, when one is configured.
    pub fn archive(&self) -> Option<&Arc<dyn Store>> {
        self.archive.as_ref()
    }

    /// Verifies and mints tokens.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn site(&self, id: &SiteId) -> Option<Arc<Site>> {
        self.registry.read().sites.get(id).cloned()
    }

    pub fn site_by_key(&self, key: &str) -> Option<Arc<Site>> {
        let r = self.registry.read();
        r.by_key.get(key).and_then(|id| r.sites.get(id)).cloned()
    }

    /// Every site this node serves.
    pub fn sites(&self) -> Vec<Arc<Site>> {
        self.registry.read().sites.values().cloned().collect()
    }

    /// The ids of every site this node serves.
    pub fn site_ids(&self) -> Vec<SiteId> {
        self.registry.read().sites.keys().cloned().collect()
    }

    /// This node's connections of a site (each leaves the count once its disconnect was
    /// recorded in the site's presence).
    pub fn site_connections(&self, site: &SiteId) -> u32 {
        self.site(site)
            .map_or(0, |s| s.conns.load(Ordering::Relaxed))
    }

    /// Counts a new connection of `site` on this node, unless the site's `max_connections`
    /// is reached.
    pub fn site_slot(&self, site: &SiteId) -> Option<SiteSlot> {
        let s = self.site(site)?;
        let max = s.settings().max_connections.unwrap_or(u32::MAX);
        s.conns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(SiteSlot(s.conns.clone()))
    }

    fn site_or_refuse(&self, id: &SiteId) -> Result<Arc<Site>, ServiceError> {
        self.site(id)
            .ok_or(ServiceError::refuse(ErrorCode::NotFound, "no such site"))
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// A connection's id as clients see it (`welcome.conn`).
    pub fn conn_name(&self, id: ConnId) -> String {
        format!("{}-{}", self.node, id.0)
    }

    pub fn conn_ref(&self, id: ConnId) -> ConnRef {
        ConnRef {
            node: self.node.clone(),
            conn: id,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether new connections are turned away (1012): the node drains.
    pub fn refuses_clients(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(m::DRAINING).set(1.0);
    }

    /// The node's current life (see the field's documentation).
    pub fn life(&self) -> NodeId {
        self.life.read().clone()
    }

    /// Whether the engine answers (readiness).
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.engine.ping().await?)
    }

    /// Every connection of this node.
    pub fn connections(&self) -> Vec<Arc<ConnShared>> {
        self.hub.all()
    }

    /// Calls `f` with every connection of this node, without collecting them (it must not
    /// block).
    pub fn for_each_connection(&self, f: impl FnMut(&Arc<ConnShared>)) {
        self.hub.for_each(f);
    }

    /// The largest frame a connection of this node can be sent: tungstenite refuses a message
    /// larger than its write buffer (its own buffer plus two frames), and a frame should
    /// never spend more than half a connection's outbound budget.
    pub fn frame_cap(&self) -> usize {
        (self.cfg.outbound_max_bytes / 2).min(2 * self.cfg.max_frame)
    }

    /// Closes every connection of this node now.
    fn close_all(&self, reason: crate::protocol::CloseReason) {
        self.hub.for_each(|c| c.close(reason));
    }
}

/// The channel of one user's connections.
pub fn user_channel(site: &SiteId, role: Role, id: &str) -> Channel {
    Channel::User(site.clone(), role, id.to_owned())
}

/// A conversation id as a client gave it: 1 to 128 bytes.
pub fn conv_id(id: String) -> Result<ConvId, ServiceError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ServiceError::refuse(
            ErrorCode::BadRequest,
            "bad conversation id",
        ));
    }
    Ok(ConvId(id))
}

/// A fresh conversation id: time-ordered and unguessable.
pub fn new_conv_id() -> ConvId {
    use rand::Rng;
    let r: u64 = rand::rng().random();
    ConvId(format!("c_{:x}{:016x}", now_ms(), r))
}

/// A fresh visitor id.
pub fn new_visitor_id() -> VisitorId {
    use rand::Rng;
    let r: u128 = rand::rng().random();
    VisitorId(format!("v_{r:032x}"))
}

/// Cuts a string to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The most bytes of JSON one history page or queue listing carries (less with a small
/// outbound budget): long lists come in parts, never in a frame a budget cannot hold.
const FRAME_LIST_BYTES: usize = 64 * 1024;
