//! What goes into the core: [`Command`]s, the context they run in, and the dispatch of one
//! command to its handler. The handlers live with their seam (presence, lifecycle, routing,
//! timers); every one validates first and mutates after.

use std::collections::{BTreeMap, BTreeSet};

use super::effects::{Effect, Outcome};
use super::state::{Activity, SiteState, VisitorProfile};
use super::timers::TimerKind;
use super::{ConvId, Millis, NodeId, OperatorId, QueueId, Settings, SupervisorId, VisitorId};
use crate::protocol::{Conversation, ErrorCode, OperatorStatus, TransferTarget};

/// Who does something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Visitor(VisitorId),
    Operator(OperatorId),
    Supervisor(SupervisorId),
    System,
    /// An integration through the HTTP API, by its key's name.
    Api(String),
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
    /// A supervisor's connection: present as an operator that is never routed to, so that
    /// they can take conversations over. They leave with `OperatorDisconnected`.
    SupervisorConnected {
        op: OperatorId,
        node: NodeId,
        name: String,
    },
    OperatorDisconnected {
        op: OperatorId,
        node: NodeId,
    },
    /// A visitor's connection counts in the presence of the visitor's open conversation, if
    /// they have one other than `counted` (the one it already counts for): a browsing
    /// visitor, with no conversation, is no transition at all. Replies `Counted` with the
    /// conversation it now counts for.
    VisitorConnected {
        visitor: VisitorId,
        node: NodeId,
        counted: Option<ConvId>,
    },
    /// A connection counted for `conv` is gone; nothing if that conversation is no longer the
    /// visitor's open one (its presence left with it).
    VisitorDisconnected {
        visitor: VisitorId,
        node: NodeId,
        conv: ConvId,
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
        /// Left in the widget's offline form.
        offline: bool,
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
    /// A supervisor (present: `SupervisorConnected`) becomes the conversation's operator.
    TakeOver {
        conv: ConvId,
        sup: OperatorId,
    },
    Close {
        by: Actor,
        conv: ConvId,
        outcome: Option<Outcome>,
        tags: Vec<String>,
    },
    Tag {
        conv: ConvId,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// New contact details (`Some` replaces) or parameters (merged; an empty value removes
    /// the key) of an open conversation: from its visitor, or (`visitor: None`) from the staff
    /// or an integration.
    Identify {
        visitor: Option<VisitorId>,
        conv: ConvId,
        name: Option<String>,
        email: Option<String>,
        phone: Option<String>,
        params: BTreeMap<String, String>,
    },
    /// The staff or an integration start a conversation with a known visitor, who sees it
    /// when they are on the site: given to `operator` (present, with room), else queued.
    Invite {
        visitor: VisitorId,
        conv: ConvId,
        queue: Option<QueueId>,
        operator: Option<OperatorId>,
        profile: Box<VisitorProfile>,
    },
    /// A note for the staff on an open conversation from outside it (an action's answer):
    /// `by_id` and `by` name where it came from.
    Note {
        conv: ConvId,
        by_id: String,
        by: String,
        text: String,
        link: Option<String>,
    },
    /// A visitor wrote into a conversation no operator holds: maybe send the notice.
    VisitorWrote {
        conv: ConvId,
    },
    Timer {
        kind: TimerKind,
        activity: Activity,
    },
    /// Settings changed: routing may now place waiting conversations; with `retime`, the
    /// reassign and inactivity settings changed and apply to running conversations at once.
    SettingsChanged {
        retime: bool,
    },
}

/// The answer to the command's sender.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    None,
    Conv(Box<Conversation>),
    /// The connection now counts in the presence of this conversation.
    Counted(ConvId),
    Status(OperatorStatus),
}

/// A refused command; the state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: &'static str,
}

pub(super) fn reject<T>(code: ErrorCode, message: &'static str) -> Result<T, Reject> {
    Err(Reject { code, message })
}

/// What the core reads besides the state.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub settings: &'a Settings,
    /// The site's queues; the first is the default.
    pub queues: &'a [QueueId],
    /// The settings of lines that override the site's (routing, timeouts, `max_chats`).
    pub lines: &'a LineSettings,
    pub now: Millis,
}

/// Lines' own settings: the site's with a line's overrides applied.
pub type LineSettings = std::collections::HashMap<QueueId, Settings>;

/// No line overrides anything.
pub fn no_lines() -> &'static LineSettings {
    static NONE: std::sync::OnceLock<LineSettings> = std::sync::OnceLock::new();
    NONE.get_or_init(LineSettings::new)
}

impl Ctx<'_> {
    /// The settings that govern a conversation of `queue`.
    pub fn for_queue(&self, queue: &QueueId) -> &Settings {
        self.lines.get(queue).unwrap_or(self.settings)
    }

    /// Whether any line routes other than manually.
    pub fn any_routing(&self) -> bool {
        self.settings.routing != super::Routing::Manual
            || self
                .lines
                .values()
                .any(|s| s.routing != super::Routing::Manual)
    }
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

pub(super) struct Core<'s, 'c> {
    pub(super) st: &'s mut SiteState,
    pub(super) ctx: Ctx<'c>,
    pub(super) effects: Vec<Effect>,
    pub(super) dirty_queues: BTreeSet<QueueId>,
    pub(super) dirty_ops: BTreeSet<OperatorId>,
}

impl Core<'_, '_> {
    pub(super) fn run(&mut self, cmd: Command) -> Result<Reply, Reject> {
        match cmd {
            Command::OperatorConnected {
                op,
                node,
                name,
                max_chats,
                queues,
            } => self.operator_connected(op, node, name, max_chats, queues, false),
            Command::SupervisorConnected { op, node, name } => {
                self.operator_connected(op, node, name, None, None, true)
            }
            Command::OperatorDisconnected { op, node } => self.operator_disconnected(op, node),
            Command::VisitorConnected {
                visitor,
                node,
                counted,
            } => self.visitor_connected(visitor, node, counted),
            Command::VisitorDisconnected {
                visitor,
                node,
                conv,
            } => self.visitor_disconnected(visitor, node, conv),
            Command::NodeGone { node } => self.node_gone(node),
            Command::SetStatus { op, status } => self.set_status(op, status),
            Command::Start {
                visitor,
                node,
                conv,
                queue,
                profile,
                previous,
                offline,
            } => self.start(
                visitor,
                node,
                conv,
                super::lifecycle::Opening {
                    queue,
                    profile,
                    previous,
                    offline,
                },
            ),
            Command::Accept { op, conv } => self.accept(op, conv),
            Command::Decline { op, conv } => self.decline(op, conv),
            Command::Transfer { by, conv, to, note } => self.transfer(by, conv, to, note),
            Command::Assign { conv, op } => self.assign_cmd(conv, op),
            Command::TakeOver { conv, sup } => self.take_over(conv, sup),
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
            Command::Invite {
                visitor,
                conv,
                queue,
                operator,
                profile,
            } => self.invite(visitor, conv, queue, operator, profile),
            Command::Note {
                conv,
                by_id,
                by,
                text,
                link,
            } => self.note(conv, by_id, by, text, link),
            Command::VisitorWrote { conv } => self.visitor_wrote(conv),
            Command::Timer { kind, activity } => self.timer(kind, activity),
            Command::SettingsChanged { retime } => {
                if retime {
                    self.retime_active();
                }
                self.route_waiting();
                Ok(Reply::None)
            }
        }
    }
}
