//! The in-memory engine's outbox: an in-process queue with one cursor per consumer group.
//! Entries stay until every group has acknowledged them; a claim not acknowledged within the
//! lease is handed out again (the consumer's task may have failed).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::core::{Millis, SiteId};
use crate::outbox::{OutboxEntry, OutboxItem};

#[derive(Default)]
pub(super) struct MemOutbox {
    /// Entries by id, oldest first.
    entries: VecDeque<(u64, SiteId, OutboxEntry)>,
    next: u64,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    /// Every entry up to this id was handed out at least once.
    delivered: u64,
    /// Handed out and not acknowledged: id → when.
    pending: BTreeMap<u64, Millis>,
}

impl MemOutbox {
    /// An outbox read by these groups (none: nothing is kept).
    pub(super) fn new(groups: &[&str]) -> MemOutbox {
        MemOutbox {
            entries: VecDeque::new(),
            next: 1,
            groups: groups
                .iter()
                .map(|g| ((*g).to_owned(), Group::default()))
                .collect(),
        }
    }

    pub(super) fn push(&mut self, site: &SiteId, entries: &[OutboxEntry]) {
        if self.groups.is_empty() {
            return;
        }
        for e in entries {
            self.entries.push_back((self.next, site.clone(), e.clone()));
            self.next += 1;
        }
    }

    pub(super) fn claim(
        &mut self,
        group: &str,
        max: usize,
        lease: Millis,
        now: Millis,
    ) -> Vec<OutboxItem> {
        let Some(g) = self.groups.get_mut(group) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = g
            .pending
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) >= lease)
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        for (id, _, _) in self.entries.iter() {
            if ids.len() >= max {
                break;
            }
            if *id > g.delivered {
                ids.push(*id);
                g.delivered = *id;
            }
        }
        let first = self.entries.front().map_or(0, |(id, _, _)| *id);
        ids.iter()
            .filter_map(|id| {
                g.pending.insert(*id, now);
                let (_, site, entry) = self.entries.get(id.checked_sub(first)? as usize)?;
                Some(OutboxItem {
                    id: id.to_string(),
                    site: site.clone(),
                    entry: entry.clone(),
                })
            })
            .collect()
    }

    pub(super) fn ack(&mut self, group: &str, items: &[OutboxItem]) {
        if let Some(g) = self.groups.get_mut(group) {
            for i in items {
                if let Ok(id) = i.id.parse::<u64>() {
                    g.pending.remove(&id);
                }
            }
        }
    }

    /// Drops what every group has acknowledged; how many went.
    pub(super) fn trim(&mut self) -> u64 {
        let Some(keep_from) = self
            .groups
            .values()
            .map(|g| g.pending.keys().next().copied().unwrap_or(g.delivered + 1))
            .min()
        else {
            return 0;
        };
        let mut gone = 0;
        while self
            .entries
            .front()
            .is_some_and(|(id, _, _)| *id < keep_from)
        {
            self.entries.pop_front();
            gone += 1;
        }
        gone
    }

    /// Everything still waiting for some group (to keep across a restart).
    pub(super) fn waiting(&self) -> Vec<(SiteId, OutboxEntry)> {
        self.entries
            .iter()
            .map(|(_, s, e)| (s.clone(), e.clone()))
            .collect()
    }
}
