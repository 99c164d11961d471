//! The directory's collections, as `api-v1.md` names their fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{password, Directory, Entity, Invalid, Kind};

/// The settings a line may set for itself, over the site's.
pub const QUEUE_SETTINGS: [&str; 5] = [
    "routing",
    "accept_timeout",
    "reassign_after",
    "close_after_inactive",
    "max_chats",
];

const MAX_LIST: usize = 200;

pub(super) fn id_ok(field: &str, id: &str, out: &mut Vec<Invalid>) {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        out.push(Invalid::new(
            field,
            "1 to 64 characters: letters, digits, '-', '_' or '.'",
        ));
    }
}

pub(super) fn text_ok(field: &str, s: &str, max: usize, out: &mut Vec<Invalid>) {
    if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        out.push(Invalid::new(
            field,
            format!("1 to {max} characters, no control characters"),
        ));
    }
}

pub use crate::core::settings::email_ok;

fn emails_ok(field: &str, list: &[String], out: &mut Vec<Invalid>) {
    if list.len() > 50 {
        out.push(Invalid::new(field, "at most 50 addresses"));
    }
    for (i, e) in list.iter().enumerate() {
        if !email_ok(e) {
            out.push(Invalid::new(
                &format!("{field}[{i}]"),
                "not an e-mail address",
            ));
        }
    }
}

pub(super) fn refs_ok<T>(
    field: &str,
    ids: &[String],
    map: &BTreeMap<String, T>,
    what: &str,
    out: &mut Vec<Invalid>,
) {
    if ids.len() > MAX_LIST {
        out.push(Invalid::new(field, format!("at most {MAX_LIST} items")));
    }
    for (i, id) in ids.iter().enumerate() {
        if !map.contains_key(id) {
            out.push(Invalid::new(
                &format!("{field}[{i}]"),
                format!("no such {what}: {id:?}"),
            ));
        }
    }
}

fn color_ok(field: &str, c: &str, out: &mut Vec<Invalid>) {
    let ok = c.len() == 7 && c.starts_with('#') && c[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        out.push(Invalid::new(field, "a colour like #1f6feb"));
    }
}

pub(super) fn yes() -> bool {
    true
}

/// A line: who serves it (operator groups), who moderates it (supervisor groups), and the
/// settings it overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub id: String,
    pub name: String,
    /// Groups whose members serve this line (empty: every operator of the site).
    #[serde(default)]
    pub operator_groups: Vec<String>,
    /// Groups whose members moderate this line.
    #[serde(default)]
    pub supervisor_groups: Vec<String>,
    /// Settings over the site's for this line: `routing`, `accept_timeout`,
    /// `reassign_after`, `close_after_inactive`, `max_chats`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    /// Where transcripts of this line's conversations are mailed.
    #[serde(default)]
    pub transcript_emails: Vec<String>,
}

impl Entity for Queue {
    const KIND: Kind = Kind::Queues;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.queues
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.queues
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        text_ok("name", &self.name, 100, &mut out);
        refs_ok(
            "operator_groups",
            &self.operator_groups,
            &dir.groups,
            "group",
            &mut out,
        );
        refs_ok(
            "supervisor_groups",
            &self.supervisor_groups,
            &dir.groups,
            "group",
            &mut out,
        );
        emails_ok("transcript_emails", &self.transcript_emails, &mut out);
        for k in self.settings.keys() {
            if !QUEUE_SETTINGS.contains(&k.as_str()) {
                out.push(Invalid::new(
                    &format!("settings.{k}"),
                    format!("a line may set only {}", QUEUE_SETTINGS.join(", ")),
                ));
            }
        }
        out
    }

    fn referrers(dir: &Directory, id: &str) -> Vec<String> {
        let by_tag = dir
            .tags
            .values()
            .filter(|t| t.auto.queues.iter().any(|q| q == id))
            .map(|t| format!("tags {}", t.name));
        let by_canned = dir
            .canned
            .values()
            .filter(|c| c.queues.iter().any(|q| q == id))
            .map(|c| format!("canned {}", c.id));
        let by_action = dir
            .actions
            .values()
            .filter(|a| a.queues.iter().any(|q| q == id))
            .map(|a| format!("actions {}", a.id));
        by_tag.chain(by_canned).chain(by_action).collect()
    }
}

/// A group of staff: operators who serve lines, or supervisors who moderate them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// Staff ids (`operators` collection).
    #[serde(default)]
    pub members: Vec<String>,
}

impl Entity for Group {
    const KIND: Kind = Kind::Groups;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.groups
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.groups
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        text_ok("name", &self.name, 100, &mut out);
        refs_ok(
            "members",
            &self.members,
            &dir.operators,
            "operator",
            &mut out,
        );
        out
    }

    fn referrers(dir: &Directory, id: &str) -> Vec<String> {
        dir.queues
            .values()
            .filter(|q| {
                q.operator_groups.iter().any(|g| g == id)
                    || q.supervisor_groups.iter().any(|g| g == id)
            })
            .map(|q| format!("queues {}", q.id))
            .collect()
    }
}

/// `operator` or `supervisor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    Operator,
    Supervisor,
}

/// A staff account (the `operators` collection: operators and supervisors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staff {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub role: StaffRole,
    /// Concurrent conversations (`null`: the line's or site's `max_chats`).
    #[serde(default)]
    pub max_chats: Option<u32>,
    /// May ban visitors.
    #[serde(default)]
    pub can_ban: bool,
    /// E-mail this person the transcripts of their own conversations.
    #[serde(default)]
    pub transcript_copy: bool,
    /// `false`: cannot sign in, and is disconnected at once.
    #[serde(default = "yes")]
    pub active: bool,
    /// The argon2id hash of the password (never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// A staff account as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StaffView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: StaffRole,
    pub max_chats: Option<u32>,
    pub can_ban: bool,
    pub transcript_copy: bool,
    pub active: bool,
    /// The groups this person is a member of (set through the groups' `members`).
    pub groups: Vec<String>,
    /// Whether the account can sign in with a password.
    pub has_password: bool,
}

/// A staff account as it is written: every field of the view but the read-only ones, and a
/// `password` (8 to 200 characters) to set.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[allow(dead_code)] // the schema of the request body; requests are read as `Staff`.
pub struct StaffInput {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub role: StaffRole,
    pub max_chats: Option<u32>,
    pub can_ban: Option<bool>,
    pub transcript_copy: Option<bool>,
    pub active: Option<bool>,
    pub password: Option<String>,
}

impl Entity for Staff {
    const KIND: Kind = Kind::Operators;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.operators
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.operators
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        text_ok("name", &self.name, 100, &mut out);
        if let Some(e) = &self.email {
            if !email_ok(e) {
                out.push(Invalid::new("email", "not an e-mail address"));
            } else if dir
                .staff_by_email(e)
                .is_some_and(|other| other.id != self.id)
            {
                out.push(Invalid::new("email", "another account has this address"));
            }
        }
        if self.max_chats.is_some_and(|m| m == 0 || m > 100) {
            out.push(Invalid::new("max_chats", "1 to 100"));
        }
        out
    }

    fn referrers(dir: &Directory, id: &str) -> Vec<String> {
        dir.groups_of(id)
            .map(|g| format!("groups {}", g.id))
            .collect()
    }

    fn view(&self, dir: &Directory) -> Value {
        serde_json::to_value(StaffView {
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            role: self.role,
            max_chats: self.max_chats,
            can_ban: self.can_ban,
            transcript_copy: self.transcript_copy,
            active: self.active,
            groups: dir.groups_of(&self.id).map(|g| g.id.clone()).collect(),
            has_password: self.password_hash.is_some(),
        })
        .expect("serialises")
    }

    fn prepare(body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        body.remove("groups");
        body.remove("has_password");
        if body.remove("password_hash").is_some() {
            return Err(vec![Invalid::new(
                "password_hash",
                "not writable: send `password`",
            )]);
        }
        match body.remove("password") {
            None => Ok(()),
            Some(Value::Null) => {
                body.insert("password_hash".into(), Value::Null);
                Ok(())
            }
            Some(Value::String(p)) => {
                let n = p.chars().count();
                if !(8..=200).contains(&n) {
                    return Err(vec![Invalid::new("password", "8 to 200 characters")]);
                }
                body.insert("password_hash".into(), Value::String(password::hash(&p)));
                Ok(())
            }
            Some(_) => Err(vec![Invalid::new("password", "a string")]),
        }
    }
}

/// Keywords that add a tag by themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTag {
    /// Words or phrases (case-insensitive) that add the tag when a visitor's or an
    /// operator's message contains one.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The lines where it applies (empty: every line).
    #[serde(default)]
    pub queues: Vec<String>,
}

fn default_color() -> String {
    "#6b7280".into()
}

fn default_text_color() -> String {
    "#ffffff".into()
}

/// A tag of the site's catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub name: String,
    #[serde(default = "default_color")]
    pub color: String,
    #[serde(default = "default_text_color")]
    pub text_color: String,
    /// `false`: offered to no one, kept on past conversations.
    #[serde(default = "yes")]
    pub active: bool,
    /// Set by the server.
    #[serde(default)]
    pub created_at: u64,
    /// Set by the server.
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub auto: AutoTag,
}

impl Entity for Tag {
    const KIND: Kind = Kind::Tags;
    const ID_FIELD: &'static str = "name";

    fn id(&self) -> &str {
        &self.name
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.tags
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.tags
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        // The same bounds as tags set on a conversation (`core::normalise_tags`).
        if crate::core::normalise_tags(std::slice::from_ref(&self.name)).as_deref()
            != Ok(std::slice::from_ref(&self.name))
        {
            out.push(Invalid::new(
                "name",
                "1 to 50 characters, trimmed, no control characters",
            ));
        }
        color_ok("color", &self.color, &mut out);
        color_ok("text_color", &self.text_color, &mut out);
        refs_ok(
            "auto.queues",
            &self.auto.queues,
            &dir.queues,
            "queue",
            &mut out,
        );
        if self.auto.keywords.len() > 100 {
            out.push(Invalid::new("auto.keywords", "at most 100 keywords"));
        }
        for (i, k) in self.auto.keywords.iter().enumerate() {
            text_ok(&format!("auto.keywords[{i}]"), k, 50, &mut out);
        }
        out
    }

    fn prepare(body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        body.remove("created_at");
        body.remove("created_by");
        Ok(())
    }

    fn created(&mut self, now: u64, by: &str) {
        self.created_at = now;
        self.created_by = by.to_owned();
    }
}

/// An outcome a conversation may be closed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub id: String,
    pub name: String,
    #[serde(default = "yes")]
    pub active: bool,
}

impl Entity for Outcome {
    const KIND: Kind = Kind::Outcomes;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.outcomes
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.outcomes
    }

    fn check(&self, _dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        text_ok("name", &self.name, 100, &mut out);
        out
    }
}

/// Where a parameter shows in the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Show {
    /// In the queue's preview of a waiting conversation.
    Preview,
    /// In the open conversation.
    Active,
    Both,
    None,
}

/// A conversation parameter's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub code: String,
    pub label: String,
    /// Operators may change it during and after a conversation.
    #[serde(default)]
    pub editable: bool,
    #[serde(default = "show_both")]
    pub show: Show,
}

fn show_both() -> Show {
    Show::Both
}

impl Entity for Param {
    const KIND: Kind = Kind::Params;
    const ID_FIELD: &'static str = "code";

    fn id(&self) -> &str {
        &self.code
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.params
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.params
    }

    fn check(&self, _dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("code", &self.code, &mut out);
        text_ok("label", &self.label, 100, &mut out);
        out
    }
}

/// A canned response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Canned {
    /// Generated when not given.
    #[serde(default)]
    pub id: String,
    /// What the operator types after `/` to insert it.
    pub shortcut: String,
    /// Macros: `{{visitor.name}}`, `{{operator.name}}`, `{{visitor.email}}`,
    /// `{{conversation.id}}`.
    pub text: String,
    /// The lines it is offered in (empty: every line).
    #[serde(default)]
    pub queues: Vec<String>,
}

impl Entity for Canned {
    const KIND: Kind = Kind::Canned;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.canned
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.canned
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        if self.shortcut.is_empty()
            || self.shortcut.chars().count() > 32
            || self
                .shortcut
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            out.push(Invalid::new("shortcut", "1 to 32 characters, no spaces"));
        }
        if self.text.trim().is_empty() || self.text.len() > 2000 {
            out.push(Invalid::new("text", "1 to 2000 bytes"));
        }
        refs_ok("queues", &self.queues, &dir.queues, "queue", &mut out);
        // Every staff `welcome` carries them: bounded like the settings' own.
        let others = dir.canned.values().filter(|c| c.id != self.id);
        let (count, bytes) = others
            .fold((1, self.shortcut.len() + self.text.len()), |(n, b), c| {
                (n + 1, b + c.shortcut.len() + c.text.len())
            });
        if count > crate::core::settings::MAX_CANNED
            || bytes > crate::core::settings::MAX_CANNED_BYTES
        {
            out.push(Invalid::new(
                "text",
                format!(
                    "a site keeps at most {} canned responses, {} bytes in all",
                    crate::core::settings::MAX_CANNED,
                    crate::core::settings::MAX_CANNED_BYTES
                ),
            ));
        }
        out
    }

    fn created(&mut self, _now: u64, _by: &str) {
        if self.id.is_empty() {
            self.id = new_id();
        }
    }
}

/// A ban: of a visitor id, a device, an address — any of them, so that clearing the
/// browser's storage does not lift it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ban {
    /// Set by the server.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub visitor: Option<String>,
    /// The widget's device id.
    #[serde(default)]
    pub device: Option<String>,
    /// An IPv4 or IPv6 address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Unix ms when it ends (`null`: never).
    #[serde(default)]
    pub until: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Set by the server: who banned.
    #[serde(default)]
    pub by: String,
}

impl Entity for Ban {
    const KIND: Kind = Kind::Bans;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.bans
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.bans
    }

    fn check(&self, _dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        if self.visitor.is_none() && self.device.is_none() && self.ip.is_none() {
            out.push(Invalid::new(
                "visitor",
                "a ban needs a visitor, a device or an ip",
            ));
        }
        for (field, v) in [("visitor", &self.visitor), ("device", &self.device)] {
            if let Some(v) = v {
                text_ok(field, v, 128, &mut out);
            }
        }
        if let Some(ip) = &self.ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                out.push(Invalid::new("ip", "an IPv4 or IPv6 address"));
            }
        }
        if let Some(r) = &self.reason {
            if r.chars().count() > 200 || r.chars().any(char::is_control) {
                out.push(Invalid::new("reason", "at most 200 characters"));
            }
        }
        out
    }

    fn prepare(body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        body.remove("by");
        Ok(())
    }

    fn created(&mut self, _now: u64, by: &str) {
        self.id = new_id();
        self.by = by.to_owned();
    }
}

impl Ban {
    /// Whether the ban holds now for a visitor, device or address.
    pub fn holds(&self, now: u64, visitor: &str, device: Option<&str>, ip: Option<&str>) -> bool {
        self.until.is_none_or(|u| u > now)
            && (self.visitor.as_deref() == Some(visitor)
                || (device.is_some() && self.device.as_deref() == device)
                || (ip.is_some() && self.ip.as_deref() == ip))
    }
}

/// A random id for items whose id the server makes.
pub(super) fn new_id() -> String {
    random_hex(8)
}

/// `bytes` random bytes as lower-case hex (ids the server makes: items, sessions).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A site's token signing key: its id and times. The secret is never stored: it is derived
/// from the gateway's secret (see `Auth::site_secret`) and shown once, when the key is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// Named in the `kid` header of the tokens it signs.
    pub kid: String,
    pub created_at: u64,
    /// When it stops verifying (`null`: until it is deleted).
    pub retires_at: Option<u64>,
    pub created_by: String,
}

impl Entity for SigningKey {
    const KIND: Kind = Kind::SigningKeys;
    const ID_FIELD: &'static str = "kid";

    fn id(&self) -> &str {
        &self.kid
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.signing_keys
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.signing_keys
    }

    fn check(&self, _dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("kid", &self.kid, &mut out);
        out
    }

    fn created(&mut self, now: u64, by: &str) {
        self.kid = format!("k{}", new_id());
        self.created_at = now;
        self.created_by = by.to_owned();
    }
}
