//! The engine: where a site's routing state, conversation logs, timers and site data live, and
//! how bus messages reach every node.
//!
//! The contract is a handful of small capability traits, each with its promises written on
//! it — [`SiteStore`] (atomic site transitions), [`ConvLog`] (exactly-once append, replay,
//! conversation records), [`Timers`], [`SiteData`] (drafts, settings, bans), [`Broker`]
//! (publish and confirmed subscriptions), [`Nodes`] (heartbeats and dead nodes) and
//! [`Outbox`] (what leaves for the archive and other systems of record) — and
//! [`Engine`], which is all of them. Two implementations share it: [`memory::MemoryEngine`] (one
//! node, no other component) and [`redis::RedisEngine`] (any number of nodes on one Redis or a
//! Redis Cluster). The conformance suite in `gateway/tests/it/conformance.rs` runs every case
//! against each.
//!
//! **Errors are infrastructure only.** Business refusals come from the core or as
//! [`AppendRefusal`]; [`EngineError`] means the engine could not be reached, did not answer in
//! time, answered nonsense, or (site transitions) raced.

pub mod memory;
pub mod redis;

use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bus::{BusMsg, Channel};
use crate::core::{
    Activity, ConvId, Millis, NodeId, OperatorId, QueueId, SiteId, SiteState, TimerKind, VisitorId,
};
use crate::outbox::{OutboxEntry, OutboxItem};
use crate::protocol::{Author, ConvState, Conversation, Msg, Role};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// The engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store did not answer within the engine's deadline.
    #[error("the engine did not answer in time")]
    Timeout,
    /// The store cannot be reached, or says it cannot serve now (loading, read-only, a
    /// cluster without a master for the slot).
    #[error("the engine cannot be reached")]
    Connection(#[source] Source),
    /// The store answered something this code cannot read: a bug, or data written by
    /// something else.
    #[error("the engine answered something unexpected: {what}")]
    Protocol {
        what: String,
        #[source]
        source: Option<Source>,
    },
    /// Another transition of the same site committed first; retry on fresh state.
    #[error("concurrent transition; retry")]
    Conflict,
}

impl EngineError {
    /// An answer that cannot be read.
    pub fn protocol(what: impl Into<String>) -> EngineError {
        EngineError::Protocol {
            what: what.into(),
            source: None,
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Timeout => "timeout",
            EngineError::Connection(_) => "connection",
            EngineError::Protocol { .. } => "protocol",
            EngineError::Conflict => "conflict",
        }
    }

    /// Counts the error in `gateway_engine_errors_total{kind}`.
    pub fn count(&self) {
        metrics::counter!(crate::metrics::ENGINE_ERRORS, "kind" => self.kind()).increment(1);
    }
}

/// How long a claimed timer stays claimed before another node may fire it.
pub const TIMER_LEASE_MS: Millis = 30_000;

/// A due timer handed to one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerClaim {
    pub site: SiteId,
    pub kind: TimerKind,
    /// Identifies this claim: finishing it does not remove a timer set again meanwhile.
    pub lease: Millis,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Alive,
    /// Another node declared this life dead and swept its connections (it could not reach
    /// the engine for too long): its clients must reconnect so that they are counted again,
    /// in a new life.
    Evicted,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The site the author belongs to; a conversation of another site is "not found".
    pub site: SiteId,
    pub conv: ConvId,
    pub cid: Option<String>,
    pub from: Author,
    pub text: String,
    pub ts: Millis,
    /// A system message's code and arguments (see `protocol::Msg`).
    pub code: Option<String>,
    pub args: Option<std::collections::BTreeMap<String, String>>,
}

impl NewMessage {
    /// The message as it is stored and delivered, at `seq`.
    pub fn into_msg(self, seq: u64) -> Msg {
        Msg {
            conv: self.conv.0,
            seq,
            from: self.from,
            text: self.text,
            ts: self.ts,
            cid: self.cid,
            code: self.code,
            args: self.args,
        }
    }
}

/// A stored message and what storing it changed.
#[derive(Debug, Clone)]
pub struct Appended {
    pub msg: Msg,
    /// The conversation's state when the message was stored.
    pub conv_state: ConvState,
    /// A visitor message that opened a window of unanswered visitor messages.
    pub started_unanswered: bool,
}

/// The outcome of an append.
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    Stored(Appended),
    /// The `cid` was stored before: this is that message; nothing was published again.
    Duplicate(Msg),
    Refused(AppendRefusal),
}

/// Why an author may not write into a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRefusal {
    NotFound,
    /// The conversation is closed (a visitor then starts a new, linked one).
    Closed,
    /// The author is not a participant who may write.
    Forbidden,
}

/// Who a conversation belongs to, kept beside its log and updated by every transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvMeta {
    pub site: SiteId,
    pub visitor: VisitorId,
    pub operator: Option<OperatorId>,
    pub state: ConvState,
    /// The last snapshot, as staff see it.
    pub snapshot: Conversation,
}

impl ConvMeta {
    pub fn from_snapshot(c: &Conversation) -> ConvMeta {
        ConvMeta {
            site: SiteId(c.site.clone()),
            visitor: VisitorId(c.visitor.id.clone()),
            operator: c.operator.as_ref().map(|o| OperatorId(o.id.clone())),
            state: c.state,
            snapshot: c.clone(),
        }
    }

    /// Whether `author`, of `site`, may append to this conversation now.
    pub fn may_write(&self, site: &SiteId, author: &Author) -> Result<(), AppendRefusal> {
        if &self.site != site {
            return Err(AppendRefusal::NotFound);
        }
        match author.role {
            Role::System => Ok(()),
            // An integration writes into any conversation of its site that is not closed.
            Role::Bot => match self.state {
                ConvState::Closed => Err(AppendRefusal::Closed),
                _ => Ok(()),
            },
            Role::Visitor if self.visitor.0 == author.id => match self.state {
                ConvState::Closed => Err(AppendRefusal::Closed),
                _ => Ok(()),
            },
            // A supervisor writes into a conversation they took over: they are its operator.
            Role::Operator | Role::Supervisor
                if self.operator.as_ref().is_some_and(|o| o.0 == author.id) =>
            {
                match self.state {
                    ConvState::Active => Ok(()),
                    ConvState::Closed => Err(AppendRefusal::Closed),
                    _ => Err(AppendRefusal::Forbidden),
                }
            }
            _ => Err(AppendRefusal::Forbidden),
        }
    }
}

/// What listings show of a conversation beside its state (see [`ConvLog::summaries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub last_seq: u64,
    pub last_visitor: Option<crate::protocol::LastMessage>,
    pub read: crate::protocol::ReadMarks,
}

/// The most bytes of a visitor's last message a summary keeps.
pub const LAST_MESSAGE_MAX: usize = 200;

/// A message's text cut to [`LAST_MESSAGE_MAX`] bytes at a character boundary.
pub fn last_message_text(text: &str) -> &str {
    let mut cut = text.len().min(LAST_MESSAGE_MAX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// Messages after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Every message after the cursor, in `seq` order (maybe none).
    Recovered(Vec<Msg>),
    /// The log no longer holds all of them; the client reloads with `history`.
    Lost,
}

/// One page of history, newest last.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub messages: Vec<Msg>,
    /// No older message exists (or is retained).
    pub complete: bool,
}

/// A site's state checked out for one transition.
pub trait SiteTx: Send {
    fn state(&mut self) -> &mut SiteState;
    /// Stores the state, sets (`Some(at)`) or cancels (`None`) the given timers of the site,
    /// and adds `outbox` entries to the site's outbox, in the same atomic step, if nobody
    /// committed since `begin`; else [`EngineError::Conflict`] and nothing is stored.
    fn commit(
        &mut self,
        timers: &[(TimerKind, Option<Millis>)],
        outbox: &[OutboxEntry],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// A site's routing state.
///
/// **Site transitions are atomic.** [`SiteStore::begin`] hands out the site's state;
/// [`SiteTx::commit`] stores it, with the site's timer changes, only if nobody committed in
/// between, else returns [`EngineError::Conflict`] and the caller runs the pure transition
/// again on fresh state. Two racing accepts of one conversation therefore have exactly one
/// winner, and a committed transition never loses its timers. A transaction dropped before
/// its commit leaves no trace.
pub trait SiteStore: Send + Sync + 'static {
    type Tx: SiteTx;

    /// Checks a site's state out for a transition.
    fn begin(&self, site: &SiteId) -> impl Future<Output = Result<Self::Tx, EngineError>> + Send;

    /// The sites this node serves now (sites come and go at runtime): the engine's per-site
    /// work — timers, the outbox, what is reloaded after the bus reconnects — goes over
    /// them. An engine that finds its sites by itself ignores it.
    fn serve_sites(&self, sites: Vec<SiteId>) {
        let _ = sites;
    }
}

/// Conversation logs and records.
///
/// - **Append is exactly-once by `cid`.** [`ConvLog::append`] checks that the author may write
///   (and that the conversation belongs to the message's site), drops a `cid` the same author
///   used before (returning the stored message), assigns the next `seq` (1, 2, 3, … with no
///   gap), stores the message and publishes it on the conversation's channel, all as one
///   step: publish order equals `seq` order. It returns only after the message is stored.
/// - **Replay is all or nothing.** [`ConvLog::replay`] returns every message after a cursor,
///   or [`Replay::Lost`] when the capped log no longer reaches back that far.
/// - **Conversation records never go back in time.** [`ConvLog::put_meta`] carries the site
///   version of the transition that produced it and is ignored when a later one was stored:
///   nodes carry out effects concurrently, so they may arrive out of order.
pub trait ConvLog: Send + Sync + 'static {
    fn append(
        &self,
        msg: NewMessage,
    ) -> impl Future<Output = Result<AppendOutcome, EngineError>> + Send;

    fn replay(
        &self,
        conv: &ConvId,
        after: u64,
    ) -> impl Future<Output = Result<Replay, EngineError>> + Send;

    /// Up to `limit` messages before `before` (or the newest), oldest first.
    fn history(
        &self,
        conv: &ConvId,
        before: Option<u64>,
        limit: usize,
    ) -> impl Future<Output = Result<HistoryPage, EngineError>> + Send;

    fn last_seq(&self, conv: &ConvId) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// `last_seq` of several conversations at once, in order.
    fn last_seqs(
        &self,
        convs: &[ConvId],
    ) -> impl Future<Output = Result<Vec<u64>, EngineError>> + Send {
        async move {
            let mut out = Vec::with_capacity(convs.len());
            for c in convs {
                out.push(self.last_seq(c).await?);
            }
            Ok(out)
        }
    }

    fn meta(
        &self,
        conv: &ConvId,
    ) -> impl Future<Output = Result<Option<ConvMeta>, EngineError>> + Send;

    /// Records who a conversation belongs to (creates its log on first use), unless a record
    /// from a later site `version` is already stored.
    fn put_meta(
        &self,
        conv: &ConvId,
        meta: ConvMeta,
        version: u64,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Records that one side of a conversation (`visitor`, else its staff) has read up to
    /// `seq`; a lower `seq` than recorded changes nothing.
    fn set_read(
        &self,
        conv: &ConvId,
        visitor: bool,
        seq: u64,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// What listings show of conversations beside their state, in order: last `seq`, the
    /// visitor's last message (shortened by `append`), how far each side has read.
    fn summaries(
        &self,
        convs: &[ConvId],
    ) -> impl Future<Output = Result<Vec<Summary>, EngineError>> + Send;

    /// What the log holds after `after`, up to `max` messages, in `seq` order (not all or
    /// nothing: what it still holds).
    fn read_log(
        &self,
        conv: &ConvId,
        after: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Msg>, EngineError>> + Send;

    /// The archive holds the conversation's messages up to `seq`: the log may let them go
    /// (with an archive, a log keeps every message not yet archived, whatever its cap); with
    /// `closed`, the conversation is archived whole and its keys may expire.
    fn mark_archived(
        &self,
        conv: &ConvId,
        seq: u64,
        closed: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The conversation's message activity (kept by `append`).
    fn activity(&self, conv: &ConvId)
        -> impl Future<Output = Result<Activity, EngineError>> + Send;

    /// The newest conversation a visitor started on a site.
    fn visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
    ) -> impl Future<Output = Result<Option<ConvId>, EngineError>> + Send;

    fn set_visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        conv: &ConvId,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Erasure: forgets a visitor's (closed) conversations — their logs, metadata and
    /// dedup sets — and which conversation was their latest.
    fn forget_visitor(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        convs: &[ConvId],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}

/// Timers of every site.
///
/// **Timers fire once.** [`Timers::due_timers`] claims due timers atomically: a timer is
/// handed to exactly one caller, on any node. A claim not finished ([`Timers::finish_timer`])
/// within [`TIMER_LEASE_MS`] (its claimer died) is handed out again; the core's timer handlers
/// are idempotent, so a timer takes effect once.
pub trait Timers: Send + Sync + 'static {
    /// Sets (or moves) a timer. With `only_if_absent`, an existing timer is kept as it is.
    fn set_timer(
        &self,
        site: &SiteId,
        kind: &TimerKind,
        at: Millis,
        only_if_absent: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    fn cancel_timer(
        &self,
        site: &SiteId,
        kind: &TimerKind,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Claims up to `limit` timers due at `now`; each is handed out once (again only when its
    /// lease ran out unfinished).
    fn due_timers(
        &self,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TimerClaim>, EngineError>> + Send;

    /// Removes a fired timer, unless it was set again since it was claimed.
    fn finish_timer(
        &self,
        claim: &TimerClaim,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The earliest pending deadline.
    fn next_timer(&self) -> impl Future<Output = Result<Option<Millis>, EngineError>> + Send;
}

/// What a site keeps beside its routing state: operators' drafts, settings changed at
/// runtime, bans. Every node reads what any node wrote.
pub trait SiteData: Send + Sync + 'static {
    /// Saves (`Some`) or clears (`None`) an operator's draft of a conversation.
    fn set_draft(
        &self,
        site: &SiteId,
        op: &OperatorId,
        conv: &ConvId,
        text: Option<String>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    fn drafts(
        &self,
        site: &SiteId,
        op: &OperatorId,
    ) -> impl Future<Output = Result<Vec<(ConvId, String)>, EngineError>> + Send;

    /// Stores a site's settings (as their JSON form) for every node.
    fn save_settings(
        &self,
        site: &SiteId,
        settings: &Value,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    fn load_settings(
        &self,
        site: &SiteId,
    ) -> impl Future<Output = Result<Option<Value>, EngineError>> + Send;

    /// Bans a visitor of a site until `until` (Unix ms), or lifts the ban (`None`). A ban
    /// ends by itself when its time comes.
    fn set_ban(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        until: Option<Millis>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Until when a visitor is banned, if they are now.
    fn banned_until(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        now: Millis,
    ) -> impl Future<Output = Result<Option<Millis>, EngineError>> + Send;

    /// Claims the site-wide slot of one queue's listing for `ms`: `true` when this node may
    /// publish the listing now, `false` when another node did within the slot (try again
    /// after it). One slot per queue for all nodes, so operators get a queue's listing at
    /// most once per slot however many nodes change it.
    fn claim_listing(
        &self,
        site: &SiteId,
        queue: &QueueId,
        ms: u64,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
}

/// Messages between nodes.
///
/// **Subscriptions are confirmed.** [`Broker::wait_subscribed`] returns once the node receives
/// what is published on the given channels from then on.
pub trait Broker: Send + Sync + 'static {
    /// Publishes to every node's subscribers of `ch` (this node's included).
    fn publish(
        &self,
        ch: &Channel,
        msg: BusMsg,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Waits until this node receives what is published on `channels` (their local listeners
    /// were added to the hub before the call).
    fn wait_subscribed(
        &self,
        channels: &[Channel],
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = channels;
        async { Ok(()) }
    }
}

/// The nodes sharing the engine.
///
/// **Dead nodes are found.** [`Nodes::heartbeat`] proves this node alive; [`Nodes::dead_nodes`]
/// names nodes that stopped proving it, each to be swept ([`crate::core::Command::NodeGone`]
/// on every site) and then forgotten ([`Nodes::forget_node`]).
pub trait Nodes: Send + Sync + 'static {
    /// Whether the engine answers (readiness).
    fn ping(&self) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Proves a node life alive for the engine's node timeout (registering it first).
    fn heartbeat(
        &self,
        life: &NodeId,
    ) -> impl Future<Output = Result<Heartbeat, EngineError>> + Send {
        let _ = life;
        async { Ok(Heartbeat::Alive) }
    }

    /// Node lives that stopped proving they are alive (never `me`), whose connections must
    /// be swept.
    fn dead_nodes(
        &self,
        me: &NodeId,
    ) -> impl Future<Output = Result<Vec<NodeId>, EngineError>> + Send {
        let _ = me;
        async { Ok(Vec::new()) }
    }

    /// A dead node was swept on every site.
    fn forget_node(&self, node: &NodeId) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = node;
        async { Ok(()) }
    }

    /// The node stopped, after it left: an engine that holds its state in this process keeps
    /// it for the next start (the in-memory engine's snapshot).
    fn stopped(&self) -> impl Future<Output = Result<(), EngineError>> + Send {
        async { Ok(()) }
    }
}

/// The outbox of every site: what must reach the archive (and other systems of record)
/// leaves the live path through it.
///
/// **Nothing committed is lost.** Entries written with a transition are stored with it
/// (`SiteTx::commit`); [`Outbox::claim_outbox`] hands each entry to one consumer of a group at
/// a time, and again when that consumer did not acknowledge it within
/// its lease (it died); each group reads every entry.
pub trait Outbox: Send + Sync + 'static {
    /// Adds entries to a site's outbox outside a transition (notes of stored messages).
    fn push_outbox(
        &self,
        site: &SiteId,
        entries: &[OutboxEntry],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Claims up to `max` entries `group` has not acknowledged, for `consumer`: new ones, and
    /// ones claimed more than `lease` ago and not acknowledged (their consumer died).
    fn claim_outbox(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        lease: Millis,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, EngineError>> + Send;

    /// Acknowledges entries `group` is done with.
    fn ack_outbox(
        &self,
        group: &str,
        items: &[OutboxItem],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Lets go of entries every group has acknowledged; how many went.
    fn trim_outbox(&self) -> impl Future<Output = Result<u64, EngineError>> + Send;
}

/// Every capability: what the gateway runs on.
pub trait Engine: SiteStore + ConvLog + Timers + SiteData + Broker + Nodes + Outbox {}

impl<T: SiteStore + ConvLog + Timers + SiteData + Broker + Nodes + Outbox> Engine for T {}
