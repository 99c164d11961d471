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

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
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
    /// Every node (control messages such as "settings changed"); no connection listens.
    Nodes,
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
        /// The `seq` of a `msg` frame (0 for other frames): lets a node resume a channel from
        /// the log after its subscription was interrupted.
        seq: u64,
        /// The `ts` of a `msg` frame (0 for other frames), for the delivery latency metric.
        ts: u64,
        /// A connection the frame is not for: the one whose action it echoes.
        except: Option<ConnRef>,
    },
    /// On a user channel: that user's connections join a conversation's channel, receiving
    /// `frame` (the event they join with) directly. `after_seq` is the conversation's last
    /// `seq` when the attach was decided: a node whose subscription to the conversation's
    /// channel is not yet confirmed replays the log after it once it is.
    Attach {
        conv: ConvId,
        frame: Option<Arc<Outbound>>,
        after_seq: u64,
    },
    /// On a user channel: that user's connections receive `frame`, then leave the channel.
    Detach {
        conv: ConvId,
        frame: Option<Arc<Outbound>>,
    },
    /// On a user channel: close that user's connections (e.g. banned).
    Close(CloseReason),
    /// On [`Channel::Nodes`]: a site's settings changed; every node reloads them.
    Settings(SiteId),
}

impl BusMsg {
    pub fn frame(audience: Audience, frame: ServerFrame) -> BusMsg {
        let (seq, ts) = match &frame {
            ServerFrame::Msg(m) => (m.seq, m.ts),
            _ => (0, 0),
        };
        BusMsg::Frame {
            audience,
            frame: Outbound::new(frame),
            seq,
            ts,
            except: None,
        }
    }

    /// A frame for everyone in the audience but the connection `except`.
    pub fn frame_except(audience: Audience, frame: ServerFrame, except: ConnRef) -> BusMsg {
        match BusMsg::frame(audience, frame) {
            BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                ..
            } => BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                except: Some(except),
            },
            _ => unreachable!("BusMsg::frame makes a frame"),
        }
    }
}

/// One connection anywhere in the deployment (`welcome.conn` is its text form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRef {
    pub node: crate::core::NodeId,
    pub conn: ConnId,
}

/// A server frame shared by every socket it goes to, encoded at most once per encoding.
///
/// It starts either from a typed frame (made on this node) or from its MessagePack bytes
/// (received from another node); the other encoding is derived on first use. JSON derived
/// from MessagePack is a straight transcode, so it has the same fields in the same order as
/// the JSON this node would have written.
#[derive(Debug)]
pub struct Outbound {
    frame: Option<ServerFrame>,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Outbound {
    pub fn new(frame: ServerFrame) -> Arc<Outbound> {
        Arc::new(Outbound {
            frame: Some(frame),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        })
    }

    /// A frame received as MessagePack bytes.
    pub fn from_msgpack(bytes: Bytes) -> Arc<Outbound> {
        let msgpack = OnceLock::new();
        let _ = msgpack.set(bytes);
        Arc::new(Outbound {
            frame: None,
            json: OnceLock::new(),
            msgpack,
        })
    }

    /// The MessagePack bytes (the form frames travel between nodes in).
    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| {
            self.frame
                .as_ref()
                .expect("an outbound frame has a typed or an encoded form")
                .encode(Encoding::MsgPack)
        })
    }

    fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| match &self.frame {
            Some(f) => Utf8Bytes::from(f.to_json_string()),
            None => Utf8Bytes::from(transcode_to_json(self.msgpack())),
        })
    }

    /// The WebSocket message for an encoding; cloning it only bumps a reference count.
    pub fn message(&self, enc: Encoding) -> Message {
        match enc {
            Encoding::Json => Message::Text(self.json().clone()),
            Encoding::MsgPack => Message::Binary(self.msgpack().clone()),
        }
    }
}

/// MessagePack to JSON text, field for field. Bytes that are not valid MessagePack (which
/// only a bug could produce) become an `error` frame rather than a broken one.
fn transcode_to_json(msgpack: &[u8]) -> String {
    let mut de = rmp_serde::Deserializer::new(msgpack);
    let mut out = Vec::with_capacity(msgpack.len() + msgpack.len() / 4);
    let mut ser = serde_json::Serializer::new(&mut out);
    match serde_transcode::transcode(&mut de, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(e) => {
            tracing::error!(error = %e, "undecodable frame from the bus");
            ServerFrame::error(
                None,
                crate::protocol::ErrorCode::Unavailable,
                "internal error",
            )
            .to_json_string()
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
    out: Arc<OutQueue>,
    queued: AtomicUsize,
    max_queued: usize,
    /// 0 while open, else the close code asked for (first request wins).
    close_code: AtomicU16,
    closed: Notify,
    /// Unix ms of the last frame received from the client.
    pub last_rx: AtomicU64,
    /// Conversations whose `msg` frames are held back while the log is replayed to this
    /// connection (see [`ConnShared::open_gate`]); `gated` is the lock-free fast path.
    gates: parking_lot::Mutex<Vec<Gate>>,
    gated: AtomicBool,
}

/// A connection's outbound queue: a plain deque behind a short lock, and a wake-up for its
/// writer. It costs nothing while empty (a channel would allocate its first block of slots up
/// front, per socket); its bound is the byte budget [`ConnShared::push`] enforces.
#[derive(Default)]
struct OutQueue {
    items: parking_lot::Mutex<std::collections::VecDeque<Out>>,
    ready: Notify,
}

impl std::fmt::Debug for OutQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutQueue")
            .field("len", &self.items.lock().len())
            .finish()
    }
}

/// The writer's end of a connection's outbound queue.
pub struct Outbox(Arc<OutQueue>);

impl Outbox {
    /// The next queued message, waiting for one.
    pub async fn recv(&mut self) -> Option<Out> {
        loop {
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            // A push between the check and here leaves a permit: no wake-up is lost.
            self.0.ready.notified().await;
        }
    }

    /// The next queued message, if any; an emptied queue gives its memory back.
    pub fn try_recv(&mut self) -> Option<Out> {
        let mut items = self.0.items.lock();
        let m = items.pop_front();
        if items.is_empty() && items.capacity() > 16 {
            *items = std::collections::VecDeque::new();
        }
        m
    }
}

/// `msg` frames of one conversation held back during a replay.
#[derive(Debug)]
struct Gate {
    conv: ConvId,
    after: u64,
    held: Vec<(u64, Arc<Outbound>)>,
    /// The held frames' size (as MessagePack), charged against the connection's budget.
    held_bytes: usize,
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
    ) -> (Arc<ConnShared>, Outbox) {
        let out = Arc::new(OutQueue::default());
        let rx = Outbox(out.clone());
        let c = ConnShared {
            id,
            role,
            encoding,
            queues,
            out,
            queued: AtomicUsize::new(0),
            max_queued,
            close_code: AtomicU16::new(0),
            closed: Notify::new(),
            last_rx: AtomicU64::new(now),
            gates: parking_lot::Mutex::new(Vec::new()),
            gated: AtomicBool::new(false),
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

    /// Queues a conversation's `msg` frame, unless a replay of that conversation is under way
    /// for this connection: then it waits, so that frames leave in `seq` order.
    pub fn deliver_msg(&self, conv: &ConvId, seq: u64, out: &Arc<Outbound>) -> bool {
        if self.gated.load(Ordering::Acquire) {
            let mut gates = self.gates.lock();
            let held: usize = gates.iter().map(|g| g.held_bytes).sum();
            if let Some(g) = gates.iter_mut().find(|g| &g.conv == conv) {
                // Held frames count against the same budget as queued ones: a replay that
                // takes long while the conversation is busy must not grow without bound.
                let len = out.msgpack().len();
                if self.queued.load(Ordering::Acquire) + held + len > self.max_queued {
                    drop(gates);
                    self.cut_too_slow();
                    return false;
                }
                g.held_bytes += len;
                g.held.push((seq, out.clone()));
                return true;
            }
        }
        self.deliver(out)
    }

    /// Starts holding back `msg` frames of `conv` until [`ConnShared::release_gate`]: the
    /// caller is about to replay what came after `after` from the log.
    /// Returns whether this call opened it (a gate already open belongs to a replay still
    /// under way, which will release it).
    pub fn open_gate(&self, conv: &ConvId, after: u64) -> bool {
        let mut gates = self.gates.lock();
        if gates.iter().any(|g| &g.conv == conv) {
            return false;
        }
        gates.push(Gate {
            conv: conv.clone(),
            after,
            held: Vec::new(),
            held_bytes: 0,
        });
        self.gated.store(true, Ordering::Release);
        true
    }

    /// Stops holding back `msg` frames of `conv` without delivering them: the connection
    /// left the conversation.
    pub fn drop_gate(&self, conv: &ConvId) {
        let mut gates = self.gates.lock();
        gates.retain(|g| &g.conv != conv);
        self.gated.store(!gates.is_empty(), Ordering::Release);
    }

    /// Delivers the replayed frames after the gate's cursor, then the held ones, in `seq`
    /// order and each `seq` once, and stops holding back.
    pub fn release_gate(&self, conv: &ConvId, replayed: &[(u64, Arc<Outbound>)]) {
        let mut gates = self.gates.lock();
        let Some(i) = gates.iter().position(|g| &g.conv == conv) else {
            return;
        };
        let mut gate = gates.swap_remove(i);
        gate.held.sort_by_key(|(seq, _)| *seq);
        let mut last = gate.after;
        for (seq, f) in replayed.iter().chain(gate.held.iter()) {
            if *seq > last {
                self.deliver(f);
                last = *seq;
            }
        }
        self.gated.store(!gates.is_empty(), Ordering::Release);
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
            self.cut_too_slow();
            return false;
        }
        self.out.items.lock().push_back(msg);
        self.out.ready.notify_one();
        true
    }

    /// The outbound budget is spent: the connection is closed with 4008 and resumes later.
    fn cut_too_slow(&self) {
        metrics::counter!(m::SLOW_CLOSES).increment(1);
        self.close(CloseReason::TooSlow);
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

/// What the hub tells the engine's bus (the Redis engine's subscriber task).
#[derive(Debug, Clone)]
pub enum SubChange {
    /// A channel's local listeners went from none to some, or back: the bus reconciles its
    /// subscription with [`Hub::has`] (events of one channel may arrive out of order; the
    /// hub's map is the truth).
    Changed(Channel),
    /// Connections just attached to a conversation's channel: once the node's subscription
    /// to it is confirmed, replay the log after `after_seq` to them, so that nothing
    /// published before the subscription took effect is missed.
    Catchup {
        conv: ConvId,
        after_seq: u64,
        conns: Vec<Arc<ConnShared>>,
    },
}

/// What joining a conversation's channel did.
struct Joined {
    /// The connection was not on the channel before.
    joined: bool,
    /// And it waits for the bus to replay the log after its cursor.
    replay: bool,
}

/// Control events for the node itself (not for any connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    SettingsChanged(SiteId),
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

    fn tell_bus(&self, change: SubChange) {
        if let Some(bus) = self.bus.get() {
            let _ = bus.send(change);
        }
    }

    /// Every channel with at least one local subscriber (to resubscribe after a reconnect).
    pub fn channels(&self) -> Vec<Channel> {
        self.channels.iter().map(|e| e.key().clone()).collect()
    }

    /// The local subscribers of a conversation's channel and the last `seq` dispatched on it.
    pub fn conv_listeners(&self, conv: &ConvId) -> Option<(Vec<Arc<ConnShared>>, u64)> {
        self.channels.get(&Channel::Conv(conv.clone())).map(|l| {
            (
                l.conns.clone(),
                l.last_seq.load(std::sync::atomic::Ordering::Acquire),
            )
        })
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
            self.tell_bus(SubChange::Catchup {
                conv,
                after_seq: known_seq,
                conns: vec![conn.clone()],
            });
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
    pub fn gate_all(&self) -> Vec<(ConvId, u64, Vec<Arc<ConnShared>>)> {
        let mut out = Vec::new();
        for e in self.channels.iter() {
            if let Channel::Conv(conv) = e.key() {
                let after = e.value().last_seq.load(Ordering::Acquire);
                let gated: Vec<Arc<ConnShared>> = e
                    .value()
                    .conns
                    .iter()
                    .filter(|c| c.open_gate(conv, after))
                    .cloned()
                    .collect();
                if !gated.is_empty() {
                    out.push((conv.clone(), after, gated));
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
                    if j.joined {
                        if let Some(f) = frame {
                            c.deliver(f);
                        }
                    }
                    if j.replay {
                        replay.push(c);
                    }
                }
                if !replay.is_empty() {
                    self.tell_bus(SubChange::Catchup {
                        conv: conv.clone(),
                        after_seq: *after_seq,
                        conns: replay,
                    });
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

/// The wire form of bus messages between nodes: one kind byte, then the fields. Frames travel
/// as their MessagePack bytes, which nodes hand to MessagePack sockets unchanged.
///
/// ```text
/// 'F' audience except seq:msgpack-uint ts:msgpack-uint frame-bytes
///     audience: 'a' | 's' | 'v' | 'q' queue:msgpack-str
///     except:   msgpack-nil | msgpack-array [node:str, conn:uint]
/// 'A' conv:msgpack-str after_seq:msgpack-uint [frame-bytes]
/// 'D' conv:msgpack-str [frame-bytes]
/// 'C' code:u16-be
/// 'S' site-bytes
/// ```
///
/// The Redis engine's append script builds `'F' 'a' nil seq ts frame` itself (it alone knows
/// `seq`).
pub mod wire {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("malformed bus message: {0}")]
    pub struct WireError(&'static str);

    pub fn encode(msg: &BusMsg) -> Vec<u8> {
        let mut out = Vec::new();
        match msg {
            BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                except,
            } => {
                out.push(b'F');
                match audience {
                    Audience::All => out.push(b'a'),
                    Audience::Staff => out.push(b's'),
                    Audience::Visitors => out.push(b'v'),
                    Audience::Queue(q) => {
                        out.push(b'q');
                        write_str(&mut out, q.as_str());
                    }
                }
                match except {
                    None => rmp::encode::write_nil(&mut out).expect("writing to a Vec"),
                    Some(r) => {
                        rmp::encode::write_array_len(&mut out, 2).expect("writing to a Vec");
                        write_str(&mut out, r.node.as_str());
                        write_uint(&mut out, r.conn.0);
                    }
                }
                write_uint(&mut out, *seq);
                write_uint(&mut out, *ts);
                out.extend_from_slice(frame.msgpack());
            }
            BusMsg::Attach {
                conv,
                frame,
                after_seq,
            } => {
                out.push(b'A');
                write_str(&mut out, conv.as_str());
                write_uint(&mut out, *after_seq);
                if let Some(f) = frame {
                    out.extend_from_slice(f.msgpack());
                }
            }
            BusMsg::Detach { conv, frame } => {
                out.push(b'D');
                write_str(&mut out, conv.as_str());
                if let Some(f) = frame {
                    out.extend_from_slice(f.msgpack());
                }
            }
            BusMsg::Close(reason) => {
                out.push(b'C');
                out.extend_from_slice(&reason.code().to_be_bytes());
            }
            BusMsg::Settings(site) => {
                out.push(b'S');
                out.extend_from_slice(site.as_str().as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: Bytes) -> Result<BusMsg, WireError> {
        let Some(&kind) = bytes.first() else {
            return Err(WireError("empty"));
        };
        let mut rd = &bytes[1..];
        let msg = match kind {
            b'F' => {
                let (&a, rest) = rd.split_first().ok_or(WireError("no audience"))?;
                rd = rest;
                let audience = match a {
                    b'a' => Audience::All,
                    b's' => Audience::Staff,
                    b'v' => Audience::Visitors,
                    b'q' => Audience::Queue(QueueId(read_str(&mut rd)?)),
                    _ => return Err(WireError("unknown audience")),
                };
                let except = match rd.first() {
                    Some(0xc0) => {
                        rd = &rd[1..];
                        None
                    }
                    _ => {
                        let n = rmp::decode::read_array_len(&mut rd)
                            .map_err(|_| WireError("bad except"))?;
                        if n != 2 {
                            return Err(WireError("bad except"));
                        }
                        let node = crate::core::NodeId(read_str(&mut rd)?);
                        Some(ConnRef {
                            node,
                            conn: ConnId(read_uint(&mut rd)?),
                        })
                    }
                };
                let seq = read_uint(&mut rd)?;
                let ts = read_uint(&mut rd)?;
                let frame = Outbound::from_msgpack(rest_of(&bytes, rd));
                BusMsg::Frame {
                    audience,
                    frame,
                    seq,
                    ts,
                    except,
                }
            }
            b'A' => {
                let conv = ConvId(read_str(&mut rd)?);
                let after_seq = read_uint(&mut rd)?;
                let frame = (!rd.is_empty()).then(|| Outbound::from_msgpack(rest_of(&bytes, rd)));
                BusMsg::Attach {
                    conv,
                    frame,
                    after_seq,
                }
            }
            b'D' => {
                let conv = ConvId(read_str(&mut rd)?);
                let frame = (!rd.is_empty()).then(|| Outbound::from_msgpack(rest_of(&bytes, rd)));
                BusMsg::Detach { conv, frame }
            }
            b'C' => {
                let code = match rd {
                    [a, b] => u16::from_be_bytes([*a, *b]),
                    _ => return Err(WireError("bad close")),
                };
                BusMsg::Close(CloseReason::from_code(code).ok_or(WireError("unknown close"))?)
            }
            b'S' => BusMsg::Settings(SiteId(
                String::from_utf8(rd.to_vec()).map_err(|_| WireError("site not utf-8"))?,
            )),
            _ => return Err(WireError("unknown kind")),
        };
        Ok(msg)
    }

    /// The tail of `bytes` that `rd` still points at, sharing the allocation.
    fn rest_of(bytes: &Bytes, rd: &[u8]) -> Bytes {
        bytes.slice(bytes.len() - rd.len()..)
    }

    fn write_uint(out: &mut Vec<u8>, v: u64) {
        rmp::encode::write_uint(out, v).expect("writing to a Vec cannot fail");
    }

    fn write_str(out: &mut Vec<u8>, s: &str) {
        rmp::encode::write_str(out, s).expect("writing to a Vec cannot fail");
    }

    fn read_uint(rd: &mut &[u8]) -> Result<u64, WireError> {
        rmp::decode::read_int(rd).map_err(|_| WireError("bad integer"))
    }

    fn read_str(rd: &mut &[u8]) -> Result<String, WireError> {
        let len = rmp::decode::read_str_len(rd).map_err(|_| WireError("bad string"))? as usize;
        if rd.len() < len {
            return Err(WireError("short string"));
        }
        let (s, rest) = rd.split_at(len);
        *rd = rest;
        String::from_utf8(s.to_vec()).map_err(|_| WireError("string not utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Msg;

    fn conn(id: u64, role: Role, max: usize) -> (Arc<ConnShared>, Outbox) {
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
        assert!(vrx.try_recv().is_none());
        assert!(orx.try_recv().is_some());
        hub.dispatch(&ch, &msg_frame("hi"));
        assert!(vrx.try_recv().is_some() && orx.try_recv().is_some());
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
        while rx.try_recv().is_some() {
            frames += 1;
        }
        assert!((1..10).contains(&frames), "frames {frames}");
        assert_eq!(c.close_reason(), Some(CloseReason::TooSlow));
        assert!(c.queued_bytes() <= 64);
    }

    #[test]
    fn frames_held_during_a_replay_count_against_the_budget() {
        let hub = Hub::new();
        let (bus_tx, _bus_rx) = mpsc::unbounded_channel();
        hub.set_bus(bus_tx);
        let (c, mut rx) = conn(1, Role::Visitor, 512);
        hub.register(c.clone());
        hub.attach(&c, ConvId::from("c"), 0);
        let ch = Channel::Conv(ConvId::from("c"));
        // The replay never finishes while the conversation keeps going.
        for s in 1..=100 {
            hub.dispatch(&ch, &msg("c", s));
        }
        assert_eq!(c.close_reason(), Some(CloseReason::TooSlow));
        let held: usize = c.gates.lock().iter().map(|g| g.held.len()).sum();
        assert!((1..100).contains(&held), "held {held}");
        assert!(texts(&mut rx).is_empty());
    }

    fn labels(changes: &[SubChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                SubChange::Changed(ch) => format!("changed {ch:?}"),
                SubChange::Catchup {
                    conv, after_seq, ..
                } => format!("catchup {conv} {after_seq}"),
            })
            .collect()
    }

    fn texts(rx: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|m| m.to_text().unwrap().to_owned())
            .collect()
    }

    fn msg(conv: &str, seq: u64) -> BusMsg {
        BusMsg::frame(
            Audience::All,
            ServerFrame::Msg(Msg {
                conv: conv.into(),
                seq,
                from: crate::protocol::Author {
                    role: Role::Visitor,
                    id: "v".into(),
                    name: None,
                },
                text: format!("m{seq}"),
                ts: 1,
                cid: None,
            }),
        )
    }

    #[test]
    fn attach_on_user_channel_subscribes_that_users_connections() {
        let hub = Hub::new();
        let (bus_tx, mut bus_rx) = mpsc::unbounded_channel();
        hub.set_bus(bus_tx);
        let (o, mut orx) = conn(7, Role::Operator, 1 << 20);
        hub.register(o);
        let user = Channel::User(SiteId::from("s"), Role::Operator, "op".into());
        hub.subscribe(ConnId(7), user.clone());
        let joined = Outbound::new(ServerFrame::Ping {});
        let attach = BusMsg::Attach {
            conv: ConvId::from("c9"),
            frame: Some(joined),
            after_seq: 3,
        };
        hub.dispatch(&user, &attach);
        // Attaching twice changes nothing and delivers nothing twice.
        hub.dispatch(&user, &attach);
        let conv = Channel::Conv(ConvId::from("c9"));
        assert!(hub.has(&conv));
        assert_eq!(texts(&mut orx), vec![r#"{"t":"ping"}"#]);
        hub.unregister(ConnId(7));
        assert!(!hub.has(&conv) && !hub.has(&user));
        let changes: Vec<_> = std::iter::from_fn(|| bus_rx.try_recv().ok()).collect();
        assert_eq!(
            labels(&changes),
            vec![
                format!("changed {user:?}"),
                format!("changed {conv:?}"),
                "catchup c9 3".to_owned(),
                format!("changed {user:?}"),
                format!("changed {conv:?}"),
            ]
        );
    }

    #[test]
    fn an_echo_skips_the_connection_it_came_from() {
        let hub = Hub::new();
        hub.set_node(crate::core::NodeId::from("n1"));
        let (a, mut arx) = conn(1, Role::Operator, 1 << 20);
        let (b, mut brx) = conn(2, Role::Operator, 1 << 20);
        hub.register(a);
        hub.register(b);
        let ch = Channel::Conv(ConvId::from("c"));
        hub.subscribe(ConnId(1), ch.clone());
        hub.subscribe(ConnId(2), ch.clone());
        let from = |node: &str| ConnRef {
            node: crate::core::NodeId::from(node),
            conn: ConnId(1),
        };
        hub.dispatch(
            &ch,
            &BusMsg::frame_except(Audience::All, ServerFrame::Ping {}, from("n1")),
        );
        assert!(texts(&mut arx).is_empty());
        assert_eq!(texts(&mut brx).len(), 1);
        // Connection 1 of another node is another connection.
        hub.dispatch(
            &ch,
            &BusMsg::frame_except(Audience::All, ServerFrame::Ping {}, from("n2")),
        );
        assert_eq!(texts(&mut arx).len(), 1);
    }

    #[test]
    fn detach_delivers_its_frame_then_leaves() {
        let hub = Hub::new();
        let (o, mut orx) = conn(1, Role::Operator, 1 << 20);
        hub.register(o);
        let user = Channel::User(SiteId::from("s"), Role::Operator, "op".into());
        hub.subscribe(ConnId(1), user.clone());
        hub.subscribe(ConnId(1), Channel::Conv(ConvId::from("c")));
        let detach = BusMsg::Detach {
            conv: ConvId::from("c"),
            frame: Some(Outbound::new(ServerFrame::Pong {})),
        };
        hub.dispatch(&user, &detach);
        hub.dispatch(&user, &detach);
        assert_eq!(
            texts(&mut orx),
            vec![r#"{"t":"pong"}"#],
            "once, while attached"
        );
        assert!(!hub.has(&Channel::Conv(ConvId::from("c"))));
    }

    #[test]
    fn a_replay_and_live_frames_leave_in_seq_order_each_once() {
        let hub = Hub::new();
        let (bus_tx, _bus_rx) = mpsc::unbounded_channel();
        hub.set_bus(bus_tx);
        let (c, mut rx) = conn(1, Role::Visitor, 1 << 20);
        hub.register(c.clone());
        hub.attach(&c, ConvId::from("c"), 2);
        let ch = Channel::Conv(ConvId::from("c"));
        // Live frames arrive while the log is being read: held back.
        hub.dispatch(&ch, &msg("c", 5));
        hub.dispatch(&ch, &msg("c", 6));
        assert!(texts(&mut rx).is_empty());
        let replayed: Vec<(u64, Arc<Outbound>)> = (2..=5)
            .map(|s| match msg("c", s) {
                BusMsg::Frame { frame, .. } => (s, frame),
                _ => unreachable!(),
            })
            .collect();
        c.release_gate(&ConvId::from("c"), &replayed);
        hub.dispatch(&ch, &msg("c", 7));
        let seqs: Vec<u64> = texts(&mut rx)
            .iter()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn bus_messages_survive_the_wire_and_frames_keep_their_bytes() {
        let frame = msg("c1", 42);
        let BusMsg::Frame {
            frame: original, ..
        } = &frame
        else {
            unreachable!()
        };
        let back = wire::decode(Bytes::from(wire::encode(&frame))).unwrap();
        let BusMsg::Frame {
            audience,
            frame: f,
            seq,
            ts,
            except,
        } = back
        else {
            panic!("not a frame")
        };
        assert_eq!((audience, seq, ts, except), (Audience::All, 42, 1, None));
        // MessagePack passes through untouched; JSON is transcoded to the same text.
        assert_eq!(f.msgpack(), original.msgpack());
        assert_eq!(
            f.message(Encoding::Json).to_text().unwrap(),
            original.message(Encoding::Json).to_text().unwrap()
        );
        let q = BusMsg::frame(
            Audience::Queue(QueueId::from("sales")),
            ServerFrame::Ping {},
        );
        match wire::decode(Bytes::from(wire::encode(&q))).unwrap() {
            BusMsg::Frame { audience, seq, .. } => {
                assert_eq!(
                    (audience, seq),
                    (Audience::Queue(QueueId::from("sales")), 0)
                )
            }
            _ => panic!("not a frame"),
        }
        let echo = BusMsg::frame_except(
            Audience::Staff,
            ServerFrame::Pong {},
            ConnRef {
                node: crate::core::NodeId::from("n1"),
                conn: ConnId(7),
            },
        );
        for m in [
            echo,
            BusMsg::Attach {
                conv: ConvId::from("c"),
                frame: None,
                after_seq: 9,
            },
            BusMsg::Detach {
                conv: ConvId::from("c"),
                frame: Some(Outbound::new(ServerFrame::Ping {})),
            },
            BusMsg::Close(CloseReason::Forbidden),
            BusMsg::Settings(SiteId::from("demo")),
        ] {
            let back = wire::decode(Bytes::from(wire::encode(&m))).unwrap();
            assert_eq!(
                format!("{:?}", wire::encode(&back)),
                format!("{:?}", wire::encode(&m))
            );
        }
        for bad in [&b""[..], b"Z", b"Fx", b"C\x00", b"A\xc1"] {
            assert!(
                wire::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
