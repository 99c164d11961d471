//! Sites as stored entities: the registry of every site a deployment serves, kept in the
//! archive's database beside the sites' directories, in a scope of its own
//! ([`REGISTRY`]). A site's row is its [`SiteRecord`]; beside it, one row per widget key
//! (the key is the row's id), so that the database itself keeps two sites from sharing a
//! key. A deleted site stays as a tombstone: its id is never given to another tenant, who
//! would otherwise inherit what is filed under it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Invalid;
use crate::core::SiteId;

/// The scope the registry's rows are filed under: no site's id (ids are never empty).
pub fn registry() -> SiteId {
    SiteId(String::new())
}

/// A site as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteRecord {
    pub id: String,
    pub name: String,
    pub widget_key: String,
    /// The lines a fresh site is seeded with, in order (the first is where a conversation
    /// goes when the widget names none, until the directory has lines of its own).
    #[serde(default)]
    pub queues: Vec<String>,
    /// The site's settings as last set through the sites API (or the sites file): what the
    /// site starts from when no node has stored newer ones.
    #[serde(default)]
    pub settings: Map<String, Value>,
    pub created_at: u64,
    /// When the site was deleted (a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
}

/// A widget key's row: whose it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WidgetKeyRecord {
    pub site: String,
}

/// How long ids and keys may be, and what they are made of: what fits in a URL path, a
/// Redis key and a log line without escaping.
const ID_MAX: usize = 64;
const NAME_MAX: usize = 200;

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ID_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl SiteRecord {
    /// Every problem of the record's own fields.
    pub fn check(&self) -> Vec<Invalid> {
        let mut bad = Vec::new();
        if !plain(&self.id) {
            bad.push(Invalid::new(
                "id",
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > NAME_MAX {
            bad.push(Invalid::new("name", "1 to 200 characters"));
        }
        if !plain(&self.widget_key) {
            bad.push(Invalid::new(
                "widget_key",
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if self.queues.is_empty() || self.queues.len() > 100 {
            bad.push(Invalid::new("queues", "1 to 100 line ids"));
        }
        for q in &self.queues {
            if !plain(q) {
                bad.push(Invalid::new(
                    "queues",
                    format!("{q:?} is not a line id (1 to 64 letters, digits, '-', '_' or '.')"),
                ));
            }
        }
        bad
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// The sites among the registry's rows (tombstones included), in id order; a row that does
/// not read is skipped with a warning.
pub fn records(rows: &[super::Row]) -> Vec<SiteRecord> {
    rows.iter()
        .filter(|r| r.kind == super::Kind::Sites.as_str())
        .filter_map(|r| match serde_json::from_str::<SiteRecord>(&r.body) {
            Ok(rec) => Some(rec),
            Err(e) => {
                tracing::warn!(site = %r.id, error = %e, "site row not readable; skipped");
                None
            }
        })
        .collect()
}

/// A fresh random widget key (`wk_` and 24 hex digits).
pub fn new_widget_key() -> String {
    format!("wk_{}", super::random_hex(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> SiteRecord {
        SiteRecord {
            id: "acme".into(),
            name: "Acme".into(),
            widget_key: "wk_1".into(),
            queues: vec!["general".into()],
            settings: Map::new(),
            created_at: 1,
            deleted_at: None,
        }
    }

    #[test]
    fn a_plain_record_passes_and_every_bad_field_is_named() {
        assert!(rec().check().is_empty());
        let bad = SiteRecord {
            id: "a/b".into(),
            name: " ".into(),
            widget_key: String::new(),
            queues: vec!["x y".into()],
            ..rec()
        };
        let fields: Vec<String> = bad.check().into_iter().map(|i| i.field).collect();
        assert_eq!(fields, ["id", "name", "widget_key", "queues"]);
        assert!(!plain(&"a".repeat(65)));
        assert!(new_widget_key().starts_with("wk_") && plain(&new_widget_key()));
    }

    #[test]
    fn a_tombstone_round_trips_through_its_json() {
        let dead = SiteRecord {
            deleted_at: Some(9),
            ..rec()
        };
        let back: SiteRecord =
            serde_json::from_str(&serde_json::to_string(&dead).unwrap()).unwrap();
        assert!(back.is_deleted());
        assert_eq!(back, dead);
    }
}
