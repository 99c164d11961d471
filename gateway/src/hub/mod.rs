//! The node-local fan-out: which local connections listen on which channel, and delivery of
//! bus messages to them.
//!
//! Engines publish [`BusMsg`]s on [`Channel`]s; on every node the hub hands each message to the
//! local connections subscribed to that channel. A frame is encoded at most once per encoding
//! and the bytes are shared by every socket ([`Outbound`]). Delivery never blocks: each
//! connection's outbound queue is bounded in bytes, and a connection that would overflow it is
//! closed with 4008 instead (it reconnects and resumes from the log).
//!
//! **Invariant:** no map guard is held across an `.await` (nothing here is async) and no guard
//! of `channels` is held while `channels` is written.

mod conn;
mod gates;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::mpsc;

pub use conn::{Attention, ConnShared, Counted, Out, Outbox};

use crate::bus::{BusMsg, Channel, ConnRef, Control, Gated, Held, Local, SubChange};
use crate::core::{ConnId, ConvId};
use crate::metrics as m;
use crate::protocol::{CloseReason, Role};

/// What joining a conversation's channel did.
struct Joined {
    /// The connection was not on the channel before.
    joined: bool,
    /// And it waits for the bus to replay the log after its cursor.
    replay: bool,
}

/// The local subscribers of one channel.
#[derive(Default)]
struct Listeners {
    conns: Vec<Arc<ConnShared>>,
    /// Highest `msg` seq dispatched on this channel (conversation channels only).
    last_seq: AtomicU64,
}

/// The local subscribers of every channel.
#[derive(Default)]
pub struct Hub {
    /// This node, to recognise its own connections in [`ConnRef`]s.
    node: OnceLock<crate::core::NodeId>,
    channels: DashMap<Channel, Listeners>,
    conns: DashMap<ConnId, ConnSubs>,
    bus: OnceLock<mpsc::UnboundedSender<SubChange>>,
    control: OnceLock<mpsc::UnboundedSender<Control>>,
}

struct ConnSubs {
    conn: Arc<ConnShared>,
    channels: Vec<Channel>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Names the node this hub serves.
    pub fn set_node(&self, node: crate::core::NodeId) {
        let _ = self.node.set(node);
    }

    /// Whether a connection of this node is the one `r` names.
    fn is(&self, c: &ConnShared, r: &ConnRef) -> bool {
        c.id == r.conn && self.node.get().is_none_or(|n| n == &r.node)
    }

    /// Routes subscription changes to a bus (the Redis engine's subscriber).
    pub fn set_bus(&self, tx: mpsc::UnboundedSender<SubChange>) {
        let _ = self.bus.set(tx);
    }

    /// Routes control messages ([`Channel::Nodes`]) to the node.
    pub fn set_control(&self, tx: mpsc::UnboundedSender<Control>) {
        let _ = self.control.set(tx);
    }

    /// Hands work to the node's control loop.
    pub fn control(&self, c: Control) {
        if let Some(tx) = self.control.get() {
            let _ = tx.send(c);
        }
    }

    fn tell_bus(&self, change: SubChange) {
        if let Some(bus) = self.bus.get() {
            let _ = bus.send(change);
        }
    }

    /// Closes every local connection of a site (it was deleted): each is on its user's
    /// channel, which names the site.
    pub fn close_site(&self, site: &crate::core::SiteId, reason: CloseReason) {
        let conns: Vec<Arc<ConnShared>> = self
            .channels
            .iter()
            .filter(|e| matches!(e.key(), Channel::User(s, ..) | Channel::Staff(s) if s == site))
            .flat_map(|e| e.value().conns.clone())
            .collect();
        for c in conns {
            c.close(reason);
        }
    }

    /// Every channel with at least one local subscriber (to resubscribe after a reconnect).
    pub fn channels(&self) -> Vec<Channel> {
        self.channels.iter().map(|e| e.key().clone()).collect()
    }

    pub fn register(&self, conn: Arc<ConnShared>) {
        self.conns.insert(
            conn.id,
            ConnSubs {
                conn,
                channels: Vec::new(),
            },
        );
        metrics::gauge!(m::HUB_CONNS).set(self.conns.len() as f64);
    }

    /// Removes a connection and all its subscriptions.
    pub fn unregister(&self, id: ConnId) {
        if let Some((_, subs)) = self.conns.remove(&id) {
            for ch in subs.channels {
                self.remove_from_channel(&ch, id);
            }
        }
        metrics::gauge!(m::HUB_CONNS).set(self.conns.len() as f64);
    }

    /// Adds a connection to a channel; `false` when it was already there (or is gone).
    pub fn subscribe(&self, id: ConnId, ch: Channel) -> bool {
        let conn = {
            let Some(mut subs) = self.conns.get_mut(&id) else {
                return false;
            };
            if subs.channels.contains(&ch) {
                return false;
            }
            subs.channels.push(ch.clone());
            subs.conn.clone()
        };
        let first = {
            let mut entry = self.channels.entry(ch.clone()).or_default();
            entry.conns.push(conn);
            entry.conns.len() == 1
        };
        if first {
            metrics::gauge!(m::HUB_CHANNELS).set(self.channels.len() as f64);
            self.tell_bus(SubChange::Changed(ch));
        }
        true
    }

    /// Adds a connection to a conversation's channel. `known_seq` is the last `seq` the
    /// client already has (or will load): if the node's bus subscription to the channel is
    /// not confirmed yet, the bus replays what it misses after it.
    pub fn attach(&self, conn: &Arc<ConnShared>, conv: ConvId, known_seq: u64) {
        if self.join(conn, &conv, known_seq).replay {
            self.tell_bus(SubChange::Catchup(Held {
                conv,
                after: known_seq,
                conns: vec![conn.clone() as Arc<dyn Gated>],
            }));
        }
    }

    /// Subscribes a connection to a conversation's channel; with a bus, its `msg` frames are
    /// held back from the first moment until the bus has replayed the log after `after_seq`.
    /// `false` when it was subscribed already.
    fn join(&self, c: &Arc<ConnShared>, conv: &ConvId, after_seq: u64) -> Joined {
        let opened = self.bus.get().is_some() && c.open_gate(conv, after_seq);
        let joined = self.subscribe(c.id, Channel::Conv(conv.clone()));
        if opened && !joined {
            // Already on the channel: nothing to replay for this join.
            c.release_gate(conv, &[]);
        }
        self.note_seq(conv, after_seq);
        Joined {
            joined,
            replay: joined && opened,
        }
    }

    /// Records that a conversation's channel is known to have carried up to `seq` (what a
    /// joining client already holds), so a replay after a bus outage starts there, not at 1.
    pub fn note_seq(&self, conv: &ConvId, seq: u64) {
        if let Some(l) = self.channels.get(&Channel::Conv(conv.clone())) {
            l.last_seq.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Holds back `msg` frames on every conversation channel of this node, for a replay after
    /// the bus lost messages: each channel with its listeners and the last `seq` it carried.
    /// Connections whose gate is already open (a replay under way) are left to that replay.
    pub fn hold_all(&self) -> Vec<Held> {
        let mut out = Vec::new();
        for e in self.channels.iter() {
            if let Channel::Conv(conv) = e.key() {
                let after = e.value().last_seq.load(Ordering::Acquire);
                let conns: Vec<Arc<dyn Gated>> = e
                    .value()
                    .conns
                    .iter()
                    .filter(|c| c.open_gate(conv, after))
                    .map(|c| c.clone() as Arc<dyn Gated>)
                    .collect();
                if !conns.is_empty() {
                    out.push(Held {
                        conv: conv.clone(),
                        after,
                        conns,
                    });
                }
            }
        }
        out
    }

    pub fn unsubscribe(&self, id: ConnId, ch: &Channel) {
        let removed = match self.conns.get_mut(&id) {
            Some(mut subs) => {
                let before = subs.channels.len();
                subs.channels.retain(|c| c != ch);
                if let Channel::Conv(conv) = ch {
                    subs.conn.drop_gate(conv);
                }
                before != subs.channels.len()
            }
            None => false,
        };
        if removed {
            self.remove_from_channel(ch, id);
        }
    }

    fn remove_from_channel(&self, ch: &Channel, id: ConnId) {
        let emptied = match self.channels.get_mut(ch) {
            Some(mut list) => {
                list.conns.retain(|c| c.id != id);
                list.conns.is_empty()
            }
            None => false,
        };
        if emptied
            && self
                .channels
                .remove_if(ch, |_, l| l.conns.is_empty())
                .is_some()
        {
            metrics::gauge!(m::HUB_CHANNELS).set(self.channels.len() as f64);
            self.tell_bus(SubChange::Changed(ch.clone()));
        }
    }

    /// Whether any local connection listens on a channel.
    pub fn has(&self, ch: &Channel) -> bool {
        self.channels.contains_key(ch)
    }

    /// Hands a bus message to the local subscribers of `ch`.
    pub fn dispatch(&self, ch: &Channel, msg: &BusMsg) {
        match msg {
            BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                except,
            } => {
                let wanted = |c: &ConnShared| {
                    c.wants(audience) && except.as_ref().is_none_or(|r| !self.is(c, r))
                };
                if *ts > 0 {
                    let ms = crate::clock::now_ms().saturating_sub(*ts);
                    metrics::histogram!(m::DELIVERY_LATENCY).record(ms as f64 / 1000.0);
                }
                if let Some(list) = self.channels.get(ch) {
                    match ch {
                        Channel::Conv(conv) if *seq > 0 => {
                            list.last_seq.fetch_max(*seq, Ordering::AcqRel);
                            for c in list.conns.iter() {
                                if wanted(c) {
                                    c.deliver_msg(conv, *seq, frame);
                                }
                            }
                        }
                        _ => {
                            for c in list.conns.iter() {
                                if wanted(c) {
                                    c.deliver(frame);
                                }
                            }
                        }
                    }
                }
            }
            BusMsg::Attach {
                conv,
                frame,
                after_seq,
            } => {
                let mut replay = Vec::new();
                for c in self.listeners(ch) {
                    let j = self.join(&c, conv, *after_seq);
                    if c.role == Role::Visitor {
                        c.attached_visitor(conv);
                    }
                    if j.joined {
                        if let Some(f) = frame {
                            c.deliver(f);
                        }
                    }
                    if j.replay {
                        replay.push(c as Arc<dyn Gated>);
                    }
                }
                if !replay.is_empty() {
                    self.tell_bus(SubChange::Catchup(Held {
                        conv: conv.clone(),
                        after: *after_seq,
                        conns: replay,
                    }));
                }
            }
            BusMsg::Detach { conv, frame } => {
                let conv_ch = Channel::Conv(conv.clone());
                for c in self.listeners(ch) {
                    let attached = self
                        .conns
                        .get(&c.id)
                        .is_some_and(|s| s.channels.contains(&conv_ch));
                    if attached {
                        if let Some(f) = frame {
                            c.deliver(f);
                        }
                        self.unsubscribe(c.id, &conv_ch);
                    }
                }
            }
            BusMsg::Close(reason) => {
                for c in self.listeners(ch) {
                    c.close(*reason);
                }
            }
            BusMsg::Settings(site) => {
                if let Some(tx) = self.control.get() {
                    let _ = tx.send(Control::SettingsChanged(site.clone()));
                }
            }
        }
    }

    fn listeners(&self, ch: &Channel) -> Vec<Arc<ConnShared>> {
        self.channels
            .get(ch)
            .map(|l| l.conns.clone())
            .unwrap_or_default()
    }

    /// Calls `f` with every local connection, without collecting them (it must not block or
    /// touch the hub's connection map).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<ConnShared>)) {
        for e in self.conns.iter() {
            f(&e.conn);
        }
    }

    /// Every local connection.
    pub fn all(&self) -> Vec<Arc<ConnShared>> {
        self.conns.iter().map(|e| e.conn.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

impl Local for Hub {
    fn dispatch(&self, ch: &Channel, msg: &BusMsg) {
        Hub::dispatch(self, ch, msg);
    }

    fn has(&self, ch: &Channel) -> bool {
        Hub::has(self, ch)
    }

    fn channels(&self) -> Vec<Channel> {
        Hub::channels(self)
    }

    fn hold_all(&self) -> Vec<Held> {
        Hub::hold_all(self)
    }

    fn close_all(&self, reason: CloseReason) {
        self.for_each(|c| c.close(reason));
    }

    fn set_bus(&self, tx: mpsc::UnboundedSender<SubChange>) {
        Hub::set_bus(self, tx);
    }
}
