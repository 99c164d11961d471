//! The census loop: the conversation gauges, read from every site's state every
//! [`CENSUS_INTERVAL`]. A task of its own: reading a site's state waits for its lock, and the
//! heartbeat must never wait for that.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, Gateway};
use crate::core;
use crate::engine::SiteTx;
use crate::metrics as m;

/// How often the conversation gauges are read from the sites' state.
pub const CENSUS_INTERVAL: Duration = Duration::from_secs(5);

impl<E: Engine> Gateway<E> {
    /// Keeps the conversation gauges current.
    pub async fn run_census(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CENSUS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.export_census().await;
        }
    }

    /// Sets the conversation gauges from every site's state as this node reads it now.
    async fn export_census(&self) {
        let mut total = core::Census::default();
        for site in self.site_ids() {
            match self.engine.begin(&site).await {
                Ok(mut tx) => total += core::census(tx.state()),
                // The engine is down: keep the last known numbers.
                Err(_) => return,
            }
        }
        metrics::gauge!(m::CONVERSATIONS, "state" => "queued").set(total.queued as f64);
        metrics::gauge!(m::CONVERSATIONS, "state" => "offered").set(total.offered as f64);
        metrics::gauge!(m::CONVERSATIONS, "state" => "active").set(total.active as f64);
    }
}
