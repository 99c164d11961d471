//! A conversation's life: start, accept, decline, transfer, assign, close, tags, the visitor's
//! details, the unavailability notice; and the moves they share (assign, unassign, requeue).

use std::collections::{BTreeMap, BTreeSet};

use super::commands::{reject, Actor, Core, Reject, Reply};
use super::effects::{Effect, Note, Outcome, Reason};
use super::routing::{max_chats, serves};
use super::state::{Conns, Conv, Participant, Visitor, VisitorProfile};
use super::timers::TimerKind;
use super::views::{render, view};
use super::{
    ConvId, NodeId, OperatorId, QueueId, VisitorId, MAX_EMAIL, MAX_NAME, MAX_PARAMS,
    MAX_PARAMS_BYTES, MAX_PARAM_KEY, MAX_PARAM_VALUE, MAX_PHONE, MAX_TAGS, MAX_TAG_LEN, MAX_URL,
};
use crate::protocol::{
    ConvEvent, ConvState, Conversation, ErrorCode, OperatorStatus, TransferTarget,
};

/// What a visitor starts a conversation with.
pub(super) struct Opening {
    pub queue: Option<QueueId>,
    pub profile: Box<VisitorProfile>,
    pub previous: Option<ConvId>,
    pub offline: bool,
}

impl Core<'_, '_> {
    pub(super) fn start(
        &mut self,
        visitor: VisitorId,
        node: NodeId,
        id: ConvId,
        opening: Opening,
    ) -> Result<Reply, Reject> {
        if let Some(open) = self.st.visitors.get(&visitor).and_then(|v| v.conv.clone()) {
            if let Some(c) = view(self.st, &open) {
                return Ok(Reply::Conv(Box::new(c)));
            }
        }
        let Opening {
            queue,
            profile,
            previous,
            offline,
        } = opening;
        check_profile(&profile)?;
        let queue = self.queue_or_default(queue)?;
        if self.st.convs.contains_key(&id) {
            return reject(ErrorCode::Conflict, "conversation id in use");
        }
        self.room_to_wait()?;
        let now = self.ctx.now;
        let queued_at = self.st.tick_queue_clock();
        // The visitor enters the state with the conversation, counted with the connection
        // that starts it; their other tabs count themselves when they are attached to it.
        let mut conns = Conns::default();
        conns.add(&node);
        self.st.visitors.insert(
            visitor.clone(),
            Visitor {
                conns,
                conv: Some(id.clone()),
                away_since: None,
            },
        );
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
                assigned_at: None,
                offline,
                notes: Vec::new(),
            },
        );
        self.effects.push(Effect::Attach {
            conv: id.clone(),
            who: Participant::Visitor(visitor),
            update: None,
        });
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

    /// The queue asked for, or the site's first.
    /// The site's `max_waiting`: a new conversation is refused while that many wait. The count
    /// goes over the site's open conversations (what the census reads too), only for sites
    /// that set the limit.
    fn room_to_wait(&self) -> Result<(), Reject> {
        let Some(max) = self.ctx.settings.max_waiting else {
            return Ok(());
        };
        let waiting = self
            .st
            .convs
            .values()
            .filter(|c| matches!(c.state, ConvState::Queued | ConvState::Offered))
            .count();
        if waiting >= max as usize {
            return reject(
                ErrorCode::Capacity,
                "too many conversations are waiting; try again later",
            );
        }
        Ok(())
    }

    fn queue_or_default(&self, queue: Option<QueueId>) -> Result<QueueId, Reject> {
        match queue {
            Some(q) if self.ctx.queues.contains(&q) => Ok(q),
            Some(_) => reject(ErrorCode::BadRequest, "unknown queue"),
            None => match self.ctx.queues.first() {
                Some(q) => Ok(q.clone()),
                None => reject(ErrorCode::Unavailable, "the site has no queue"),
            },
        }
    }

    /// A conversation started by the staff or an integration with a known visitor (see
    /// [`Command::Invite`]); the visitor's live tabs are told at once, a visitor who is away
    /// finds it when they come back.
    ///
    /// [`Command::Invite`]: super::Command::Invite
    pub(super) fn invite(
        &mut self,
        visitor: VisitorId,
        id: ConvId,
        queue: Option<QueueId>,
        operator: Option<OperatorId>,
        profile: Box<VisitorProfile>,
    ) -> Result<Reply, Reject> {
        if let Some(open) = self.st.visitors.get(&visitor).and_then(|v| v.conv.clone()) {
            if self.st.convs.contains_key(&open) {
                return reject(
                    ErrorCode::Conflict,
                    "the visitor already has an open conversation",
                );
            }
        }
        check_profile(&profile)?;
        let queue = self.queue_or_default(queue)?;
        if self.st.convs.contains_key(&id) {
            return reject(ErrorCode::Conflict, "conversation id in use");
        }
        self.room_to_wait()?;
        let now = self.ctx.now;
        let queued_at = self.st.tick_queue_clock();
        // Not counted yet: each of the visitor's live tabs counts itself when it is attached.
        self.st.visitors.insert(
            visitor.clone(),
            Visitor {
                conns: Conns::default(),
                conv: Some(id.clone()),
                away_since: None,
            },
        );
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
                previous: None,
                notified: false,
                callback_until: None,
                assigned_at: None,
                offline: false,
                notes: Vec::new(),
            },
        );
        // The visitor's live tabs (if any) join with the event and see it at once.
        self.effects.push(Effect::Attach {
            conv: id.clone(),
            who: Participant::Visitor(visitor),
            update: None,
        });
        self.conv_event(&id, ConvEvent::Queued, Some(Reason::Invited));
        match operator {
            Some(op) => {
                // Refused (absent, at capacity): nothing was started.
                self.check_assignable(&id, &op)?;
                self.move_to(&id, &op, ConvEvent::Assigned, Reason::Invited);
            }
            None => {
                self.dirty_queues.insert(queue);
                self.route(&id);
            }
        }
        let c = view(self.st, &id).expect("just inserted");
        Ok(Reply::Conv(Box::new(c)))
    }

    pub(super) fn accept(&mut self, op: OperatorId, id: ConvId) -> Result<Reply, Reject> {
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
                self.conv_event(&id, ConvEvent::Assigned, Some(Reason::Again));
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

    pub(super) fn decline(&mut self, op: OperatorId, id: ConvId) -> Result<Reply, Reject> {
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
            self.requeue(&id, Some(Reason::Declined));
            self.route(&id);
        } else if let Some(c) = self.st.convs.get_mut(&id) {
            c.tried.insert(op);
        }
        Ok(match view(self.st, &id) {
            Some(c) => Reply::Conv(Box::new(c)),
            None => Reply::None,
        })
    }

    pub(super) fn transfer(
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
            Actor::Supervisor(_) | Actor::Api(_) => {}
            _ => {
                return reject(
                    ErrorCode::Forbidden,
                    "only the conversation's operator can transfer it",
                )
            }
        }
        let holder = c.operator.clone();
        let note = note.filter(|n| !n.trim().is_empty());
        if let Some(text) = &note {
            // Kept with the conversation for the staff (before the events that carry its
            // snapshot), not only in the event's reason; a refused transfer puts it back.
            self.add_note(&id, &by, text.clone(), None);
        }
        let reason = note.map_or(Reason::Transfer, Reason::Note);
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
                if let Some(old) = holder {
                    self.unassign(&id, &old);
                }
                if let Some(c) = self.st.convs.get_mut(&id) {
                    self.dirty_queues.insert(c.queue.clone());
                    c.queue = q;
                }
                self.requeue(&id, None);
                self.conv_event(&id, ConvEvent::Transferred, Some(reason));
                self.effects.push(Effect::System {
                    conv: id.clone(),
                    note: Note::Transferred {
                        queue: self.st.convs.get(&id).map(|c| c.queue.clone()),
                    },
                });
                self.route(&id);
            }
        }
        let c = view(self.st, &id).expect("transferred conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    /// Keeps a note for the staff on a conversation (the oldest go past [`MAX_NOTES`]).
    ///
    /// [`MAX_NOTES`]: super::state::MAX_NOTES
    pub(super) fn add_note(&mut self, id: &ConvId, by: &Actor, text: String, link: Option<String>) {
        let (by_id, by) = match by {
            Actor::Operator(o) => (o.to_string(), self.staff_name(o.as_str())),
            Actor::Supervisor(s) => (s.to_string(), self.staff_name(s.as_str())),
            Actor::Api(name) => ("api".to_owned(), name.clone()),
            Actor::Visitor(_) | Actor::System => ("system".to_owned(), "system".to_owned()),
        };
        self.push_note(id, by_id, by, text, link);
    }

    fn push_note(
        &mut self,
        id: &ConvId,
        by_id: String,
        by: String,
        text: String,
        link: Option<String>,
    ) {
        let ts = self.ctx.now;
        let Some(c) = self.st.convs.get_mut(id) else {
            return;
        };
        c.notes.push(crate::protocol::StaffNote {
            by,
            by_id,
            text,
            ts,
            link,
        });
        let excess = c.notes.len().saturating_sub(super::state::MAX_NOTES);
        c.notes.drain(..excess);
    }

    /// Keeps a note from outside on an open conversation, and tells its staff.
    pub(super) fn note(
        &mut self,
        id: ConvId,
        by_id: String,
        by: String,
        text: String,
        link: Option<String>,
    ) -> Result<Reply, Reject> {
        if !self.st.convs.contains_key(&id) {
            return reject(ErrorCode::NotFound, "no such open conversation");
        }
        self.push_note(&id, by_id, by, text, link);
        self.conv_event(&id, ConvEvent::Updated, Some(Reason::Noted));
        let c = view(self.st, &id).expect("exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    /// A staff member's name as the state knows it (else their id).
    fn staff_name(&self, id: &str) -> String {
        self.st
            .operators
            .get(&OperatorId::from(id))
            .map_or_else(|| id.to_owned(), |o| o.name.clone())
    }

    /// A present supervisor becomes the conversation's operator (whoever held it loses it).
    pub(super) fn take_over(&mut self, id: ConvId, sup: OperatorId) -> Result<Reply, Reject> {
        if !self.st.convs.contains_key(&id) {
            return reject(ErrorCode::NotFound, "no such open conversation");
        }
        if !self.st.operators.get(&sup).is_some_and(|o| o.supervisor) {
            return reject(ErrorCode::Forbidden, "supervisors only");
        }
        self.check_assignable(&id, &sup)?;
        self.move_to(&id, &sup, ConvEvent::Assigned, Reason::TakeOver);
        let c = view(self.st, &id).expect("assigned conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    pub(super) fn assign_cmd(&mut self, id: ConvId, op: OperatorId) -> Result<Reply, Reject> {
        if !self.st.convs.contains_key(&id) {
            return reject(ErrorCode::NotFound, "no such open conversation");
        }
        self.check_assignable(&id, &op)?;
        self.move_to(&id, &op, ConvEvent::Assigned, Reason::Supervisor);
        let c = view(self.st, &id).expect("assigned conversation exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    pub(super) fn close_cmd(
        &mut self,
        by: Actor,
        id: ConvId,
        outcome: Option<Outcome>,
        tags: Vec<String>,
    ) -> Result<Reply, Reject> {
        let Some(c) = self.st.convs.get(&id) else {
            return reject(ErrorCode::NotFound, "no such open conversation");
        };
        let reason = match &by {
            Actor::Visitor(v) if &c.visitor == v => Reason::Visitor,
            Actor::Operator(o) if c.operator.as_ref() == Some(o) => Reason::Operator,
            Actor::Supervisor(_) => Reason::Supervisor,
            Actor::System | Actor::Api(_) => Reason::System,
            _ => return reject(ErrorCode::Forbidden, "not your conversation"),
        };
        let tags = normalise_tags(&tags)?;
        if let Some(outcome) = &outcome {
            let text = outcome.as_str();
            if text.is_empty() || text.len() > MAX_TAG_LEN {
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

    pub(super) fn tag(
        &mut self,
        id: ConvId,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Reply, Reject> {
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
        self.conv_event(&id, ConvEvent::Updated, Some(Reason::Tags));
        let c = view(self.st, &id).expect("exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    pub(super) fn identify(
        &mut self,
        visitor: Option<VisitorId>,
        id: ConvId,
        [name, email, phone]: [Option<String>; 3],
        params: BTreeMap<String, String>,
    ) -> Result<Reply, Reject> {
        let reason = match visitor {
            Some(_) => Reason::Visitor,
            None => Reason::Edited,
        };
        let mine = |c: &&Conv| visitor.as_ref().is_none_or(|v| &c.visitor == v);
        let Some(c) = self.st.convs.get(&id).filter(mine) else {
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
        let p = &c.profile;
        check_profile(&VisitorProfile {
            name: name.clone().or(p.name.clone()),
            email: email.clone().or(p.email.clone()),
            phone: phone.clone().or(p.phone.clone()),
            params: merged.clone(),
            preview: None,
        })?;
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
        self.conv_event(&id, ConvEvent::Updated, Some(reason));
        // Waiting conversations show the visitor in the queue's listing (and on offer cards).
        self.dirty_queue_of(&id);
        let c = view(self.st, &id).expect("exists");
        Ok(Reply::Conv(Box::new(c)))
    }

    pub(super) fn visitor_wrote(&mut self, id: ConvId) -> Result<Reply, Reject> {
        let settings = self.ctx.settings;
        let Some(c) = self.st.convs.get(&id) else {
            return Ok(Reply::None);
        };
        if c.state == ConvState::Active {
            return Ok(Reply::None);
        }
        // The queue's listing shows the visitor's last message.
        self.dirty_queues.insert(c.queue.clone());
        if c.notified || !settings.notify_unavailable {
            return Ok(Reply::None);
        }
        let queue = c.queue.clone();
        let language = c.profile.preview.as_ref().and_then(|p| p.language.clone());
        let someone_can = self
            .st
            .operators
            .values()
            .any(|o| o.routable() && o.status == OperatorStatus::Active && serves(o, &queue));
        if someone_can {
            return Ok(Reply::None);
        }
        self.st.convs.get_mut(&id).expect("exists").notified = true;
        self.effects.push(Effect::Notice {
            conv: id,
            code: "unavailable",
            text: settings
                .unavailable_text
                .get(language.as_deref(), settings.language)
                .to_owned(),
        });
        Ok(Reply::None)
    }

    /// Makes `op` the conversation's operator.
    pub(super) fn assign(
        &mut self,
        id: &ConvId,
        op: &OperatorId,
        event: Option<(ConvEvent, Reason)>,
    ) {
        let now = self.ctx.now;
        let c = self
            .st
            .convs
            .get_mut(id)
            .expect("assigned conversation exists");
        let queue = c.queue.clone();
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
        c.assigned_at = Some(now);
        if c.callback_until.take().is_some() {
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::Callback(id.clone()),
            });
        }
        // Both rules watch an active conversation from now on; the timers read its activity
        // when they fire (see `timers.rs`).
        let settings = self.ctx.for_queue(&queue);
        for (kind, after) in [
            (TimerKind::Reassign(id.clone()), settings.reassign_after),
            (
                TimerKind::Inactive(id.clone()),
                settings.close_after_inactive,
            ),
        ] {
            if let Some(d) = after {
                self.effects.push(Effect::SetTimer {
                    kind,
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
        let note = Note::OperatorJoined {
            name: self.ctx.settings.show_operator_name.then_some(name),
        };
        let (event, reason) = match event {
            Some((e, r)) => (e, Some(r)),
            None => (ConvEvent::Assigned, None),
        };
        // The event first, then the message that tells the visitor in words.
        self.conv_event(id, event, reason);
        self.effects.push(Effect::System {
            conv: id.clone(),
            note,
        });
    }

    /// Takes the conversation from `op` (it stays open; the caller decides what follows).
    pub(super) fn unassign(&mut self, id: &ConvId, op: &OperatorId) {
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
        for kind in [
            TimerKind::Reassign(id.clone()),
            TimerKind::Inactive(id.clone()),
        ] {
            self.effects.push(Effect::CancelTimer { kind });
        }
    }

    /// Puts a conversation (with no operator) back at the end of its queue.
    pub(super) fn requeue(&mut self, id: &ConvId, reason: Option<Reason>) {
        let clock = self.st.tick_queue_clock();
        let Some(c) = self.st.convs.get_mut(id) else {
            return;
        };
        c.state = ConvState::Queued;
        c.operator = None;
        c.queued_at = clock;
        self.dirty_queues.insert(c.queue.clone());
        if let Some(r) = reason {
            self.conv_event(id, ConvEvent::Queued, Some(r));
        }
    }

    /// Ends a conversation: it leaves the state; the effects carry its last snapshot.
    pub(super) fn close(
        &mut self,
        id: &ConvId,
        outcome: Option<Outcome>,
        reason: Reason,
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
        // The visitor's presence leaves with their conversation: a visitor without one is
        // not in the state (their connections' disconnects name this conversation and no
        // longer count).
        if self
            .st
            .visitors
            .get(&c.visitor)
            .is_some_and(|v| v.conv.as_ref() == Some(id) || v.conv.is_none())
        {
            self.st.visitors.remove(&c.visitor);
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
        snapshot.outcome = outcome.map(|o| o.as_str().to_owned());
        self.effects.push(Effect::System {
            conv: id.clone(),
            note: Note::Closed,
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
            reason: Some(reason),
        });
        self.route_waiting();
        Some(snapshot)
    }
}

/// Tags as stored: trimmed, lower-cased, unique, within the bounds.
pub fn normalise_tags(tags: &[String]) -> Result<Vec<String>, Reject> {
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

/// The limits of what a visitor stores: no control characters where text has no business
/// with them (names, contact details, parameter names, URLs; a parameter's value may hold
/// line breaks and tabs), each field's length, and the parameters' size in all.
pub fn check_profile(p: &VisitorProfile) -> Result<(), Reject> {
    let controls = |s: &str| s.chars().any(char::is_control);
    for (value, max) in [
        (&p.name, MAX_NAME),
        (&p.email, MAX_EMAIL),
        (&p.phone, MAX_PHONE),
    ] {
        if let Some(v) = value {
            if controls(v) {
                return reject(
                    ErrorCode::BadRequest,
                    "control characters in contact details",
                );
            }
            if v.len() > max {
                return reject(ErrorCode::TooLarge, "contact details too long");
            }
        }
    }
    if let Some(pv) = &p.preview {
        if [&pv.page_url, &pv.referrer]
            .iter()
            .any(|u| controls(u) || u.len() > MAX_URL)
        {
            return reject(ErrorCode::BadRequest, "bad page url or referrer");
        }
    }
    if p.params.len() > MAX_PARAMS {
        return reject(ErrorCode::TooLarge, "too many params");
    }
    let mut bytes = 0;
    for (k, v) in &p.params {
        if k.is_empty() || k.len() > MAX_PARAM_KEY || controls(k) {
            return reject(
                ErrorCode::BadRequest,
                "param names are 1 to 64 bytes without control characters",
            );
        }
        if v.len() > MAX_PARAM_VALUE {
            return reject(ErrorCode::TooLarge, "param value too long");
        }
        if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return reject(ErrorCode::BadRequest, "control characters in a param value");
        }
        bytes += k.len() + v.len();
    }
    if bytes > MAX_PARAMS_BYTES {
        return reject(ErrorCode::TooLarge, "params too large");
    }
    Ok(())
}
