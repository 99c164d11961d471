//! One connection's side of the hub: its outbound queue, bounded in bytes (overflow closes it
//! with 4008), its close request, and what it receives.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use super::gates::Gate;
use crate::bus::{Audience, Outbound};
use crate::core::{ConnId, ConvId, NodeId, QueueId};
use crate::metrics as m;
use crate::protocol::{CloseReason, Encoding, Role};

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
    pub(super) queued: AtomicUsize,
    pub(super) max_queued: usize,
    /// The largest single frame this connection can write (the socket's write buffer and
    /// half the budget bound it): a larger one is never queued, and never cuts the
    /// connection either.
    frame_cap: usize,
    /// 0 while open, else the close code asked for (first request wins).
    close_code: AtomicU16,
    closed: Notify,
    /// Unix ms of the last frame received from the client.
    pub last_rx: AtomicU64,
    /// Conversations whose `msg` frames are held back while the log is replayed to this
    /// connection (see [`ConnShared::open_gate`]); `gated` is the lock-free fast path.
    pub(super) gates: parking_lot::Mutex<Vec<Gate>>,
    pub(super) gated: AtomicBool,
    /// Where the connection counts in its site's presence, once it does (boxed: most
    /// visitors' connections, browsing without a conversation, never count).
    counted: parking_lot::Mutex<Option<Box<Counted>>>,
    /// A visitor's connection was attached to a conversation it does not count for: its task
    /// counts it (see [`ConnShared::attention`]).
    recount: AtomicBool,
}

/// Where a connection counts in its site's presence: under the node life it was counted in,
/// and for a visitor, the conversation whose presence it is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub life: NodeId,
    pub conv: Option<ConvId>,
}

/// What a connection's task must see to before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Close with this reason.
    Close(CloseReason),
    /// Count the visitor in the presence of the conversation they were attached to.
    Recount,
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

impl ConnShared {
    /// A connection and the receiving end of its outbound queue.
    pub fn new(
        id: ConnId,
        role: Role,
        encoding: Encoding,
        queues: Option<Vec<QueueId>>,
        max_queued: usize,
        frame_cap: usize,
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
            frame_cap: frame_cap.min(max_queued),
            close_code: AtomicU16::new(0),
            closed: Notify::new(),
            last_rx: AtomicU64::new(now),
            gates: parking_lot::Mutex::new(Vec::new()),
            gated: AtomicBool::new(false),
            counted: parking_lot::Mutex::new(None),
            recount: AtomicBool::new(false),
        };
        (Arc::new(c), rx)
    }

    pub(super) fn wants(&self, audience: &Audience) -> bool {
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

    /// Queues a message, charged against the byte budget; `false` when it was not queued (the
    /// connection closes, or the frame is larger than the connection can write: then it is
    /// dropped, logged, and the connection stays).
    pub fn push(&self, msg: Message) -> bool {
        if self.is_closing() {
            return false;
        }
        let len = message_len(&msg);
        if len > self.frame_cap {
            metrics::counter!(m::OVERSIZE_FRAMES).increment(1);
            tracing::warn!(
                conn = self.id.0,
                role = self.role.as_str(),
                len,
                cap = self.frame_cap,
                "a frame larger than the connection can write was not sent"
            );
            return false;
        }
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
    pub(super) fn cut_too_slow(&self) {
        metrics::counter!(m::SLOW_CLOSES).increment(1);
        if self.role.is_staff() && !self.is_closing() {
            // An operator cut is a person out of work until they reconnect: worth a look.
            tracing::warn!(
                conn = self.id.0,
                role = self.role.as_str(),
                queued = self.queued.load(Ordering::Relaxed),
                budget = self.max_queued,
                "staff connection cut with 4008: it could not take what was sent to it"
            );
        }
        self.close(CloseReason::TooSlow);
    }

    /// The largest frame this connection can be sent.
    pub fn frame_cap(&self) -> usize {
        self.frame_cap
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

    /// Resolves once the connection must close, or (when `recount` is allowed: the task is
    /// free to run a transition) once it must count in a conversation's presence.
    pub async fn attention(&self, recount: bool) -> Attention {
        loop {
            if let Some(r) = self.close_reason() {
                return Attention::Close(r);
            }
            if recount && self.recount.swap(false, Ordering::AcqRel) {
                return Attention::Recount;
            }
            self.closed.notified().await;
        }
    }

    /// Where the connection counts in its site's presence.
    pub fn counted(&self) -> Option<Counted> {
        self.counted.lock().as_deref().cloned()
    }

    pub fn set_counted(&self, c: Option<Counted>) {
        *self.counted.lock() = c.map(Box::new);
    }

    /// A visitor's connection was attached to `conv`: unless it counts for it already, its
    /// task is asked to count it.
    pub(super) fn attached_visitor(&self, conv: &ConvId) {
        let counts = self
            .counted
            .lock()
            .as_ref()
            .is_some_and(|c| c.conv.as_ref() == Some(conv));
        if !counts {
            self.recount.store(true, Ordering::Release);
            self.closed.notify_one();
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
