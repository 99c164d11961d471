//! Nodes: heartbeats timed by Redis' clock, the dead-node scan, and forgetting a swept node.

use super::codec::{array, as_str, garbled};
use super::{keys, scripts, RedisEngine};
use crate::core::NodeId;
use crate::engine::{EngineError, Heartbeat, Nodes};

impl Nodes for RedisEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.inner.run::<()>(&redis::cmd("PING")).await
    }

    async fn heartbeat(&self, life: &NodeId) -> Result<Heartbeat, EngineError> {
        // A life registers once ("join"); after that it only proves itself ("beat"), and a
        // beat that finds it gone from the registry means it was swept.
        let joined = self.inner.joined.lock().as_ref() == Some(life);
        let out = self
            .inner
            .script(
                scripts::HEARTBEAT
                    .key(keys::NODES)
                    .key(keys::DEAD)
                    .arg(life.as_str())
                    .arg(if joined { "beat" } else { "join" }),
            )
            .await?;
        match as_str(&out) {
            Some("alive") => {
                *self.inner.joined.lock() = Some(life.clone());
                Ok(Heartbeat::Alive)
            }
            Some("evicted") => Ok(Heartbeat::Evicted),
            other => Err(garbled(format!("heartbeat answered {other:?}"))),
        }
    }

    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<NodeId>, EngineError> {
        // Judge others only after being connected for two timeouts: after an outage every
        // node's heartbeat is old, and the live ones need a moment to reconnect and beat.
        let settled = self
            .inner
            .healthy_since
            .lock()
            .is_some_and(|t| t.elapsed() >= self.inner.opts.node_timeout * 2);
        if !settled {
            return Ok(Vec::new());
        }
        let out = self
            .inner
            .script(
                scripts::DEAD_NODES
                    .key(keys::NODES)
                    .key(keys::DEAD)
                    .arg(self.inner.opts.node_timeout.as_millis() as u64),
            )
            .await?;
        Ok(array(out)?
            .iter()
            .filter_map(as_str)
            .filter(|n| *n != me.as_str())
            .map(NodeId::from)
            .collect())
    }

    async fn forget_node(&self, node: &NodeId) -> Result<(), EngineError> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SREM")
            .arg(keys::DEAD)
            .arg(node.as_str())
            .ignore()
            .cmd("HDEL")
            .arg(keys::NODES)
            .arg(node.as_str())
            .ignore();
        let mut c = self.inner.conn.clone();
        self.inner.deadline(p.query_async::<()>(&mut c)).await
    }
}
