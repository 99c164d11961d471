//! Delivery gates: while the log of a conversation is replayed to a connection (it just
//! joined, or the bus lost messages), its live `msg` frames of that conversation are held back
//! and released after the replay, so that they leave in `seq` order, each once. Held frames
//! count against the connection's outbound budget.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::conn::ConnShared;
use crate::bus::{Gated, Outbound};
use crate::core::ConvId;
use crate::protocol::CloseReason;

/// `msg` frames of one conversation held back during a replay.
#[derive(Debug)]
pub(super) struct Gate {
    conv: ConvId,
    after: u64,
    pub(super) held: Vec<(u64, Arc<Outbound>)>,
    /// The held frames' size (as MessagePack), charged against the connection's budget.
    held_bytes: usize,
}

impl ConnShared {
    /// Queues a conversation's `msg` frame, unless a replay of that conversation is under way
    /// for this connection: then it waits, so that frames leave in `seq` order.
    pub fn deliver_msg(&self, conv: &ConvId, seq: u64, out: &Arc<Outbound>) -> bool {
        if self.gated.load(Ordering::Acquire) {
            let mut gates = self.gates.lock();
            let held: usize = gates.iter().map(|g| g.held_bytes).sum();
            if let Some(g) = gates.iter_mut().find(|g| &g.conv == conv) {
                // Held frames count against the same budget as queued ones: a replay that
                // takes long while the conversation is busy must not grow without bound.
                let len = out.msgpack().len();
                if self.queued.load(Ordering::Acquire) + held + len > self.max_queued {
                    drop(gates);
                    self.cut_too_slow();
                    return false;
                }
                g.held_bytes += len;
                g.held.push((seq, out.clone()));
                return true;
            }
        }
        self.deliver(out)
    }

    /// Starts holding back `msg` frames of `conv` until [`ConnShared::release_gate`]: the
    /// caller is about to replay what came after `after` from the log.
    /// Returns whether this call opened it (a gate already open belongs to a replay still
    /// under way, which will release it).
    pub fn open_gate(&self, conv: &ConvId, after: u64) -> bool {
        let mut gates = self.gates.lock();
        if gates.iter().any(|g| &g.conv == conv) {
            return false;
        }
        gates.push(Gate {
            conv: conv.clone(),
            after,
            held: Vec::new(),
            held_bytes: 0,
        });
        self.gated.store(true, Ordering::Release);
        true
    }

    /// Stops holding back `msg` frames of `conv` without delivering them: the connection
    /// left the conversation.
    pub fn drop_gate(&self, conv: &ConvId) {
        let mut gates = self.gates.lock();
        gates.retain(|g| &g.conv != conv);
        self.gated.store(!gates.is_empty(), Ordering::Release);
    }

    /// Delivers the replayed frames after the gate's cursor, then the held ones, in `seq`
    /// order and each `seq` once, and stops holding back.
    pub fn release_gate(&self, conv: &ConvId, replayed: &[(u64, Arc<Outbound>)]) {
        let mut gates = self.gates.lock();
        let Some(i) = gates.iter().position(|g| &g.conv == conv) else {
            return;
        };
        let mut gate = gates.swap_remove(i);
        gate.held.sort_by_key(|(seq, _)| *seq);
        let mut last = gate.after;
        for (seq, f) in replayed.iter().chain(gate.held.iter()) {
            if *seq > last {
                self.deliver(f);
                last = *seq;
            }
        }
        self.gated.store(!gates.is_empty(), Ordering::Release);
    }
}

impl Gated for ConnShared {
    fn release(&self, conv: &ConvId, replayed: &[(u64, Arc<Outbound>)]) {
        self.release_gate(conv, replayed);
    }

    fn give_up(&self, conv: &ConvId, reason: CloseReason) {
        self.release_gate(conv, &[]);
        self.close(reason);
    }
}
