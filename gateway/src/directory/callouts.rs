//! The directory's collections that call the site's own systems: webhooks (events) and
//! actions (buttons of the console's conversation menu), each with a signing secret the
//! server makes and shows once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::entities::{id_ok, new_id, refs_ok, text_ok, yes};
use super::{Directory, Entity, Invalid, Kind};

/// Whether `u` is an `http://` or `https://` URL with a host, at most 2000 characters, with
/// no spaces or control characters (webhook and action URLs, the links actions answer with).
pub fn url_ok(u: &str) -> bool {
    u.len() <= 2000
        && (u.starts_with("https://") || u.starts_with("http://"))
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
        && u.split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

fn url_field(url: &str, out: &mut Vec<Invalid>) {
    if !url_ok(url) {
        out.push(Invalid::new(
            "url",
            "an http:// or https:// URL, at most 2000 characters",
        ));
    }
}

/// The events a webhook may ask for (`api-v1.md`, "Webhooks").
pub const WEBHOOK_EVENTS: [&str; 8] = [
    "conversation.started",
    "conversation.assigned",
    "conversation.transferred",
    "conversation.closed",
    "conversation.missed",
    "message.created",
    "visitor.banned",
    "offline_message.created",
];

/// A site's webhook: where its events are POSTed, signed as the Standard Webhooks
/// specification says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Made by the server.
    #[serde(default)]
    pub id: String,
    /// `https://…` (or `http://…`).
    pub url: String,
    /// The event types it receives (empty: every one).
    #[serde(default)]
    pub events: Vec<String>,
    /// `false`: nothing is sent (events are not kept for it meanwhile).
    #[serde(default = "yes")]
    pub active: bool,
    /// Set by the server.
    #[serde(default)]
    pub created_at: u64,
    /// The signing secret (`whsec_` and base64): shown once, when the webhook is made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
    /// Set by the server when it turned the webhook off because every call failed for
    /// `GATEWAY_WEBHOOK_DISABLE_AFTER`; cleared when it is turned on again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<u64>,
    /// Why the server turned it off (the last call's error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Webhook {
    /// Whether it wants events of `kind` now.
    pub fn wants(&self, kind: &str) -> bool {
        self.active && (self.events.is_empty() || self.events.iter().any(|e| e == kind))
    }
}

impl Entity for Webhook {
    const KIND: Kind = Kind::Webhooks;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.webhooks
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.webhooks
    }

    fn check(&self, _dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        url_field(&self.url, &mut out);
        if self.events.len() > WEBHOOK_EVENTS.len() {
            out.push(Invalid::new("events", "each event type once"));
        }
        for (i, e) in self.events.iter().enumerate() {
            if !WEBHOOK_EVENTS.contains(&e.as_str()) {
                out.push(Invalid::new(
                    &format!("events[{i}]"),
                    format!("one of {}", WEBHOOK_EVENTS.join(", ")),
                ));
            }
        }
        out
    }

    /// Without its secret.
    fn view(&self, _dir: &Directory) -> Value {
        without_secret(self)
    }

    /// With its secret: the one time it is shown.
    fn view_created(&self, _dir: &Directory) -> Value {
        serde_json::to_value(self).expect("serialises")
    }

    /// The server's own fields are not set through the API; turning the webhook on again
    /// clears why it was turned off.
    fn prepare(body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        no_secret_given(body, "webhook")?;
        body.remove("disabled_at");
        body.remove("disabled_reason");
        if body.get("active") == Some(&Value::Bool(true)) {
            body.insert("disabled_at".into(), Value::Null);
            body.insert("disabled_reason".into(), Value::Null);
        }
        Ok(())
    }

    fn created(&mut self, now: u64, _by: &str) {
        self.id = format!("wh{}", new_id());
        self.created_at = now;
        self.secret = new_signing_secret();
    }
}

/// A new Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64.
fn new_signing_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// An item's signing secret is the server's to make, and shown only when it is made.
fn no_secret_given(body: &mut Map<String, Value>, what: &str) -> Result<(), Vec<Invalid>> {
    if body.contains_key("secret") {
        return Err(vec![Invalid::new(
            "secret",
            format!("made by the server (delete the {what} and make another to change it)"),
        )]);
    }
    body.remove("created_at");
    Ok(())
}

/// Without its secret.
fn without_secret<T: Serialize>(item: &T) -> Value {
    let mut v = serde_json::to_value(item).expect("serialises");
    if let Value::Object(m) = &mut v {
        m.remove("secret");
    }
    v
}

/// A button in the console's conversation menu ("Create case"): it POSTs the conversation to
/// `url`, signed as a webhook call is (with the action's own secret), and the answer's
/// `{"note","link"}` is kept on the conversation as a note the staff see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Made by the server.
    #[serde(default)]
    pub id: String,
    /// The button's label.
    pub name: String,
    /// `https://…` (or `http://…`).
    pub url: String,
    /// The lines whose conversations show it (empty: every line).
    #[serde(default)]
    pub queues: Vec<String>,
    /// `false`: not shown.
    #[serde(default = "yes")]
    pub active: bool,
    /// Set by the server.
    #[serde(default)]
    pub created_at: u64,
    /// The signing secret (`whsec_` and base64): shown once, when the action is made.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
}

impl Action {
    /// Whether it is offered on conversations of `queue`.
    pub fn applies_to(&self, queue: &str) -> bool {
        self.active && (self.queues.is_empty() || self.queues.iter().any(|q| q == queue))
    }
}

impl Entity for Action {
    const KIND: Kind = Kind::Actions;

    fn id(&self) -> &str {
        &self.id
    }
    fn map(d: &Directory) -> &BTreeMap<String, Self> {
        &d.actions
    }
    fn map_mut(d: &mut Directory) -> &mut BTreeMap<String, Self> {
        &mut d.actions
    }

    fn check(&self, dir: &Directory) -> Vec<Invalid> {
        let mut out = Vec::new();
        id_ok("id", &self.id, &mut out);
        text_ok("name", &self.name, 60, &mut out);
        url_field(&self.url, &mut out);
        refs_ok("queues", &self.queues, &dir.queues, "queue", &mut out);
        out
    }

    fn view(&self, _dir: &Directory) -> Value {
        without_secret(self)
    }

    fn view_created(&self, _dir: &Directory) -> Value {
        serde_json::to_value(self).expect("serialises")
    }

    fn prepare(body: &mut Map<String, Value>, _old: Option<&Self>) -> Result<(), Vec<Invalid>> {
        no_secret_given(body, "action")
    }

    fn created(&mut self, now: u64, _by: &str) {
        self.id = format!("ac{}", new_id());
        self.created_at = now;
        self.secret = new_signing_secret();
    }
}
