//! The archive: the system of record. Every conversation with every message and lifecycle
//! event, kept for the site's `retention` (default: forever) and searchable; what the HTTP
//! API, the console's History and Reports, transcripts and e-mails read from. It also keeps
//! the API keys and the answers remembered for `Idempotency-Key`.
//!
//! One contract ([`Store`]) on two databases: SQLite in the data dir (the embedded default,
//! [`sqlite::open`]) and PostgreSQL for many nodes ([`postgres::open`]). Both go through one
//! SQL implementation ([`SqlStore`]) that differs by [`Dialect`] only where the databases'
//! SQL does (full-text search: FTS5 and `tsvector`). The conformance suite in
//! `gateway/tests/it/archive.rs` runs every case on both.
//!
//! The archive is written off the live path: the engines hand what must reach it to an
//! outbox (see `crate::engine::Outbox`), and the archiver (`service/archiver.rs`) writes it
//! here. Every write is idempotent — a conversation snapshot is kept only if it is newer
//! than the stored one, an event by its key, a message by `(conv, seq)` — so a retry stores
//! nothing twice.

mod access;
mod deliveries;
mod dir;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

pub use sql::{Dialect, SqlStore};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::core::{Millis, SiteId};
use crate::protocol::{Conversation, Msg};

/// The archive could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database cannot be reached or failed; the write is retried, the read answered 503.
    #[error("the archive database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The schema migrations failed at start.
    #[error("the archive's schema could not be migrated")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("the archive holds something unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for ArchiveError {
    fn from(e: sqlx::Error) -> Self {
        ArchiveError::Unavailable(e)
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// A conversation's snapshot after a transition, and the event that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvRecord {
    /// The site version of the transition: a snapshot is kept only if it is newer.
    pub version: u64,
    /// The event's key, unique within the conversation (`<version>.<index>`).
    pub key: String,
    /// `queued`, `offered`, `assigned`, `transferred`, `closed`, … (the `conv` event).
    pub event: String,
    pub reason: Option<String>,
    pub ts: Millis,
    pub conv: Conversation,
}

/// An operator's status or presence changed (for the operators report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorRecord {
    pub site: SiteId,
    pub operator: String,
    pub name: String,
    pub status: String,
    pub online: bool,
    pub ts: Millis,
}

/// A conversation as the API lists it: the protocol's `Conversation` and its figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArchivedConversation {
    #[serde(flatten)]
    pub conv: Conversation,
    pub closed_at: Option<u64>,
    pub message_count: u64,
    /// From the visitor's first message to the operator's first message.
    pub first_response_ms: Option<u64>,
    /// From the start to the first operator taking it.
    pub wait_ms: Option<u64>,
    /// From the start to the close.
    pub duration_ms: Option<u64>,
    /// Ended without any operator message.
    pub missed: bool,
}

/// One lifecycle event of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArchivedEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A conversation with everything about it but its messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub summary: ArchivedConversation,
    pub params: BTreeMap<String, String>,
    pub prechat: Prechat,
    pub events: Vec<ArchivedEvent>,
}

impl ConversationDetail {
    /// Whether the operator `op` held the conversation: it is theirs now, or an event gave it
    /// to them or was theirs.
    pub fn held_by(&self, op: &str) -> bool {
        self.summary
            .conv
            .operator
            .as_ref()
            .is_some_and(|o| o.id == op)
            || self
                .events
                .iter()
                .any(|e| e.to.as_deref() == Some(op) || e.by.as_deref() == Some(op))
    }
}

/// What the visitor gave before or during the chat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Prechat {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Which conversations a list shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConvFilter {
    pub state: Option<String>,
    pub queue: Option<String>,
    pub operator: Option<String>,
    pub visitor: Option<String>,
    pub tag: Option<String>,
    pub outcome: Option<String>,
    /// `created_at` from (inclusive) and to (exclusive).
    pub from: Option<u64>,
    pub to: Option<u64>,
    /// Full-text search of message texts and the visitor's name and e-mail.
    pub q: Option<String>,
}

/// A page of a list, newest first; `next` continues after its last item.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts (`(created_at, id)` of the last item), if there is one.
    pub next: Option<(u64, String)>,
}

/// A report's range and filters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    pub from: u64,
    pub to: u64,
    pub queue: Option<String>,
    pub operator: Option<String>,
}

/// What a report is computed from: one conversation's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub created_at: u64,
    pub queue: String,
    pub operator: Option<String>,
    pub outcome: Option<String>,
    pub tags: Vec<String>,
    pub closed: bool,
    pub answered: bool,
    pub abandoned: bool,
    pub messages: u64,
    pub first_response_ms: Option<u64>,
    pub wait_ms: Option<u64>,
    pub duration_ms: Option<u64>,
}

/// A stored API key (the secret only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    /// `None`: a root key (every site).
    pub site: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub hash: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

/// How a directory item was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Done,
    /// Creating: an item with this id exists.
    Exists,
    /// Replacing: there is no such item.
    Missing,
}

/// A delivery to make: an e-mail or a webhook call (or a notice that turns into some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Made from what caused it, so the same event never makes two.
    pub id: String,
    pub site: String,
    /// `mail`, `webhook` or `notice`.
    pub kind: String,
    /// An address, or a webhook's id.
    pub target: String,
    /// What to send (JSON).
    pub body: String,
    pub due_at: u64,
}

/// A delivery claimed for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub site: String,
    pub kind: String,
    pub target: String,
    pub body: String,
    pub created_at: u64,
    /// Attempts before this one.
    pub attempts: u32,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub at: u64,
    pub ok: bool,
    /// The receiver's HTTP status (webhooks).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// How long it took.
    pub ms: u64,
}

/// A delivery as its log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLog {
    pub id: String,
    pub body: String,
    pub created_at: u64,
    /// When it is (or was last) due.
    pub next_at: u64,
    pub attempts: u32,
    pub done_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub last_error: Option<String>,
}

/// A staff session made by signing in with a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub site: String,
    pub staff: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub revoked_at: Option<u64>,
}

/// Changes to a closed conversation's record (the staff or an integration, after the fact).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConvPatch {
    /// Replaces the tags.
    pub tags: Option<Vec<String>>,
    /// Replace the contact details.
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Merged; an empty value removes the key.
    pub params: BTreeMap<String, String>,
    /// Who changed it, for the `updated` event.
    pub by: String,
    pub ts: u64,
}

/// What [`Store::patch_conversation`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Patched {
    Done(Box<ConversationDetail>),
    /// No such conversation of the site.
    NotFound,
    /// It is not closed in the archive (yet): the live conversation is the one to change.
    Open,
}

/// An answer remembered for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub status: u16,
    pub body: String,
}

/// The archive's contract; see the module documentation.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Stores a conversation's snapshot (unless a newer one is stored) and its event (once).
    async fn record_conversation(&self, r: &ConvRecord) -> Result<()>;

    /// Stores messages of one site (each once, by `(conv, seq)`).
    async fn record_messages(&self, site: &SiteId, msgs: &[Msg]) -> Result<()>;

    /// Stores an operator's status change.
    async fn record_operator(&self, r: &OperatorRecord) -> Result<()>;

    /// The highest `seq` stored of each conversation (0: none), in the order asked.
    async fn archived_seqs(&self, convs: &[&str]) -> Result<Vec<u64>>;

    /// The highest `seq` stored of a conversation (0: none).
    async fn archived_seq(&self, conv: &str) -> Result<u64> {
        Ok(self.archived_seqs(&[conv]).await?[0])
    }

    /// A site's conversations, newest first, after `after` (a previous page's `next`).
    async fn conversations(
        &self,
        site: &SiteId,
        filter: &ConvFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<Page<ArchivedConversation>>;

    async fn conversation(&self, site: &SiteId, id: &str) -> Result<Option<ConversationDetail>>;

    /// Messages of a conversation after `after`, in `seq` order.
    async fn messages(
        &self,
        site: &SiteId,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Msg>>;

    /// Erases a visitor: their messages, contact details, parameters and page details go;
    /// their conversations stay as counts. What arrives later about their conversations from
    /// before `now` is stored without them. Returns how many conversations were touched.
    async fn erase_visitor(&self, site: &SiteId, visitor: &str, now: u64) -> Result<u64>;

    /// Changes a closed conversation's tags, contact details or parameters.
    async fn patch_conversation(&self, site: &SiteId, id: &str, p: &ConvPatch) -> Result<Patched>;

    /// The figures of the conversations a report covers.
    async fn report_rows(&self, site: &SiteId, q: &ReportQuery) -> Result<Vec<ReportRow>>;

    /// Operators' status changes in a range (and the last one before it), oldest first.
    async fn operator_records(&self, site: &SiteId, q: &ReportQuery)
        -> Result<Vec<OperatorRecord>>;

    /// Deletes a site's conversations closed before `before`, with their messages and events.
    async fn sweep(&self, site: &SiteId, before: u64) -> Result<u64>;

    async fn put_key(&self, k: &KeyRecord) -> Result<()>;
    async fn key(&self, id: &str) -> Result<Option<KeyRecord>>;
    /// A site's keys (root keys with `None`), oldest first.
    async fn keys(&self, site: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Revokes a key; `false` when there was none.
    async fn revoke_key(&self, site: Option<&str>, id: &str) -> Result<bool>;
    async fn touch_key(&self, id: &str, now: u64) -> Result<()>;

    /// A site's directory: its version (0: never written) and every item.
    async fn directory(&self, site: &SiteId) -> Result<(u64, Vec<crate::directory::Row>)>;

    /// Creates (`create`) or replaces a directory item, and bumps the site's version.
    async fn put_entry(
        &self,
        site: &SiteId,
        kind: crate::directory::Kind,
        id: &str,
        body: &str,
        create: bool,
        now: u64,
    ) -> Result<Put>;

    /// Deletes a directory item (and bumps the site's version); whether there was one.
    async fn delete_entry(
        &self,
        site: &SiteId,
        kind: crate::directory::Kind,
        id: &str,
    ) -> Result<bool>;

    async fn put_session(&self, s: &SessionRecord) -> Result<()>;

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>>;

    /// Revokes a site's sessions: one (`id`), or all of one person's (`staff`); how many.
    async fn revoke_sessions(
        &self,
        site: &SiteId,
        id: Option<&str>,
        staff: Option<&str>,
        now: u64,
    ) -> Result<u64>;

    async fn remembered(&self, scope: &str, key: &str, since: u64) -> Result<Option<Remembered>>;
    /// Remembers an answer; `false` when one was remembered first (a concurrent retry).
    async fn remember(&self, scope: &str, key: &str, r: &Remembered, now: u64) -> Result<bool>;
    /// Replaces a remembered answer (`Some`), or forgets it (`None`).
    async fn settle_remembered(&self, scope: &str, key: &str, r: Option<&Remembered>)
        -> Result<()>;
    /// Forgets remembered answers older than `before`.
    async fn forget_remembered(&self, before: u64) -> Result<u64>;

    /// Adds deliveries (one whose id exists is left as it is); how many were new.
    async fn add_deliveries(&self, items: &[NewDelivery], now: u64) -> Result<u64>;

    /// Claims up to `limit` due deliveries for `lease_ms` (another sender takes them after).
    async fn claim_deliveries(
        &self,
        now: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>>;

    /// Records an attempt: done (`a.ok`), due again at `retry_at`, or given up (`None`).
    async fn delivery_attempted(&self, id: &str, a: &Attempt, retry_at: Option<u64>) -> Result<()>;

    /// A target's deliveries (a webhook's log), newest first.
    async fn deliveries(&self, site: &str, target: &str, limit: usize) -> Result<Vec<DeliveryLog>>;

    /// A delivery's attempts, oldest first.
    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>>;

    /// When a target's last delivery went through (`None`: never).
    async fn last_delivered(&self, site: &str, target: &str) -> Result<Option<u64>>;
}

/// Where a conversation's figures come from, computed the same way for both databases.
pub(crate) struct Figures {
    pub closed_at: Option<u64>,
    pub assigned_at: Option<u64>,
    pub first_visitor_ts: Option<u64>,
    pub first_operator_ts: Option<u64>,
}

impl Figures {
    pub fn first_response_ms(&self) -> Option<u64> {
        let (v, o) = (self.first_visitor_ts?, self.first_operator_ts?);
        (o >= v).then(|| o - v)
    }
}

/// Builds the list item from what both databases store.
pub(crate) fn archived(
    mut conv: Conversation,
    f: &Figures,
    message_count: u64,
    last_seq: u64,
) -> ArchivedConversation {
    conv.last_seq = conv.last_seq.max(last_seq);
    let closed = conv.state == crate::protocol::ConvState::Closed;
    ArchivedConversation {
        closed_at: f.closed_at,
        message_count,
        first_response_ms: f.first_response_ms(),
        wait_ms: f.assigned_at.map(|a| a.saturating_sub(conv.created_at)),
        duration_ms: f.closed_at.map(|c| c.saturating_sub(conv.created_at)),
        missed: closed && f.first_operator_ts.is_none(),
        conv,
    }
}

/// A full-text query as safe terms: each word quoted (SQLite FTS5) — no operator of the
/// query syntax reaches the database from a user.
pub(crate) fn fts5_terms(q: &str) -> Option<String> {
    let terms: Vec<String> = q
        .split_whitespace()
        .take(16)
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_quoted() {
        assert_eq!(fts5_terms("  "), None);
        assert_eq!(
            fts5_terms(r#"refund "x" OR NEAR(a b)"#).unwrap(),
            r#""refund" """x""" "OR" "NEAR(a" "b)""#
        );
    }
}
