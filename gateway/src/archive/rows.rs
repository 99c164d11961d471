//! What the SQL archive reads and writes besides its statements: a statement builder with
//! `$N` placeholders, and the conversions between rows and the archive's types.

use std::collections::BTreeMap;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Arguments, Row};

use super::{archived, ArchiveError, ArchivedConversation, Figures, KeyRecord, Result};
use crate::protocol::{Author, ConvState, Conversation, Msg, Role};

/// A statement being built: its text and arguments, with `$N` placeholders in order.
pub(super) struct Sql<'q> {
    pub(super) text: String,
    pub(super) args: AnyArguments<'q>,
    n: usize,
}

impl<'q> Sql<'q> {
    pub(super) fn new(text: &str) -> Sql<'q> {
        Sql {
            text: text.to_owned(),
            args: AnyArguments::default(),
            n: 0,
        }
    }

    /// Binds a value and returns its placeholder.
    pub(super) fn bind<T>(&mut self, v: T) -> String
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.args.add(v).expect("binding a plain value");
        self.n += 1;
        format!("${}", self.n)
    }

    pub(super) fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
}

/// Rows written by one multi-row `INSERT` (11 values each: far below either database's limit
/// on bound values).
pub(super) const ROWS_PER_INSERT: usize = 500;
/// Values in one `IN (…)` list.
pub(super) const IN_CHUNK: usize = 500;

/// Binds each id and returns the placeholders for `IN (…)`.
pub(super) fn in_list<'q>(q: &mut Sql<'q>, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| q.bind((*id).to_owned()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn opt_u(v: Option<i64>) -> Option<u64> {
    v.map(u)
}

pub(super) fn state_str(s: ConvState) -> &'static str {
    match s {
        ConvState::Queued => "queued",
        ConvState::Offered => "offered",
        ConvState::Active => "active",
        ConvState::Closed => "closed",
    }
}

pub(super) fn role_of(s: &str) -> Role {
    match s {
        "visitor" => Role::Visitor,
        "operator" => Role::Operator,
        "supervisor" => Role::Supervisor,
        "bot" => Role::Bot,
        _ => Role::System,
    }
}

pub(super) fn snapshot_of(text: &str) -> Result<Conversation> {
    serde_json::from_str(text).map_err(|e| ArchiveError::Corrupt(format!("snapshot: {e}")))
}

/// The columns of a conversation that a list item is built from.
pub(super) const LIST_COLUMNS: &str =
    "c.snapshot, c.closed_at, c.assigned_at, c.first_visitor_ts, \
     c.first_operator_ts, c.message_count, c.last_seq, c.created_at, c.id";

pub(super) fn list_item(row: &AnyRow) -> Result<ArchivedConversation> {
    let snapshot: String = row.try_get(0)?;
    let figures = Figures {
        closed_at: opt_u(row.try_get(1)?),
        assigned_at: opt_u(row.try_get(2)?),
        first_visitor_ts: opt_u(row.try_get(3)?),
        first_operator_ts: opt_u(row.try_get(4)?),
    };
    let count: i64 = row.try_get(5)?;
    let last: i64 = row.try_get(6)?;
    Ok(archived(
        snapshot_of(&snapshot)?,
        &figures,
        u(count),
        u(last),
    ))
}

pub(super) fn msg_of(row: &AnyRow) -> Result<Msg> {
    let args: Option<String> = row.try_get("args")?;
    Ok(Msg {
        conv: row.try_get("conv")?,
        seq: u(row.try_get("seq")?),
        from: Author {
            role: role_of(&row.try_get::<String, _>("role")?),
            id: row.try_get("author_id")?,
            name: row.try_get("author_name")?,
        },
        text: row.try_get("text")?,
        ts: u(row.try_get("ts")?),
        cid: row.try_get("cid")?,
        code: row.try_get("code")?,
        args: args
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| ArchiveError::Corrupt(format!("message args: {e}")))?,
    })
}

pub(super) fn key_of(row: &AnyRow) -> Result<KeyRecord> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        site: row.try_get("site")?,
        name: row.try_get("name")?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        hash: row.try_get("hash")?,
        created_at: u(row.try_get("created_at")?),
        last_used_at: opt_u(row.try_get("last_used_at")?),
    })
}

/// Takes a visitor's details out of a snapshot (erasure).
pub(super) fn strip_visitor(c: &mut Conversation) {
    c.visitor.name = None;
    c.visitor.email = None;
    c.visitor.phone = None;
    c.visitor.params = BTreeMap::new();
    c.visitor.preview = None;
    c.notes.clear();
    c.last_message = None;
}
