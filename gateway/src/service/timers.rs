//! The timer loop: any node fires due timers (claims are atomic, see the engine's `Timers`),
//! each as a transition of its site.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, Gateway, ServiceError};
use crate::clock::now_ms;
use crate::core::{Command, SiteId, TimerKind};
use crate::metrics as m;

impl<E: Engine> Gateway<E> {
    /// Fires due timers until the process ends. Any node may run this; claims are atomic.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let now = now_ms();
            let mut failed = false;
            match self.engine.due_timers(now, 256).await {
                Ok(due) => {
                    for claim in due {
                        if self.fire(&claim.site, claim.kind.clone()).await {
                            if let Err(e) = self.engine.finish_timer(&claim).await {
                                tracing::warn!(error = %e, "fired timer not finished");
                            }
                        }
                    }
                }
                Err(e) => {
                    failed = true;
                    tracing::debug!(error = %e, "timer poll failed");
                }
            }
            let wait = if failed {
                1000
            } else {
                let next = self.engine.next_timer().await.ok().flatten();
                next.map(|t| t.saturating_sub(now_ms()))
                    .unwrap_or(250)
                    .clamp(5, 250)
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Runs a due timer's transition; `false` when it could not (the claim then lapses and
    /// the timer fires again, here or on another node).
    async fn fire(&self, site: &SiteId, kind: TimerKind) -> bool {
        let label = match &kind {
            TimerKind::Offer(_) => "offer",
            TimerKind::Reassign(_) => "reassign",
            TimerKind::Inactive(_) => "inactive",
            TimerKind::Callback(_) => "callback",
            TimerKind::VisitorGrace(_) => "visitor_grace",
            TimerKind::OperatorGrace(_) => "operator_grace",
        };
        let activity = match &kind {
            TimerKind::Reassign(c) | TimerKind::Inactive(c) => {
                // Without the real activity an inactivity timer would close a live chat.
                match self.engine.activity(c).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(site = %site, ?kind, error = %e, "timer postponed");
                        return false;
                    }
                }
            }
            _ => Default::default(),
        };
        let cmd = Command::Timer {
            kind: kind.clone(),
            activity,
        };
        match self.apply(site, cmd).await {
            Ok(_) => {
                metrics::counter!(m::TIMERS_FIRED, "kind" => label).increment(1);
                true
            }
            Err(ServiceError::Rejected(r)) => {
                tracing::warn!(site = %site, ?kind, reason = r.message, "timer refused");
                true
            }
            Err(e) => {
                tracing::warn!(site = %site, ?kind, error = %e, "timer transition failed");
                false
            }
        }
    }
}
