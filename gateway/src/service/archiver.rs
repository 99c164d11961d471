//! The archiver: what the outbox carries is written to the archive, off the live path.
//!
//! A transition's conversation events and operator changes reach the outbox with its commit;
//! messages are noted by the node that stored them, in batches ([`Gateway::note_message`]:
//! "this conversation's log holds messages up to this seq"), and the archiver copies them from
//! the log — which keeps every message the archive does not hold yet, whatever its cap. Each
//! entry is acknowledged after its write, and every write is idempotent: an entry handed out
//! twice (its first consumer died) stores nothing twice. Hourly, the archiver lets go of what
//! sites' `retention` and the `Idempotency-Key` window no longer keep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, Gateway};
use crate::archive::{ArchiveError, Store};
use crate::clock::now_ms;
use crate::core::{ConvId, SiteId};
use crate::engine::EngineError;
use crate::metrics as m;
use crate::outbox::{OutboxEntry, OutboxItem, ARCHIVE_GROUP, OUTBOX_LEASE_MS};
use crate::protocol::ConvState;

/// How often noted messages leave for the outbox.
const NOTE_INTERVAL: Duration = Duration::from_millis(100);
/// Entries claimed at once.
const CLAIM_BATCH: usize = 256;
/// Messages copied from a log at once.
const COPY_BATCH: usize = 500;
/// How long an `Idempotency-Key` answer is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Why an entry was not archived (it is retried).
#[derive(Debug, thiserror::Error)]
enum ArchiverError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Messages stored since the last flush: conversation → (site, highest seq).
#[derive(Default)]
pub(super) struct Notes {
    pending: parking_lot::Mutex<HashMap<ConvId, (SiteId, u64)>>,
}

impl<E: Engine> Gateway<E> {
    /// Notes that a conversation's log holds messages up to `seq` (with an archive): the
    /// note leaves in the next batch. Costs a map insert on the message path.
    pub(super) fn note_message(&self, site: &SiteId, conv: &ConvId, seq: u64) {
        if self.archive.is_none() {
            return;
        }
        let mut p = self.notes.pending.lock();
        let e = p.entry(conv.clone()).or_insert((site.clone(), 0));
        e.1 = e.1.max(seq);
    }

    /// Flushes noted messages to the outbox every [`NOTE_INTERVAL`]: one entry per
    /// conversation however many messages it had, one write per site.
    pub async fn run_message_notes(self: Arc<Self>) {
        if self.archive.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(NOTE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush_notes().await;
        }
    }

    /// Writes what was noted; a batch that cannot be written is kept for the next round.
    pub async fn flush_notes(&self) {
        let batch = std::mem::take(&mut *self.notes.pending.lock());
        if batch.is_empty() {
            return;
        }
        let mut by_site: HashMap<SiteId, Vec<OutboxEntry>> = HashMap::new();
        for (conv, (site, up_to)) in &batch {
            by_site
                .entry(site.clone())
                .or_default()
                .push(OutboxEntry::Messages {
                    conv: conv.clone(),
                    up_to: *up_to,
                });
        }
        for (site, entries) in by_site {
            if let Err(e) = self.engine.push_outbox(&site, &entries).await {
                tracing::debug!(site = %site, error = %e, "message notes not written yet");
                let mut p = self.notes.pending.lock();
                for entry in entries {
                    if let OutboxEntry::Messages { conv, up_to } = entry {
                        let e = p.entry(conv).or_insert((site.clone(), 0));
                        e.1 = e.1.max(up_to);
                    }
                }
            }
        }
    }

    /// Writes what the outbox carries to the archive, until the process ends.
    pub async fn run_archiver(self: Arc<Self>) {
        let Some(store) = self.archive.clone() else {
            return;
        };
        let consumer = self.node.to_string();
        let mut pause = Duration::from_millis(100);
        let mut chores = Instant::now();
        loop {
            if chores.elapsed() >= Duration::from_secs(60) {
                chores = Instant::now();
                self.archive_chores(&*store).await;
            }
            let items = match self
                .engine
                .claim_outbox(ARCHIVE_GROUP, &consumer, CLAIM_BATCH, OUTBOX_LEASE_MS)
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    tracing::debug!(error = %e, "outbox not readable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if items.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let (done, failed) = self.archive_items(&*store, &items).await;
            if let Err(e) = self.engine.ack_outbox(ARCHIVE_GROUP, &done).await {
                tracing::debug!(error = %e, "archived entries not acknowledged (written again later)");
            }
            metrics::counter!(m::ARCHIVED).increment(done.len() as u64);
            if failed {
                // The database is down or slow: what failed is handed out again after the
                // lease; wait before the next batch.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            } else {
                pause = Duration::from_millis(100);
            }
        }
    }

    /// Archives entries in order until one fails; returns the ones written, and whether one
    /// failed. A run of message notes of one site is written together: one query for where
    /// the archive stands, one transaction for all their messages.
    async fn archive_items(
        &self,
        store: &dyn Store,
        items: &[OutboxItem],
    ) -> (Vec<OutboxItem>, bool) {
        let mut done = Vec::with_capacity(items.len());
        let mut rest = items;
        while let Some(first) = rest.first() {
            let run = match first.entry {
                OutboxEntry::Messages { .. } => rest
                    .iter()
                    .take_while(|it| {
                        it.site == first.site && matches!(it.entry, OutboxEntry::Messages { .. })
                    })
                    .count(),
                _ => 1,
            };
            let (now, later) = rest.split_at(run);
            let result = match first.entry {
                OutboxEntry::Messages { .. } => {
                    let notes: Vec<(ConvId, u64)> = now
                        .iter()
                        .filter_map(|it| match &it.entry {
                            OutboxEntry::Messages { conv, up_to } => Some((conv.clone(), *up_to)),
                            _ => None,
                        })
                        .collect();
                    self.copy_messages(store, &first.site, &notes, false).await
                }
                _ => self.archive_item(store, first).await,
            };
            match result {
                Ok(()) => done.extend_from_slice(now),
                Err(e) => {
                    metrics::counter!(m::ARCHIVE_ERRORS).increment(1);
                    tracing::warn!(site = %first.site, error = %e, "not archived yet; retrying");
                    return (done, true);
                }
            }
            rest = later;
        }
        (done, false)
    }

    async fn archive_item(
        &self,
        store: &dyn Store,
        item: &OutboxItem,
    ) -> Result<(), ArchiverError> {
        match &item.entry {
            OutboxEntry::Conv(r) => {
                store.record_conversation(r).await?;
                if r.conv.state == ConvState::Closed {
                    // A closed conversation is archived whole: its log up to its last
                    // message, then it may expire.
                    let conv = ConvId(r.conv.id.clone());
                    let last = self.engine.last_seq(&conv).await?;
                    self.copy_messages(store, &item.site, &[(conv, last)], true)
                        .await?;
                }
                // What the event means for people outside: written after the archive holds
                // the conversation, under ids that make a second write of the same entry
                // a no-op.
                let mut notices = super::notify::notices(&item.site, r);
                notices.extend(super::webhooks::record_events(
                    &self.directory(&item.site),
                    &item.site,
                    r,
                ));
                if !notices.is_empty() {
                    store.add_deliveries(&notices, now_ms()).await?;
                }
            }
            OutboxEntry::Operator(r) => store.record_operator(r).await?,
            OutboxEntry::Messages { conv, up_to } => {
                self.copy_messages(store, &item.site, &[(conv.clone(), *up_to)], false)
                    .await?;
            }
        }
        Ok(())
    }

    /// Copies conversations' messages the archive does not hold yet, each up to its `seq`,
    /// from their logs, and tells the engine how far the archive reaches. Writes at most
    /// about [`COPY_BATCH`] messages per transaction.
    async fn copy_messages(
        &self,
        store: &dyn Store,
        site: &SiteId,
        notes: &[(ConvId, u64)],
        closed: bool,
    ) -> Result<(), ArchiverError> {
        let ids: Vec<&str> = notes.iter().map(|(c, _)| c.as_str()).collect();
        let mut have = store.archived_seqs(&ids).await?;
        let mut pending: Vec<crate::protocol::Msg> = Vec::new();
        // The conversations whose messages in `pending` are not written yet.
        let mut reached: Vec<(usize, u64)> = Vec::new();
        for (n, (conv, up_to)) in notes.iter().enumerate() {
            let mut at = have[n];
            while at < *up_to {
                let batch = self.engine.read_log(conv, at, COPY_BATCH).await?;
                let Some(last) = batch.last().map(|m| m.seq) else {
                    break;
                };
                if batch[0].seq > at + 1 {
                    // Only a log kept without an archive could have lost these.
                    tracing::warn!(conv = %conv, from = at + 1, to = batch[0].seq - 1, "messages missing from the log");
                }
                pending.extend(batch);
                at = last;
                if pending.len() >= COPY_BATCH {
                    self.record_messages(store, site, &pending).await?;
                    pending.clear();
                    for (k, seq) in reached.drain(..) {
                        have[k] = seq;
                    }
                    have[n] = at;
                }
            }
            if at > have[n] {
                reached.push((n, at));
            }
        }
        self.record_messages(store, site, &pending).await?;
        for (k, seq) in reached {
            have[k] = seq;
        }
        for (n, (conv, _)) in notes.iter().enumerate() {
            self.engine.mark_archived(conv, have[n], closed).await?;
        }
        Ok(())
    }

    /// Writes messages to the archive, then their `message.created` events for the site's
    /// webhooks that want them (keyed by conversation and `seq`: written twice, sent once).
    async fn record_messages(
        &self,
        store: &dyn Store,
        site: &SiteId,
        messages: &[crate::protocol::Msg],
    ) -> Result<(), ArchiverError> {
        store.record_messages(site, messages).await?;
        let dir = self.directory(site);
        if messages.is_empty() || !dir.webhooks.values().any(|w| w.wants("message.created")) {
            return Ok(());
        }
        let mut out = Vec::new();
        for m in messages {
            let data = serde_json::json!({
                "conv": m.conv, "seq": m.seq, "from": m.from, "text": m.text, "ts": m.ts,
            });
            out.extend(super::webhooks::webhook_deliveries(
                &dir,
                site,
                "message.created",
                &format!("{}:msg:{}", m.conv, m.seq),
                m.ts,
                data,
            ));
        }
        store.add_deliveries(&out, now_ms()).await?;
        Ok(())
    }

    /// What the archive lets go of: conversations past their site's `retention`, remembered
    /// idempotent answers past their window, outbox entries every group is done with.
    async fn archive_chores(&self, store: &dyn Store) {
        let now = now_ms();
        for site in self.sites() {
            let Some(keep) = site.settings().retention else {
                continue;
            };
            let before = now.saturating_sub(keep.as_millis() as u64);
            match store.sweep(&site.id, before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(site = %site.id, conversations = n, "retention swept")
                }
                Err(e) => {
                    tracing::warn!(site = %site.id, error = %e, "retention sweep failed")
                }
            }
        }
        let horizon = now.saturating_sub(IDEMPOTENCY_WINDOW.as_millis() as u64);
        if let Err(e) = store.forget_remembered(horizon).await {
            tracing::debug!(error = %e, "remembered answers not forgotten");
        }
        if let Err(e) = self.engine.trim_outbox().await {
            tracing::debug!(error = %e, "outbox not trimmed");
        }
    }
}
