//! The pure core: conversation lifecycle, routing, presence rules and timers of one site.
//!
//! `state + command -> new state + effects`. Nothing here does IO, reads a clock or spawns a
//! task: the caller passes `now`, executes the returned [`Effect`]s (publish a frame, append a
//! system message, set a timer) and persists the state. Both engines run every transition
//! through [`handle`], so there is one implementation of every rule.
//!
//! A command that is rejected leaves the state untouched: every handler validates first and
//! mutates after.
//!
//! **Invariant:** a conversation has at most one operator, and it is in that operator's `convs`.
//! **Invariant:** an operator's `convs` never grows past their `max_chats`.
//! **Invariant:** an operator who let an offer lapse, declined, or was reassigned away is never
//! offered or auto-assigned that conversation again (`tried`).

pub mod ids;
pub mod settings;
pub mod tracked;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use ids::{ConnId, ConvId, NodeId, OperatorId, QueueId, Seq, SiteId, VisitorId};
pub use settings::{Routing, Settings};
pub use tracked::Tracked;

use crate::protocol::{
    ConvEvent, ConvState, Conversation, ErrorCode, OperatorRef, OperatorStatus, Preview,
    TransferTarget, VisitorView,
};

/// Unix time in milliseconds.
pub type Millis = u64;

/// Longest tag, in bytes, and most tags on one conversation.
pub const MAX_TAG_LEN: usize = 40;
pub const MAX_TAGS: usize = 20;
/// At most this many waiting conversations are listed in one `queue` frame.
pub const QUEUE_LIST_LIMIT: usize = 100;
/// The most custom parameters a conversation's visitor carries.
pub const MAX_PARAMS: usize = 50;

/// Everything the core knows about one site's routing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    pub site: SiteId,
    /// Bumped by every transition that changed something; the Redis engine compares and sets
    /// on it.
    pub version: u64,
    pub operators: Tracked<OperatorId, Operator>,
    pub visitors: Tracked<VisitorId, Visitor>,
    /// Open conversations only (queued, offered, active). Closed ones leave the state.
    pub convs: Tracked<ConvId, Conv>,
    /// FIFO order of the queue: grows by one per conversation (re)entering a queue.
    pub queue_clock: u64,
    /// The queue clock before the current transition first moved it (the one scalar the
    /// maps' tracking does not cover).
    #[serde(skip)]
    queue_clock_before: Option<u64>,
}

impl SiteState {
    /// A fresh, empty state of a site.
    pub fn new(site: SiteId) -> SiteState {
        SiteState {
            site,
            ..SiteState::default()
        }
    }

    /// Whether the last transition touched anything.
    pub fn is_touched(&self) -> bool {
        self.operators.is_touched()
            || self.visitors.is_touched()
            || self.convs.is_touched()
            || self.queue_clock_before.is_some()
    }

    /// Forgets what the last transition touched (the in-memory engine has nothing to write).
    pub fn clear_touched(&mut self) {
        self.operators.clear_touched();
        self.visitors.clear_touched();
        self.convs.clear_touched();
        self.queue_clock_before = None;
    }

    /// The next position in the queues' FIFO order.
    fn tick_queue_clock(&mut self) -> u64 {
        self.queue_clock_before.get_or_insert(self.queue_clock);
        self.queue_clock += 1;
        self.queue_clock
    }

    /// Puts back what the last transition touched, and its version: an engine that could
    /// not store a transition returns its copy to the state it was read in.
    pub fn rollback(&mut self) {
        if self.is_touched() {
            self.version -= 1;
        }
        self.undo();
    }

    /// Puts back every touched entry and the queue clock (not the version).
    fn undo(&mut self) {
        self.operators.rollback();
        self.visitors.rollback();
        self.convs.rollback();
        if let Some(c) = self.queue_clock_before.take() {
            self.queue_clock = c;
        }
    }
}

/// Live connections of one participant, counted per node, so that the share of a node that
/// died can be taken away as a whole ([`Command::NodeGone`]). A participant is almost always
/// on one node, so this is a short list, not a map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conns(Vec<(NodeId, u32)>);

impl Conns {
    pub fn total(&self) -> u32 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn is_online(&self) -> bool {
        !self.0.is_empty()
    }

    fn add(&mut self, node: &NodeId) {
        match self.0.iter_mut().find(|(n, _)| n == node) {
            Some((_, count)) => *count += 1,
            None => self.0.push((node.clone(), 1)),
        }
    }

    /// Takes one connection away; `false` when the node had none.
    fn remove(&mut self, node: &NodeId) -> bool {
        let Some(i) = self.0.iter().position(|(n, _)| n == node) else {
            return false;
        };
        if self.0[i].1 > 1 {
            self.0[i].1 -= 1;
        } else {
            self.0.swap_remove(i);
        }
        true
    }

    /// Takes every connection of a node away; `false` when it had none.
    fn drop_node(&mut self, node: &NodeId) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != node);
        self.0.len() != before
    }

    pub fn has_node(&self, node: &NodeId) -> bool {
        self.0.iter().any(|(n, _)| n == node)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub status: OperatorStatus,
    /// Live connections, per node.
    pub conns: Conns,
    /// From the token; `None` means the site's `max_chats`.
    pub max_chats: Option<u32>,
    /// From the token; `None` means every queue of the site.
    pub queues: Option<Vec<QueueId>>,
    pub convs: BTreeSet<ConvId>,
    pub offers: BTreeSet<ConvId>,
    /// When the operator last got a conversation: the tie-break of least-loaded routing.
    pub last_assigned: Millis,
    /// Set while the operator has no connection and the grace window runs.
    pub away_since: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Visitor {
    pub conns: Conns,
    pub conv: Option<ConvId>,
    pub away_since: Option<Millis>,
}

/// What the visitor told us and what their browser says, shown to operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorProfile {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub params: BTreeMap<String, String>,
    pub preview: Option<Preview>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    pub queue: QueueId,
    pub state: ConvState,
    pub visitor: VisitorId,
    pub profile: VisitorProfile,
    pub operator: Option<OperatorId>,
    pub offered_to: Option<OperatorId>,
    pub offer_expires: Option<Millis>,
    /// Operators who declined, let an offer lapse or were reassigned away.
    pub tried: BTreeSet<OperatorId>,
    pub tags: Vec<String>,
    pub created_at: Millis,
    pub queued_at: u64,
    pub previous: Option<ConvId>,
    /// The unavailability notice was sent for the current wait.
    pub notified: bool,
    /// Set while the visitor is gone and the conversation waits for a call-back (until then):
    /// inactivity does not close it, the call-back timer does.
    #[serde(default)]
    pub callback_until: Option<Millis>,
}

/// Who does something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Visitor(VisitorId),
    Operator(OperatorId),
    Supervisor(String),
    System,
}

/// A connection-holding participant whose sockets attach to a conversation's channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Participant {
    Visitor(VisitorId),
    Operator(OperatorId),
}

/// Every timer of a site. One timer per kind and target; setting it again moves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerKind {
    /// The offer of a conversation lapses.
    Offer(ConvId),
    /// The operator has not answered the visitor for `reassign_after`.
    Reassign(ConvId),
    /// Nothing was written for `close_after_inactive`.
    Inactive(ConvId),
    /// A left-behind conversation has waited `offline_callback` for a call-back.
    Callback(ConvId),
    /// The visitor's reconnect window ends.
    VisitorGrace(VisitorId),
    /// The operator's reconnect window ends.
    OperatorGrace(OperatorId),
}

/// Message activity of a conversation, kept with its log and read when a timer fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Time of the last message of any participant (system messages excluded).
    pub last_ts: Millis,
    /// Time of the first visitor message the operator has not answered yet.
    pub unanswered_since: Option<Millis>,
}

/// Inputs to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    OperatorConnected {
        op: OperatorId,
        node: NodeId,
        name: String,
        max_chats: Option<u32>,
        queues: Option<Vec<QueueId>>,
    },
    OperatorDisconnected {
        op: OperatorId,
        node: NodeId,
    },
    VisitorConnected {
        visitor: VisitorId,
        node: NodeId,
    },
    VisitorDisconnected {
        visitor: VisitorId,
        node: NodeId,
    },
    /// A node died: every connection it held is gone at once.
    NodeGone {
        node: NodeId,
    },
    SetStatus {
        op: OperatorId,
        status: OperatorStatus,
    },
    Start {
        visitor: VisitorId,
        /// The node of the connection that starts it.
        node: NodeId,
        /// Chosen by the caller so a retried transition keeps the same id.
        conv: ConvId,
        queue: Option<QueueId>,
        profile: Box<VisitorProfile>,
        previous: Option<ConvId>,
    },
    Accept {
        op: OperatorId,
        conv: ConvId,
    },
    Decline {
        op: OperatorId,
        conv: ConvId,
    },
    Transfer {
        by: Actor,
        conv: ConvId,
        to: TransferTarget,
        note: Option<String>,
    },
    Assign {
        conv: ConvId,
        op: OperatorId,
    },
    Close {
        by: Actor,
        conv: ConvId,
        outcome: Option<String>,
        tags: Vec<String>,
    },
    Tag {
        conv: ConvId,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// The visitor of an open conversation gives new contact details (`Some` replaces) or
    /// parameters (merged; an empty value removes the key).
    Identify {
        visitor: VisitorId,
        conv: ConvId,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        params: BTreeMap<String, String>,
    },
    /// A visitor wrote into a conversation no operator holds: maybe send the notice.
    VisitorWrote {
        conv: ConvId,
    },
    Timer {
        kind: TimerKind,
        activity: Activity,
    },
    /// Settings changed: routing may now place waiting conversations.
    SettingsChanged,
}

/// What the caller must do after a committed transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a `conv` event to the conversation's channel and record the snapshot.
    Conv {
        event: ConvEvent,
        conv: Box<Conversation>,
        reason: Option<String>,
    },
    /// The waiting list of a queue changed: the site's staff get the new one (the caller
    /// coalesces bursts of changes into one listing).
    Queue {
        queue: QueueId,
    },
    /// Publish an operator's status, presence and load to the site's staff.
    Operator {
        id: OperatorId,
        name: String,
        status: OperatorStatus,
        online: bool,
        load: u32,
    },
    /// Offer a conversation to one operator.
    Offer {
        op: OperatorId,
        conv: Box<Conversation>,
        expires_at: Millis,
    },
    /// The participant's connections join the conversation's channel. `update` is the
    /// conversation event they join with (delivered to them directly: they were not on the
    /// channel when it was published there).
    Attach {
        conv: ConvId,
        who: Participant,
        update: Option<ConvUpdate>,
    },
    /// The participant's connections leave the conversation's channel, after receiving
    /// `update` (the event that made them leave).
    Detach {
        conv: ConvId,
        who: Participant,
        update: Option<ConvUpdate>,
    },
    /// Append a system message to the conversation.
    System {
        conv: ConvId,
        text: String,
    },
    /// Tell the visitor of a conversation something (`notice` frame).
    Notice {
        conv: ConvId,
        code: &'static str,
        text: String,
    },
    SetTimer {
        kind: TimerKind,
        at: Millis,
    },
    CancelTimer {
        kind: TimerKind,
    },
}

/// A `conv` event as joining or leaving participants receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvUpdate {
    pub event: ConvEvent,
    pub conv: Box<Conversation>,
    pub reason: Option<String>,
}

/// The answer to the command's sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    None,
    Conv(Box<Conversation>),
    Status(OperatorStatus),
}

/// A refused command; the state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: &'static str,
}

fn reject<T>(code: ErrorCode, message: &'static str) -> Result<T, Reject> {
    Err(Reject { code, message })
}

/// What the core reads besides the state.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    /// The site's queues; the first is the default.
    pub queues: &'a [QueueId],
    pub now: Millis,
}

/// Runs one command. On `Ok` the state has moved (and `version` grew); on `Err` it has not.
pub fn handle(
    state: &mut SiteState,
    ctx: Ctx<'_>,
    cmd: Command,
) -> Result<(Reply, Vec<Effect>), Reject> {
    let mut core = Core {
        st: state,
        ctx,
        effects: Vec::new(),
        dirty_queues: BTreeSet::new(),
        dirty_ops: BTreeSet::new(),
    };
    match core.run(cmd) {
        Ok(reply) => {
            core.flush();
            // A transition that changed nothing has nothing to store.
            if core.st.is_touched() {
                core.st.version += 1;
            }
            Ok((reply, core.effects))
        }
        Err(r) => {
            // Whatever the handler touched before refusing is put back (the version was not
            // bumped yet).
            state.undo();
            Err(r)
        }
    }
}

/// Renders a conversation as staff see it (`last_seq` is filled from the log by the caller).
pub fn view(state: &SiteState, id: &ConvId) -> Option<Conversation> {
    state.convs.get(id).map(|c| render(state, id, c))
}

fn render(st: &SiteState, id: &ConvId, c: &Conv) -> Conversation {
    Conversation {
        id: id.0.clone(),
        site: st.site.0.clone(),
        queue: c.queue.0.clone(),
        state: c.state,
        visitor: VisitorView {
            id: c.visitor.0.clone(),
            name: c.profile.name.clone(),
            online: st
                .visitors
                .get(&c.visitor)
                .is_some_and(|v| v.conns.is_online()),
            preview: c.profile.preview.clone(),
            email: c.profile.email.clone(),
            phone: c.profile.phone.clone(),
            params: c.profile.params.clone(),
        },
        operator: c.operator.as_ref().map(|o| OperatorRef {
            id: o.0.clone(),
            name: st
                .operators
                .get(o)
                .map(|op| op.name.clone())
                .unwrap_or_default(),
        }),
        last_seq: 0,
        tags: c.tags.clone(),
        created_at: c.created_at,
        previous: c.previous.as_ref().map(|p| p.0.clone()),
        recovered: None,
        outcome: None,
        draft: None,
    }
}

/// The conversations waiting in a queue, oldest first.
pub fn waiting(state: &SiteState, queue: &QueueId) -> (Vec<Conversation>, usize) {
    let mut w: Vec<(&ConvId, &Conv)> = state
        .convs
        .iter()
        .filter(|(_, c)| {
            &c.queue == queue && matches!(c.state, ConvState::Queued | ConvState::Offered)
        })
        .collect();
    w.sort_by_key(|(_, c)| c.queued_at);
    let count = w.len();
    let list = w
        .into_iter()
        .take(QUEUE_LIST_LIMIT)
        .map(|(id, c)| render(state, id, c))
        .collect();
    (list, count)
}

/// How many open conversations a site has in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Waiting in a queue, no operator asked yet.
    pub queued: usize,
    /// Offered to an operator who has not answered yet.
    pub offered: usize,
    pub active: usize,
}

impl std::ops::AddAssign for Census {
    fn add_assign(&mut self, o: Census) {
        self.queued += o.queued;
        self.offered += o.offered;
        self.active += o.active;
    }
}

/// Counts a site's open conversations by state.
pub fn census(state: &SiteState) -> Census {
    let mut c = Census::default();
    for (_, conv) in state.convs.iter() {
        match conv.state {
            ConvState::Queued => c.queued += 1,
            ConvState::Offered => c.offered += 1,
            ConvState::Active => c.active += 1,
            ConvState::Closed => {}
        }
    }
    c
}

/// Whether an operator serves a queue.
pub fn serves(op: &Operator, queue: &QueueId) -> bool {
    op.queues.as_ref().is_none_or(|qs| qs.contains(queue))
}

/// The operator's limit of concurrent conversations.
pub fn max_chats(op: &Operator, settings: &Settings) -> u32 {
    op.max_chats.unwrap_or(settings.max_chats)
}

/// Site availability as the widget shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// An active, connected operator has room.
    Online,
    /// Operators are connected but none can take a conversation now.
    Busy,
    /// No operator is connected.
    Offline,
}

pub fn availability(state: &SiteState, settings: &Settings) -> Availability {
    let mut any_online = false;
    for op in state.operators.values() {
        if !op.conns.is_online() {
            continue;
        }
        any_online = true;
        if op.status == OperatorStatus::Active && (op.convs.len() as u32) < max_chats(op, settings)
        {
            return Availability::Online;
        }
    }
    if any_online {
        Availability::Busy
    } else {
        Availability::Offline
    }
}

struct Core<'s, 'c> {
    st: &'s mut SiteState,
    ctx: Ctx<'c>,
    effects: Vec<Effect>,
    dirty_queues: BTreeSet<QueueId>,
    dirty_ops: BTreeSet<OperatorId>,
}

impl Core<'_, '_> {
    fn run(&mut self, cmd: Command) -> Result<Reply, Reject> {
        match cmd {
            Command::OperatorConnected {
                op,
                node,
                name,
                max_chats,
                queues,
            } => self.operator_connected(op, node, name, max_chats, queues),
            Command::OperatorDisconnected { op, node } => self.operator_disconnected(op, node),
            Command::VisitorConnected { visitor, node } => self.visitor_connected(visitor, node),
            Command::VisitorDisconnected { visitor, node } => {
                self.visitor_disconnected(visitor, node)
            }
            Command::NodeGone { node } => self.node_gone(node),
            Command::SetStatus { op, status } => self.set_status(op, status),
            Command::Start {
                visitor,
                node,
                conv,
                queue,
                profile,
                previous,
            } => self.start(visitor, node, conv, queue, profile, previous),
            Command::Accept { op, conv } => self.accept(op, conv),
            Command::Decline { op, conv } => self.decline(op, conv),
            Command::Transfer { by, conv, to, note } => self.transfer(by, conv, to, note),
            Command::Assign { conv, op } => self.assign_cmd(conv, op),
            Command::Close {
                by,
                conv,
                outcome,
                tags,
            } => self.close_cmd(by, conv, outcome, tags),
            Command::Tag { conv, add, remove } => self.tag(conv, add, remove),
            Command::Identify {
                visitor,
                conv,
                name,
                email,
                phone,
                params,
            } => self.identify(visitor, conv, [name, email, phone], params),
            Command::VisitorWrote { conv } => self.visitor_wrote(conv),
            Command::Timer { kind, activity } => self.timer(kind, activity),
            Command::SettingsChanged => {
                self.route_waiting();
                Ok(Reply::None)
            }
        }
    }

    // ----- presence -----

    fn operator_connected(
        &mut self,
        id: OperatorId,
        node: NodeId,
        name: String,
        max: Option<u32>,
        queues: Option<Vec<QueueId>>,
    ) -> Result<Reply, Reject> {
        let op = self
            .st
            .operators
            .get_or_insert_with(id.clone(), || Operator {
                name: name.clone(),
                status: OperatorStatus::Inactive,
                conns: Conns::default(),
                max_chats: None,
                queues: None,
                convs: BTreeSet::new(),
                offers: BTreeSet::new(),
                last_assigned: 0,
                away_since: None,
            });
        op.name = name;
        op.max_chats = max;
        op.queues = queues;
        let first = !op.conns.is_online();
        op.conns.add(&node);
        let came_back = first && op.away_since.take().is_some();
        let convs: Vec<ConvId> = op.convs.iter().cloned().collect();
        if first {
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::OperatorGrace(id.clone()),
            });
        }
        if came_back {
            for c in convs {
                self.conv_event(&c, ConvEvent::OperatorBack, None);
            }
        }
        self.dirty_ops.insert(id);
        self.route_waiting();
        Ok(Reply::None)
    }

    fn operator_disconnected(&mut self, id: OperatorId, node: NodeId) -> Result<Reply, Reject> {
        let Some(op) = self.st.operators.get(&id) else {
            return Ok(Reply::None);
        };
        if !op.conns.has_node(&node) {
            return Ok(Reply::None);
        }
        let op = self.st.operators.get_mut(&id).expect("checked above");
        op.conns.remove(&node);
        self.dirty_ops.insert(id.clone());
        if !op.conns.is_online() {
            self.operator_offline(id);
        }
        Ok(Reply::None)
    }

    /// The operator's last connection is gone: their conversations learn it and the grace runs.
    fn operator_offline(&mut self, id: OperatorId) {
        let grace = self.ctx.settings.operator_grace;
        let now = self.ctx.now;
        let Some(op) = self.st.operators.get_mut(&id) else {
            return;
        };
        op.away_since = Some(now);
        let convs: Vec<ConvId> = op.convs.iter().cloned().collect();
        for c in &convs {
            self.conv_event(c, ConvEvent::OperatorAway, Some("disconnected".into()));
        }
        if grace.is_zero() {
            self.operator_gone(&id);
        } else {
            self.effects.push(Effect::SetTimer {
                kind: TimerKind::OperatorGrace(id),
                at: now + grace.as_millis() as u64,
            });
        }
    }

    /// The operator stayed disconnected past the grace: unavailable, conversations requeued.
    fn operator_gone(&mut self, id: &OperatorId) {
        let Some(op) = self.st.operators.get(id) else {
            return;
        };
        if op.conns.is_online() {
            return;
        }
        let op = self.st.operators.get_mut(id).expect("checked above");
        op.status = OperatorStatus::Inactive;
        op.away_since = None;
        let convs: Vec<ConvId> = op.convs.iter().cloned().collect();
        let offers: Vec<ConvId> = op.offers.iter().cloned().collect();
        self.dirty_ops.insert(id.clone());
        for c in convs {
            self.unassign(&c, id);
            self.requeue(&c, Some("operator_left"));
        }
        for c in offers {
            self.lapse_offer(&c);
        }
        // The operator is kept (with status inactive) so supervisors still see them.
        self.route_waiting();
    }

    fn visitor_connected(&mut self, id: VisitorId, node: NodeId) -> Result<Reply, Reject> {
        let v = self
            .st
            .visitors
            .get_or_insert_with(id.clone(), Visitor::default);
        let first = !v.conns.is_online();
        v.conns.add(&node);
        if first {
            let was_away = v.away_since.take().is_some();
            if let Some(conv) = v.conv.clone() {
                self.effects.push(Effect::CancelTimer {
                    kind: TimerKind::VisitorGrace(id),
                });
                if was_away {
                    if let Some(c) = self.st.convs.get_mut(&conv) {
                        c.callback_until = None;
                    }
                    self.effects.push(Effect::CancelTimer {
                        kind: TimerKind::Callback(conv.clone()),
                    });
                    self.conv_event(&conv, ConvEvent::VisitorBack, None);
                    self.dirty_queue_of(&conv);
                }
            }
        }
        Ok(Reply::None)
    }

    fn visitor_disconnected(&mut self, id: VisitorId, node: NodeId) -> Result<Reply, Reject> {
        let Some(v) = self.st.visitors.get(&id) else {
            return Ok(Reply::None);
        };
        if !v.conns.has_node(&node) {
            return Ok(Reply::None);
        }
        let v = self.st.visitors.get_mut(&id).expect("checked above");
        v.conns.remove(&node);
        if !v.conns.is_online() {
            self.visitor_offline(id);
        }
        Ok(Reply::None)
    }

    /// The visitor's last connection is gone: away, and the reconnect grace runs.
    fn visitor_offline(&mut self, id: VisitorId) {
        let grace = self.ctx.settings.visitor_grace;
        let now = self.ctx.now;
        let Some(v) = self.st.visitors.get_mut(&id) else {
            return;
        };
        let Some(conv) = v.conv.clone() else {
            self.st.visitors.remove(&id);
            return;
        };
        v.away_since = Some(now);
        self.conv_event(&conv, ConvEvent::VisitorAway, Some("disconnected".into()));
        self.dirty_queue_of(&conv);
        if grace.is_zero() {
            self.visitor_gone(&id);
        } else {
            self.effects.push(Effect::SetTimer {
                kind: TimerKind::VisitorGrace(id),
                at: now + grace.as_millis() as u64,
            });
        }
    }

    /// Every connection a dead node held is gone: whoever is left with none goes offline, as
    /// if each of those connections had closed.
    fn node_gone(&mut self, node: NodeId) -> Result<Reply, Reject> {
        let ops: Vec<OperatorId> = self
            .st
            .operators
            .iter()
            .filter(|(_, o)| o.conns.has_node(&node))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ops {
            let op = self.st.operators.get_mut(&id).expect("listed above");
            op.conns.drop_node(&node);
            self.dirty_ops.insert(id.clone());
            if !op.conns.is_online() {
                self.operator_offline(id);
            }
        }
        let visitors: Vec<VisitorId> = self
            .st
            .visitors
            .iter()
            .filter(|(_, v)| v.conns.has_node(&node))
            .map(|(id, _)| id.clone())
            .collect();
        for id in visitors {
            let v = self.st.visitors.get_mut(&id).expect("listed above");
            v.conns.drop_node(&node);
            if !v.conns.is_online() {
                self.visitor_offline(id);
            }
        }
        Ok(Reply::None)
    }

    /// The visitor stayed away past the grace: the conversation ends, unless it waits in a queue
    /// and the site keeps such conversations for a call-back.
    fn visitor_gone(&mut self, id: &VisitorId) {
        let Some(v) = self.st.visitors.get(id) else {
            return;
        };
        if v.conns.is_online() {
            return;
        }
        let Some(conv) = v.conv.clone() else {
            self.st.visitors.remove(id);
            return;
        };
        let waiting = self
            .st
            .convs
            .get(&conv)
            .is_some_and(|c| c.state != ConvState::Active);
        match self.ctx.settings.offline_callback {
            Some(keep) if waiting => {
                let until = self.ctx.now + keep.as_millis() as u64;
                if let Some(c) = self.st.convs.get_mut(&conv) {
                    c.callback_until = Some(until);
                }
                self.effects.push(Effect::SetTimer {
                    kind: TimerKind::Callback(conv.clone()),
                    at: until,
                });
                self.conv_event(&conv, ConvEvent::VisitorAway, Some("callback".into()));
            }
            _ => {
                let outcome = if waiting { "abandoned" } else { "visitor_left" };
                self.close(&conv, Some(outcome.into()), "visitor_left");
            }
        }
    }

    fn set_status(&mut self, id: OperatorId, status: OperatorStatus) -> Result<Reply, Reject> {
        let Some(op) = self.st.operators.get_mut(&id) else {
            return reject(ErrorCode::NotFound, "operator is not connected");
        };
        op.status = status;
        let offers: Vec<ConvId> = op.offers.iter().cloned().collect();
        self.dirty_ops.insert(id);
        if status != OperatorStatus::Active {
            for c in offers {
                self.lapse_offer(&c);
            }
        }
        self.route_waiting();
        Ok(Reply::Status(status))
    }

    // ----- lifecycle -----

    fn start(
        &mut self,
        visitor: VisitorId,
        node: NodeId,
        id: ConvId,
        queue: Option<QueueId>,
        profile: Box<VisitorProfile>,
        previous: Option<ConvId>,
    ) -> Result<Reply, Reject> {
        if let Some(open) = self.st.visitors.get(&visitor).and_then(|v| v.conv.clone()) {
            if let Some(c) = view(self.st, &open) {
                return Ok(Reply::Conv(Box::new(c)));
            }
        }
        let queue = match queue {
            Some(q) if self.ctx.queues.contains(&q) => q,
            Some(_) => return reject(ErrorCode::BadRequest, "unknown queue"),
            None => match self.ctx.queues.first() {
                Some(q) => q.clone(),
                None => return reject(ErrorCode::Unavailable, "the site has no queue"),
            },
        };
        if self.st.convs.contains_key(&id) {
            return reject(ErrorCode::Conflict, "conversation id in use");
        }
        let now = self.ctx.now;
        let queued_at = self.st.tick_queue_clock();
        let v = self
            .st
            .visitors
            .get_or_insert_with(visitor.clone(), Visitor::default);
        if !v.conns.is_online() {
            // The start comes from a live connection of this visitor.
            v.conns.add(&node);
        }
        v.conv = Some(id.clone());
        self.st.convs.insert(
            id.clone(),
            Conv {
                queue: queue.clone(),
                state: ConvState::Queued,
                visitor: visitor.clone(),
                profile: *profile,
                operator: None,
                offered_to: None,
                offer_expires: None,
                tried: BTreeSet::new(),
                tags: Vec::new(),
                created_at: now,
                queued_at,
                previous: previous.clone(),
                notified: false,
                callback_until: None,
            },
        );
        self.effects.push(Effect::Attach {
            conv: id.clone(),
            who: Participant::Visitor(visitor),
            update: None,
        });
        if let Some(d) = self.ctx.settings.close_after_inactive {
            self.effects.push(Effect::SetTimer {
                kind: TimerKind::Inactive(id.clone()),
                at: now + d.as_millis() as u64,
            });
        }
        let event = if previous.is_some() {
            ConvEvent::Reopened
        } else {
            ConvEvent::Queued
        };
        self.conv_event(&id, event, None);
        self.dirty_queues.insert(queue);
        self.route(&id);
        let c = view(self.st, &id).expect("just inserted");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn accept(&mut self, op: OperatorId, id: ConvId) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        let Some(o) = self.st.operators.get(&op) else {
            return reject(ErrorCode::NotFound, "operator is not connected");
        };
        if !serves(o, &c.queue) {
            return reject(ErrorCode::Forbidden, "you do not serve this queue");
        }
        match (&c.state, &c.operator, &c.offered_to) {
            (ConvState::Active, Some(holder), _) if holder == &op => {
                // Already theirs: the retry of an accept whose answer was lost. What the
                // first one published may be lost with it, so the operator is attached again
                // and the conversation's record published again (both idempotent).
                let snapshot = render(self.st, &id, c);
                self.effects.push(Effect::Attach {
                    conv: id.clone(),
                    who: Participant::Operator(op),
                    update: None,
                });
                self.conv_event(&id, ConvEvent::Assigned, Some("again".into()));
                return Ok(Reply::Conv(Box::new(snapshot)));
            }
            (ConvState::Active, _, _) => {
                return reject(ErrorCode::Taken, "conversation already taken")
            }
            (ConvState::Offered, _, Some(to)) if to != &op => {
                return reject(
                    ErrorCode::Taken,
                    "conversation is offered to another operator",
                )
            }
            _ => {}
        }
        if o.convs.len() as u32 >= max_chats(o, self.ctx.settings) {
            return reject(ErrorCode::Capacity, "you are at your maximum of chats");
        }
        self.assign(&id, &op, None);
        let c = view(self.st, &id).expect("assigned conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn decline(&mut self, op: OperatorId, id: ConvId) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        let offered = c.offered_to.as_ref() == Some(&op);
        let holds = c.operator.as_ref() == Some(&op);
        let queued = c.state == ConvState::Queued;
        if !(offered || holds || queued) {
            return reject(ErrorCode::Forbidden, "conversation is not offered to you");
        }
        if offered {
            self.lapse_offer(&id);
        } else if holds {
            self.unassign(&id, &op);
            self.requeue(&id, Some("declined"));
            self.route(&id);
        } else if let Some(c) = self.st.convs.get_mut(&id) {
            c.tried.insert(op);
        }
        Ok(match view(self.st, &id) {
            Some(c) => Reply::Conv(Box::new(c)),
            None => Reply::None,
        })
    }

    fn transfer(
        &mut self,
        by: Actor,
        id: ConvId,
        to: TransferTarget,
        note: Option<String>,
    ) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        match &by {
            Actor::Operator(o) if c.operator.as_ref() == Some(o) => {}
            Actor::Supervisor(_) => {}
            _ => {
                return reject(
                    ErrorCode::Forbidden,
                    "only the conversation's operator can transfer it",
                )
            }
        }
        let reason = note
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "transfer".into());
        match to {
            TransferTarget::Operator(target) => {
                let target = OperatorId(target);
                self.check_assignable(&id, &target)?;
                self.move_to(&id, &target, ConvEvent::Transferred, reason);
            }
            TransferTarget::Queue(q) => {
                let q = QueueId(q);
                if !self.ctx.queues.contains(&q) {
                    return reject(ErrorCode::NotFound, "no such queue");
                }
                if let Some(old) = c.operator.clone() {
                    self.unassign(&id, &old);
                }
                if let Some(c) = self.st.convs.get_mut(&id) {
                    self.dirty_queues.insert(c.queue.clone());
                    c.queue = q;
                }
                self.requeue(&id, None);
                self.conv_event(&id, ConvEvent::Transferred, Some(reason));
                self.route(&id);
            }
        }
        let c = view(self.st, &id).expect("transferred conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn assign_cmd(&mut self, id: ConvId, op: OperatorId) -> Result<Reply, Reject> {
        if !self.st.convs.contains_key(&id) {
            return reject(ErrorCode::NotFound, "no such open conversation");
        }
        self.check_assignable(&id, &op)?;
        self.move_to(&id, &op, ConvEvent::Assigned, "supervisor".into());
        let c = view(self.st, &id).expect("assigned conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn check_assignable(&self, id: &ConvId, target: &OperatorId) -> Result<(), Reject> {
        let c = &self.st.convs[id];
        if c.operator.as_ref() == Some(target) {
            return reject(
                ErrorCode::Conflict,
                "the operator already holds this conversation",
            );
        }
        let Some(t) = self.st.operators.get(target) else {
            return reject(ErrorCode::NotFound, "no such operator");
        };
        if !t.conns.is_online() {
            return reject(ErrorCode::Unavailable, "the operator is offline");
        }
        if t.convs.len() as u32 >= max_chats(t, self.ctx.settings) {
            return reject(
                ErrorCode::Capacity,
                "the operator is at their maximum of chats",
            );
        }
        Ok(())
    }

    /// Hands a conversation to `target`, taking it from whoever holds it.
    fn move_to(&mut self, id: &ConvId, target: &OperatorId, event: ConvEvent, reason: String) {
        let old = self.st.convs[id].operator.clone();
        if let Some(old) = &old {
            self.unassign(id, old);
        }
        self.assign(id, target, Some((event, reason)));
    }

    fn close_cmd(
        &mut self,
        by: Actor,
        id: ConvId,
        outcome: Option<String>,
        tags: Vec<String>,
    ) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        let reason = match &by {
            Actor::Visitor(v) if &c.visitor == v => "visitor",
            Actor::Operator(o) if c.operator.as_ref() == Some(o) => "operator",
            Actor::Supervisor(_) => "supervisor",
            Actor::System => "system",
            _ => return reject(ErrorCode::Forbidden, "not your conversation"),
        };
        let tags = normalise_tags(&tags)?;
        if let Some(outcome) = &outcome {
            if outcome.is_empty() || outcome.len() > MAX_TAG_LEN {
                return reject(ErrorCode::BadRequest, "outcome must be 1 to 40 bytes");
            }
        }
        let c = self.st.convs.get_mut(&id).expect("checked above");
        for t in tags {
            if !c.tags.contains(&t) && c.tags.len() < MAX_TAGS {
                c.tags.push(t);
            }
        }
        let snapshot = self.close(&id, outcome, reason);
        Ok(match snapshot {
            Some(c) => Reply::Conv(Box::new(c)),
            None => Reply::None,
        })
    }

    fn tag(&mut self, id: ConvId, add: Vec<String>, remove: Vec<String>) -> Result<Reply, Reject> {
        if !self.st.convs.contains_key(&id) {
            return reject(ErrorCode::NotFound, "no such open conversation");
        }
        let add = normalise_tags(&add)?;
        let remove = normalise_tags(&remove)?;
        let c = self.st.convs.get_mut(&id).expect("checked above");
        c.tags.retain(|t| !remove.contains(t));
        for t in add {
            if !c.tags.contains(&t) {
                if c.tags.len() >= MAX_TAGS {
                    return reject(ErrorCode::TooLarge, "too many tags");
                }
                c.tags.push(t);
            }
        }
        self.conv_event(&id, ConvEvent::Updated, Some("tags".into()));
        let c = view(self.st, &id).expect("exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn identify(
        &mut self,
        visitor: VisitorId,
        id: ConvId,
        [name, email, phone]: [Option<String>; 3],
        params: BTreeMap<String, String>,
    ) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id).filter(|c| c.visitor == visitor) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        let mut merged = c.profile.params.clone();
        for (k, v) in params {
            if v.is_empty() {
                merged.remove(&k);
            } else {
                merged.insert(k, v);
            }
        }
        if merged.len() > MAX_PARAMS {
            return reject(ErrorCode::TooLarge, "too many params");
        }
        let p = &c.profile;
        let same = |new: &Option<String>, old: &Option<String>| new.is_none() || new == old;
        if same(&name, &p.name)
            && same(&email, &p.email)
            && same(&phone, &p.phone)
            && merged == p.params
        {
            // Pages repeat what they know on every load: nothing to store or tell anyone.
            return Ok(Reply::Conv(Box::new(view(self.st, &id).expect("exists"))));
        }
        let c = self.st.convs.get_mut(&id).expect("checked above");
        let p = &mut c.profile;
        p.name = name.or(p.name.take());
        p.email = email.or(p.email.take());
        p.phone = phone.or(p.phone.take());
        p.params = merged;
        self.conv_event(&id, ConvEvent::Updated, Some("visitor".into()));
        // Waiting conversations show the visitor in the queue's listing (and on offer cards).
        self.dirty_queue_of(&id);
        let c = view(self.st, &id).expect("exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    fn visitor_wrote(&mut self, id: ConvId) -> Result<Reply, Reject> {
        let settings = self.ctx.settings;
        let Some(c) = self.st.convs.get(&id) else {
            return Ok(Reply::None);
        };
        if c.state == ConvState::Active || c.notified || !settings.notify_unavailable {
            return Ok(Reply::None);
        }
        let queue = c.queue.clone();
        let someone_can = self.st.operators.values().any(|o| {
            o.conns.is_online() && o.status == OperatorStatus::Active && serves(o, &queue)
        });
        if someone_can {
            return Ok(Reply::None);
        }
        self.st.convs.get_mut(&id).expect("exists").notified = true;
        self.effects.push(Effect::Notice {
            conv: id,
            code: "unavailable",
            text: settings.unavailable_text.clone(),
        });
        Ok(Reply::None)
    }

    // ----- timers -----

    fn timer(&mut self, kind: TimerKind, activity: Activity) -> Result<Reply, Reject> {
        let now = self.ctx.now;
        match kind {
            TimerKind::Offer(id) => {
                let lapsed = self.st.convs.get(&id).is_some_and(|c| {
                    c.state == ConvState::Offered && c.offer_expires.is_some_and(|e| e <= now)
                });
                if lapsed {
                    self.lapse_offer(&id);
                }
            }
            TimerKind::Reassign(id) => self.reassign_timer(&id, activity),
            TimerKind::Inactive(id) => {
                let (Some(d), Some(c)) = (
                    self.ctx.settings.close_after_inactive,
                    self.st.convs.get(&id),
                ) else {
                    return Ok(Reply::None);
                };
                if c.callback_until.is_some() {
                    // Waiting for a call-back: the call-back timer decides, and an operator
                    // who takes it restarts the inactivity clock.
                    return Ok(Reply::None);
                }
                let last = activity.last_ts.max(c.created_at);
                let due = last + d.as_millis() as u64;
                if now >= due {
                    self.close(&id, Some("inactive".into()), "inactive");
                } else {
                    self.effects.push(Effect::SetTimer {
                        kind: TimerKind::Inactive(id),
                        at: due,
                    });
                }
            }
            TimerKind::Callback(id) => {
                let missed = self.st.convs.get(&id).is_some_and(|c| {
                    c.state != ConvState::Active
                        && self
                            .st
                            .visitors
                            .get(&c.visitor)
                            .is_none_or(|v| !v.conns.is_online())
                });
                if missed {
                    self.close(&id, Some("missed".into()), "callback_expired");
                }
            }
            TimerKind::VisitorGrace(v) => self.visitor_gone(&v),
            TimerKind::OperatorGrace(o) => self.operator_gone(&o),
        }
        Ok(Reply::None)
    }

    fn reassign_timer(&mut self, id: &ConvId, activity: Activity) {
        let (Some(d), Some(c)) = (self.ctx.settings.reassign_after, self.st.convs.get(id)) else {
            return;
        };
        let Some(since) = activity.unanswered_since else {
            return;
        };
        let d = d.as_millis() as u64;
        if c.state != ConvState::Active {
            return;
        }
        if self.ctx.now < since + d {
            self.effects.push(Effect::SetTimer {
                kind: TimerKind::Reassign(id.clone()),
                at: since + d,
            });
            return;
        }
        let current = c
            .operator
            .clone()
            .expect("active conversation has an operator");
        let queue = c.queue.clone();
        let mut exclude = c.tried.clone();
        exclude.insert(current.clone());
        match self.pick(&queue, &exclude) {
            Some(next) => {
                if let Some(c) = self.st.convs.get_mut(id) {
                    c.tried.insert(current);
                }
                self.move_to(id, &next, ConvEvent::Transferred, "reassigned".into());
            }
            // Nobody else can take it now: look again after another period.
            None => self.effects.push(Effect::SetTimer {
                kind: TimerKind::Reassign(id.clone()),
                at: self.ctx.now + d,
            }),
        }
    }

    // ----- routing -----

    /// Places a waiting conversation according to the site's routing mode.
    fn route(&mut self, id: &ConvId) {
        let routing = self.ctx.settings.routing;
        if routing == Routing::Manual {
            return;
        }
        let Some(c) = self.st.convs.get(id) else {
            return;
        };
        if c.state != ConvState::Queued {
            return;
        }
        let queue = c.queue.clone();
        let tried = c.tried.clone();
        let Some(op) = self.pick(&queue, &tried) else {
            return;
        };
        match routing {
            Routing::Auto => self.assign(id, &op, None),
            Routing::Offer => self.offer(id, &op),
            Routing::Manual => {}
        }
    }

    /// Routes every waiting conversation, oldest first, until no operator has room.
    fn route_waiting(&mut self) {
        if self.ctx.settings.routing == Routing::Manual {
            return;
        }
        let mut queued: Vec<(u64, ConvId)> = self
            .st
            .convs
            .iter()
            .filter(|(_, c)| c.state == ConvState::Queued)
            .map(|(id, c)| (c.queued_at, id.clone()))
            .collect();
        queued.sort();
        for (_, id) in queued {
            self.route(&id);
        }
    }

    /// The least-loaded operator who can take a new conversation of `queue` now.
    fn pick(&self, queue: &QueueId, exclude: &BTreeSet<OperatorId>) -> Option<OperatorId> {
        let settings = self.ctx.settings;
        self.st
            .operators
            .iter()
            .filter(|(id, o)| {
                o.status == OperatorStatus::Active
                    && o.conns.is_online()
                    && serves(o, queue)
                    && !exclude.contains(*id)
                    && ((o.convs.len() + o.offers.len()) as u32) < max_chats(o, settings)
            })
            .min_by_key(|(id, o)| {
                (
                    o.convs.len() + o.offers.len(),
                    o.last_assigned,
                    (*id).clone(),
                )
            })
            .map(|(id, _)| id.clone())
    }

    fn offer(&mut self, id: &ConvId, op: &OperatorId) {
        let expires = self.ctx.now + self.ctx.settings.accept_timeout.as_millis() as u64;
        let c = self
            .st
            .convs
            .get_mut(id)
            .expect("routed conversation exists");
        c.state = ConvState::Offered;
        c.offered_to = Some(op.clone());
        c.offer_expires = Some(expires);
        let queue = c.queue.clone();
        if let Some(o) = self.st.operators.get_mut(op) {
            o.offers.insert(id.clone());
        }
        self.dirty_ops.insert(op.clone());
        self.dirty_queues.insert(queue);
        self.effects.push(Effect::SetTimer {
            kind: TimerKind::Offer(id.clone()),
            at: expires,
        });
        let v = view(self.st, id).expect("exists");
        self.effects.push(Effect::Offer {
            op: op.clone(),
            conv: Box::new(v),
            expires_at: expires,
        });
        self.conv_event(id, ConvEvent::Offered, None);
    }

    /// The pending offer ends unanswered: never offer it to that operator again.
    fn lapse_offer(&mut self, id: &ConvId) {
        let Some(c) = self.st.convs.get_mut(id) else {
            return;
        };
        let Some(op) = c.offered_to.take() else {
            return;
        };
        c.offer_expires = None;
        c.tried.insert(op.clone());
        if let Some(o) = self.st.operators.get_mut(&op) {
            o.offers.remove(id);
        }
        self.dirty_ops.insert(op);
        self.effects.push(Effect::CancelTimer {
            kind: TimerKind::Offer(id.clone()),
        });
        self.requeue(id, Some("offer_expired"));
        self.route(id);
    }

    /// Makes `op` the conversation's operator.
    fn assign(&mut self, id: &ConvId, op: &OperatorId, event: Option<(ConvEvent, String)>) {
        let now = self.ctx.now;
        let c = self
            .st
            .convs
            .get_mut(id)
            .expect("assigned conversation exists");
        if let Some(offered) = c.offered_to.take() {
            c.offer_expires = None;
            if let Some(o) = self.st.operators.get_mut(&offered) {
                o.offers.remove(id);
            }
            self.dirty_ops.insert(offered);
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::Offer(id.clone()),
            });
        }
        c.state = ConvState::Active;
        c.operator = Some(op.clone());
        c.notified = false;
        if c.callback_until.take().is_some() {
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::Callback(id.clone()),
            });
            if let Some(d) = self.ctx.settings.close_after_inactive {
                self.effects.push(Effect::SetTimer {
                    kind: TimerKind::Inactive(id.clone()),
                    at: now + d.as_millis() as u64,
                });
            }
        }
        let queue = c.queue.clone();
        let o = self.st.operators.get_mut(op).expect("assignee exists");
        o.convs.insert(id.clone());
        o.last_assigned = now;
        let name = o.name.clone();
        self.dirty_ops.insert(op.clone());
        self.dirty_queues.insert(queue);
        self.effects.push(Effect::Attach {
            conv: id.clone(),
            who: Participant::Operator(op.clone()),
            update: None,
        });
        let text = if self.ctx.settings.show_operator_name {
            format!("{name} joined the conversation")
        } else {
            "An operator joined the conversation".to_owned()
        };
        let (event, reason) = match event {
            Some((e, r)) => (e, Some(r)),
            None => (ConvEvent::Assigned, None),
        };
        // The event first, then the message that tells the visitor in words.
        self.conv_event(id, event, reason);
        self.effects.push(Effect::System {
            conv: id.clone(),
            text,
        });
    }

    /// Takes the conversation from `op` (it stays open; the caller decides what follows).
    fn unassign(&mut self, id: &ConvId, op: &OperatorId) {
        if let Some(o) = self.st.operators.get_mut(op) {
            o.convs.remove(id);
        }
        self.dirty_ops.insert(op.clone());
        if let Some(c) = self.st.convs.get_mut(id) {
            if c.operator.as_ref() == Some(op) {
                c.operator = None;
            }
            c.tried.insert(op.clone());
        }
        self.effects.push(Effect::Detach {
            conv: id.clone(),
            who: Participant::Operator(op.clone()),
            update: None,
        });
        self.effects.push(Effect::CancelTimer {
            kind: TimerKind::Reassign(id.clone()),
        });
    }

    /// Puts a conversation (with no operator) back at the end of its queue.
    fn requeue(&mut self, id: &ConvId, reason: Option<&str>) {
        let clock = self.st.tick_queue_clock();
        let Some(c) = self.st.convs.get_mut(id) else {
            return;
        };
        c.state = ConvState::Queued;
        c.operator = None;
        c.queued_at = clock;
        self.dirty_queues.insert(c.queue.clone());
        if let Some(r) = reason {
            self.conv_event(id, ConvEvent::Queued, Some(r.to_owned()));
        }
    }

    /// Ends a conversation: it leaves the state; the effects carry its last snapshot.
    fn close(
        &mut self,
        id: &ConvId,
        outcome: Option<String>,
        reason: &str,
    ) -> Option<Conversation> {
        let mut snapshot = view(self.st, id)?;
        let c = self.st.convs.remove(id)?;
        if let Some(op) = &c.operator {
            if let Some(o) = self.st.operators.get_mut(op) {
                o.convs.remove(id);
            }
            self.dirty_ops.insert(op.clone());
        }
        if let Some(op) = &c.offered_to {
            if let Some(o) = self.st.operators.get_mut(op) {
                o.offers.remove(id);
            }
            self.dirty_ops.insert(op.clone());
        }
        if let Some(v) = self.st.visitors.get_mut(&c.visitor) {
            if v.conv.as_ref() == Some(id) {
                v.conv = None;
                v.away_since = None;
            }
            if !v.conns.is_online() {
                self.st.visitors.remove(&c.visitor);
            }
        }
        for kind in [
            TimerKind::Offer(id.clone()),
            TimerKind::Reassign(id.clone()),
            TimerKind::Inactive(id.clone()),
            TimerKind::Callback(id.clone()),
            TimerKind::VisitorGrace(c.visitor.clone()),
        ] {
            self.effects.push(Effect::CancelTimer { kind });
        }
        self.dirty_queues.insert(c.queue.clone());
        snapshot.state = ConvState::Closed;
        snapshot.outcome = outcome;
        self.effects.push(Effect::System {
            conv: id.clone(),
            text: "The conversation was closed".into(),
        });
        if let Some(op) = c.operator {
            self.effects.push(Effect::Detach {
                conv: id.clone(),
                who: Participant::Operator(op),
                update: None,
            });
        }
        self.effects.push(Effect::Conv {
            event: ConvEvent::Closed,
            conv: Box::new(snapshot.clone()),
            reason: Some(reason.to_owned()),
        });
        self.route_waiting();
        Some(snapshot)
    }

    // ----- effects -----

    fn conv_event(&mut self, id: &ConvId, event: ConvEvent, reason: Option<String>) {
        if let Some(c) = view(self.st, id) {
            self.effects.push(Effect::Conv {
                event,
                conv: Box::new(c),
                reason,
            });
        }
    }

    fn dirty_queue_of(&mut self, id: &ConvId) {
        if let Some(c) = self.st.convs.get(id) {
            if c.state != ConvState::Active {
                self.dirty_queues.insert(c.queue.clone());
            }
        }
    }

    /// Emits one listing per changed queue and one frame per changed operator, and places
    /// every attach and detach next to the conversation event it goes with.
    fn flush(&mut self) {
        place_membership(&mut self.effects);
        for q in std::mem::take(&mut self.dirty_queues) {
            self.effects.push(Effect::Queue { queue: q });
        }
        for id in std::mem::take(&mut self.dirty_ops) {
            if let Some(o) = self.st.operators.get(&id) {
                self.effects.push(Effect::Operator {
                    id: id.clone(),
                    name: o.name.clone(),
                    status: o.status,
                    online: o.conns.is_online(),
                    load: o.convs.len() as u32,
                });
            }
        }
    }
}

/// Gives each `Attach`/`Detach` the first `conv` event of its conversation at or after it,
/// and moves it next to that event: a leaving participant receives the event directly and
/// leaves just before it is published on the channel; a joining one joins just after, and
/// receives it directly. Whatever follows (the "joined" system message) then reaches the
/// channel's new audience, and nobody gets the event twice from one node.
fn place_membership(effects: &mut Vec<Effect>) {
    let mut i = 0;
    while i < effects.len() {
        let (conv, leaving) = match &effects[i] {
            Effect::Attach {
                conv, update: None, ..
            } => (conv.clone(), false),
            Effect::Detach {
                conv, update: None, ..
            } => (conv.clone(), true),
            _ => {
                i += 1;
                continue;
            }
        };
        let event = (i + 1..effects.len()).find(
            |&j| matches!(&effects[j], Effect::Conv { conv: c, .. } if c.id == conv.as_str()),
        );
        let Some(j) = event else {
            i += 1;
            continue;
        };
        let Effect::Conv {
            event,
            conv: snapshot,
            reason,
        } = &effects[j]
        else {
            unreachable!("found a conv effect at {j}");
        };
        let filled = ConvUpdate {
            event: *event,
            conv: snapshot.clone(),
            reason: reason.clone(),
        };
        let mut membership = effects.remove(i);
        match &mut membership {
            Effect::Attach { update, .. } | Effect::Detach { update, .. } => *update = Some(filled),
            _ => unreachable!("membership effect"),
        }
        // After the removal the event sits at j - 1.
        let at = if leaving { j - 1 } else { j };
        effects.insert(at, membership);
        // Whatever moved into position i has not been looked at yet.
    }
}

/// Trims, lower-cases and checks tags.
fn normalise_tags(tags: &[String]) -> Result<Vec<String>, Reject> {
    if tags.len() > MAX_TAGS {
        return reject(ErrorCode::TooLarge, "too many tags");
    }
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim().to_lowercase();
        if t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control) {
            return reject(ErrorCode::BadRequest, "tags must be 1 to 40 bytes of text");
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Checks the invariants of a site state; used by tests and debug assertions.
pub fn check_invariants(st: &SiteState, settings: &Settings) -> Result<(), String> {
    for (id, c) in &st.convs {
        match (&c.state, &c.operator, &c.offered_to) {
            (ConvState::Active, Some(op), None) => {
                let o = st
                    .operators
                    .get(op)
                    .ok_or(format!("{id}: operator {op} unknown"))?;
                if !o.convs.contains(id) {
                    return Err(format!("{id}: not in {op}'s conversations"));
                }
            }
            (ConvState::Offered, None, Some(op)) => {
                let o = st
                    .operators
                    .get(op)
                    .ok_or(format!("{id}: offered to unknown {op}"))?;
                if !o.offers.contains(id) {
                    return Err(format!("{id}: not in {op}'s offers"));
                }
            }
            (ConvState::Queued, None, None) => {}
            other => return Err(format!("{id}: inconsistent state {other:?}")),
        }
        let v = st
            .visitors
            .get(&c.visitor)
            .ok_or(format!("{id}: visitor unknown"))?;
        if v.conv.as_ref() != Some(id) {
            return Err(format!("{id}: visitor's conversation is {:?}", v.conv));
        }
    }
    for (id, o) in &st.operators {
        if o.convs.len() as u32 > max_chats(o, settings) {
            return Err(format!("{id}: load {} above max_chats", o.convs.len()));
        }
        for c in &o.convs {
            let conv = st.convs.get(c).ok_or(format!("{id}: holds closed {c}"))?;
            if conv.operator.as_ref() != Some(id) {
                return Err(format!(
                    "{id}: holds {c} whose operator is {:?}",
                    conv.operator
                ));
            }
        }
        for c in &o.offers {
            let conv = st.convs.get(c).ok_or(format!("{id}: offered closed {c}"))?;
            if conv.offered_to.as_ref() != Some(id) {
                return Err(format!("{id}: offer of {c} is {:?}", conv.offered_to));
            }
        }
    }
    Ok(())
}
