//! The embedded in-memory engine: one node, no other component (`cargo run` just works).
//!
//! A site's state sits behind an async mutex that a transition holds until its effects are
//! published, so effects of one site leave in commit order. A conversation's log sits behind a
//! short synchronous lock that covers dedup, `seq`, store and publish: publish order is `seq`
//! order. Publishing is a direct call into the node's hub ([`Local`]).
//!
//! Closed conversations keep their log for `retention`, then are dropped with their dedup set
//! (with an archive: once it holds them). The outbox is an in-process queue (`outbox.rs`).

mod outbox;
mod snapshot;

pub use snapshot::{Kept, SnapshotError};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{
    AppendOutcome, Appended, Broker, ConvLog, ConvMeta, EngineError, HistoryPage, NewMessage,
    Nodes, Outbox, Replay, SiteData, SiteStore, SiteTx, Summary, TimerClaim, Timers,
    TIMER_LEASE_MS,
};
use crate::bus::{Audience, BusMsg, Channel, Local};
use crate::core::{
    Activity, ConvId, Millis, NodeId, OperatorId, QueueId, SiteId, SiteState, TimerKind, VisitorId,
};
use crate::outbox::{OutboxEntry, OutboxItem};
use crate::protocol::{ConvState, Msg, Role, ServerFrame};

/// Tunables of the in-memory engine.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Messages kept per conversation (older ones are trimmed, like a capped stream).
    pub max_log: usize,
    /// How long a closed conversation's log is kept (after it was archived, with an
    /// archive).
    pub retention: Duration,
    /// Whether an archive reads the outbox: a log then keeps every message not yet archived,
    /// whatever its cap.
    pub archive: bool,
    /// Where the state is written when the node stops and read back when it starts.
    pub keep_state: Option<std::path::PathBuf>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_log: 1000,
            retention: Duration::from_secs(24 * 3600),
            archive: false,
            keep_state: None,
        }
    }
}

/// Cloning gives another handle to the same store (as a second node would see it).
#[derive(Clone)]
pub struct MemoryEngine(Arc<Store>);

impl std::ops::Deref for MemoryEngine {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.0
    }
}

pub struct Store {
    /// The node's local connections: publishing is delivering to them.
    local: Arc<dyn Local>,
    cfg: MemoryConfig,
    sites: DashMap<SiteId, Arc<AsyncMutex<SiteState>>>,
    logs: DashMap<ConvId, Arc<Mutex<Log>>>,
    latest: DashMap<(SiteId, VisitorId), ConvId>,
    timers: Mutex<TimerSet>,
    drafts: DashMap<(SiteId, OperatorId), BTreeMap<ConvId, String>>,
    settings: DashMap<SiteId, Value>,
    bans: DashMap<(SiteId, VisitorId), Millis>,
    /// Closed conversations in closing order, for retention.
    closed: Mutex<VecDeque<(Millis, ConvId)>>,
    outbox: Mutex<outbox::MemOutbox>,
    /// Woken when entries arrive, so that the archiver does not poll.
    outbox_ready: tokio::sync::Notify,
    /// Node lives a restored state counted connections on, to be swept.
    orphans: Mutex<BTreeSet<NodeId>>,
}

#[derive(Default, Clone, Serialize, Deserialize)]
struct Log {
    meta: Option<ConvMeta>,
    /// Site version of the transition that wrote `meta`.
    meta_version: u64,
    /// `seq` of `messages[0]`.
    first_seq: u64,
    messages: VecDeque<Msg>,
    cids: HashMap<String, u64>,
    activity: Activity,
    /// The archive holds the messages up to here.
    archived: u64,
    last_visitor: Option<crate::protocol::LastMessage>,
    read: crate::protocol::ReadMarks,
    /// Listed in `closed` (for retention).
    #[serde(default)]
    retained: bool,
}

impl Log {
    fn last_seq(&self) -> u64 {
        self.first_seq + self.messages.len() as u64 - 1
    }

    /// The last stored `seq`, 0 when none was.
    fn last_seq_or_zero(&self) -> u64 {
        if self.messages.is_empty() {
            self.first_seq.saturating_sub(1)
        } else {
            self.last_seq()
        }
    }
}

#[derive(Default)]
struct TimerSet {
    by_deadline: BTreeSet<(Millis, SiteId, TimerKind)>,
    by_key: HashMap<(SiteId, TimerKind), Millis>,
}

impl MemoryEngine {
    pub fn new(local: Arc<dyn Local>, cfg: MemoryConfig) -> MemoryEngine {
        let groups: &[&str] = if cfg.archive {
            &[crate::outbox::ARCHIVE_GROUP]
        } else {
            &[]
        };
        MemoryEngine(Arc::new(Store {
            local,
            cfg,
            sites: DashMap::new(),
            logs: DashMap::new(),
            latest: DashMap::new(),
            timers: Mutex::new(TimerSet::default()),
            drafts: DashMap::new(),
            settings: DashMap::new(),
            bans: DashMap::new(),
            closed: Mutex::new(VecDeque::new()),
            outbox: Mutex::new(outbox::MemOutbox::new(groups)),
            outbox_ready: tokio::sync::Notify::new(),
            orphans: Mutex::new(BTreeSet::new()),
        }))
    }

    fn log(&self, conv: &ConvId) -> Option<Arc<Mutex<Log>>> {
        self.logs.get(conv).map(|l| l.clone())
    }

    fn put_timer(&self, site: &SiteId, kind: &TimerKind, at: Millis, only_if_absent: bool) {
        let mut t = self.timers.lock();
        let key = (site.clone(), kind.clone());
        if let Some(old) = t.by_key.get(&key).copied() {
            if only_if_absent {
                return;
            }
            t.by_deadline.remove(&(old, site.clone(), kind.clone()));
        }
        t.by_key.insert(key, at);
        t.by_deadline.insert((at, site.clone(), kind.clone()));
    }

    fn drop_timer(&self, site: &SiteId, kind: &TimerKind) {
        let mut t = self.timers.lock();
        if let Some(at) = t.by_key.remove(&(site.clone(), kind.clone())) {
            t.by_deadline.remove(&(at, site.clone(), kind.clone()));
        }
    }

    /// Drops logs of conversations closed longer than the retention ago.
    fn purge(&self, now: Millis) {
        let horizon = now.saturating_sub(self.cfg.retention.as_millis() as u64);
        let mut closed = self.closed.lock();
        while closed.front().is_some_and(|(t, _)| *t < horizon) {
            let (_, conv) = closed.pop_front().expect("front exists");
            if let Some((_, log)) = self.logs.remove(&conv) {
                if let Some(meta) = &log.lock().meta {
                    self.latest
                        .remove_if(&(meta.site.clone(), meta.visitor.clone()), |_, c| {
                            c == &conv
                        });
                }
            }
        }
    }
}

/// What a `cid` is unique within: its author.
fn cid_key(from: &crate::protocol::Author, cid: &str) -> String {
    format!("{}:{}:{cid}", from.role.as_str(), from.id)
}

/// A site's state under its lock.
pub struct MemoryTx {
    guard: OwnedMutexGuard<SiteState>,
    store: MemoryEngine,
}

impl SiteTx for MemoryTx {
    fn state(&mut self) -> &mut SiteState {
        &mut self.guard
    }

    async fn commit(
        &mut self,
        timers: &[(TimerKind, Option<Millis>)],
        outbox: &[OutboxEntry],
    ) -> Result<(), EngineError> {
        // The lock is held from begin to drop: nobody can have committed in between, and
        // there is nothing to write but the state itself, its timers and its outbox entries.
        self.guard.clear_touched();
        let site = self.guard.site.clone();
        for (kind, at) in timers {
            match at {
                Some(at) => self.store.put_timer(&site, kind, *at, false),
                None => self.store.drop_timer(&site, kind),
            }
        }
        if !outbox.is_empty() {
            self.store.outbox.lock().push(&site, outbox);
            self.store.outbox_ready.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for MemoryTx {
    /// A transition dropped before its commit leaves no trace.
    fn drop(&mut self) {
        self.guard.rollback();
    }
}

impl SiteStore for MemoryEngine {
    type Tx = MemoryTx;

    async fn begin(&self, site: &SiteId) -> Result<MemoryTx, EngineError> {
        let lock = self
            .sites
            .entry(site.clone())
            .or_insert_with(|| Arc::new(AsyncMutex::new(SiteState::new(site.clone()))))
            .clone();
        let guard = lock.lock_owned().await;
        Ok(MemoryTx {
            guard,
            store: self.clone(),
        })
    }
}

impl ConvLog for MemoryEngine {
    async fn append(&self, m: NewMessage) -> Result<AppendOutcome, EngineError> {
        use super::AppendRefusal as R;
        let Some(log) = self.log(&m.conv) else {
            return Ok(AppendOutcome::Refused(R::NotFound));
        };
        let mut log = log.lock();
        let Some(meta) = &log.meta else {
            return Ok(AppendOutcome::Refused(R::NotFound));
        };
        if meta.site != m.site {
            return Ok(AppendOutcome::Refused(R::NotFound));
        }
        let cid_key = m.cid.as_ref().map(|c| cid_key(&m.from, c));
        if let Some(key) = &cid_key {
            if let Some(&seq) = log.cids.get(key) {
                // The author's retry of a stored message. If the log no longer holds it, the
                // answer is rebuilt from the retry, which carries the same text.
                let stored = seq
                    .checked_sub(log.first_seq)
                    .and_then(|i| log.messages.get(i as usize))
                    .cloned()
                    .unwrap_or_else(|| m.clone().into_msg(seq));
                return Ok(AppendOutcome::Duplicate(stored));
            }
        }
        if let Err(refusal) = meta.may_write(&m.site, &m.from) {
            return Ok(AppendOutcome::Refused(refusal));
        }
        let conv_state = meta.state;
        if log.messages.is_empty() && log.first_seq == 0 {
            log.first_seq = 1;
        }
        let seq = if log.messages.is_empty() {
            log.first_seq
        } else {
            log.last_seq() + 1
        };
        let conv = m.conv.clone();
        let msg = m.into_msg(seq);
        let started_unanswered = log.activity.record(msg.from.role, msg.ts);
        if msg.from.role == Role::Visitor {
            log.last_visitor = Some(crate::protocol::LastMessage {
                text: super::last_message_text(&msg.text).to_owned(),
                ts: msg.ts,
            });
        }
        if let Some(key) = cid_key {
            // Kept after the message is trimmed (until the log is dropped), like the Redis
            // engine's hash: a late retry is still recognised.
            log.cids.insert(key, seq);
        }
        log.messages.push_back(msg.clone());
        // With an archive, what it does not hold yet stays, whatever the cap.
        while log.messages.len() > self.cfg.max_log
            && (!self.cfg.archive || log.first_seq <= log.archived)
        {
            if log.messages.pop_front().is_some() {
                log.first_seq += 1;
            }
        }
        // Published under the log lock: channel order equals seq order.
        self.local.dispatch(
            &Channel::Conv(conv),
            &BusMsg::frame(Audience::All, ServerFrame::Msg(msg.clone())),
        );
        Ok(AppendOutcome::Stored(Appended {
            msg,
            conv_state,
            started_unanswered,
        }))
    }

    async fn replay(&self, conv: &ConvId, after: u64) -> Result<Replay, EngineError> {
        let Some(log) = self.log(conv) else {
            return Ok(if after == 0 {
                Replay::Recovered(Vec::new())
            } else {
                Replay::Lost
            });
        };
        let log = log.lock();
        if log.messages.is_empty() {
            return Ok(if after == 0 {
                Replay::Recovered(Vec::new())
            } else {
                Replay::Lost
            });
        }
        let last = log.last_seq();
        if after > last {
            // A cursor from the future: the log was lost (or the client is confused).
            return Ok(Replay::Lost);
        }
        if after + 1 < log.first_seq {
            return Ok(Replay::Lost);
        }
        let skip = (after + 1 - log.first_seq) as usize;
        Ok(Replay::Recovered(
            log.messages.iter().skip(skip).cloned().collect(),
        ))
    }

    async fn history(
        &self,
        conv: &ConvId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let Some(log) = self.log(conv) else {
            return Ok(HistoryPage {
                messages: Vec::new(),
                complete: true,
            });
        };
        let log = log.lock();
        if log.messages.is_empty() {
            return Ok(HistoryPage {
                messages: Vec::new(),
                complete: true,
            });
        }
        let end = match before {
            Some(b) if b <= log.first_seq => 0,
            Some(b) => ((b - log.first_seq) as usize).min(log.messages.len()),
            None => log.messages.len(),
        };
        let start = end.saturating_sub(limit);
        Ok(HistoryPage {
            messages: log.messages.range(start..end).cloned().collect(),
            complete: start == 0,
        })
    }

    async fn last_seq(&self, conv: &ConvId) -> Result<u64, EngineError> {
        Ok(self
            .log(conv)
            .map(|l| l.lock().last_seq_or_zero())
            .unwrap_or(0))
    }

    async fn meta(&self, conv: &ConvId) -> Result<Option<ConvMeta>, EngineError> {
        Ok(self.log(conv).and_then(|l| l.lock().meta.clone()))
    }

    async fn put_meta(
        &self,
        conv: &ConvId,
        meta: ConvMeta,
        version: u64,
    ) -> Result<(), EngineError> {
        let closed = meta.state == ConvState::Closed;
        let ts = meta.snapshot.created_at;
        let log = self.logs.entry(conv.clone()).or_default().clone();
        let mut log = log.lock();
        if log.meta.is_some() && log.meta_version > version {
            return Ok(());
        }
        let was_closed = log
            .meta
            .as_ref()
            .is_some_and(|m| m.state == ConvState::Closed);
        log.meta = Some(meta);
        log.meta_version = version;
        // With an archive, the log goes only once it is archived (`mark_archived`).
        let retain = closed && !was_closed && !self.cfg.archive && !log.retained;
        log.retained |= retain;
        drop(log);
        if retain {
            let now = crate::clock::now_ms().max(ts);
            self.closed.lock().push_back((now, conv.clone()));
            self.purge(now);
        }
        Ok(())
    }

    async fn set_read(&self, conv: &ConvId, visitor: bool, seq: u64) -> Result<(), EngineError> {
        if let Some(log) = self.log(conv) {
            let mut log = log.lock();
            let mark = if visitor {
                &mut log.read.visitor
            } else {
                &mut log.read.staff
            };
            *mark = (*mark).max(seq);
        }
        Ok(())
    }

    async fn summaries(&self, convs: &[ConvId]) -> Result<Vec<Summary>, EngineError> {
        Ok(convs
            .iter()
            .map(|c| match self.log(c) {
                Some(l) => {
                    let l = l.lock();
                    Summary {
                        last_seq: l.last_seq_or_zero(),
                        last_visitor: l.last_visitor.clone(),
                        read: l.read,
                    }
                }
                None => Summary::default(),
            })
            .collect())
    }

    async fn read_log(
        &self,
        conv: &ConvId,
        after: u64,
        max: usize,
    ) -> Result<Vec<Msg>, EngineError> {
        let Some(log) = self.log(conv) else {
            return Ok(Vec::new());
        };
        let log = log.lock();
        Ok(log
            .messages
            .iter()
            .filter(|m| m.seq > after)
            .take(max)
            .cloned()
            .collect())
    }

    async fn mark_archived(
        &self,
        conv: &ConvId,
        seq: u64,
        closed: bool,
    ) -> Result<(), EngineError> {
        let Some(log) = self.log(conv) else {
            return Ok(());
        };
        let mut l = log.lock();
        l.archived = l.archived.max(seq);
        while l.messages.len() > self.cfg.max_log && l.first_seq <= l.archived {
            if l.messages.pop_front().is_some() {
                l.first_seq += 1;
            }
        }
        if closed && !l.retained {
            // Archived whole: the log may go after the retention.
            l.retained = true;
            drop(l);
            self.closed
                .lock()
                .push_back((crate::clock::now_ms(), conv.clone()));
        }
        Ok(())
    }

    async fn activity(&self, conv: &ConvId) -> Result<Activity, EngineError> {
        Ok(self
            .log(conv)
            .map(|l| l.lock().activity)
            .unwrap_or_default())
    }

    async fn visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
    ) -> Result<Option<ConvId>, EngineError> {
        Ok(self
            .latest
            .get(&(site.clone(), visitor.clone()))
            .map(|c| c.clone()))
    }

    async fn set_visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        conv: &ConvId,
    ) -> Result<(), EngineError> {
        self.latest
            .insert((site.clone(), visitor.clone()), conv.clone());
        Ok(())
    }

    async fn forget_visitor(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        convs: &[ConvId],
    ) -> Result<(), EngineError> {
        self.latest.remove(&(site.clone(), visitor.clone()));
        for c in convs {
            // Only this site's conversations; the retention list drops the id when due.
            self.logs.remove_if(c, |_, l| {
                l.lock().meta.as_ref().is_some_and(|m| &m.site == site)
            });
        }
        Ok(())
    }
}

impl Timers for MemoryEngine {
    async fn set_timer(
        &self,
        site: &SiteId,
        kind: &TimerKind,
        at: Millis,
        only_if_absent: bool,
    ) -> Result<(), EngineError> {
        self.put_timer(site, kind, at, only_if_absent);
        Ok(())
    }

    async fn cancel_timer(&self, site: &SiteId, kind: &TimerKind) -> Result<(), EngineError> {
        self.drop_timer(site, kind);
        Ok(())
    }

    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<TimerClaim>, EngineError> {
        let mut t = self.timers.lock();
        let mut out = Vec::new();
        let lease = now + TIMER_LEASE_MS;
        while out.len() < limit {
            let Some(first) = t.by_deadline.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            // Claimed: pushed back by the lease, until finished or fired again.
            t.by_deadline.remove(&first);
            let (_, site, kind) = first;
            t.by_deadline.insert((lease, site.clone(), kind.clone()));
            t.by_key.insert((site.clone(), kind.clone()), lease);
            out.push(TimerClaim { site, kind, lease });
        }
        metrics::gauge!(crate::metrics::TIMERS_PENDING).set(t.by_key.len() as f64);
        drop(t);
        self.purge(now);
        Ok(out)
    }

    async fn finish_timer(&self, claim: &TimerClaim) -> Result<(), EngineError> {
        let mut t = self.timers.lock();
        let key = (claim.site.clone(), claim.kind.clone());
        if t.by_key.get(&key) == Some(&claim.lease) {
            t.by_key.remove(&key);
            t.by_deadline
                .remove(&(claim.lease, claim.site.clone(), claim.kind.clone()));
        }
        Ok(())
    }

    async fn next_timer(&self) -> Result<Option<Millis>, EngineError> {
        Ok(self.timers.lock().by_deadline.first().map(|(at, _, _)| *at))
    }
}

impl SiteData for MemoryEngine {
    async fn set_draft(
        &self,
        site: &SiteId,
        op: &OperatorId,
        conv: &ConvId,
        text: Option<String>,
    ) -> Result<(), EngineError> {
        let key = (site.clone(), op.clone());
        match text {
            Some(t) => {
                self.drafts.entry(key).or_default().insert(conv.clone(), t);
            }
            None => {
                if let Some(mut d) = self.drafts.get_mut(&key) {
                    d.remove(conv);
                }
            }
        }
        Ok(())
    }

    async fn drafts(
        &self,
        site: &SiteId,
        op: &OperatorId,
    ) -> Result<Vec<(ConvId, String)>, EngineError> {
        Ok(self
            .drafts
            .get(&(site.clone(), op.clone()))
            .map(|d| d.iter().map(|(c, t)| (c.clone(), t.clone())).collect())
            .unwrap_or_default())
    }

    async fn save_settings(&self, site: &SiteId, settings: &Value) -> Result<(), EngineError> {
        self.settings.insert(site.clone(), settings.clone());
        Ok(())
    }

    async fn load_settings(&self, site: &SiteId) -> Result<Option<Value>, EngineError> {
        Ok(self.settings.get(site).map(|v| v.clone()))
    }

    async fn set_ban(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        until: Option<Millis>,
    ) -> Result<(), EngineError> {
        let key = (site.clone(), visitor.clone());
        match until {
            Some(t) => {
                self.bans.insert(key, t);
            }
            None => {
                self.bans.remove(&key);
            }
        }
        Ok(())
    }

    async fn banned_until(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        now: Millis,
    ) -> Result<Option<Millis>, EngineError> {
        let key = (site.clone(), visitor.clone());
        let until = self.bans.get(&key).map(|t| *t);
        match until {
            Some(t) if t > now => Ok(Some(t)),
            Some(_) => {
                self.bans.remove_if(&key, |_, t| *t <= now);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// One node: its own listings' pace is the site's.
    async fn claim_listing(&self, _: &SiteId, _: &QueueId, _: u64) -> Result<bool, EngineError> {
        Ok(true)
    }
}

impl Broker for MemoryEngine {
    async fn publish(&self, ch: &Channel, msg: BusMsg) -> Result<(), EngineError> {
        self.local.dispatch(ch, &msg);
        Ok(())
    }
}

impl Nodes for MemoryEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        Ok(())
    }

    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<NodeId>, EngineError> {
        Ok(self.orphan_lives(me))
    }

    async fn forget_node(&self, node: &NodeId) -> Result<(), EngineError> {
        self.orphans.lock().remove(node);
        Ok(())
    }

    async fn stopped(&self) -> Result<(), EngineError> {
        let Some(path) = &self.cfg.keep_state else {
            return Ok(());
        };
        match self.save(path).await {
            Ok(kept) => {
                tracing::info!(path = %path.display(), open = kept.open, logs = kept.logs, outbox = kept.outbox, "state kept for the next start");
                Ok(())
            }
            Err(e) => Err(EngineError::protocol(format!(
                "state not kept in {}: {e}",
                path.display()
            ))),
        }
    }
}

impl Outbox for MemoryEngine {
    async fn push_outbox(&self, site: &SiteId, entries: &[OutboxEntry]) -> Result<(), EngineError> {
        self.outbox.lock().push(site, entries);
        self.outbox_ready.notify_waiters();
        Ok(())
    }

    async fn claim_outbox(
        &self,
        group: &str,
        _consumer: &str,
        max: usize,
        lease: Millis,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        Ok(self
            .outbox
            .lock()
            .claim(group, max, lease, crate::clock::now_ms()))
    }

    async fn ack_outbox(&self, group: &str, items: &[OutboxItem]) -> Result<(), EngineError> {
        let mut o = self.outbox.lock();
        o.ack(group, items);
        o.trim();
        Ok(())
    }

    async fn trim_outbox(&self) -> Result<u64, EngineError> {
        Ok(self.outbox.lock().trim())
    }
}

impl MemoryEngine {
    /// Waits until entries may have arrived in the outbox (or `max` passed).
    pub async fn outbox_arrived(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, self.outbox_ready.notified()).await;
    }
}
