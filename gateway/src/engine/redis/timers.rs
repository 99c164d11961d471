//! Timers: a sorted set per site, claimed with a lease by any node.

use super::codec::{array, as_str, parse_timer, timer_member};
use super::{keys, scripts, RedisEngine};
use crate::core::{Millis, SiteId, TimerKind};
use crate::engine::{EngineError, TimerClaim, Timers, TIMER_LEASE_MS};

impl Timers for RedisEngine {
    async fn set_timer(
        &self,
        site: &SiteId,
        kind: &TimerKind,
        at: Millis,
        only_if_absent: bool,
    ) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys::timers(site));
        if only_if_absent {
            cmd.arg("NX");
        }
        cmd.arg(at).arg(timer_member(kind));
        self.inner.run::<()>(&cmd).await
    }

    async fn cancel_timer(&self, site: &SiteId, kind: &TimerKind) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("ZREM")
                    .arg(keys::timers(site))
                    .arg(timer_member(kind)),
            )
            .await
    }

    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<TimerClaim>, EngineError> {
        let lease = now + TIMER_LEASE_MS;
        let mut out = Vec::new();
        for site in self.inner.sites.get().iter() {
            if out.len() >= limit {
                break;
            }
            let due = array(
                self.inner
                    .script(
                        scripts::CLAIM_TIMERS
                            .key(keys::timers(site))
                            .arg(now)
                            .arg(limit - out.len())
                            .arg(lease),
                    )
                    .await?,
            )?;
            for m in &due {
                match as_str(m).and_then(parse_timer) {
                    Some(kind) => out.push(TimerClaim {
                        site: site.clone(),
                        kind,
                        lease,
                    }),
                    None => tracing::warn!(site = %site, member = ?m, "unknown timer dropped"),
                }
            }
        }
        Ok(out)
    }

    async fn finish_timer(&self, claim: &TimerClaim) -> Result<(), EngineError> {
        self.inner
            .script(
                scripts::FINISH_TIMER
                    .key(keys::timers(&claim.site))
                    .arg(timer_member(&claim.kind))
                    .arg(claim.lease),
            )
            .await?;
        Ok(())
    }

    async fn next_timer(&self) -> Result<Option<Millis>, EngineError> {
        let mut next: Option<Millis> = None;
        for site in self.inner.sites.get().iter() {
            let first: Vec<(String, f64)> = self
                .inner
                .run(
                    redis::cmd("ZRANGE")
                        .arg(keys::timers(site))
                        .arg(0)
                        .arg(0)
                        .arg("WITHSCORES"),
                )
                .await?;
            if let Some((_, at)) = first.first() {
                let at = *at as Millis;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next)
    }
}
