//! A site's routing state: operators, visitors and open conversations, each in a map that
//! records what a transition touched ([`Tracked`]), and the per-node connection counts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{ConvId, Millis, NodeId, OperatorId, QueueId, SiteId, Tracked, VisitorId};
use crate::protocol::{ConvState, OperatorStatus, Preview};

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
    pub(super) queue_clock_before: Option<u64>,
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
    pub(super) fn tick_queue_clock(&mut self) -> u64 {
        self.queue_clock_before.get_or_insert(self.queue_clock);
        self.queue_clock += 1;
        self.queue_clock
    }

    /// Every node some participant of the site is counted as connected to.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let ops = self.operators.values().map(|o| &o.conns);
        let vis = self.visitors.values().map(|v| &v.conns);
        ops.chain(vis)
            .flat_map(|c| c.0.iter().map(|(n, _)| n.clone()))
            .collect()
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
    pub(super) fn undo(&mut self) {
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

    pub(super) fn add(&mut self, node: &NodeId) {
        match self.0.iter_mut().find(|(n, _)| n == node) {
            Some((_, count)) => *count += 1,
            None => self.0.push((node.clone(), 1)),
        }
    }

    /// Takes one connection away; `false` when the node had none.
    pub(super) fn remove(&mut self, node: &NodeId) -> bool {
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
    pub(super) fn drop_node(&mut self, node: &NodeId) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != node);
        self.0.len() != before
    }

    pub fn has_node(&self, node: &NodeId) -> bool {
        self.0.iter().any(|(n, _)| n == node)
    }
}

/// The most notes a conversation keeps (the oldest go first).
pub const MAX_NOTES: usize = 20;

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
    /// A supervisor, present to take conversations over: never routed to, never counted in
    /// the site's availability.
    #[serde(default)]
    pub supervisor: bool,
}

impl Operator {
    /// Whether routing may hand this one new conversations (status aside).
    pub fn routable(&self) -> bool {
        !self.supervisor && self.conns.is_online()
    }
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
    /// When its current operator got it (the reassign clock runs from here at the earliest).
    #[serde(default)]
    pub assigned_at: Option<Millis>,
    /// Left in the widget's offline form.
    #[serde(default)]
    pub offline: bool,
    /// Notes staff left on it (transfer notes), oldest first, at most [`MAX_NOTES`].
    #[serde(default)]
    pub notes: Vec<crate::protocol::StaffNote>,
}

/// A connection-holding participant whose sockets attach to a conversation's channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Participant {
    Visitor(VisitorId),
    Operator(OperatorId),
}

/// Message activity of a conversation, kept with its log (every append updates it) and read
/// when a timer fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Time of the last message of any participant (system messages excluded).
    pub last_ts: Millis,
    /// Time of the first visitor message the operator has not answered yet: the visitor
    /// waits since then.
    pub unanswered_since: Option<Millis>,
    /// Time of the operator's last message.
    #[serde(default)]
    pub operator_ts: Option<Millis>,
    /// Time of the visitor's last message.
    #[serde(default)]
    pub visitor_ts: Option<Millis>,
    /// Time of the visitor's first message.
    #[serde(default)]
    pub first_visitor_ts: Option<Millis>,
    /// Time of the operator's first message.
    #[serde(default)]
    pub first_operator_ts: Option<Millis>,
}

impl Activity {
    /// Records a message of `role` at `ts`; `true` when it is a visitor message that starts a
    /// wait for an answer. (The Redis engine's append script keeps the same rules.)
    pub fn record(&mut self, role: crate::protocol::Role, ts: Millis) -> bool {
        use crate::protocol::Role;
        match role {
            Role::Visitor => {
                self.last_ts = ts;
                self.visitor_ts = Some(ts);
                self.first_visitor_ts.get_or_insert(ts);
                if self.unanswered_since.is_none() {
                    self.unanswered_since = Some(ts);
                    return true;
                }
            }
            Role::Operator | Role::Supervisor => {
                self.last_ts = ts;
                self.unanswered_since = None;
                self.operator_ts = Some(ts);
                self.first_operator_ts.get_or_insert(ts);
            }
            // A bot's message is activity, not an answer from the staff.
            Role::Bot => self.last_ts = ts,
            Role::System => {}
        }
        false
    }

    /// From the visitor's first message to the operator's first answer after it.
    pub fn first_response_ms(&self) -> Option<Millis> {
        let (v, o) = (self.first_visitor_ts?, self.first_operator_ts?);
        (o >= v).then(|| o - v)
    }
}
