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

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::core::{ConnId, ConvId, QueueId, SiteId};
use crate::metrics as m;
use crate::protocol::{CloseReason, Encoding, Role, ServerFrame};

/// A pub/sub channel. Names are exact (never patterns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Everyone attached to a conversation: its visitor, its operator, watching supervisors.
    Conv(ConvId),
    /// Every connection of one user of a site.
    User(SiteId, Role, String),
    /// Every staff connection of a site (queues, operator list).
    Staff(SiteId),
}

/// Which subscribers of a channel a frame is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    All,
    Staff,
    Visitors,
    /// Staff who serve the queue.
    Queue(QueueId),
}

/// What travels between nodes.
#[derive(Debug, Clone)]
pub enum BusMsg {
    Frame {
        audience: Audience,
        frame: Arc<Outbound>,
    },
    /// On a user channel: that user's connections join a conversation's channel.
    Attach(ConvId),
    /// On a user channel: that user's connections leave a conversation's channel.
    Detach(ConvId),
    /// On a user channel: close that user's connections (e.g. banned).
    Close(CloseReason),
}

impl BusMsg {
    pub fn frame(audience: Audience, frame: ServerFrame) -> BusMsg {
        BusMsg::Frame {
            audience,
            frame: Outbound::new(frame),
        }
    }
}

/// A server frame shared by every socket it goes to, encoded lazily once per encoding.
#[derive(Debug)]
pub struct Outbound {
    pub frame: ServerFrame,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Outbound {
    pub fn new(frame: ServerFrame) -> Arc<Outbound> {
        Arc::new(Outbound {
            frame,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        })
    }

    /// The WebSocket message for an encoding; cloning it only bumps a reference count.
    pub fn message(&self, enc: Encoding) -> Message {
        match enc {
            Encoding::Json => Message::Text(
                self.json
                    .get_or_init(|| Utf8Bytes::from(self.frame.to_json_string()))
                    .clone(),
            ),
            Encoding::MsgPack => Message::Binary(
                self.msgpack
                    .get_or_init(|| self.frame.encode(Encoding::MsgPack))
                    .clone(),
            ),
        }
    }
}

fn message_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    }
}

/// An item of a connection's outbound queue.
pub type Out = Message;

/// The part of a connection that the hub and its own task share.
#[derive(Debug)]
pub struct ConnShared {
    pub id: ConnId,
    pub role: Role,
    pub encoding: Encoding,
    /// Queues an operator serves (`None`: all).
    pub queues: Option<Vec<QueueId>>,
    tx: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    max_queued: usize,
    /// 0 while open, else the close code asked for (first request wins).
    close_code: AtomicU16,
    closed: Notify,
    /// Unix ms of the last frame received from the client.
    pub last_rx: AtomicU64,
}

impl ConnShared {
    /// A connection and the receiving end of its outbound queue.
    pub fn new(
        id: ConnId,
        role: Role,
        encoding: Encoding,
        queues: Option<Vec<QueueId>>,
        max_queued: usize,
        now: u64,
    ) -> (Arc<ConnShared>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let c = ConnShared {
            id,
            role,
            encoding,
            queues,
            tx,
            queued: AtomicUsize::new(0),
            max_queued,
            close_code: AtomicU16::new(0),
            closed: Notify::new(),
            last_rx: AtomicU64::new(now),
        };
        (Arc::new(c), rx)
    }

    fn wants(&self, audience: &Audience) -> bool {
        match audience {
            Audience::All => true,
            Audience::Staff => self.role.is_staff(),
            Audience::Visitors => self.role == Role::Visitor,
            Audience::Queue(q) => match self.role {
                Role::Supervisor => true,
                Role::Operator => self.queues.as_ref().is_none_or(|qs| qs.contains(q)),
                _ => false,
            },
        }
    }

    /// Queues a frame without waiting. Overflowing the byte budget closes the connection
    /// with 4008 instead; returns whether the frame was queued.
    pub fn deliver(&self, out: &Outbound) -> bool {
        self.push(out.message(self.encoding))
    }

    /// Queues a message, charged against the byte budget.
    pub fn push(&self, msg: Message) -> bool {
        if self.is_closing() {
            return false;
        }
        let len = message_len(&msg);
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_queued {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            metrics::counter!(m::SLOW_CLOSES).increment(1);
            self.close(CloseReason::TooSlow);
            return false;
        }
        self.tx.send(msg).is_ok()
    }

    /// Asks the connection's task to close with `reason` now, ahead of anything queued (a
    /// writer stuck on a slow socket is interrupted). Only the first request counts.
    pub fn close(&self, reason: CloseReason) {
        if self
            .close_code
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.closed.notify_one();
        }
    }

    /// Resolves once [`ConnShared::close`] was called; returns the reason.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.close_reason() {
                return r;
            }
            self.closed.notified().await;
        }
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.close_code.load(Ordering::Acquire))
    }

    /// The writer reports bytes it has handed to the socket.
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_closing(&self) -> bool {
        self.close_code.load(Ordering::Relaxed) != 0
    }

    pub fn touch(&self, now: u64) {
        self.last_rx.store(now, Ordering::Relaxed);
    }
}

/// Subscription changes the hub reports to the engine's bus (0 → 1 and 1 → 0 local listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubChange {
    Subscribe(Channel),
    Unsubscribe(Channel),
}

/// The local subscribers of every channel.
#[derive(Default)]
pub struct Hub {
    channels: DashMap<Channel, Vec<Arc<ConnShared>>>,
    conns: DashMap<ConnId, ConnSubs>,
    bus: OnceLock<mpsc::UnboundedSender<SubChange>>,
}

struct ConnSubs {
    conn: Arc<ConnShared>,
    channels: Vec<Channel>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Routes subscription changes to a bus (the Redis engine's subscriber).
    pub fn set_bus(&self, tx: mpsc::UnboundedSender<SubChange>) {
        let _ = self.bus.set(tx);
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

    pub fn subscribe(&self, id: ConnId, ch: Channel) {
        let conn = {
            let Some(mut subs) = self.conns.get_mut(&id) else {
                return;
            };
            if subs.channels.contains(&ch) {
                return;
            }
            subs.channels.push(ch.clone());
            subs.conn.clone()
        };
        let first = {
            let mut entry = self.channels.entry(ch.clone()).or_default();
            entry.push(conn);
            entry.len() == 1
        };
        if first {
            if let Some(bus) = self.bus.get() {
                let _ = bus.send(SubChange::Subscribe(ch));
            }
        }
    }

    pub fn unsubscribe(&self, id: ConnId, ch: &Channel) {
        let removed = match self.conns.get_mut(&id) {
            Some(mut subs) => {
                let before = subs.channels.len();
                subs.channels.retain(|c| c != ch);
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
                list.retain(|c| c.id != id);
                list.is_empty()
            }
            None => false,
        };
        if emptied && self.channels.remove_if(ch, |_, l| l.is_empty()).is_some() {
            if let Some(bus) = self.bus.get() {
                let _ = bus.send(SubChange::Unsubscribe(ch.clone()));
            }
        }
    }

    /// Whether any local connection listens on a channel.
    pub fn has(&self, ch: &Channel) -> bool {
        self.channels.contains_key(ch)
    }

    /// Hands a bus message to the local subscribers of `ch`.
    pub fn dispatch(&self, ch: &Channel, msg: &BusMsg) {
        match msg {
            BusMsg::Frame { audience, frame } => {
                if let Some(list) = self.channels.get(ch) {
                    for c in list.iter() {
                        if c.wants(audience) {
                            c.deliver(frame);
                        }
                    }
                }
            }
            BusMsg::Attach(conv) => {
                for c in self.listeners(ch) {
                    self.subscribe(c.id, Channel::Conv(conv.clone()));
                }
            }
            BusMsg::Detach(conv) => {
                let conv_ch = Channel::Conv(conv.clone());
                for c in self.listeners(ch) {
                    self.unsubscribe(c.id, &conv_ch);
                }
            }
            BusMsg::Close(reason) => {
                for c in self.listeners(ch) {
                    c.close(*reason);
                }
            }
        }
    }

    fn listeners(&self, ch: &Channel) -> Vec<Arc<ConnShared>> {
        self.channels.get(ch).map(|l| l.clone()).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Msg;

    fn conn(id: u64, role: Role, max: usize) -> (Arc<ConnShared>, mpsc::UnboundedReceiver<Out>) {
        ConnShared::new(ConnId(id), role, Encoding::Json, None, max, 0)
    }

    fn msg_frame(text: &str) -> BusMsg {
        BusMsg::frame(
            Audience::All,
            ServerFrame::Notice {
                conv: None,
                code: "x".into(),
                text: text.into(),
            },
        )
    }

    #[test]
    fn delivers_to_subscribers_filtered_by_audience() {
        let hub = Hub::new();
        let (v, mut vrx) = conn(1, Role::Visitor, 1 << 20);
        let (o, mut orx) = conn(2, Role::Operator, 1 << 20);
        hub.register(v);
        hub.register(o);
        let ch = Channel::Conv(ConvId::from("c1"));
        hub.subscribe(ConnId(1), ch.clone());
        hub.subscribe(ConnId(2), ch.clone());
        hub.dispatch(&ch, &BusMsg::frame(Audience::Staff, ServerFrame::Ping {}));
        assert!(vrx.try_recv().is_err());
        assert!(orx.try_recv().is_ok());
        hub.dispatch(&ch, &msg_frame("hi"));
        assert!(vrx.try_recv().is_ok() && orx.try_recv().is_ok());
    }

    #[test]
    fn shares_encoded_bytes_across_sockets() {
        let o = Outbound::new(ServerFrame::Msg(Msg {
            conv: "c".into(),
            seq: 1,
            from: crate::protocol::Author {
                role: Role::System,
                id: "system".into(),
                name: None,
            },
            text: "x".into(),
            ts: 1,
            cid: None,
        }));
        let (Message::Text(a), Message::Text(b)) =
            (o.message(Encoding::Json), o.message(Encoding::Json))
        else {
            panic!("json frames are text");
        };
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }

    #[test]
    fn overflow_closes_with_4008_and_stops_queueing() {
        let hub = Hub::new();
        let (c, mut rx) = conn(1, Role::Visitor, 64);
        hub.register(c.clone());
        let ch = Channel::Conv(ConvId::from("c1"));
        hub.subscribe(ConnId(1), ch.clone());
        for _ in 0..10 {
            hub.dispatch(&ch, &msg_frame("0123456789"));
        }
        let mut frames = 0;
        while rx.try_recv().is_ok() {
            frames += 1;
        }
        assert!((1..10).contains(&frames), "frames {frames}");
        assert_eq!(c.close_reason(), Some(CloseReason::TooSlow));
        assert!(c.queued_bytes() <= 64);
    }

    #[test]
    fn attach_on_user_channel_subscribes_that_users_connections() {
        let hub = Hub::new();
        let (bus_tx, mut bus_rx) = mpsc::unbounded_channel();
        hub.set_bus(bus_tx);
        let (o, _orx) = conn(7, Role::Operator, 1 << 20);
        hub.register(o);
        let user = Channel::User(SiteId::from("s"), Role::Operator, "op".into());
        hub.subscribe(ConnId(7), user.clone());
        hub.dispatch(&user, &BusMsg::Attach(ConvId::from("c9")));
        let conv = Channel::Conv(ConvId::from("c9"));
        assert!(hub.has(&conv));
        hub.unregister(ConnId(7));
        assert!(!hub.has(&conv) && !hub.has(&user));
        let changes: Vec<_> = std::iter::from_fn(|| bus_rx.try_recv().ok()).collect();
        assert_eq!(
            changes,
            vec![
                SubChange::Subscribe(user.clone()),
                SubChange::Subscribe(conv.clone()),
                SubChange::Unsubscribe(user),
                SubChange::Unsubscribe(conv),
            ]
        );
    }
}
