//! What leaves the live path for the systems of record: the outbox's entries.
//!
//! A transition's conversation events and operator changes are written to the outbox in the
//! same atomic step as the transition (`SiteTx::commit`), so a node that dies right after a
//! close loses nothing. Messages are noted in batches by the node that stored them
//! ([`OutboxEntry::Messages`]: "the log of this conversation holds messages up to this
//! `seq`"); the log itself keeps them until they are archived, so a note lost with a node is
//! made good by the next note or the close. Consumers (the archiver; later the mailer and the
//! webhooks) claim entries by group, each group independently, and acknowledge them after
//! their write: a consumer that dies leaves its claims to run out and be handed out again.

use serde::{Deserialize, Serialize};

use crate::archive::{ConvRecord, OperatorRecord};
use crate::core::{ConvId, Millis, SiteId};

/// How long a claimed entry stays claimed before another consumer may take it.
pub const OUTBOX_LEASE_MS: Millis = 30_000;

/// The consumer groups that read the outbox.
pub const ARCHIVE_GROUP: &str = "archive";

/// One entry of a site's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxEntry {
    /// A conversation event and its snapshot after the transition.
    Conv(Box<ConvRecord>),
    /// An operator's status or presence changed.
    Operator(OperatorRecord),
    /// The conversation's log holds messages up to `up_to`.
    Messages { conv: ConvId, up_to: u64 },
}

impl OutboxEntry {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("an outbox entry serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<OutboxEntry, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// An entry handed to a consumer: its id (to acknowledge it), its site and the entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: String,
    pub site: SiteId,
    pub entry: OutboxEntry,
}
