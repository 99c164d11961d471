//! Routing: who gets a waiting conversation (manual, offer, auto), offers and their lapse,
//! handing a conversation to another operator, and the site's availability.

use std::collections::BTreeSet;

use super::commands::{reject, Core, Reject};
use super::effects::{Effect, Reason};
use super::state::{Operator, SiteState};
use super::timers::TimerKind;
use super::views::view;
use super::{ConvId, OperatorId, QueueId, Routing, Settings};
use crate::protocol::{ConvEvent, ConvState, ErrorCode, OperatorStatus};

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
        if !op.routable() {
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

impl Core<'_, '_> {
    pub(super) fn check_assignable(&self, id: &ConvId, target: &OperatorId) -> Result<(), Reject> {
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
        if t.convs.len() as u32 >= max_chats(t, self.ctx.for_queue(&c.queue)) {
            return reject(
                ErrorCode::Capacity,
                "the operator is at their maximum of chats",
            );
        }
        Ok(())
    }

    /// Hands a conversation to `target`, taking it from whoever holds it.
    pub(super) fn move_to(
        &mut self,
        id: &ConvId,
        target: &OperatorId,
        event: ConvEvent,
        reason: Reason,
    ) {
        let old = self.st.convs[id].operator.clone();
        if let Some(old) = &old {
            self.unassign(id, old);
        }
        self.assign(id, target, Some((event, reason)));
    }

    /// Places a waiting conversation according to the site's routing mode.
    pub(super) fn route(&mut self, id: &ConvId) {
        let Some(c) = self.st.convs.get(id) else {
            return;
        };
        let routing = self.ctx.for_queue(&c.queue).routing;
        if routing == Routing::Manual || c.state != ConvState::Queued {
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
    pub(super) fn route_waiting(&mut self) {
        if !self.ctx.any_routing() {
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
    pub(super) fn pick(
        &self,
        queue: &QueueId,
        exclude: &BTreeSet<OperatorId>,
    ) -> Option<OperatorId> {
        let settings = self.ctx.for_queue(queue);
        self.st
            .operators
            .iter()
            .filter(|(id, o)| {
                o.status == OperatorStatus::Active
                    && o.routable()
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

    pub(super) fn offer(&mut self, id: &ConvId, op: &OperatorId) {
        let c = self
            .st
            .convs
            .get_mut(id)
            .expect("routed conversation exists");
        let timeout = self.ctx.for_queue(&c.queue).accept_timeout;
        let expires = self.ctx.now + timeout.as_millis() as u64;
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
    pub(super) fn lapse_offer(&mut self, id: &ConvId) {
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
        self.requeue(id, Some(Reason::OfferExpired));
        self.route(id);
    }
}
