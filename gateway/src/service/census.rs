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

    /// Sets the conversation gauges from every site's state as this node reads it now: the
    /// totals, and per site for the first `GATEWAY_METRICS_SITES` sites by id (the rest
    /// summed as `other`), so that the series stay bounded however many sites there are.
    pub(crate) async fn export_census(&self) {
        let mut ids = self.site_ids();
        ids.sort();
        let labelled = self.cfg.metrics_sites;
        let mut total = core::Census::default();
        let mut other = (core::Census::default(), 0u32);
        let mut per_site = Vec::with_capacity(ids.len().min(labelled));
        for (i, site) in ids.iter().enumerate() {
            let census = match self.engine.begin(site).await {
                Ok(mut tx) => core::census(tx.state()),
                // The engine is down: keep the last known numbers.
                Err(_) => return,
            };
            let conns = self.site_connections(site);
            total += census;
            if i < labelled {
                per_site.push((site.to_string(), census, conns));
            } else {
                other.0 += census;
                other.1 += conns;
            }
        }
        set_conversations(&[], total);
        if ids.len() > labelled {
            per_site.push(("other".to_owned(), other.0, other.1));
        }
        // A site labelled before and gone now (deleted, or no longer among the first) reads 0.
        let now: Vec<String> = per_site.iter().map(|(s, ..)| s.clone()).collect();
        let before = std::mem::replace(&mut *self.census_sites.lock(), now.clone());
        for gone in before.into_iter().filter(|s| !now.contains(s)) {
            per_site.push((gone, core::Census::default(), 0));
        }
        for (site, census, conns) in per_site {
            metrics::gauge!(m::SITE_CONNECTIONS, "site" => site.clone()).set(conns as f64);
            set_conversations(&[("site", site)], census);
        }
    }
}

/// The conversation gauges by state: the totals (no labels) or a site's.
fn set_conversations(labels: &[(&'static str, String)], c: core::Census) {
    let name = if labels.is_empty() {
        m::CONVERSATIONS
    } else {
        m::SITE_CONVERSATIONS
    };
    for (state, n) in [
        ("queued", c.queued),
        ("offered", c.offered),
        ("active", c.active),
    ] {
        let mut all: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect();
        all.push(metrics::Label::new("state", state));
        metrics::gauge!(name, all).set(n as f64);
    }
}
