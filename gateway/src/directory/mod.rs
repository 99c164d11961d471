//! The directory: what a site is made of besides its settings — lines (queues) with their
//! operator and supervisor groups, groups, staff accounts, and the catalogues (tags,
//! outcomes, parameter definitions, canned responses) and bans. Managed at runtime through
//! the HTTP API (`api/directory.rs`) and the console's admin page; kept in the archive's
//! database (one table of JSON documents per site and kind, and a version per site); every
//! node holds the site's [`Directory`] and reloads it when any node changes it.
//!
//! Each collection is one [`Entity`] type: its fields as `api-v1.md` names them, how it is
//! checked against the rest of the directory, and what refers to it (an entity still
//! referred to is not deleted).

mod callouts;
mod entities;
pub mod password;
pub mod sites;

pub use callouts::*;
pub use entities::*;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::core::{OperatorId, QueueId};

/// A directory collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Queues,
    Groups,
    Operators,
    Tags,
    Outcomes,
    Params,
    Canned,
    Bans,
    /// The site's token signing keys (ids and times only; the secrets are derived).
    SigningKeys,
    Webhooks,
    /// Buttons in the console's conversation menu that call the site's systems.
    Actions,
    /// The sites themselves (in the [`sites::REGISTRY`] scope, not a site's own).
    Sites,
    /// Which site a widget key belongs to (in the registry scope: the key is the item's id,
    /// so the database keeps two sites from sharing one).
    WidgetKeys,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Queues,
        Kind::Groups,
        Kind::Operators,
        Kind::Tags,
        Kind::Outcomes,
        Kind::Params,
        Kind::Canned,
        Kind::Bans,
        Kind::SigningKeys,
        Kind::Webhooks,
        Kind::Actions,
    ];

    /// The collection's name in the API's paths and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Queues => "queues",
            Kind::Groups => "groups",
            Kind::Operators => "operators",
            Kind::Tags => "tags",
            Kind::Outcomes => "outcomes",
            Kind::Params => "params",
            Kind::Canned => "canned",
            Kind::Bans => "bans",
            Kind::SigningKeys => "signing-keys",
            Kind::Webhooks => "webhooks",
            Kind::Actions => "actions",
            Kind::Sites => "sites",
            Kind::WidgetKeys => "widget-keys",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One rejected field of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// A collection's entity. `Stored` is what the database keeps (the entity itself, except for
/// staff, whose password hash is kept beside it and never shown).
pub trait Entity: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: Kind;
    /// The name of the field that identifies an item (`id`, or `name` for tags, `code` for
    /// parameters).
    const ID_FIELD: &'static str = "id";

    fn id(&self) -> &str;

    fn map(dir: &Directory) -> &BTreeMap<String, Self>;

    fn map_mut(dir: &mut Directory) -> &mut BTreeMap<String, Self>;

    /// Whether the entity is acceptable in this directory (references resolve, values in
    /// range). Every problem is returned, not only the first.
    fn check(&self, dir: &Directory) -> Vec<Invalid>;

    /// What refers to the item `id` of this collection (it is not deleted while anything
    /// does), as `"<collection> <id>"`.
    fn referrers(_dir: &Directory, _id: &str) -> Vec<String> {
        Vec::new()
    }

    /// The item as the API shows it (staff: without the password hash, with their groups).
    fn view(&self, _dir: &Directory) -> Value {
        serde_json::to_value(self).expect("an entity serialises")
    }

    /// The item as the answer to its creation shows it (a webhook: with its secret, the one
    /// time it is shown).
    fn view_created(&self, dir: &Directory) -> Value {
        self.view(dir)
    }

    /// Turns a request's JSON into stored fields before it is read: drops what the API only
    /// shows, and (staff) hashes a `password`. `old` is the stored item when patching.
    fn prepare(_body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        Ok(())
    }

    /// Fills in what the server decides when an item is created (a generated id, the time).
    fn created(&mut self, _now: u64, _by: &str) {}
}

/// A site's directory as one node holds it.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Bumped by every change (in the database, with the change).
    pub version: u64,
    pub queues: BTreeMap<String, Queue>,
    pub groups: BTreeMap<String, Group>,
    pub operators: BTreeMap<String, Staff>,
    pub tags: BTreeMap<String, Tag>,
    pub outcomes: BTreeMap<String, Outcome>,
    pub params: BTreeMap<String, Param>,
    pub canned: BTreeMap<String, Canned>,
    pub bans: BTreeMap<String, Ban>,
    pub signing_keys: BTreeMap<String, SigningKey>,
    pub webhooks: BTreeMap<String, Webhook>,
    pub actions: BTreeMap<String, Action>,
    /// The site's lines, in order: the directory's, or the sites file's when the directory
    /// has none (set by whoever loads it).
    pub lines: Vec<QueueId>,
    /// The active tags' keywords, lower-cased once at load (every message is matched
    /// against them).
    pub keywords: Vec<Keywords>,
}

/// An active tag's keywords, ready to match.
#[derive(Debug, Clone, Default)]
pub struct Keywords {
    pub tag: String,
    /// Where it applies (empty: every line).
    pub queues: Vec<String>,
    pub lower: Vec<String>,
}

impl Keywords {
    /// Whether lower-cased `text` holds one of the keywords.
    pub fn found_in(&self, text: &str) -> bool {
        self.lower.iter().any(|k| text.contains(k.as_str()))
    }
}

/// A stored item: its collection, id and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: String,
    pub id: String,
    pub body: String,
}

impl Directory {
    /// Whether this copy is as new as the stored `version` or newer (the version only grows;
    /// 0, a directory never written, is always read again: the sites file seeds it).
    pub fn newer_or_same(&self, version: u64) -> bool {
        version != 0 && version <= self.version
    }

    /// Reads the stored rows; a row that does not read (written by a newer version, or by
    /// hand) is skipped with a warning rather than taking the site down.
    pub fn from_rows(version: u64, rows: &[Row]) -> Directory {
        let mut d = Directory {
            version,
            ..Directory::default()
        };
        for r in rows {
            let ok = match Kind::parse(&r.kind) {
                Some(Kind::Queues) => d.insert_json::<Queue>(&r.body),
                Some(Kind::Groups) => d.insert_json::<Group>(&r.body),
                Some(Kind::Operators) => d.insert_json::<Staff>(&r.body),
                Some(Kind::Tags) => d.insert_json::<Tag>(&r.body),
                Some(Kind::Outcomes) => d.insert_json::<Outcome>(&r.body),
                Some(Kind::Params) => d.insert_json::<Param>(&r.body),
                Some(Kind::Canned) => d.insert_json::<Canned>(&r.body),
                Some(Kind::Bans) => d.insert_json::<Ban>(&r.body),
                Some(Kind::SigningKeys) => d.insert_json::<SigningKey>(&r.body),
                Some(Kind::Webhooks) => d.insert_json::<Webhook>(&r.body),
                Some(Kind::Actions) => d.insert_json::<Action>(&r.body),
                Some(Kind::Sites | Kind::WidgetKeys) | None => false,
            };
            if !ok {
                tracing::warn!(kind = %r.kind, id = %r.id, "directory row not readable; skipped");
            }
        }
        d.keywords = d
            .tags
            .values()
            .filter(|t| t.active && !t.auto.keywords.is_empty())
            .map(|t| Keywords {
                tag: t.name.clone(),
                queues: t.auto.queues.clone(),
                lower: t.auto.keywords.iter().map(|k| k.to_lowercase()).collect(),
            })
            .collect();
        d
    }

    fn insert_json<T: Entity>(&mut self, body: &str) -> bool {
        match serde_json::from_str::<T>(body) {
            Ok(e) => {
                T::map_mut(self).insert(e.id().to_owned(), e);
                true
            }
            Err(_) => false,
        }
    }

    /// A directory with nothing but the sites file's lines (no archive, or not loaded yet).
    pub fn with_lines(lines: Vec<QueueId>) -> Directory {
        Directory {
            lines,
            ..Directory::default()
        }
    }

    /// Whether the site has set up any lines: then the directory decides who serves what.
    pub fn has_lines(&self) -> bool {
        !self.queues.is_empty()
    }

    /// The groups an operator is a member of.
    pub fn groups_of<'a>(&'a self, op: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        self.groups
            .values()
            .filter(move |g| g.members.iter().any(|m| m == op))
    }

    /// The lines an operator serves: those whose operator groups the operator is in, and
    /// those with no operator groups (every operator's).
    pub fn queues_served_by(&self, op: &OperatorId) -> Vec<QueueId> {
        let mine: Vec<&str> = self.groups_of(op.as_str()).map(|g| g.id.as_str()).collect();
        self.queues
            .values()
            .filter(|q| {
                q.operator_groups.is_empty()
                    || q.operator_groups.iter().any(|g| mine.contains(&g.as_str()))
            })
            .map(|q| QueueId(q.id.clone()))
            .collect()
    }

    /// Whether the signing key `kid` is current (not retired by `now`).
    pub fn key_current(&self, kid: &str, now: u64) -> bool {
        self.signing_keys
            .get(kid)
            .is_some_and(|k| k.retires_at.is_none_or(|r| r > now))
    }

    /// The lines a supervisor moderates: those whose supervisor groups they are in; `None`
    /// when they are in none (a supervisor of the whole site).
    pub fn queues_moderated_by(&self, sup: &str) -> Option<Vec<QueueId>> {
        let mine: Vec<&str> = self.groups_of(sup).map(|g| g.id.as_str()).collect();
        let lines: Vec<QueueId> = self
            .queues
            .values()
            .filter(|q| {
                q.supervisor_groups
                    .iter()
                    .any(|g| mine.contains(&g.as_str()))
            })
            .map(|q| QueueId(q.id.clone()))
            .collect();
        (!lines.is_empty()).then_some(lines)
    }

    /// A staff account by e-mail (case-insensitive).
    pub fn staff_by_email(&self, email: &str) -> Option<&Staff> {
        self.operators.values().find(|s| {
            s.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }
}

/// Merges a patch's top-level fields into an item's JSON (`null` clears an optional field).
pub fn merge(into: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        into.insert(k, v);
    }
}

#[cfg(test)]
mod tests;
