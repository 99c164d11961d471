//! What comes out of the core: [`Effect`]s for the caller to carry out after a committed
//! transition, and the helpers that emit them in the order the edges rely on.

use super::commands::Core;
use super::state::Participant;
use super::timers::TimerKind;
use super::views::view;
use serde::{Serialize, Serializer};

use super::{ConvId, Millis, OperatorId, QueueId};
use crate::protocol::{ConvEvent, ConvState, Conversation, OperatorStatus};

/// Why a `conv` event happened, as its `reason` says on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The participant's last connection closed (`visitor_away`, `operator_away`).
    Disconnected,
    /// The visitor left a waiting conversation that is kept for a call-back.
    Callback,
    /// The operator stayed away past their grace: the conversation is queued again.
    OperatorLeft,
    /// The operator gave the conversation back.
    Declined,
    /// An offer lapsed unanswered.
    OfferExpired,
    /// A transfer without a note.
    Transfer,
    /// The retry of an accept the operator already won.
    Again,
    /// A supervisor assigned or closed it.
    Supervisor,
    /// Moved on because the operator did not answer for `reassign_after`.
    Reassigned,
    /// Its tags changed.
    Tags,
    /// The visitor updated their details, or closed it.
    Visitor,
    /// The visitor stayed away past their grace.
    VisitorLeft,
    /// Closed after `close_after_inactive`.
    Inactive,
    /// The call-back time ran out.
    CallbackExpired,
    /// Its operator closed it.
    Operator,
    /// Closed by the system (a ban, an API call).
    System,
    /// A supervisor took it over.
    TakeOver,
    /// A transfer's note, as the staff member wrote it.
    Note(String),
    /// The staff or an integration changed its details or parameters.
    Edited,
    /// The staff or an integration started it with the visitor.
    Invited,
    /// A note was kept on it (an action's answer).
    Noted,
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Disconnected => "disconnected",
            Reason::Callback => "callback",
            Reason::OperatorLeft => "operator_left",
            Reason::Declined => "declined",
            Reason::OfferExpired => "offer_expired",
            Reason::Transfer => "transfer",
            Reason::Again => "again",
            Reason::Supervisor => "supervisor",
            Reason::Reassigned => "reassigned",
            Reason::Tags => "tags",
            Reason::Visitor => "visitor",
            Reason::Edited => "edited",
            Reason::Invited => "invited",
            Reason::Noted => "note",
            Reason::VisitorLeft => "visitor_left",
            Reason::Inactive => "inactive",
            Reason::CallbackExpired => "callback_expired",
            Reason::Operator => "operator",
            Reason::System => "system",
            Reason::TakeOver => "takeover",
            Reason::Note(n) => n,
        }
    }
}

/// What a system message says, before it is put in words (see `crate::i18n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An operator took the conversation (their name, unless the site hides it).
    OperatorJoined {
        name: Option<String>,
    },
    /// The conversation went to another queue (`Some`) or operator.
    Transferred {
        queue: Option<QueueId>,
    },
    /// Its operator did not answer in time; another one gets it.
    Reassigned,
    Closed,
}

/// How a conversation ended: one the system decides, or one staff chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The visitor left while it waited.
    Abandoned,
    /// The visitor left an active conversation.
    VisitorLeft,
    /// Nothing was written for `close_after_inactive`.
    Inactive,
    /// Nobody took it before the call-back time ran out.
    Missed,
    /// The visitor was banned.
    Banned,
    /// Chosen by whoever closed it.
    Given(String),
}

impl Outcome {
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Abandoned => "abandoned",
            Outcome::VisitorLeft => "visitor_left",
            Outcome::Inactive => "inactive",
            Outcome::Missed => "missed",
            Outcome::Banned => "banned",
            Outcome::Given(s) => s,
        }
    }
}

impl From<String> for Outcome {
    fn from(s: String) -> Outcome {
        match s.as_str() {
            "abandoned" => Outcome::Abandoned,
            "visitor_left" => Outcome::VisitorLeft,
            "inactive" => Outcome::Inactive,
            "missed" => Outcome::Missed,
            "banned" => Outcome::Banned,
            _ => Outcome::Given(s),
        }
    }
}

impl From<&str> for Outcome {
    fn from(s: &str) -> Outcome {
        Outcome::from(s.to_owned())
    }
}

macro_rules! wire_string {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

wire_string!(Reason);
wire_string!(Outcome);

/// What the caller must do after a committed transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a `conv` event to the conversation's channel and record the snapshot.
    Conv {
        event: ConvEvent,
        conv: Box<Conversation>,
        reason: Option<Reason>,
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
        supervisor: bool,
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
        note: Note,
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
    pub reason: Option<Reason>,
}

impl Core<'_, '_> {
    pub(super) fn conv_event(&mut self, id: &ConvId, event: ConvEvent, reason: Option<Reason>) {
        if let Some(c) = view(self.st, id) {
            self.effects.push(Effect::Conv {
                event,
                conv: Box::new(c),
                reason,
            });
        }
    }

    pub(super) fn dirty_queue_of(&mut self, id: &ConvId) {
        if let Some(c) = self.st.convs.get(id) {
            if c.state != ConvState::Active {
                self.dirty_queues.insert(c.queue.clone());
            }
        }
    }

    /// Emits one listing per changed queue and one frame per changed operator, and places
    /// every attach and detach next to the conversation event it goes with.
    pub(super) fn flush(&mut self) {
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
                    supervisor: o.supervisor,
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
