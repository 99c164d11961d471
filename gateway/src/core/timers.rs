//! Timers: every kind a site has, and what firing each one does. A timer's handler checks the
//! state first, so a timer fired twice takes effect once.

use serde::{Deserialize, Serialize};

use super::commands::{Core, Reject, Reply};
use super::effects::{Effect, Outcome, Reason};
use super::state::Activity;
use super::{ConvId, OperatorId, VisitorId};
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
                    self.close(&id, Some(Outcome::Inactive), Reason::Inactive);
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
                    self.close(&id, Some(Outcome::Missed), Reason::CallbackExpired);
                }
            }
            TimerKind::VisitorGrace(v) => self.visitor_gone(&v),
            TimerKind::OperatorGrace(o) => self.operator_gone(&o),
        }
        Ok(Reply::None)
    }

    pub(super) fn reassign_timer(&mut self, id: &ConvId, activity: Activity) {
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
                self.move_to(id, &next, ConvEvent::Transferred, Reason::Reassigned);
            }
            // Nobody else can take it now: look again after another period.
            None => self.effects.push(Effect::SetTimer {
                kind: TimerKind::Reassign(id.clone()),
                at: self.ctx.now + d,
            }),
        }
    }
}
