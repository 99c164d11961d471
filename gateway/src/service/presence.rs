//! The presence loop: this node proves itself alive, and sweeps nodes that stopped doing so;
//! and leaving the registry when the node stops.

use std::sync::Arc;
use std::time::Duration;

use super::{new_life, Engine, Gateway};
use crate::core::{Command, NodeId};
use crate::engine::Heartbeat;
use crate::metrics as m;
use crate::protocol::CloseReason;

impl<E: Engine> Gateway<E> {
    /// Proves this node alive every `interval` and sweeps nodes that stopped doing so: their
    /// connections are taken away on every site (`NodeGone`), which starts the grace windows
    /// of whoever was connected only there. A node that learns it was swept itself (it could
    /// not reach the engine for too long) closes its clients with 1012 so that they reconnect
    /// and are counted again.
    pub async fn run_presence(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let life = self.life();
            match self.engine.heartbeat(&life).await {
                Ok(Heartbeat::Alive) => {}
                Ok(Heartbeat::Evicted) => {
                    // The others swept this life while it was cut off: its clients are no
                    // longer counted anywhere. They reconnect (here or elsewhere) and are
                    // counted in a new life; late disconnects of the old one touch nothing.
                    let next = new_life(&self.node);
                    tracing::warn!(old = %life, new = %next, "this node was declared dead while cut off; reconnecting its clients");
                    *self.life.write() = next;
                    self.close_all(CloseReason::Restarting);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed");
                    continue;
                }
            }
            let dead = match self.engine.dead_nodes(&life).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(error = %e, "dead node scan failed");
                    continue;
                }
            };
            for node in dead {
                if self.sweep(&node).await {
                    metrics::counter!(m::NODES_SWEPT).increment(1);
                    if let Err(e) = self.engine.forget_node(&node).await {
                        tracing::warn!(node = %node, error = %e, "swept node not forgotten");
                    }
                }
            }
        }
    }

    /// Takes a dead node's connections away on every site; `false` if some site failed (the
    /// node stays dead and is swept again; `NodeGone` is idempotent).
    pub async fn sweep(&self, node: &NodeId) -> bool {
        tracing::info!(node = %node, "sweeping a dead node");
        let sites = self.site_ids();
        let mut ok = true;
        for site in sites {
            if let Err(e) = self
                .apply(&site, Command::NodeGone { node: node.clone() })
                .await
            {
                tracing::warn!(site = %site, node = %node, error = %e, "sweep failed");
                ok = false;
            }
        }
        ok
    }

    /// The node stops: whatever it still counts (a disconnect that could not be stored) goes
    /// now, and it leaves the registry instead of waiting to be found dead.
    pub async fn leave(&self) {
        let life = self.life();
        if self.sweep(&life).await {
            if let Err(e) = self.engine.forget_node(&life).await {
                tracing::warn!(error = %e, "node not deregistered");
            }
        }
    }

    /// The node stopped (after it left and its consumers ended): the engine keeps what it
    /// holds in this process for the next start.
    pub async fn stopped(&self) {
        if let Err(e) = self.engine.stopped().await {
            tracing::error!(error = %e, "the engine could not keep its state");
        }
    }
}
