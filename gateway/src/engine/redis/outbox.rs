//! The outbox on Redis: one stream per site (`cg:{s:<site>}:outbox`, in the site's slot, so
//! that a transition's entries are written by its commit script), read by consumer groups.
//! A consumer claims new entries (`XREADGROUP`) and takes over entries another consumer
//! claimed and did not acknowledge within the lease (`XAUTOCLAIM`): a node that dies mid-write
//! loses nothing. Entries go (`XTRIM MINID`) once every group has acknowledged them.

use dashmap::DashSet;
use redis::Value;

use super::codec::{array, as_bytes, as_str, garbled};
use super::{keys, RedisEngine};
use crate::core::{Millis, SiteId};
use crate::engine::{EngineError, Outbox};
use crate::outbox::{OutboxEntry, OutboxItem};

/// Stream entries as redis-rs reads them: `[id, [field, value, …]]`.
fn items(site: &SiteId, entries: &Value) -> Vec<OutboxItem> {
    let Value::Array(list) = entries else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let Value::Array(pair) = e else { return None };
            let id = as_str(pair.first()?)?.to_owned();
            let Value::Array(fields) = pair.get(1)? else {
                // XAUTOCLAIM names entries deleted meanwhile with nil fields.
                return None;
            };
            let bytes = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(as_str) == Some("e"))
                .and_then(|kv| kv.get(1).and_then(as_bytes))?;
            match OutboxEntry::decode(bytes) {
                Ok(entry) => Some(OutboxItem {
                    id,
                    site: site.clone(),
                    entry,
                }),
                Err(e) => {
                    tracing::error!(site = %site, id, error = %e, "unreadable outbox entry skipped");
                    None
                }
            }
        })
        .collect()
}

/// The groups whose stream exists on each site (`XGROUP CREATE … MKSTREAM` once).
pub(super) type Groups = DashSet<(SiteId, String)>;

impl RedisEngine {
    async fn ensure_group(&self, site: &SiteId, group: &str) -> Result<(), EngineError> {
        let key = (site.clone(), group.to_owned());
        if self.inner.groups.contains(&key) {
            return Ok(());
        }
        let out: Result<(), EngineError> = self
            .inner
            .run(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(keys::outbox(site))
                    .arg(group)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match out {
            Ok(()) => {}
            // BUSYGROUP: another node (or an earlier life) made it.
            Err(EngineError::Protocol {
                source: Some(s), ..
            }) if s.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.inner.groups.insert(key);
        Ok(())
    }

    /// A read that found the group gone (Redis lost its data): made again next time.
    fn forget_group(&self, site: &SiteId, group: &str, e: &EngineError) {
        if e.to_string().contains("NOGROUP") || format!("{e:?}").contains("NOGROUP") {
            self.inner.groups.remove(&(site.clone(), group.to_owned()));
        }
    }
}

impl Outbox for RedisEngine {
    async fn push_outbox(&self, site: &SiteId, entries: &[OutboxEntry]) -> Result<(), EngineError> {
        if entries.is_empty() || !self.inner.opts.archive {
            return Ok(());
        }
        let mut p = redis::pipe();
        for e in entries {
            p.cmd("XADD")
                .arg(keys::outbox(site))
                .arg("*")
                .arg("e")
                .arg(e.encode())
                .ignore();
        }
        let mut c = self.inner.conn.clone();
        self.inner.deadline(p.query_async::<()>(&mut c)).await
    }

    async fn claim_outbox(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        lease: Millis,
    ) -> Result<Vec<OutboxItem>, EngineError> {
        let mut out = Vec::new();
        for site in self.inner.sites.get().iter() {
            if out.len() >= max {
                break;
            }
            self.ensure_group(site, group).await?;
            let want = max - out.len();
            // Entries another consumer claimed and did not acknowledge in time first.
            let stale = self
                .inner
                .run::<Value>(
                    redis::cmd("XAUTOCLAIM")
                        .arg(keys::outbox(site))
                        .arg(group)
                        .arg(consumer)
                        .arg(lease)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(want),
                )
                .await
                .inspect_err(|e| self.forget_group(site, group, e))?;
            let stale = array(stale)?;
            out.extend(items(site, stale.get(1).unwrap_or(&Value::Nil)));
            let want = max.saturating_sub(out.len());
            if want == 0 {
                break;
            }
            let fresh = self
                .inner
                .run::<Value>(
                    redis::cmd("XREADGROUP")
                        .arg("GROUP")
                        .arg(group)
                        .arg(consumer)
                        .arg("COUNT")
                        .arg(want)
                        .arg("STREAMS")
                        .arg(keys::outbox(site))
                        .arg(">"),
                )
                .await
                .inspect_err(|e| self.forget_group(site, group, e))?;
            // RESP2 `[[stream, entries]]`, RESP3 a map `{stream: entries}`.
            match fresh {
                Value::Array(streams) => {
                    for s in streams {
                        if let Value::Array(pair) = s {
                            out.extend(items(site, pair.get(1).unwrap_or(&Value::Nil)));
                        }
                    }
                }
                Value::Map(streams) => {
                    for (_, entries) in streams {
                        out.extend(items(site, &entries));
                    }
                }
                Value::Nil => {}
                other => return Err(garbled(format!("XREADGROUP answered {other:?}"))),
            }
        }
        Ok(out)
    }

    async fn ack_outbox(&self, group: &str, items: &[OutboxItem]) -> Result<(), EngineError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut p = redis::pipe();
        for i in items {
            p.cmd("XACK")
                .arg(keys::outbox(&i.site))
                .arg(group)
                .arg(&i.id)
                .ignore();
        }
        let mut c = self.inner.conn.clone();
        self.inner.deadline(p.query_async::<()>(&mut c)).await
    }

    async fn trim_outbox(&self) -> Result<u64, EngineError> {
        let mut gone = 0;
        for site in self.inner.sites.get().iter() {
            let key = keys::outbox(site);
            let groups = match self
                .inner
                .run::<Value>(redis::cmd("XINFO").arg("GROUPS").arg(&key))
                .await
            {
                Ok(g) => array(g)?,
                // No stream yet.
                Err(_) => continue,
            };
            // Every group's oldest unacknowledged entry, or what it has not read yet.
            let mut keep_from: Option<String> = None;
            for g in &groups {
                let fields: Vec<(String, Value)> = match g {
                    Value::Array(kv) => kv
                        .chunks(2)
                        .filter_map(|p| Some((as_str(p.first()?)?.to_owned(), p.get(1)?.clone())))
                        .collect(),
                    Value::Map(kv) => kv
                        .iter()
                        .filter_map(|(k, v)| Some((as_str(k)?.to_owned(), v.clone())))
                        .collect(),
                    _ => continue,
                };
                let field = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                let Some(name) = field("name").and_then(|v| as_str(&v).map(str::to_owned)) else {
                    continue;
                };
                let pending = self
                    .inner
                    .run::<Value>(redis::cmd("XPENDING").arg(&key).arg(&name))
                    .await?;
                let pending = array(pending)?;
                let oldest = pending.get(1).and_then(as_str).map(str::to_owned);
                let from = match oldest {
                    Some(id) => id,
                    // Nothing pending: everything up to the last delivered id is done.
                    None => match field("last-delivered-id")
                        .and_then(|v| as_str(&v).map(str::to_owned))
                    {
                        Some(last) => next_id(&last),
                        None => continue,
                    },
                };
                keep_from = Some(match keep_from {
                    Some(k) if id_less(&k, &from) => k,
                    _ => from,
                });
            }
            if let Some(from) = keep_from {
                let n: u64 = self
                    .inner
                    .run(redis::cmd("XTRIM").arg(&key).arg("MINID").arg(from))
                    .await?;
                gone += n;
            }
        }
        Ok(gone)
    }
}

/// The stream id right after `id` (`ms-seq` → `ms-(seq+1)`).
fn next_id(id: &str) -> String {
    match id.split_once('-') {
        Some((ms, seq)) => format!("{ms}-{}", seq.parse::<u64>().unwrap_or(0) + 1),
        None => id.to_owned(),
    }
}

fn id_less(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) < parse(b)
}
