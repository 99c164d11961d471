//! The in-memory engine's state across a restart of its one node.
//!
//! When the node stops (SIGTERM: after the drain and after it left, so that everyone who was
//! connected is in a reconnect window), [`MemoryEngine::save`] writes every site's state, the
//! conversations' logs, timers, drafts, settings, bans and the outbox entries not yet
//! consumed to one file in the data dir; the next start reads it back
//! ([`MemoryEngine::restore`]) and removes it. Visitors and operators who reconnect within
//! their windows resume where they were; timers keep their deadlines, so a window that ran out
//! while the node was down ends at once. A process that is killed (SIGKILL, a crash) writes
//! nothing, and the next start begins empty — with an archive, what reached it is still
//! there.
//!
//! The file is MessagePack with a format number; it is written beside its final name and
//! renamed into place, readable by the owner only (it holds the conversations).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;

use super::{Log, MemoryEngine};
use crate::core::{ConvId, Millis, NodeId, OperatorId, SiteId, SiteState, TimerKind, VisitorId};
use crate::outbox::OutboxEntry;

/// Bumped when the layout changes; a file of another format is set aside, not read.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    saved_at: Millis,
    sites: Vec<SiteState>,
    logs: Vec<(ConvId, Log)>,
    latest: Vec<((SiteId, VisitorId), ConvId)>,
    timers: Vec<(SiteId, TimerKind, Millis)>,
    drafts: Vec<((SiteId, OperatorId), BTreeMap<ConvId, String>)>,
    settings: Vec<(SiteId, Value)>,
    bans: Vec<((SiteId, VisitorId), Millis)>,
    closed: Vec<(Millis, ConvId)>,
    outbox: Vec<(SiteId, OutboxEntry)>,
}

/// What a snapshot held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kept {
    /// Open conversations (on every site).
    pub open: usize,
    /// Conversation logs, open and closed.
    pub logs: usize,
    /// Outbox entries not yet consumed.
    pub outbox: usize,
}

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable state file: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("state file of format {0}, this build reads {FORMAT}")]
    Format(u32),
}

impl MemoryEngine {
    /// Writes the whole state to `path` (see the module's doc).
    pub async fn save(&self, path: &Path) -> Result<Kept, SnapshotError> {
        let mut sites = Vec::with_capacity(self.sites.len());
        let locks: Vec<Arc<AsyncMutex<SiteState>>> =
            self.sites.iter().map(|e| e.value().clone()).collect();
        for lock in locks {
            sites.push(lock.lock().await.clone());
        }
        let outbox = {
            let mut o = self.outbox.lock();
            o.trim();
            o.waiting()
        };
        let timers = self
            .timers
            .lock()
            .by_key
            .iter()
            .map(|((s, k), at)| (s.clone(), k.clone(), *at))
            .collect();
        let snap = Snapshot {
            format: FORMAT,
            saved_at: crate::clock::now_ms(),
            logs: self
                .logs
                .iter()
                .map(|e| (e.key().clone(), e.value().lock().clone()))
                .collect(),
            latest: collect(&self.latest),
            timers,
            drafts: collect(&self.drafts),
            settings: collect(&self.settings),
            bans: collect(&self.bans),
            closed: self.closed.lock().iter().cloned().collect(),
            outbox,
            sites,
        };
        let kept = Kept {
            open: snap.sites.iter().map(|s| s.convs.len()).sum(),
            logs: snap.logs.len(),
            outbox: snap.outbox.len(),
        };
        let bytes = rmp_serde::to_vec_named(&snap).expect("the state serialises");
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(kept)
    }

    /// Reads the state a stopped node left at `path` into this (fresh) engine and removes the
    /// file; `None` when there was none. A file this build cannot read is renamed with
    /// `.unreadable` and reported: the node starts empty rather than not at all.
    pub fn restore(&self, path: &Path) -> Result<Option<Kept>, SnapshotError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let snap: Snapshot = match rmp_serde::from_slice::<Snapshot>(&bytes) {
            Ok(s) if s.format == FORMAT => s,
            Ok(s) => {
                set_aside(path);
                return Err(SnapshotError::Format(s.format));
            }
            Err(e) => {
                set_aside(path);
                return Err(e.into());
            }
        };
        let kept = Kept {
            open: snap.sites.iter().map(|s| s.convs.len()).sum(),
            logs: snap.logs.len(),
            outbox: snap.outbox.len(),
        };
        let mut lives = self.orphans.lock();
        for site in snap.sites {
            // Whoever the state still counts as connected was on the stopped node (a
            // disconnect it could not store): swept like a dead node's, into their windows.
            lives.extend(site.nodes());
            self.sites
                .insert(site.site.clone(), Arc::new(AsyncMutex::new(site)));
        }
        drop(lives);
        for (conv, log) in snap.logs {
            self.logs.insert(conv, Arc::new(Mutex::new(log)));
        }
        for (k, v) in snap.latest {
            self.latest.insert(k, v);
        }
        for (site, kind, at) in snap.timers {
            self.put_timer(&site, &kind, at, false);
        }
        for (k, v) in snap.drafts {
            self.drafts.insert(k, v);
        }
        for (k, v) in snap.settings {
            self.settings.insert(k, v);
        }
        for (k, v) in snap.bans {
            self.bans.insert(k, v);
        }
        self.closed.lock().extend(snap.closed);
        {
            let mut o = self.outbox.lock();
            for (site, entry) in snap.outbox {
                o.push(&site, std::slice::from_ref(&entry));
            }
        }
        std::fs::remove_file(path)?;
        Ok(Some(kept))
    }

    /// Node lives the restored state still counted connections on.
    pub(super) fn orphan_lives(&self, me: &NodeId) -> Vec<NodeId> {
        self.orphans
            .lock()
            .iter()
            .filter(|n| *n != me)
            .cloned()
            .collect()
    }
}

fn collect<K: Clone + Eq + std::hash::Hash, V: Clone>(m: &dashmap::DashMap<K, V>) -> Vec<(K, V)> {
    m.iter()
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect()
}

fn set_aside(path: &Path) {
    let _ = std::fs::rename(path, path.with_extension("unreadable"));
}
