//! Presence: operators and visitors connecting and leaving (per node), grace windows, a dead
//! node's connections taken away at once, operator status.

use std::collections::BTreeSet;

use super::commands::{reject, Core, Reject, Reply};
use super::effects::{Effect, Outcome, Reason};
use super::state::{Conns, Operator};
use super::timers::TimerKind;
use super::{ConvId, NodeId, OperatorId, QueueId, VisitorId};
use crate::protocol::{ConvEvent, ConvState, ErrorCode, OperatorStatus};

impl Core<'_, '_> {
    pub(super) fn operator_connected(
        &mut self,
        id: OperatorId,
        node: NodeId,
        name: String,
        max: Option<u32>,
        queues: Option<Vec<QueueId>>,
        supervisor: bool,
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
                supervisor,
            });
        op.supervisor = supervisor;
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

    pub(super) fn operator_disconnected(
        &mut self,
        id: OperatorId,
        node: NodeId,
    ) -> Result<Reply, Reject> {
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
    pub(super) fn operator_offline(&mut self, id: OperatorId) {
        let grace = self.ctx.settings.operator_grace;
        let now = self.ctx.now;
        let Some(op) = self.st.operators.get_mut(&id) else {
            return;
        };
        op.away_since = Some(now);
        let convs: Vec<ConvId> = op.convs.iter().cloned().collect();
        for c in &convs {
            self.conv_event(c, ConvEvent::OperatorAway, Some(Reason::Disconnected));
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
    pub(super) fn operator_gone(&mut self, id: &OperatorId) {
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
            self.requeue(&c, Some(Reason::OperatorLeft));
        }
        for c in offers {
            self.lapse_offer(&c);
        }
        // The operator is kept (with status inactive) so supervisors still see them.
        self.route_waiting();
    }

    pub(super) fn visitor_connected(
        &mut self,
        id: VisitorId,
        node: NodeId,
        counted: Option<ConvId>,
    ) -> Result<Reply, Reject> {
        // Only a visitor with an open conversation is in the state; a connection already
        // counted for that conversation is not counted twice.
        let Some(v) = self.st.visitors.get(&id) else {
            return Ok(Reply::None);
        };
        let Some(conv) = v.conv.clone() else {
            return Ok(Reply::None);
        };
        if counted.as_ref() == Some(&conv) {
            return Ok(Reply::None);
        }
        let v = self.st.visitors.get_mut(&id).expect("checked above");
        let first = !v.conns.is_online();
        v.conns.add(&node);
        if first {
            v.away_since = None;
            if let Some(c) = self.st.convs.get_mut(&conv) {
                c.callback_until = None;
            }
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::VisitorGrace(id),
            });
            self.effects.push(Effect::CancelTimer {
                kind: TimerKind::Callback(conv.clone()),
            });
            // Back after a disconnect, or here for the first time since staff invited them.
            self.conv_event(&conv, ConvEvent::VisitorBack, None);
            self.dirty_queue_of(&conv);
        }
        Ok(Reply::Counted(conv))
    }

    pub(super) fn visitor_disconnected(
        &mut self,
        id: VisitorId,
        node: NodeId,
        conv: ConvId,
    ) -> Result<Reply, Reject> {
        let Some(v) = self.st.visitors.get(&id) else {
            return Ok(Reply::None);
        };
        if v.conv.as_ref() != Some(&conv) || !v.conns.has_node(&node) {
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
    pub(super) fn visitor_offline(&mut self, id: VisitorId) {
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
        self.conv_event(&conv, ConvEvent::VisitorAway, Some(Reason::Disconnected));
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
    pub(super) fn node_gone(&mut self, node: NodeId) -> Result<Reply, Reject> {
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
    pub(super) fn visitor_gone(&mut self, id: &VisitorId) {
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
                self.conv_event(&conv, ConvEvent::VisitorAway, Some(Reason::Callback));
            }
            _ => {
                let outcome = if waiting {
                    Outcome::Abandoned
                } else {
                    Outcome::VisitorLeft
                };
                self.close(&conv, Some(outcome), Reason::VisitorLeft);
            }
        }
    }

    pub(super) fn set_status(
        &mut self,
        id: OperatorId,
        status: OperatorStatus,
    ) -> Result<Reply, Reject> {
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
}
