//! The gateway's use cases, generic over the engine: run a core transition atomically, then
//! carry out its effects; authorise every conversation a frame names; store and route messages.
//!
//! The WebSocket and HTTP edges call only this; the core decides, the engine stores and
//! publishes, and this module is the glue that is the same for every engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::auth::{Auth, Principal};
use crate::clock::now_ms;
use crate::config::{Config, SiteConfig};
use crate::core::settings::SettingsErrors;
use crate::core::{
    self, Actor, Availability, Command, ConnId, ConvId, Ctx, Effect, NodeId, OperatorId,
    Participant, QueueId, Reject, Reply, Settings, SiteId, TimerKind, VisitorId, VisitorProfile,
};
use crate::engine::{
    AppendOutcome, AppendRefusal, ConvMeta, Engine, EngineError, HistoryPage, NewMessage, Replay,
    SiteTx,
};
use crate::hub::{Audience, BusMsg, Channel, ConnRef, Control, Hub, Outbound};
use crate::metrics as m;
use crate::protocol::{
    Author, ClientSettings, ConvEvent, ConvState, Conversation, ErrorCode, Msg, OperatorStatus,
    Preview, Role, ServerFrame, TransferTarget,
};

/// Why a request failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}", .0.message)]
    Rejected(Reject),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ServiceError {
    fn refuse(code: ErrorCode, message: &'static str) -> ServiceError {
        ServiceError::Rejected(Reject { code, message })
    }

    /// The error code and message for the client; engine details stay in the log.
    pub fn client_error(&self) -> (ErrorCode, &'static str) {
        match self {
            ServiceError::Rejected(r) => (r.code, r.message),
            ServiceError::Engine(_) => (ErrorCode::Unavailable, "temporarily unavailable; retry"),
        }
    }
}

impl From<Reject> for ServiceError {
    fn from(r: Reject) -> Self {
        ServiceError::Rejected(r)
    }
}

/// A configured site and its live settings.
pub struct Site {
    pub config: SiteConfig,
    settings: RwLock<Arc<Settings>>,
    /// The widget's availability as last computed here. Every page with the widget polls it;
    /// reading the site's state for each poll would take its lock (and ask Redis) as often as
    /// pages load, in the way of the transitions that matter.
    availability: tokio::sync::Mutex<Option<CachedAvailability>>,
    /// Bumped by every change this node makes to the site (a transition, new settings), so
    /// that its own changes show at once; other nodes' show within [`AVAILABILITY_TTL`].
    generation: AtomicU64,
}

#[derive(Clone, Copy)]
struct CachedAvailability {
    at: std::time::Instant,
    generation: u64,
    value: Availability,
}

/// The most bytes of JSON one history page or queue listing carries (less with a small
/// outbound budget): long lists come in parts, never in a frame a budget cannot hold.
const FRAME_LIST_BYTES: usize = 64 * 1024;

/// How often the conversation gauges are read from the sites' state.
pub const CENSUS_INTERVAL: Duration = Duration::from_secs(5);

/// How long a node answers availability from what it last computed.
pub const AVAILABILITY_TTL: Duration = Duration::from_secs(1);

impl Site {
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    fn set_settings(&self, new: Arc<Settings>) {
        *self.settings.write() = new;
        self.changed();
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// What a connection may do with a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// History, typing, read receipts, watch.
    Read,
    /// Lifecycle requests (close, tag, transfer …).
    Manage,
    /// Taking or declining (accept, decline): any conversation of the site; the core says
    /// whether it is `taken`.
    Route,
}

pub struct Gateway<E: Engine> {
    pub engine: E,
    pub hub: Arc<Hub>,
    pub auth: Auth,
    pub cfg: Config,
    pub node: NodeId,
    sites: HashMap<SiteId, Site>,
    by_key: HashMap<String, SiteId>,
    next_conn: AtomicU64,
    listings: Listings,
    retries: Retries,
    draining: AtomicBool,
    /// The node's current life, under which its connections are counted in the sites'
    /// presence and its heartbeat is written: `<node>~<random>`. A new life begins when the
    /// others declared this one dead (it was cut off): what the old life counted is swept,
    /// and nothing late from the old life can touch what the new one counts.
    life: parking_lot::RwLock<NodeId>,
}

/// A fresh life id for a node.
fn new_life(node: &NodeId) -> NodeId {
    use rand::Rng;
    NodeId(format!("{node}~{:08x}", rand::rng().random::<u32>()))
}

const HISTORY_MAX: usize = 200;
/// How long a ban lasts when the request does not say, and at most.
const BAN_DEFAULT: Duration = Duration::from_secs(24 * 3600);
const BAN_MAX: Duration = Duration::from_secs(365 * 24 * 3600);
const PREVIEW_MAX: usize = 200;
const DRAFT_MAX: usize = 8000;

impl<E: Engine> Gateway<E> {
    pub fn new(engine: E, hub: Arc<Hub>, auth: Auth, cfg: Config, node: NodeId) -> Gateway<E> {
        hub.set_node(node.clone());
        let mut sites = HashMap::new();
        let mut by_key = HashMap::new();
        for s in &cfg.sites {
            by_key.insert(s.widget_key.clone(), s.id.clone());
            sites.insert(
                s.id.clone(),
                Site {
                    settings: RwLock::new(Arc::new(s.settings.clone())),
                    config: s.clone(),
                    availability: tokio::sync::Mutex::new(None),
                    generation: AtomicU64::new(0),
                },
            );
        }
        Gateway {
            engine,
            hub,
            auth,
            cfg,
            sites,
            by_key,
            next_conn: AtomicU64::new(1),
            listings: Listings::default(),
            retries: Retries::default(),
            draining: AtomicBool::new(false),
            life: parking_lot::RwLock::new(new_life(&node)),
            node,
        }
    }

    pub fn site(&self, id: &SiteId) -> Option<&Site> {
        self.sites.get(id)
    }

    pub fn site_by_key(&self, key: &str) -> Option<&Site> {
        self.by_key.get(key).and_then(|id| self.sites.get(id))
    }

    pub fn sites(&self) -> impl Iterator<Item = &Site> {
        self.sites.values()
    }

    pub fn next_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

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

    /// The node's current life (see [`Gateway::life`]'s field).
    pub fn life(&self) -> NodeId {
        self.life.read().clone()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(m::DRAINING).set(1.0);
    }

    fn site_or_refuse(&self, id: &SiteId) -> Result<&Site, ServiceError> {
        self.sites
            .get(id)
            .ok_or(ServiceError::refuse(ErrorCode::NotFound, "no such site"))
    }

    // ----- transitions -----

    /// Runs one command through the core atomically and carries out its effects.
    pub async fn apply(&self, site: &SiteId, cmd: Command) -> Result<Reply, ServiceError> {
        let s = self.site_or_refuse(site)?;
        loop {
            let mut tx = self.engine.begin(site).await?;
            let settings = s.settings();
            let ctx = Ctx {
                settings: &settings,
                queues: &s.config.queues,
                now: now_ms(),
            };
            let (reply, effects) = core::handle(tx.state(), ctx, cmd.clone())?;
            debug_assert!(core::check_invariants(tx.state(), &settings).is_ok());
            let (timers, effects) = split_timers(effects);
            let touched = tx.state().is_touched();
            match tx.commit(&timers).await {
                Ok(()) => {
                    if touched {
                        s.changed();
                    }
                    // Carried out while the transaction is held, so that on this node the
                    // effects of one site leave in commit order.
                    let version = tx.state().version;
                    self.execute(site, version, effects).await;
                    drop(tx);
                    return Ok(reply);
                }
                Err(EngineError::Conflict) => {
                    metrics::counter!(m::TX_CONFLICTS).increment(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Carries out a committed transition's effects in order. One that fails (the engine
    /// hiccuped) is retried in the background: the state moved, and a lost conversation
    /// record or membership would leave the conversation stuck.
    async fn execute(&self, site: &SiteId, version: u64, effects: Vec<Effect>) {
        // System messages get a cid unique to this transition, so a retry stores them once.
        let salt: u32 = {
            use rand::Rng;
            rand::rng().random()
        };
        for (i, e) in effects.into_iter().enumerate() {
            let cid =
                matches!(e, Effect::System { .. }).then(|| format!("sys.{version}.{salt:x}.{i}"));
            if let Err(err) = self
                .execute_one(site, version, e.clone(), cid.clone())
                .await
            {
                metrics::counter!(m::ENGINE_ERRORS).increment(1);
                tracing::warn!(site = %site, error = %err, "effect not carried out yet; retrying");
                self.retries.push(Retry {
                    site: site.clone(),
                    version,
                    effect: e,
                    cid,
                    attempts: 0,
                });
            }
        }
    }

    /// Retries effects that failed, with backoff, for about two minutes each.
    pub async fn run_retries(self: Arc<Self>) {
        loop {
            let batch = self.retries.wait().await;
            let mut failed = Vec::new();
            for mut r in batch {
                match self
                    .execute_one(&r.site, r.version, r.effect.clone(), r.cid.clone())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if r.attempts >= RETRY_ATTEMPTS => {
                        tracing::error!(site = %r.site, error = %e, effect = ?r.effect, "effect given up");
                    }
                    Err(_) => {
                        r.attempts += 1;
                        failed.push(r);
                    }
                }
            }
            let any = !failed.is_empty();
            for r in failed {
                self.retries.push(r);
            }
            if any {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn execute_one(
        &self,
        site: &SiteId,
        version: u64,
        e: Effect,
        cid: Option<String>,
    ) -> Result<(), EngineError> {
        match e {
            Effect::Conv {
                event,
                mut conv,
                reason,
            } => {
                let id = ConvId(conv.id.clone());
                conv.last_seq = self.engine.last_seq(&id).await?;
                if matches!(event, ConvEvent::Queued | ConvEvent::Reopened) && conv.last_seq == 0 {
                    self.engine
                        .set_visitor_latest(site, &VisitorId(conv.visitor.id.clone()), &id)
                        .await?;
                }
                self.engine
                    .put_meta(&id, ConvMeta::from_snapshot(&conv), version)
                    .await?;
                self.publish_conv(&id, event, &conv, reason).await
            }
            Effect::Queue { queue } => {
                self.listings.mark(site, queue);
                Ok(())
            }
            Effect::Operator {
                id,
                name,
                status,
                online,
                load,
            } => {
                let frame = ServerFrame::Operator {
                    id: id.0,
                    name,
                    status,
                    online,
                    load,
                };
                self.engine
                    .publish(
                        &Channel::Staff(site.clone()),
                        BusMsg::frame(Audience::Staff, frame),
                    )
                    .await
            }
            Effect::Offer {
                op,
                mut conv,
                expires_at,
            } => {
                conv.last_seq = self.engine.last_seq(&ConvId(conv.id.clone())).await?;
                let frame = ServerFrame::Offer { conv, expires_at };
                self.engine
                    .publish(
                        &user_channel(site, Role::Operator, &op.0),
                        BusMsg::frame(Audience::All, frame),
                    )
                    .await
            }
            Effect::Attach { conv, who, update } => {
                let after_seq = self.engine.last_seq(&conv).await?;
                let frame = update.map(|u| self.member_frame(&who, u, after_seq));
                let (role, id) = participant(&who);
                self.engine
                    .publish(
                        &user_channel(site, role, id),
                        BusMsg::Attach {
                            conv,
                            frame,
                            after_seq,
                        },
                    )
                    .await
            }
            Effect::Detach { conv, who, update } => {
                let last_seq = match update {
                    Some(_) => self.engine.last_seq(&conv).await?,
                    None => 0,
                };
                let frame = update.map(|u| self.member_frame(&who, u, last_seq));
                let (role, id) = participant(&who);
                self.engine
                    .publish(
                        &user_channel(site, role, id),
                        BusMsg::Detach { conv, frame },
                    )
                    .await
            }
            Effect::System { conv, text } => {
                let out = self
                    .engine
                    .append(NewMessage {
                        site: site.clone(),
                        conv,
                        cid,
                        from: system_author(),
                        text,
                        ts: now_ms(),
                    })
                    .await?;
                if let AppendOutcome::Refused(r) = out {
                    tracing::warn!(?r, "system message refused");
                }
                Ok(())
            }
            Effect::Notice { conv, code, text } => {
                let frame = ServerFrame::Notice {
                    conv: Some(conv.0.clone()),
                    code: code.to_owned(),
                    text,
                };
                self.engine
                    .publish(
                        &Channel::Conv(conv),
                        BusMsg::frame(Audience::Visitors, frame),
                    )
                    .await
            }
            // Committed with the state (see `apply`).
            Effect::SetTimer { .. } | Effect::CancelTimer { .. } => Ok(()),
        }
    }

    /// The `conv` frame a joining or leaving participant receives directly.
    fn member_frame(&self, who: &Participant, u: core::ConvUpdate, last_seq: u64) -> Arc<Outbound> {
        let mut conv = *u.conv;
        conv.last_seq = last_seq;
        if matches!(who, Participant::Visitor(_)) {
            conv = self.for_visitor(conv);
        }
        Outbound::new(ServerFrame::Conv {
            event: u.event,
            conv: Box::new(conv),
            reason: u.reason.map(|r| r.to_string()),
        })
    }

    /// Fills `last_seq` of listed conversations with one engine round trip.
    async fn fill_last_seqs(&self, convs: &mut [Conversation]) -> Result<(), EngineError> {
        if convs.is_empty() {
            return Ok(());
        }
        let ids: Vec<ConvId> = convs.iter().map(|c| ConvId(c.id.clone())).collect();
        let seqs = self.engine.last_seqs(&ids).await?;
        for (c, seq) in convs.iter_mut().zip(seqs) {
            c.last_seq = seq;
        }
        Ok(())
    }

    /// Publishes a `conv` event: the full snapshot to staff, a trimmed one to the visitor.
    async fn publish_conv(
        &self,
        id: &ConvId,
        event: ConvEvent,
        conv: &Conversation,
        reason: Option<core::Reason>,
    ) -> Result<(), EngineError> {
        let reason = reason.map(|r| r.to_string());
        let ch = Channel::Conv(id.clone());
        let staff = ServerFrame::Conv {
            event,
            conv: Box::new(conv.clone()),
            reason: reason.clone(),
        };
        self.engine
            .publish(&ch, BusMsg::frame(Audience::Staff, staff))
            .await?;
        let visitor = ServerFrame::Conv {
            event,
            conv: Box::new(self.for_visitor(conv.clone())),
            reason,
        };
        self.engine
            .publish(&ch, BusMsg::frame(Audience::Visitors, visitor))
            .await
    }

    /// What a visitor may see of their own conversation.
    pub fn for_visitor(&self, mut c: Conversation) -> Conversation {
        c.visitor.preview = None;
        c.visitor.params.clear();
        c.visitor.email = None;
        c.visitor.phone = None;
        c.draft = None;
        let show = self
            .site(&SiteId(c.site.clone()))
            .map(|s| s.settings().show_operator_name)
            .unwrap_or(true);
        if !show {
            if let Some(o) = &mut c.operator {
                o.name = String::new();
            }
        }
        c
    }

    // ----- presence -----

    /// Counts a new connection of `p` in its site's presence; returns the node life it was
    /// counted under, which its disconnect must name.
    pub async fn connected(&self, p: &Principal) -> Result<Option<NodeId>, ServiceError> {
        let life = self.life();
        let cmd = match p.role {
            Role::Operator => Command::OperatorConnected {
                op: OperatorId(p.id.clone()),
                node: life.clone(),
                name: p.name.clone().unwrap_or_else(|| p.id.clone()),
                max_chats: p.max_chats,
                queues: p.queues.clone(),
            },
            Role::Visitor => Command::VisitorConnected {
                visitor: VisitorId(p.id.clone()),
                node: life.clone(),
            },
            _ => return Ok(None),
        };
        self.apply(&p.site, cmd).await?;
        Ok(Some(life))
    }

    /// Takes a connection counted under `life` out of its site's presence, retrying in the
    /// background until the engine takes it: a disconnect that is never recorded would leave
    /// the user online for good.
    pub async fn disconnected(self: &Arc<Self>, p: &Principal, life: NodeId) {
        let cmd = match p.role {
            Role::Operator => Command::OperatorDisconnected {
                op: OperatorId(p.id.clone()),
                node: life,
            },
            Role::Visitor => Command::VisitorDisconnected {
                visitor: VisitorId(p.id.clone()),
                node: life,
            },
            _ => return,
        };
        if let Err(e) = self.apply(&p.site, cmd.clone()).await {
            tracing::warn!(error = %e, "disconnect not recorded yet; retrying");
            let gw = self.clone();
            let site = p.site.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(200);
                loop {
                    tokio::time::sleep(pause).await;
                    match gw.apply(&site, cmd.clone()).await {
                        Ok(_) | Err(ServiceError::Rejected(_)) => return,
                        Err(_) => pause = (pause * 2).min(Duration::from_secs(5)),
                    }
                }
            });
        }
    }

    // ----- session -----

    /// The settings a client sees in `welcome`.
    pub fn client_settings(&self, p: &Principal) -> ClientSettings {
        let site = self
            .site(&p.site)
            .expect("principal's site was checked at hello");
        let s = site.settings();
        ClientSettings {
            routing: s.routing.as_str().to_owned(),
            widget_when_away: match s.widget_when_away {
                core::settings::WhenAway::Busy => "busy".into(),
                core::settings::WhenAway::Offline => "offline".into(),
            },
            show_operator_name: s.show_operator_name,
            ping_interval_ms: self.cfg.ping_interval.as_millis() as u64,
            unavailable_text: s.unavailable_text.clone(),
            queues: site.config.queues.iter().map(|q| q.0.clone()).collect(),
            canned: if p.role.is_staff() {
                s.canned.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The conversations a connection attaches to at `hello`.
    ///
    /// Only the ones a connection attaches to live are listed first (`.0`): a visitor's own,
    /// an operator's held ones. An operator's pending offers (`.1`) are shown in `welcome`
    /// without a live attachment: the offer may go elsewhere, and another operator's chat is
    /// not theirs to follow; each comes with its deadline, which `welcome` does not carry.
    pub async fn own_conversations(
        &self,
        p: &Principal,
    ) -> Result<(Vec<ConvId>, Vec<(ConvId, core::Millis)>), ServiceError> {
        match p.role {
            Role::Visitor => {
                let latest = self
                    .engine
                    .visitor_latest(&p.site, &VisitorId(p.id.clone()))
                    .await?;
                let mut out = Vec::new();
                if let Some(c) = latest {
                    if let Some(meta) = self.engine.meta(&c).await? {
                        if meta.state != ConvState::Closed {
                            out.push(c);
                        }
                    }
                }
                Ok((out, Vec::new()))
            }
            Role::Operator => {
                let mut tx = self.engine.begin(&p.site).await?;
                let op = OperatorId(p.id.clone());
                let st = tx.state();
                Ok(match st.operators.get(&op) {
                    Some(o) => (
                        o.convs.iter().cloned().collect(),
                        o.offers
                            .iter()
                            .filter_map(|id| {
                                let expires = st.convs.get(id)?.offer_expires?;
                                Some((id.clone(), expires))
                            })
                            .collect(),
                    ),
                    None => (Vec::new(), Vec::new()),
                })
            }
            _ => Ok((Vec::new(), Vec::new())),
        }
    }

    /// A conversation as this principal may see it, with `last_seq` and, for operators, draft.
    pub async fn snapshot_for(
        &self,
        p: &Principal,
        meta: &ConvMeta,
        drafts: &BTreeMap<ConvId, String>,
    ) -> Result<Conversation, ServiceError> {
        let id = ConvId(meta.snapshot.id.clone());
        let mut c = meta.snapshot.clone();
        c.last_seq = self.engine.last_seq(&id).await?;
        if p.role == Role::Visitor {
            c = self.for_visitor(c);
        } else {
            c.draft = drafts.get(&id).cloned();
        }
        Ok(c)
    }

    pub async fn drafts_of(&self, p: &Principal) -> Result<BTreeMap<ConvId, String>, ServiceError> {
        if p.role != Role::Operator {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .engine
            .drafts(&p.site, &OperatorId(p.id.clone()))
            .await?
            .into_iter()
            .collect())
    }

    /// The queue listings and operator list a staff connection starts from.
    pub async fn staff_snapshot(&self, p: &Principal) -> Result<Vec<ServerFrame>, ServiceError> {
        let site = self.site_or_refuse(&p.site)?;
        let settings = site.settings();
        let (mut queues, ops) = {
            let mut tx = self.engine.begin(&p.site).await?;
            let st = tx.state();
            let queues: Vec<(QueueId, Vec<Conversation>, usize)> = site
                .config
                .queues
                .iter()
                .filter(|q| {
                    p.role == Role::Supervisor || p.queues.as_ref().is_none_or(|qs| qs.contains(q))
                })
                .map(|q| {
                    let (w, n) = core::waiting(st, q);
                    (q.clone(), w, n)
                })
                .collect();
            let ops: Vec<ServerFrame> = st
                .operators
                .iter()
                .map(|(id, o)| ServerFrame::Operator {
                    id: id.0.clone(),
                    name: o.name.clone(),
                    status: o.status,
                    online: o.conns.is_online(),
                    load: o.convs.len() as u32,
                })
                .collect();
            (queues, ops)
        };
        let _ = settings;
        let mut frames = Vec::new();
        for (q, waiting, count) in &mut queues {
            self.fit_listing(waiting);
            self.fill_last_seqs(waiting).await?;
            frames.push(ServerFrame::Queue {
                queue: q.0.clone(),
                waiting: std::mem::take(waiting),
                count: Some(*count as u64),
            });
        }
        frames.extend(ops);
        Ok(frames)
    }

    pub async fn replay(&self, conv: &ConvId, after: u64) -> Result<Replay, ServiceError> {
        Ok(self.engine.replay(conv, after).await?)
    }

    // ----- authorisation -----

    /// Checks that `p` may touch `conv`: visitors only their own, staff only their site's.
    pub async fn authorize(
        &self,
        p: &Principal,
        conv: &str,
        access: Access,
    ) -> Result<ConvMeta, ServiceError> {
        if conv.is_empty() || conv.len() > 128 {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "bad conversation id",
            ));
        }
        let id = ConvId(conv.to_owned());
        let meta = self.engine.meta(&id).await?.ok_or(ServiceError::refuse(
            ErrorCode::NotFound,
            "no such conversation",
        ))?;
        // The same answer for another site's conversation as for a missing one: ids do not leak.
        if meta.site != p.site {
            return Err(ServiceError::refuse(
                ErrorCode::NotFound,
                "no such conversation",
            ));
        }
        let holder = meta.operator.as_ref().is_some_and(|o| o.0 == p.id);
        let ok = match p.role {
            Role::Visitor => meta.visitor.0 == p.id,
            // Operators read what they hold and what waits for someone to take it; another
            // operator's live chat is for supervisors (`watch`). A closed conversation is
            // readable by whoever held it, and by an operator now talking to that visitor
            // (its history comes with the conversation that continues it).
            Role::Operator => match (access, meta.state) {
                (Access::Route, _) => true,
                (_, ConvState::Queued | ConvState::Offered) => true,
                (_, ConvState::Active) => holder,
                (Access::Manage, ConvState::Closed) => true,
                (Access::Read, ConvState::Closed) => {
                    holder || self.talks_to(p, &meta.visitor).await?
                }
            },
            Role::Supervisor => true,
            Role::System => false,
        };
        if !ok {
            return Err(ServiceError::refuse(
                if p.role == Role::Visitor {
                    ErrorCode::NotFound
                } else {
                    ErrorCode::Forbidden
                },
                if p.role == Role::Visitor {
                    "no such conversation"
                } else {
                    "not your conversation"
                },
            ));
        }
        Ok(meta)
    }

    /// Whether the operator holds, or is offered, a conversation with this visitor now.
    async fn talks_to(&self, p: &Principal, visitor: &VisitorId) -> Result<bool, ServiceError> {
        let mut tx = self.engine.begin(&p.site).await?;
        let st = tx.state();
        Ok(st
            .operators
            .get(&OperatorId(p.id.clone()))
            .is_some_and(|o| {
                o.convs
                    .iter()
                    .chain(o.offers.iter())
                    .any(|c| st.convs.get(c).is_some_and(|c| &c.visitor == visitor))
            }))
    }

    // ----- visitor -----

    pub async fn start(
        &self,
        p: &Principal,
        queue: Option<String>,
        mut profile: VisitorProfile,
        previous: Option<ConvId>,
    ) -> Result<Conversation, ServiceError> {
        if p.role != Role::Visitor {
            return Err(ServiceError::refuse(
                ErrorCode::Forbidden,
                "only visitors start conversations",
            ));
        }
        if profile.name.is_none() {
            profile.name = p.name.clone();
        }
        let previous = match previous {
            Some(prev) => Some(prev),
            None => {
                let latest = self
                    .engine
                    .visitor_latest(&p.site, &VisitorId(p.id.clone()))
                    .await?;
                match latest {
                    Some(c) => match self.engine.meta(&c).await? {
                        Some(m) if m.state == ConvState::Closed => Some(c),
                        _ => None,
                    },
                    None => None,
                }
            }
        };
        let reply = self
            .apply(
                &p.site,
                Command::Start {
                    visitor: VisitorId(p.id.clone()),
                    node: self.life(),
                    conv: new_conv_id(),
                    queue: queue.map(QueueId),
                    profile: Box::new(profile),
                    previous,
                },
            )
            .await?;
        match reply {
            Reply::Conv(c) => {
                let mut c = self.for_visitor(*c);
                c.last_seq = self.engine.last_seq(&ConvId(c.id.clone())).await?;
                Ok(c)
            }
            _ => Err(ServiceError::refuse(
                ErrorCode::Conflict,
                "conversation not started",
            )),
        }
    }

    /// Stores a message from `p`. A visitor writing into their closed conversation gets a new
    /// conversation linked to it; the returned message says where it went.
    ///
    /// The append itself authorises the author (site, participant, state), so a message costs
    /// one engine round trip.
    pub async fn send(
        &self,
        p: &Principal,
        conv: &str,
        cid: String,
        text: String,
    ) -> Result<Msg, ServiceError> {
        if cid.is_empty() || cid.chars().count() > crate::protocol::MAX_CID_LEN {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "cid must be 1 to 64 characters",
            ));
        }
        if text.trim().is_empty() {
            return Err(ServiceError::refuse(ErrorCode::BadRequest, "empty message"));
        }
        if text.len() > self.cfg.max_text {
            return Err(ServiceError::refuse(
                ErrorCode::TooLarge,
                "message too long",
            ));
        }
        if conv.is_empty() || conv.len() > 128 {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "bad conversation id",
            ));
        }
        let author = self.author(p);
        let mut target = ConvId(conv.to_owned());
        let mut reopened = false;
        loop {
            let out = self
                .engine
                .append(NewMessage {
                    site: p.site.clone(),
                    conv: target.clone(),
                    cid: Some(cid.clone()),
                    from: author.clone(),
                    text: text.clone(),
                    ts: now_ms(),
                })
                .await?;
            match out {
                AppendOutcome::Duplicate(m) => return Ok(m),
                AppendOutcome::Stored(a) => {
                    metrics::counter!(m::MESSAGES, "role" => p.role.as_str()).increment(1);
                    if p.role == Role::Visitor {
                        self.after_visitor_message(&p.site, &target, &a).await;
                    }
                    return Ok(a.msg);
                }
                AppendOutcome::Refused(AppendRefusal::Closed)
                    if p.role == Role::Visitor && !reopened =>
                {
                    // A retry of the same cid may already sit in the visitor's new conversation.
                    if let Some(latest) = self
                        .engine
                        .visitor_latest(&p.site, &VisitorId(p.id.clone()))
                        .await?
                    {
                        if latest != target {
                            if let Some(m) = self.engine.meta(&latest).await? {
                                if m.state != ConvState::Closed
                                    && m.snapshot.previous.as_deref() == Some(target.as_str())
                                {
                                    target = latest;
                                    reopened = true;
                                    continue;
                                }
                            }
                        }
                    }
                    let meta = self.authorize(p, target.as_str(), Access::Read).await?;
                    let old = &meta.snapshot;
                    let profile = VisitorProfile {
                        name: old.visitor.name.clone(),
                        email: old.visitor.email.clone(),
                        phone: old.visitor.phone.clone(),
                        params: old.visitor.params.clone(),
                        preview: old.visitor.preview.clone(),
                    };
                    let c = self
                        .start(p, Some(old.queue.clone()), profile, Some(target.clone()))
                        .await?;
                    target = ConvId(c.id);
                    reopened = true;
                }
                AppendOutcome::Refused(AppendRefusal::Closed) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::Conflict,
                        "conversation is closed",
                    ))
                }
                AppendOutcome::Refused(AppendRefusal::NotFound) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::NotFound,
                        "no such conversation",
                    ))
                }
                AppendOutcome::Refused(AppendRefusal::Forbidden) => {
                    return Err(ServiceError::refuse(
                        if p.role == Role::Visitor {
                            ErrorCode::NotFound
                        } else {
                            ErrorCode::Forbidden
                        },
                        if p.role == Role::Visitor {
                            "no such conversation"
                        } else {
                            "you do not hold this conversation"
                        },
                    ))
                }
            }
        }
    }

    async fn after_visitor_message(
        &self,
        site: &SiteId,
        conv: &ConvId,
        a: &crate::engine::Appended,
    ) {
        if a.conv_state != ConvState::Active {
            if let Err(e) = self
                .apply(site, Command::VisitorWrote { conv: conv.clone() })
                .await
            {
                tracing::warn!(error = %e, "unavailability check failed");
            }
        } else if a.started_unanswered {
            let Some(s) = self.site(site) else { return };
            if let Some(d) = s.settings().reassign_after {
                let at = a.msg.ts + d.as_millis() as u64;
                if let Err(e) = self
                    .engine
                    .set_timer(site, &TimerKind::Reassign(conv.clone()), at, true)
                    .await
                {
                    tracing::warn!(error = %e, "reassign timer not set");
                }
            }
        }
    }

    pub async fn history(
        &self,
        p: &Principal,
        conv: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ServiceError> {
        self.authorize(p, conv, Access::Read).await?;
        let limit = (limit.unwrap_or(50) as usize).clamp(1, HISTORY_MAX);
        let mut page = self
            .engine
            .history(&ConvId(conv.to_owned()), before, limit)
            .await?;
        // The answer is one frame: a page keeps the newest messages that fit, at least one,
        // and says it is not complete, so the client asks for the rest.
        let keep = self.fitting(page.messages.iter().rev()).max(1);
        if keep < page.messages.len() {
            page.messages.drain(..page.messages.len() - keep);
            page.complete = false;
        }
        Ok(page)
    }

    /// Tells the others in the conversation that `p` is typing (not the connection `from`,
    /// whose action it is).
    pub async fn typing(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &str,
        on: bool,
        preview: Option<String>,
    ) -> Result<(), ServiceError> {
        let meta = self.authorize(p, conv, Access::Read).await?;
        if p.role == Role::Operator && meta.operator.as_ref().is_none_or(|o| o.0 != p.id) {
            return Err(ServiceError::refuse(
                ErrorCode::Forbidden,
                "you do not hold this conversation",
            ));
        }
        let from = self.author(p);
        let ch = Channel::Conv(ConvId(conv.to_owned()));
        let preview = preview.map(|t| truncate(t, PREVIEW_MAX)).filter(|_| on);
        if p.role == Role::Visitor && preview.is_some() {
            // The sneak peek reaches staff only.
            let staff = ServerFrame::Typing {
                conv: conv.to_owned(),
                from: from.clone(),
                on,
                preview,
            };
            self.engine
                .publish(
                    &ch,
                    BusMsg::frame_except(Audience::Staff, staff, from_conn.clone()),
                )
                .await?;
            let plain = ServerFrame::Typing {
                conv: conv.to_owned(),
                from,
                on,
                preview: None,
            };
            self.engine
                .publish(
                    &ch,
                    BusMsg::frame_except(Audience::Visitors, plain, from_conn),
                )
                .await?;
        } else {
            let frame = ServerFrame::Typing {
                conv: conv.to_owned(),
                from,
                on,
                preview: None,
            };
            self.engine
                .publish(&ch, BusMsg::frame_except(Audience::All, frame, from_conn))
                .await?;
        }
        Ok(())
    }

    /// Tells the others in the conversation what `p` has read up to.
    pub async fn read(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &str,
        seq: u64,
    ) -> Result<(), ServiceError> {
        self.authorize(p, conv, Access::Read).await?;
        let frame = ServerFrame::Read {
            conv: conv.to_owned(),
            by: Author {
                role: p.role,
                id: p.id.clone(),
                name: None,
            },
            seq,
        };
        self.engine
            .publish(
                &Channel::Conv(ConvId(conv.to_owned())),
                BusMsg::frame_except(Audience::All, frame, from_conn),
            )
            .await?;
        Ok(())
    }

    /// How a principal appears as the author of messages and typing: operators without their
    /// name when the site hides operator names.
    fn author(&self, p: &Principal) -> Author {
        let hide = p.role == Role::Operator
            && self
                .site(&p.site)
                .is_some_and(|s| !s.settings().show_operator_name);
        Author {
            role: p.role,
            id: p.id.clone(),
            name: if hide { None } else { p.name.clone() },
        }
    }

    /// The unavailability notice for a visitor whose message could not be stored (the
    /// engine is down), when the site sends one.
    pub fn unavailable_notice(&self, p: &Principal, conv: &str) -> Option<ServerFrame> {
        if p.role != Role::Visitor {
            return None;
        }
        let s = self.site(&p.site)?.settings();
        s.notify_unavailable.then(|| ServerFrame::Notice {
            conv: Some(conv.to_owned()),
            code: "unavailable".into(),
            text: s.unavailable_text.clone(),
        })
    }

    // ----- staff -----

    fn require_staff(p: &Principal) -> Result<(), ServiceError> {
        if p.role.is_staff() {
            Ok(())
        } else {
            Err(ServiceError::refuse(ErrorCode::Forbidden, "staff only"))
        }
    }

    pub async fn status(
        &self,
        p: &Principal,
        status: OperatorStatus,
    ) -> Result<OperatorStatus, ServiceError> {
        if p.role != Role::Operator {
            return Err(ServiceError::refuse(ErrorCode::Forbidden, "operators only"));
        }
        match self
            .apply(
                &p.site,
                Command::SetStatus {
                    op: OperatorId(p.id.clone()),
                    status,
                },
            )
            .await?
        {
            Reply::Status(s) => Ok(s),
            _ => Ok(status),
        }
    }

    pub async fn accept(&self, p: &Principal, conv: &str) -> Result<Conversation, ServiceError> {
        if p.role != Role::Operator {
            return Err(ServiceError::refuse(ErrorCode::Forbidden, "operators only"));
        }
        self.authorize(p, conv, Access::Route).await?;
        let reply = self
            .apply(
                &p.site,
                Command::Accept {
                    op: OperatorId(p.id.clone()),
                    conv: ConvId(conv.to_owned()),
                },
            )
            .await?;
        self.reply_conv(reply).await
    }

    /// Declines an offer, gives back a held conversation, or passes on a queued one; answers
    /// with the conversation as it is afterwards.
    pub async fn decline(&self, p: &Principal, conv: &str) -> Result<Conversation, ServiceError> {
        if p.role != Role::Operator {
            return Err(ServiceError::refuse(ErrorCode::Forbidden, "operators only"));
        }
        self.authorize(p, conv, Access::Route).await?;
        let reply = self
            .apply(
                &p.site,
                Command::Decline {
                    op: OperatorId(p.id.clone()),
                    conv: ConvId(conv.to_owned()),
                },
            )
            .await?;
        self.reply_conv(reply).await
    }

    pub async fn transfer(
        &self,
        p: &Principal,
        conv: &str,
        to: TransferTarget,
        note: Option<String>,
    ) -> Result<Conversation, ServiceError> {
        Self::require_staff(p)?;
        self.authorize(p, conv, Access::Manage).await?;
        let reply = self
            .apply(
                &p.site,
                Command::Transfer {
                    by: actor(p),
                    conv: ConvId(conv.to_owned()),
                    to,
                    note: note.map(|n| truncate(n, 500)),
                },
            )
            .await?;
        self.reply_conv(reply).await
    }

    pub async fn assign(
        &self,
        p: &Principal,
        conv: &str,
        operator: String,
    ) -> Result<Conversation, ServiceError> {
        if p.role != Role::Supervisor {
            return Err(ServiceError::refuse(
                ErrorCode::Forbidden,
                "supervisors only",
            ));
        }
        self.authorize(p, conv, Access::Manage).await?;
        let reply = self
            .apply(
                &p.site,
                Command::Assign {
                    conv: ConvId(conv.to_owned()),
                    op: OperatorId(operator),
                },
            )
            .await?;
        self.reply_conv(reply).await
    }

    pub async fn tag(
        &self,
        p: &Principal,
        conv: &str,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Conversation, ServiceError> {
        Self::require_staff(p)?;
        self.authorize(p, conv, Access::Manage).await?;
        let reply = self
            .apply(
                &p.site,
                Command::Tag {
                    conv: ConvId(conv.to_owned()),
                    add,
                    remove,
                },
            )
            .await?;
        self.reply_conv(reply).await
    }

    /// New contact details or parameters from a visitor for their open conversation (`conv`,
    /// or their newest one); the staff see them at once (`conv` `updated`, reason `visitor`).
    pub async fn identify(
        &self,
        p: &Principal,
        conv: Option<&str>,
        [name, email, phone]: [Option<String>; 3],
        params: BTreeMap<String, String>,
    ) -> Result<Conversation, ServiceError> {
        if p.role != Role::Visitor {
            return Err(ServiceError::refuse(
                ErrorCode::Forbidden,
                "only visitors identify themselves",
            ));
        }
        let conv = match conv {
            Some(c) => ConvId(self.authorize(p, c, Access::Read).await?.snapshot.id),
            None => self
                .engine
                .visitor_latest(&p.site, &VisitorId(p.id.clone()))
                .await?
                .ok_or_else(|| ServiceError::refuse(ErrorCode::NotFound, "no open conversation"))?,
        };
        let reply = self
            .apply(
                &p.site,
                Command::Identify {
                    visitor: VisitorId(p.id.clone()),
                    conv,
                    name,
                    email,
                    phone,
                    params,
                },
            )
            .await?;
        let c = self.reply_conv(reply).await?;
        Ok(self.for_visitor(c))
    }

    pub async fn close(
        &self,
        p: &Principal,
        conv: &str,
        outcome: Option<String>,
        tags: Vec<String>,
    ) -> Result<Option<Conversation>, ServiceError> {
        let meta = self.authorize(p, conv, Access::Manage).await?;
        let mut closed = if meta.state == ConvState::Closed {
            // Closing twice is a no-op, answered with the final snapshot.
            meta.snapshot
        } else {
            let reply = self
                .apply(
                    &p.site,
                    Command::Close {
                        by: actor(p),
                        conv: ConvId(conv.to_owned()),
                        outcome: outcome.map(core::Outcome::from),
                        tags,
                    },
                )
                .await?;
            match reply {
                Reply::Conv(c) => *c,
                _ => return Ok(None),
            }
        };
        closed.last_seq = self.engine.last_seq(&ConvId(conv.to_owned())).await?;
        Ok(Some(if p.role == Role::Visitor {
            self.for_visitor(closed)
        } else {
            closed
        }))
    }

    /// Saves an operator's draft and echoes it to their other connections.
    pub async fn draft(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &str,
        text: String,
    ) -> Result<(), ServiceError> {
        if p.role != Role::Operator {
            return Err(ServiceError::refuse(ErrorCode::Forbidden, "operators only"));
        }
        if text.len() > DRAFT_MAX {
            return Err(ServiceError::refuse(ErrorCode::TooLarge, "draft too long"));
        }
        self.authorize(p, conv, Access::Read).await?;
        let id = ConvId(conv.to_owned());
        let op = OperatorId(p.id.clone());
        let stored = if text.is_empty() {
            None
        } else {
            Some(text.clone())
        };
        self.engine.set_draft(&p.site, &op, &id, stored).await?;
        let frame = ServerFrame::Draft {
            conv: conv.to_owned(),
            text,
        };
        self.engine
            .publish(
                &user_channel(&p.site, Role::Operator, &p.id),
                BusMsg::frame_except(Audience::All, frame, from_conn),
            )
            .await?;
        Ok(())
    }

    /// Bans the visitor of a conversation: they cannot connect (4003) until the ban ends,
    /// their open conversation ends (outcome `banned`), and the connections they have are
    /// closed now, on every node. Returns the visitor and the end of the ban.
    pub async fn ban(
        &self,
        p: &Principal,
        conv: &str,
        duration: Option<String>,
        reason: Option<String>,
    ) -> Result<(VisitorId, u64), ServiceError> {
        Self::require_staff(p)?;
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
        tracing::info!(site = %p.site, visitor = %visitor, by = %p.id, until, reason = reason.as_deref().unwrap_or(""), "visitor banned");
        if meta.state != ConvState::Closed {
            // The staff member's right to do it was checked above.
            let closed = self
                .apply(
                    &p.site,
                    Command::Close {
                        by: Actor::System,
                        conv: ConvId(conv.to_owned()),
                        outcome: Some(core::Outcome::Banned),
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
                BusMsg::Close(crate::protocol::CloseReason::Forbidden),
            )
            .await?;
        Ok((visitor, until))
    }

    /// Lifts a visitor's ban (supervisors).
    pub async fn unban(&self, p: &Principal, visitor: &str) -> Result<(), ServiceError> {
        if p.role != Role::Supervisor {
            return Err(ServiceError::refuse(
                ErrorCode::Forbidden,
                "supervisors only",
            ));
        }
        if visitor.is_empty() || visitor.len() > 256 {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "bad visitor id",
            ));
        }
        self.engine
            .set_ban(&p.site, &VisitorId(visitor.to_owned()), None)
            .await?;
        Ok(())
    }

    /// Whether a visitor is banned from a site now (an engine that cannot answer does not
    /// stop them here: whatever they do next needs the engine anyway).
    pub async fn is_banned(&self, site: &SiteId, visitor: &str) -> bool {
        self.engine
            .banned_until(site, &VisitorId(visitor.to_owned()), now_ms())
            .await
            .ok()
            .flatten()
            .is_some()
    }

    async fn reply_conv(&self, reply: Reply) -> Result<Conversation, ServiceError> {
        match reply {
            Reply::Conv(mut c) => {
                c.last_seq = self.engine.last_seq(&ConvId(c.id.clone())).await?;
                Ok(*c)
            }
            _ => Err(ServiceError::refuse(
                ErrorCode::Conflict,
                "no conversation in reply",
            )),
        }
    }

    // ----- sites -----

    /// The site's availability for the widget: computed at most once per
    /// [`AVAILABILITY_TTL`] per node (and again after this node changed the site), however
    /// many pages ask; concurrent askers wait for one computation.
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
        let s = self.sites.get(site).ok_or(SettingsUpdateError::NoSite)?;
        let new = s
            .settings()
            .patched(patch, self.cfg.bounds)
            .map_err(SettingsUpdateError::Invalid)?;
        self.engine
            .save_settings(site, &new.to_json())
            .await
            .map_err(|e| SettingsUpdateError::Service(e.into()))?;
        let new = Arc::new(new);
        s.set_settings(new.clone());
        // Every other node reloads them; a node that misses the message (its bus connection
        // was down) reloads every site's settings when it resubscribes.
        if let Err(e) = self
            .engine
            .publish(&Channel::Nodes, BusMsg::Settings(site.clone()))
            .await
        {
            tracing::warn!(site = %site, error = %e, "settings change not announced");
        }
        self.apply(site, Command::SettingsChanged)
            .await
            .map_err(SettingsUpdateError::Service)?;
        Ok(new)
    }

    /// Loads settings stored by any node (at start, and when told they changed).
    pub async fn reload_settings(&self, site: &SiteId) -> Result<(), ServiceError> {
        let Some(s) = self.sites.get(site) else {
            return Ok(());
        };
        if let Some(v) = self.engine.load_settings(site).await? {
            if let Some(obj) = v.as_object() {
                match s.config.settings.patched(obj, self.cfg.bounds) {
                    Ok(new) => s.set_settings(Arc::new(new)),
                    Err(e) => tracing::warn!(site = %site, error = %e, "stored settings rejected"),
                }
            }
        }
        Ok(())
    }

    // ----- timers -----

    /// Fires due timers until the process ends. Any node may run this; claims are atomic.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let now = now_ms();
            let mut failed = false;
            match self.engine.due_timers(now, 256).await {
                Ok(due) => {
                    for claim in due {
                        if self.fire(&claim.site, claim.kind.clone()).await {
                            if let Err(e) = self.engine.finish_timer(&claim).await {
                                tracing::warn!(error = %e, "fired timer not finished");
                            }
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::debug!(error = %e, "timer poll failed");
                }
            }
            let wait = if failed {
                1000
            } else {
                let next = self.engine.next_timer().await.ok().flatten();
                next.map(|t| t.saturating_sub(now_ms()))
                    .unwrap_or(250)
                    .clamp(5, 250)
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Runs a due timer's transition; `false` when it could not (the claim then lapses and
    /// the timer fires again, here or on another node).
    async fn fire(&self, site: &SiteId, kind: TimerKind) -> bool {
        let label = match &kind {
            TimerKind::Offer(_) => "offer",
            TimerKind::Reassign(_) => "reassign",
            TimerKind::Inactive(_) => "inactive",
            TimerKind::Callback(_) => "callback",
            TimerKind::VisitorGrace(_) => "visitor_grace",
            TimerKind::OperatorGrace(_) => "operator_grace",
        };
        let activity = match &kind {
            TimerKind::Reassign(c) | TimerKind::Inactive(c) => {
                // Without the real activity an inactivity timer would close a live chat.
                match self.engine.activity(c).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(site = %site, ?kind, error = %e, "timer postponed");
                        return false;
                    }
                }
            }
            _ => Default::default(),
        };
        match self
            .apply(
                site,
                Command::Timer {
                    kind: kind.clone(),
                    activity,
                },
            )
            .await
        {
            Ok(_) => {
                metrics::counter!(m::TIMERS_FIRED, "kind" => label).increment(1);
                true
            }
            Err(ServiceError::Rejected(r)) => {
                tracing::warn!(site = %site, ?kind, reason = r.message, "timer refused");
                true
            }
            Err(e) => {
                tracing::warn!(site = %site, ?kind, error = %e, "timer transition failed");
                false
            }
        }
    }

    // ----- nodes -----

    /// Proves this node alive every `interval` and sweeps nodes that stopped doing so: their
    /// connections are taken away on every site (`NodeGone`), which starts the grace windows
    /// of whoever was connected only there. A node that learns it was swept itself (it could
    /// not reach the engine for too long) closes its clients with 1012 so that they reconnect
    /// and are counted again.
    pub async fn run_presence(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let life = self.life();
            match self.engine.heartbeat(&life).await {
                Ok(crate::engine::Heartbeat::Alive) => {}
                Ok(crate::engine::Heartbeat::Evicted) => {
                    // The others swept this life while it was cut off: its clients are no
                    // longer counted anywhere. They reconnect (here or elsewhere) and are
                    // counted in a new life; late disconnects of the old one touch nothing.
                    let next = new_life(&self.node);
                    tracing::warn!(old = %life, new = %next, "this node was declared dead while cut off; reconnecting its clients");
                    *self.life.write() = next;
                    for c in self.hub.all() {
                        c.close(crate::protocol::CloseReason::Restarting);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed");
                    continue;
                }
            }
            let dead = match self.engine.dead_nodes(&life).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "dead node scan failed");
                    continue;
                }
            };
            for node in dead {
                if self.sweep(&node).await {
                    metrics::counter!(m::NODES_SWEPT).increment(1);
                    if let Err(e) = self.engine.forget_node(&node).await {
                        tracing::warn!(node = %node, error = %e, "swept node not forgotten");
                    }
                }
            }
        }
    }

    /// Keeps the conversation gauges current, every [`CENSUS_INTERVAL`]. A task of its own:
    /// reading a site's state waits for its lock, and the heartbeat must never wait for that.
    pub async fn run_census(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CENSUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.export_census().await;
        }
    }

    /// Sets the conversation gauges from every site's state as this node reads it now.
    async fn export_census(&self) {
        let mut total = core::Census::default();
        for site in self.sites.keys() {
            match self.engine.begin(site).await {
                Ok(mut tx) => total += core::census(tx.state()),
                // The engine is down: keep the last known numbers.
                Err(_) => return,
            }
        }
        metrics::gauge!(m::CONVERSATIONS, "state" => "queued").set(total.queued as f64);
        metrics::gauge!(m::CONVERSATIONS, "state" => "offered").set(total.offered as f64);
        metrics::gauge!(m::CONVERSATIONS, "state" => "active").set(total.active as f64);
    }

    /// Takes a dead node's connections away on every site; `false` if some site failed (the
    /// node stays dead and is swept again; `NodeGone` is idempotent).
    pub async fn sweep(&self, node: &NodeId) -> bool {
        tracing::info!(node = %node, "sweeping a dead node");
        let sites: Vec<SiteId> = self.sites.keys().cloned().collect();
        let mut ok = true;
        for site in sites {
            if let Err(e) = self
                .apply(&site, Command::NodeGone { node: node.clone() })
                .await
            {
                tracing::warn!(site = %site, node = %node, error = %e, "sweep failed");
                ok = false;
            }
        }
        ok
    }

    /// Publishes the waiting lists of changed queues: at once after a quiet spell, then at
    /// most once per [`LISTING_INTERVAL`] while changes keep coming.
    pub async fn run_listings(self: Arc<Self>) {
        loop {
            self.listings.changed.notified().await;
            for (site, queue) in self.listings.take() {
                if let Err(e) = self.publish_listing(&site, &queue).await {
                    tracing::warn!(site = %site, queue = %queue, error = %e, "queue listing not published");
                    // Try again with the next round.
                    self.listings.mark(&site, queue);
                }
            }
            tokio::time::sleep(LISTING_INTERVAL).await;
        }
    }

    /// Cuts a queue's waiting list (longest waiting first) to what fits in one frame:
    /// visitors' previews and parameters make a listing of a hundred conversations
    /// megabytes. `count` still says how many wait.
    fn fit_listing(&self, waiting: &mut Vec<Conversation>) {
        let keep = self.fitting(waiting.iter());
        waiting.truncate(keep);
    }

    /// How many of `items`, in order, fit in one frame the gateway builds from a list
    /// (a history page, a queue listing): [`FRAME_LIST_BYTES`] of JSON, or a quarter of the
    /// outbound budget if less. A frame larger than the asker's budget would close it
    /// with 4008.
    fn fitting<'a, T: serde::Serialize + 'a>(&self, items: impl Iterator<Item = &'a T>) -> usize {
        let cap = (self.cfg.outbound_max_bytes / 4).min(FRAME_LIST_BYTES);
        let mut bytes = 0;
        items
            .take_while(|item| {
                bytes += serde_json::to_vec(item).map_or(0, |v| v.len());
                bytes <= cap
            })
            .count()
    }

    async fn publish_listing(&self, site: &SiteId, queue: &QueueId) -> Result<(), ServiceError> {
        let (mut waiting, count) = {
            let mut tx = self.engine.begin(site).await?;
            core::waiting(tx.state(), queue)
        };
        self.fit_listing(&mut waiting);
        self.fill_last_seqs(&mut waiting).await?;
        let frame = ServerFrame::Queue {
            queue: queue.0.clone(),
            waiting,
            count: Some(count as u64),
        };
        self.engine
            .publish(
                &Channel::Staff(site.clone()),
                BusMsg::frame(Audience::Queue(queue.clone()), frame),
            )
            .await?;
        Ok(())
    }

    /// Reloads a site's settings whenever any node says they changed.
    pub async fn run_control(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Control>,
    ) {
        while let Some(c) = rx.recv().await {
            match c {
                Control::SettingsChanged(site) => {
                    if let Err(e) = self.reload_settings(&site).await {
                        tracing::warn!(site = %site, error = %e, "settings not reloaded");
                    }
                }
            }
        }
    }
}

/// A transition's timer changes, the last one per timer (so sets and cancels are disjoint),
/// and its other effects.
fn split_timers(effects: Vec<Effect>) -> (Vec<(TimerKind, Option<core::Millis>)>, Vec<Effect>) {
    let mut timers: Vec<(TimerKind, Option<core::Millis>)> = Vec::new();
    let mut rest = Vec::with_capacity(effects.len());
    for e in effects {
        let (kind, at) = match e {
            Effect::SetTimer { kind, at } => (kind, Some(at)),
            Effect::CancelTimer { kind } => (kind, None),
            other => {
                rest.push(other);
                continue;
            }
        };
        timers.retain(|(k, _)| k != &kind);
        timers.push((kind, at));
    }
    (timers, rest)
}

/// An effect to carry out again.
struct Retry {
    site: SiteId,
    version: u64,
    effect: Effect,
    cid: Option<String>,
    attempts: u32,
}

/// How many times a failed effect is retried (about two minutes with the pauses).
const RETRY_ATTEMPTS: u32 = 240;

/// Effects waiting to be carried out again.
///
/// Not capped: an entry is an effect of a transition that *was* committed (the engine said
/// yes, then failed on what followed), so it grows only with what was committed just before
/// an outage, and each entry leaves after [`RETRY_ATTEMPTS`]. Dropping one instead would
/// leave a user without an event their state already says they got.
#[derive(Default)]
struct Retries {
    queue: parking_lot::Mutex<Vec<Retry>>,
    ready: tokio::sync::Notify,
}

impl Retries {
    fn push(&self, r: Retry) {
        self.queue.lock().push(r);
        self.ready.notify_one();
    }

    async fn wait(&self) -> Vec<Retry> {
        loop {
            let batch = std::mem::take(&mut *self.queue.lock());
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }
}

/// Queues whose waiting list changed and has not been published since.
///
/// A burst of new conversations changes a queue many times a second; each staff connection
/// gets the listing at most once per [`LISTING_INTERVAL`] per queue, with the state as it is
/// when it leaves (never an older list after a newer one from the same node).
#[derive(Default)]
struct Listings {
    dirty: parking_lot::Mutex<std::collections::BTreeSet<(SiteId, QueueId)>>,
    changed: tokio::sync::Notify,
}

/// The shortest time between two listings of one queue from one node.
pub const LISTING_INTERVAL: Duration = Duration::from_millis(250);

impl Listings {
    fn mark(&self, site: &SiteId, queue: QueueId) {
        self.dirty.lock().insert((site.clone(), queue));
        self.changed.notify_one();
    }

    fn take(&self) -> std::collections::BTreeSet<(SiteId, QueueId)> {
        std::mem::take(&mut *self.dirty.lock())
    }
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

pub fn user_channel(site: &SiteId, role: Role, id: &str) -> Channel {
    Channel::User(site.clone(), role, id.to_owned())
}

fn participant(p: &Participant) -> (Role, &str) {
    match p {
        Participant::Visitor(v) => (Role::Visitor, v.as_str()),
        Participant::Operator(o) => (Role::Operator, o.as_str()),
    }
}

fn actor(p: &Principal) -> Actor {
    match p.role {
        Role::Visitor => Actor::Visitor(VisitorId(p.id.clone())),
        Role::Operator => Actor::Operator(OperatorId(p.id.clone())),
        Role::Supervisor => Actor::Supervisor(core::SupervisorId(p.id.clone())),
        Role::System => Actor::System,
    }
}

fn system_author() -> Author {
    Author {
        role: Role::System,
        id: "system".into(),
        name: None,
    }
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

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Builds the operator-facing preview from what the browser sent at the upgrade.
pub fn preview_from(
    user_agent: Option<&str>,
    language: Option<&str>,
    country: Option<String>,
    page_url: &str,
    referrer: &str,
) -> Preview {
    let parser = woothee::parser::Parser::new();
    let (browser, os, device) = match user_agent.and_then(|ua| parser.parse(ua)) {
        Some(r) => (
            format!("{} {}", r.name, r.version).trim().to_owned(),
            r.os.to_owned(),
            r.category.to_owned(),
        ),
        None => ("unknown".into(), "unknown".into(), "unknown".into()),
    };
    Preview {
        browser,
        os,
        device,
        page_url: page_url.to_owned(),
        referrer: referrer.to_owned(),
        country,
        language: language
            .and_then(|l| l.split(',').next())
            .map(|l| l.split(';').next().unwrap_or(l).trim().to_owned())
            .filter(|l| !l.is_empty()),
    }
}
