//! Timers: every kind a site has, and what firing each one does. A timer's handler checks the
//! state first, so a timer fired twice takes effect once.

use serde::{Deserialize, Serialize};

use super::commands::{Core, Reject, Reply};
use super::effects::{Effect, Note, Outcome, Reason};
use super::state::Activity;
use super::{ConvId, OperatorId, QueueId, VisitorId};
use crate::protocol::{ConvEvent, ConvState};

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

impl Core<'_, '_> {
    pub(super) fn timer(&mut self, kind: TimerKind, activity: Activity) -> Result<Reply, Reject> {
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
            TimerKind::Inactive(id) => self.inactive_timer(&id, activity),
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
                    self.close(&id, Some(Outcome::Missed), Reason::CallbackExpired);
                }
            }
            TimerKind::VisitorGrace(v) => self.visitor_gone(&v),
            TimerKind::OperatorGrace(o) => self.operator_gone(&o),
        }
        Ok(Reply::None)
    }

    /// `reassign_after`: the visitor waits for an answer (they wrote, and the operator has not
    /// answered since) longer than the setting since the later of their first unanswered
    /// message and the moment this operator got the conversation: it moves to another active
    /// operator of its queue, never back to one who had it. With nobody else to take it, it
    /// looks again after another period. Nobody waiting: nothing to do (the next visitor
    /// message that starts a wait arms the timer again).
    pub(super) fn reassign_timer(&mut self, id: &ConvId, activity: Activity) {
        let Some(c) = self.st.convs.get(id) else {
            return;
        };
        let Some(d) = self.ctx.for_queue(&c.queue).reassign_after else {
            return;
        };
        if c.state != ConvState::Active {
            return;
        }
        let Some(since) = activity.unanswered_since else {
            return;
        };
        let d = d.as_millis() as u64;
        let due = since.max(c.assigned_at.unwrap_or(since)) + d;
        if self.ctx.now < due {
            self.effects.push(Effect::SetTimer {
                kind: TimerKind::Reassign(id.clone()),
                at: due,
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
                // The visitor is told in words before the next operator joins.
                self.effects.push(Effect::System {
                    conv: id.clone(),
                    note: Note::Reassigned,
                });
                self.move_to(id, &next, ConvEvent::Transferred, Reason::Reassigned);
            }
            // Nobody else can take it now: look again after another period.
            None => self.effects.push(Effect::SetTimer {
                kind: TimerKind::Reassign(id.clone()),
                at: self.ctx.now + d,
            }),
        }
    }

    /// `close_after_inactive`: an active conversation whose last word was the operator's, and
    /// the visitor has not answered for the setting since, is closed. A visitor who waits for
    /// an answer, or an operator who never wrote, is not this rule's business (the queue and
    /// `reassign_after` are): the timer looks again after another period. A conversation that
    /// is not active is watched again once it is (every assignment arms the timer).
    fn inactive_timer(&mut self, id: &ConvId, activity: Activity) {
        let Some(c) = self.st.convs.get(id) else {
            return;
        };
        let Some(d) = self.ctx.for_queue(&c.queue).close_after_inactive else {
            return;
        };
        if c.state != ConvState::Active || c.callback_until.is_some() {
            return;
        }
        let d = d.as_millis() as u64;
        let now = self.ctx.now;
        let next = match (activity.operator_ts, activity.unanswered_since) {
            (Some(said), None) if now >= said + d => {
                self.close(id, Some(Outcome::Inactive), Reason::Inactive);
                return;
            }
            (Some(said), None) => said + d,
            _ => now + d,
        };
        self.effects.push(Effect::SetTimer {
            kind: TimerKind::Inactive(id.clone()),
            at: next,
        });
    }

    /// The timing settings changed: every active conversation's reassign and inactivity
    /// timers are looked at now under the new values (or dropped, when a rule was turned off).
    pub(super) fn retime_active(&mut self) {
        let now = self.ctx.now;
        let active: Vec<(ConvId, QueueId)> = self
            .st
            .convs
            .iter()
            .filter(|(_, c)| c.state == ConvState::Active)
            .map(|(id, c)| (id.clone(), c.queue.clone()))
            .collect();
        for (id, queue) in active {
            let settings = self.ctx.for_queue(&queue);
            for (kind, after) in [
                (TimerKind::Reassign(id.clone()), settings.reassign_after),
                (
                    TimerKind::Inactive(id.clone()),
                    settings.close_after_inactive,
                ),
            ] {
                self.effects.push(match after {
                    Some(_) => Effect::SetTimer { kind, at: now },
                    None => Effect::CancelTimer { kind },
                });
            }
        }
    }
}
