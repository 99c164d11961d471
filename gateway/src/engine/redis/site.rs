//! Site state: each node's copy of a site, caught up and committed by compare-and-set on the
//! site's version (see the module documentation of the engine).

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::OwnedMutexGuard;

use super::codec::{
    array, as_bytes, as_i64, as_str, as_u64, decode, encode, garbled, timer_member,
};
use super::keys::{self, field};
use super::{scripts, Inner, RedisEngine, STATE_LOG_CAP};
use crate::core::{ConvId, Millis, OperatorId, SiteId, SiteState, TimerKind, VisitorId};
use crate::engine::{EngineError, SiteStore, SiteTx};
use crate::outbox::OutboxEntry;

impl Inner {
    /// Brings a site's copy up to date with Redis.
    async fn catch_up(&self, site: &SiteId, copy: &mut Copy) -> Result<(), EngineError> {
        let out = self
            .script(
                scripts::CATCH_UP
                    .key(keys::site_state(site))
                    .key(keys::site_log(site))
                    .arg(copy.state.version)
                    .arg(&copy.epoch),
            )
            .await?;
        let st = &mut copy.state;
        let mut parts = array(out)?.into_iter();
        let ver = parts
            .next()
            .as_ref()
            .and_then(as_u64)
            .ok_or_else(|| garbled("catch-up without a version"))?;
        match parts.next().as_ref().and_then(as_str) {
            None => Ok(()),
            Some("delta") => {
                let names = array(parts.next().unwrap_or(Value::Nil))?;
                let values = array(parts.next().unwrap_or(Value::Nil))?;
                for (n, v) in names.iter().zip(values.iter()) {
                    let Some(name) = as_str(n) else { continue };
                    apply_field(st, name, as_bytes(v))?;
                }
                st.version = ver;
                Ok(())
            }
            Some("full") => {
                let flat = array(parts.next().unwrap_or(Value::Nil))?;
                let epoch = parts.next().as_ref().and_then(as_str).map(str::to_owned);
                if ver < st.version || (st.version > 0 && epoch.as_deref() != Some(&copy.epoch)) {
                    // The store went back in time (Redis lost its data): whoever this node
                    // counted is gone from it, so its clients must connect and be counted
                    // again.
                    tracing::error!(site = %site, had = st.version, now = ver, "site state went back in time; reconnecting clients");
                    self.local
                        .close_all(crate::protocol::CloseReason::Restarting);
                }
                let mut fresh = SiteState::new(site.clone());
                for pair in flat.chunks(2) {
                    let [n, v] = pair else { continue };
                    let Some(name) = as_str(n) else { continue };
                    apply_field(&mut fresh, name, as_bytes(v))?;
                }
                fresh.version = ver;
                *st = fresh;
                // A store nobody committed to yet has no epoch: the copy's first commit
                // gives it one of its own.
                copy.epoch = epoch.filter(|e| !e.is_empty()).unwrap_or_else(new_epoch);
                Ok(())
            }
            Some(other) => Err(garbled(format!("catch-up answered {other:?}"))),
        }
    }

    /// Whether the commit with `token` produced `version`, asked a few times over about a
    /// second (Redis may be coming back); `None` when nobody can tell.
    async fn committed(&self, site: &SiteId, version: u64, token: u64) -> Option<bool> {
        for pause in [50u64, 200, 750] {
            let out = self
                .script(
                    scripts::COMMITTED
                        .key(keys::site_log(site))
                        .arg(version)
                        .arg(token),
                )
                .await;
            if let Ok(v) = out {
                return Some(as_i64(&v) == Some(1));
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        None
    }
}

/// Sets one field of a site's state from its stored bytes (`None`: deleted).
fn apply_field(st: &mut SiteState, name: &str, value: Option<&[u8]>) -> Result<(), EngineError> {
    if name == field::VERSION {
        return Ok(());
    }
    if name == field::QUEUE_CLOCK {
        st.queue_clock = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return Ok(());
    }
    if let Some(id) = name.strip_prefix(field::OPERATOR) {
        let v = value.map(decode).transpose()?;
        st.operators.apply(OperatorId::from(id), v);
    } else if let Some(id) = name.strip_prefix(field::VISITOR) {
        let v = value.map(decode).transpose()?;
        st.visitors.apply(VisitorId::from(id), v);
    } else if let Some(id) = name.strip_prefix(field::CONV) {
        let v = value.map(decode).transpose()?;
        st.convs.apply(ConvId::from(id), v);
    }
    Ok(())
}

/// A node's copy of a site's state, and the epoch of the stored state it copies: a store
/// that lost its data and started over gets a new epoch, so an old copy is never patched
/// with changes from the new history.
pub(super) struct Copy {
    state: SiteState,
    epoch: String,
}

impl Copy {
    pub(super) fn new(site: &SiteId) -> Copy {
        Copy {
            state: SiteState::new(site.clone()),
            epoch: new_epoch(),
        }
    }
}

fn new_epoch() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// A site's copy checked out for one transition.
pub struct RedisTx {
    inner: Arc<Inner>,
    guard: OwnedMutexGuard<Copy>,
}

impl SiteTx for RedisTx {
    fn state(&mut self) -> &mut SiteState {
        &mut self.guard.state
    }

    async fn commit(
        &mut self,
        timers: &[(TimerKind, Option<Millis>)],
        outbox: &[OutboxEntry],
    ) -> Result<(), EngineError> {
        let epoch = self.guard.epoch.clone();
        let st = &mut self.guard.state;
        let site = st.site.clone();
        if !st.is_touched() {
            // Nothing to store: timer changes and outbox entries alone need no
            // compare-and-set (one transaction, all in the site's slot).
            if timers.is_empty() && outbox.is_empty() {
                return Ok(());
            }
            let mut p = redis::pipe();
            p.atomic();
            for (kind, at) in timers {
                match at {
                    Some(at) => p
                        .cmd("ZADD")
                        .arg(keys::timers(&site))
                        .arg(*at)
                        .arg(timer_member(kind))
                        .ignore(),
                    None => p
                        .cmd("ZREM")
                        .arg(keys::timers(&site))
                        .arg(timer_member(kind))
                        .ignore(),
                };
            }
            for e in outbox {
                p.cmd("XADD")
                    .arg(keys::outbox(&site))
                    .arg("*")
                    .arg("e")
                    .arg(e.encode())
                    .ignore();
            }
            let mut c = self.inner.conn.clone();
            return self.inner.deadline(p.query_async::<()>(&mut c)).await;
        }
        let mut names: Vec<String> = Vec::new();
        let mut sets: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dels: Vec<String> = Vec::new();
        let mut put = |name: String, value: Option<Vec<u8>>| {
            names.push(name.clone());
            match value {
                Some(v) => sets.push((name, v)),
                None => dels.push(name),
            }
        };
        for (id, v) in st.operators.changes() {
            put(format!("{}{id}", field::OPERATOR), v.map(encode));
        }
        for (id, v) in st.visitors.changes() {
            put(format!("{}{id}", field::VISITOR), v.map(encode));
        }
        for (id, v) in st.convs.changes() {
            put(format!("{}{id}", field::CONV), v.map(encode));
        }
        put(
            field::QUEUE_CLOCK.to_owned(),
            Some(st.queue_clock.to_string().into_bytes()),
        );
        let timer_sets: Vec<(String, Millis)> = timers
            .iter()
            .filter_map(|(k, at)| at.map(|at| (timer_member(k), at)))
            .collect();
        let timer_dels: Vec<String> = timers
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(k, _)| timer_member(k))
            .collect();
        let token: u64 = {
            use rand::Rng;
            rand::rng().random()
        };
        let expected = st.version - 1;
        let mut inv = scripts::COMMIT.prepare_invoke();
        inv.key(keys::site_state(&site))
            .key(keys::site_log(&site))
            .key(keys::timers(&site))
            .key(keys::outbox(&site))
            .arg(expected)
            .arg(names.join("\n"))
            .arg(STATE_LOG_CAP)
            .arg(token)
            .arg(&epoch)
            .arg(sets.len())
            .arg(dels.len())
            .arg(timer_sets.len())
            .arg(timer_dels.len());
        for (n, v) in &sets {
            inv.arg(n).arg(v.as_slice());
        }
        for d in &dels {
            inv.arg(d);
        }
        for (m, at) in &timer_sets {
            inv.arg(m).arg(*at);
        }
        for m in &timer_dels {
            inv.arg(m);
        }
        inv.arg(outbox.len());
        for e in outbox {
            inv.arg(e.encode());
        }
        let result = self.inner.script(&inv).await;
        let landed = match result.as_ref().ok().and_then(as_i64) {
            Some(v) => Ok(v),
            None => match &result {
                Err(_) => {
                    // The answer was lost: look for the commit's token before giving up.
                    match self.inner.committed(&site, st.version, token).await {
                        Some(true) => Ok(st.version as i64),
                        _ => Err(()),
                    }
                }
                Ok(_) => Err(()),
            },
        };
        let st = &mut self.guard.state;
        match landed {
            Ok(v) if v >= 0 && v as u64 == st.version => {
                st.clear_touched();
                Ok(())
            }
            outcome => {
                // Not stored, or not known to be: the copy goes back to what it was read as.
                // If it was stored after all, the next catch-up brings it back.
                st.rollback();
                match (outcome, result) {
                    (Ok(-1), _) => Err(EngineError::Conflict),
                    (_, Err(e)) => Err(e),
                    (Ok(v), _) => Err(garbled(format!("commit stored version {v}"))),
                    (Err(()), Ok(other)) => Err(garbled(format!("commit answered {other:?}"))),
                }
            }
        }
    }
}

impl Drop for RedisTx {
    /// A transition dropped before its commit leaves no trace in the copy.
    fn drop(&mut self) {
        self.guard.state.rollback();
    }
}

impl SiteStore for RedisEngine {
    type Tx = RedisTx;

    fn serve_sites(&self, sites: Vec<SiteId>) {
        // The copy of a site no longer served goes with it.
        self.inner.copies.retain(|s, _| sites.contains(s));
        self.inner.sites.set(sites);
    }

    async fn begin(&self, site: &SiteId) -> Result<RedisTx, EngineError> {
        let copy = self.inner.copy(site);
        let mut guard = copy.lock_owned().await;
        self.inner.catch_up(site, &mut guard).await?;
        Ok(RedisTx {
            inner: self.inner.clone(),
            guard,
        })
    }
}
