//! Pub/sub between nodes: one subscription per channel per node, whatever the number of local
//! listeners (the hub counts them and reports 0 → 1 and 1 → 0), exact channel names only,
//! sharded pub/sub on a cluster.
//!
//! Two parties share the state here. The *push sender* ([`Pushes`]), called by the pub/sub
//! connection's reader, turns pushes into hub dispatches. The *subscriber* task reconciles
//! Redis subscriptions with the hub, confirms them to waiters, runs the replays that close
//! delivery gaps, and, after the pub/sub connection was lost, restores every subscription and
//! replays every conversation channel from the last `seq` it carried.
//!
//! **Invariant:** a connection never misses a stored message without being told: either the
//! node was subscribed when it was published, or the message is replayed from the log, or
//! the connection is closed with 1012 and resumes with its cursors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, watch};

use super::conn::Conn;
use super::keys;
use super::{keys as bus_keys, RedisEngine};
use crate::bus::{wire, BusMsg, Channel, Held, Local, Outbound, SubChange};
use crate::core::ConvId;
use crate::engine::{Broker, EngineError};
use crate::metrics as m;
use crate::protocol::CloseReason;

/// How long a replay waits for its channel's subscription before giving up (the connections
/// are then closed with 1012 and resume by themselves).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Bus {
    /// The node's local connections.
    local: Arc<dyn Local>,
    /// Channel names we subscribed to, for incoming messages (names are never parsed).
    names: DashMap<String, Channel>,
    /// Subscriptions Redis confirmed.
    active: Mutex<HashSet<Channel>>,
    /// Bumped whenever `active` changes.
    generation: watch::Sender<u64>,
    /// Whether the pub/sub connection is believed to be up.
    up: AtomicBool,
    /// Conversation channels whose `msg` frames are held back since the connection was lost,
    /// waiting for the replay that follows the resubscription; and since when.
    lost: Mutex<(Vec<Held>, Option<std::time::Instant>)>,
}

/// How long connections stay held back while the bus cannot be restored; then they are closed
/// with 1012 and resume with their cursors (held frames must not pile up without end).
const LOST_PATIENCE: Duration = Duration::from_secs(30);

impl Bus {
    pub fn new(local: Arc<dyn Local>) -> Arc<Bus> {
        Arc::new(Bus {
            local,
            names: DashMap::new(),
            active: Mutex::new(HashSet::new()),
            generation: watch::channel(0).0,
            up: AtomicBool::new(true),
            lost: Mutex::new((Vec::new(), None)),
        })
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn is_active(&self, ch: &Channel) -> bool {
        self.active.lock().contains(ch)
    }

    /// Waits until every channel is confirmed (or the deadline passes).
    pub async fn wait_active(&self, channels: &[Channel], timeout: Duration) -> bool {
        let mut rx = self.generation.subscribe();
        let wait = async {
            loop {
                {
                    let active = self.active.lock();
                    if channels.iter().all(|c| active.contains(c)) {
                        return;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Hands Redis' pushes to the hub where the pub/sub connection reads them (see
    /// [`Pushes`]).
    pub fn pushes(self: &Arc<Self>, lost: mpsc::UnboundedSender<()>) -> Pushes {
        Pushes {
            bus: self.clone(),
            lost,
        }
    }

    /// The bus lost messages (or may have): every conversation channel is held back from the
    /// last `seq` it carried until it is replayed.
    fn lose(&self) {
        self.up.store(false, Ordering::Release);
        let gated = self.local.hold_all();
        {
            let mut lost = self.lost.lock();
            lost.0.extend(gated);
            lost.1.get_or_insert_with(std::time::Instant::now);
        }
        self.active.lock().clear();
        self.bump();
    }

    /// The held-back channels to replay now that the bus is back.
    fn take_lost(&self) -> Vec<Held> {
        let mut lost = self.lost.lock();
        lost.1 = None;
        std::mem::take(&mut lost.0)
    }

    /// When the bus stays down too long, the held-back connections are closed (1012).
    fn give_up_if_lost_too_long(&self) {
        let expired = {
            let mut lost = self.lost.lock();
            match lost.1 {
                Some(since) if since.elapsed() > LOST_PATIENCE => {
                    lost.1 = Some(std::time::Instant::now());
                    std::mem::take(&mut lost.0)
                }
                _ => Vec::new(),
            }
        };
        for held in expired {
            for c in held.conns {
                c.give_up(&held.conv, CloseReason::Restarting);
            }
        }
    }

    fn on_message(&self, data: Vec<Value>) {
        let mut it = data.into_iter();
        let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
            (it.next(), it.next())
        else {
            return;
        };
        let Ok(name) = String::from_utf8(name) else {
            return;
        };
        let Some(ch) = self.names.get(&name).map(|c| c.clone()) else {
            return;
        };
        metrics::counter!(m::BUS_IN).increment(1);
        match wire::decode(Bytes::from(payload)) {
            Ok(msg) => self.local.dispatch(&ch, &msg),
            Err(e) => tracing::warn!(channel = %name, error = %e, "bus message dropped"),
        }
    }
}

/// The pub/sub connection's push sender: a message is dispatched to the hub on the
/// connection's reader itself, without a task in between (one wake-up and one queue fewer per
/// message; the hub's dispatch never blocks, as redis-rs requires of a push sender). Pushes
/// arrive in the order Redis sent them, so a lost connection is noted before any push of the
/// reconnected one (redis-rs resubscribes at once): the replay after the resubscription
/// starts exactly where delivery stopped.
pub struct Pushes {
    bus: Arc<Bus>,
    lost: mpsc::UnboundedSender<()>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, push: PushInfo) -> Result<(), redis::aio::SendError> {
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.bus.on_message(push.data),
            PushKind::Disconnection => {
                tracing::warn!("bus connection lost");
                self.bus.lose();
                let _ = self.lost.send(());
            }
            _ => {}
        }
        Ok(())
    }
}

/// What the subscriber task needs besides the bus: the pub/sub connection and a way to read
/// conversation logs.
pub struct Subscriber<R> {
    pub bus: Arc<Bus>,
    pub conn: Conn,
    pub changes: mpsc::UnboundedReceiver<SubChange>,
    pub lost: mpsc::UnboundedReceiver<()>,
    pub replayer: Arc<R>,
    pub sites: super::SiteList,
}

/// Reads a conversation's log after a cursor, as `(seq, msg frame)` pairs.
pub trait Replayer: Send + Sync + 'static {
    fn replay_frames(
        &self,
        conv: &ConvId,
        after: u64,
    ) -> impl std::future::Future<Output = Option<Vec<(u64, Arc<Outbound>)>>> + Send;
}

impl<R: Replayer> Subscriber<R> {
    /// The subscriber task.
    pub async fn run(mut self) {
        let mut ping = tokio::time::interval(Duration::from_secs(1));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Channels that changed and are not reconciled yet (Redis did not answer).
        let mut pending: HashSet<Channel> = HashSet::new();
        let mut resubscribe = false;
        loop {
            tokio::select! {
                change = self.changes.recv() => {
                    let Some(change) = change else { return };
                    self.take(change, &mut pending);
                    // Take whatever else is queued: one command for the whole batch.
                    while let Ok(more) = self.changes.try_recv() {
                        self.take(more, &mut pending);
                    }
                    if !resubscribe && !self.reconcile(&mut pending).await {
                        resubscribe = true;
                    }
                }
                lost = self.lost.recv() => {
                    if lost.is_none() { return }
                    resubscribe = true;
                }
                _ = ping.tick() => {
                    let ok = redis::cmd("PING").query_async::<()>(&mut self.conn).await.is_ok();
                    if !ok && self.bus.up.load(Ordering::Acquire) {
                        tracing::warn!("bus connection not answering");
                        self.bus.lose();
                        resubscribe = true;
                    }
                    if ok && resubscribe {
                        resubscribe = !self.resubscribe_all(&mut pending).await;
                    }
                    if resubscribe {
                        self.bus.give_up_if_lost_too_long();
                    }
                }
            }
        }
    }

    fn take(&self, change: SubChange, pending: &mut HashSet<Channel>) {
        match change {
            SubChange::Changed(ch) => {
                pending.insert(ch);
            }
            SubChange::Catchup(held) => {
                tokio::spawn(catch_up(self.bus.clone(), self.replayer.clone(), held));
            }
        }
    }

    /// Brings Redis in line with the hub for the pending channels; `false` if Redis failed.
    async fn reconcile(&mut self, pending: &mut HashSet<Channel>) -> bool {
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        for ch in pending.iter() {
            let wanted = self.bus.local.has(ch) || matches!(ch, Channel::Nodes);
            let active = self.bus.is_active(ch);
            if wanted && !active {
                subscribe.push(ch.clone());
            } else if !wanted && active {
                unsubscribe.push(ch.clone());
            }
        }
        if !subscribe.is_empty() && !self.subscribe(&subscribe).await {
            return false;
        }
        if !unsubscribe.is_empty() {
            // Out of `active` before the command leaves: a listener that arrives meanwhile
            // must wait for a subscription, not trust one that is going away.
            {
                let mut active = self.bus.active.lock();
                for ch in &unsubscribe {
                    active.remove(ch);
                }
            }
            self.bus.bump();
            let names: Vec<String> = unsubscribe.iter().map(keys::channel).collect();
            if let Err(e) = self.conn.unsubscribe(&names).await {
                tracing::warn!(error = %e, "unsubscribe failed");
                return false;
            }
            let mut back = Vec::new();
            for (ch, name) in unsubscribe.iter().zip(&names) {
                if self.bus.local.has(ch) {
                    // A listener came back while the channel was being left.
                    back.push(ch.clone());
                } else {
                    self.bus.names.remove(name);
                }
            }
            if !back.is_empty() && !self.subscribe(&back).await {
                return false;
            }
        }
        pending.clear();
        true
    }

    async fn subscribe(&mut self, channels: &[Channel]) -> bool {
        let names: Vec<String> = channels.iter().map(keys::channel).collect();
        for (ch, name) in channels.iter().zip(&names) {
            self.bus.names.insert(name.clone(), ch.clone());
        }
        for chunk in names.chunks(500) {
            if let Err(e) = self.conn.subscribe(chunk).await {
                tracing::warn!(error = %e, "subscribe failed");
                return false;
            }
        }
        {
            let mut active = self.bus.active.lock();
            active.extend(channels.iter().cloned());
        }
        self.bus.bump();
        true
    }

    /// After the pub/sub connection was lost: every channel again, then every conversation
    /// channel replayed from the last `seq` it carried, and every site's settings reloaded
    /// (a change announced meanwhile was missed). `false` if Redis failed.
    async fn resubscribe_all(&mut self, pending: &mut HashSet<Channel>) -> bool {
        let mut all = self.bus.local.channels();
        all.push(Channel::Nodes);
        if !self.subscribe(&all).await {
            // The held-back connections stay held until the next attempt (or are closed if
            // it takes too long): released without a replay they would miss messages.
            return false;
        }
        pending.clear();
        self.bus.up.store(true, Ordering::Release);
        metrics::counter!(m::BUS_RESUBSCRIBES).increment(1);
        let lost = self.bus.take_lost();
        tracing::info!(
            channels = all.len(),
            conversations = lost.len(),
            "bus resubscribed; replaying conversations"
        );
        for held in lost {
            tokio::spawn(catch_up(self.bus.clone(), self.replayer.clone(), held));
        }
        // What changed while the bus was down: the registry of sites first (sites made or
        // deleted meanwhile), then every site's settings and directory.
        self.bus.local.dispatch(
            &Channel::Nodes,
            &BusMsg::Settings(crate::directory::sites::registry()),
        );
        for site in self.sites.get().iter() {
            self.bus
                .local
                .dispatch(&Channel::Nodes, &BusMsg::Settings(site.clone()));
        }
        true
    }
}

/// Replays a conversation's log after `after` to connections whose `msg` frames are held
/// back, once the node's subscription is confirmed. If that cannot be done the connections
/// are closed with 1012: they reconnect and resume with their cursors.
async fn catch_up<R: Replayer>(bus: Arc<Bus>, replayer: Arc<R>, held: Held) {
    let Held { conv, after, conns } = held;
    let ch = Channel::Conv(conv.clone());
    let frames = if bus
        .wait_active(std::slice::from_ref(&ch), CONFIRM_TIMEOUT)
        .await
    {
        replayer.replay_frames(&conv, after).await
    } else {
        None
    };
    match frames {
        Some(frames) => {
            metrics::counter!(m::BUS_CATCHUP).increment(frames.len() as u64);
            for c in &conns {
                c.release(&conv, &frames);
            }
        }
        None => {
            tracing::warn!(conv = %conv, "replay failed; connections resume by reconnecting");
            for c in &conns {
                c.give_up(&conv, CloseReason::Restarting);
            }
        }
    }
}

impl Broker for RedisEngine {
    async fn publish(&self, ch: &Channel, msg: BusMsg) -> Result<(), EngineError> {
        let payload = wire::encode(&msg);
        let cmd = self
            .inner
            .conn
            .publish_cmd(&bus_keys::channel(ch), &payload);
        self.inner.run::<()>(&cmd).await?;
        metrics::counter!(m::BUS_OUT, "kind" => "event").increment(1);
        Ok(())
    }

    async fn wait_subscribed(&self, channels: &[Channel]) -> Result<(), EngineError> {
        if self
            .inner
            .bus
            .wait_active(channels, self.inner.opts.redis.timeout * 2)
            .await
        {
            Ok(())
        } else {
            Err(EngineError::Timeout)
        }
    }
}
