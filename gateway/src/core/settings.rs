//! Site settings: the names fixed by protocol v1, their defaults, and validation.
//!
//! Settings arrive as JSON (a sites file, or `PATCH /v1/sites/<site>/settings`). Durations are
//! written as `"30s"`, `"5m"`, `"1h"` (humantime), as a number of milliseconds, or `"off"` where
//! a timer can be turned off. Every bad key is reported at once, and a patch that has any bad key
//! changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How new conversations reach operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Routing {
    /// "Who first": everyone serving the queue sees it; the first accept wins.
    Manual,
    /// Offered to the least-loaded active operator, with an acceptance timeout.
    Offer,
    /// Assigned directly to the least-loaded active operator.
    Auto,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Manual => "manual",
            Routing::Offer => "offer",
            Routing::Auto => "auto",
        }
    }
}

/// What the widget shows when no operator is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAway {
    Busy,
    Offline,
}

pub use crate::protocol::Canned;

use crate::i18n::{self, Lang};

/// The most canned responses a site keeps, and their bytes in all.
pub const MAX_CANNED: usize = 200;
pub const MAX_CANNED_BYTES: usize = 32 * 1024;

/// A text in several languages (by primary language subtag, `"*"` for any language): the
/// site's own words, or one text for every reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localized(BTreeMap<String, String>);

impl Localized {
    /// The default unavailability notice: English, Russian (the seed's text) and Czech.
    pub fn default_unavailable() -> Localized {
        Localized(
            Lang::ALL
                .iter()
                .map(|l| {
                    (
                        l.as_str().to_owned(),
                        i18n::default_unavailable_text(*l).to_owned(),
                    )
                })
                .collect(),
        )
    }

    /// One text for every reader.
    pub fn same(text: &str) -> Localized {
        Localized(BTreeMap::from([("*".to_owned(), text.to_owned())]))
    }

    /// The text for a reader of `lang` (any tag), else for any reader, else in the site's
    /// language, else in English, else whichever there is.
    pub fn get(&self, lang: Option<&str>, site: Lang) -> &str {
        let wanted = lang.and_then(i18n::primary);
        let found = wanted
            .as_deref()
            .into_iter()
            .chain(["*", site.as_str(), "en"])
            .find_map(|k| self.0.get(k));
        found
            .or_else(|| self.0.values().next())
            .map_or("", String::as_str)
    }

    fn from_json(v: &Value) -> Result<Localized, String> {
        let ok = |t: &str| !t.trim().is_empty() && t.len() <= 2000;
        match v {
            Value::String(t) if ok(t) => Ok(Localized::same(t)),
            Value::Object(m) if !m.is_empty() && m.len() <= 50 => {
                let mut out = BTreeMap::new();
                for (k, t) in m {
                    let key = if k == "*" {
                        k.clone()
                    } else {
                        i18n::primary(k).ok_or_else(|| format!("{k:?} is not a language"))?
                    };
                    let t = t.as_str().filter(|t| ok(t)).ok_or_else(|| {
                        format!("{k}: expected a non-empty string up to 2000 bytes")
                    })?;
                    out.insert(key, t.to_owned());
                }
                Ok(Localized(out))
            }
            _ => Err(
                "expected a non-empty string up to 2000 bytes, or an object of them by \
                      language (\"en\", \"ru\", \"cs\", …)"
                    .into(),
            ),
        }
    }

    fn to_json(&self) -> Value {
        match self.0.get("*") {
            Some(t) if self.0.len() == 1 => Value::from(t.clone()),
            _ => serde_json::to_value(&self.0).unwrap_or(Value::Null),
        }
    }
}

/// The settings of one site, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub routing: Routing,
    pub max_chats: u32,
    pub accept_timeout: Duration,
    pub reassign_after: Option<Duration>,
    pub close_after_inactive: Option<Duration>,
    pub visitor_grace: Duration,
    pub operator_grace: Duration,
    pub notify_unavailable: bool,
    pub unavailable_text: Localized,
    /// The site's language: system messages' `text`, and a notice for a reader whose
    /// language the site has no words for.
    pub language: Lang,
    pub offline_callback: Option<Duration>,
    pub widget_when_away: WhenAway,
    pub show_operator_name: bool,
    /// `None`: any origin.
    pub allowed_origins: Option<Vec<String>>,
    pub canned: Vec<Canned>,
    /// How long the archive keeps a closed conversation (`None`: forever).
    pub retention: Option<Duration>,
    /// The most conversations that may wait in the site's queues at once (`None`: no limit):
    /// past it a visitor's `start` is refused with `capacity`, so one tenant's flood cannot
    /// grow without bound.
    pub max_waiting: Option<u32>,
    /// The most connections one node holds for the site (`None`: only the node's own
    /// limits): past it a `hello` is closed with 4029.
    pub max_connections: Option<u32>,
    /// The HTTP API's requests per second for the whole site, every caller together
    /// (`None`: only each caller's own limit): past it, 429.
    pub api_rate_per_sec: Option<u32>,
    /// Company level: every closed conversation's transcript goes to these addresses.
    pub transcript_emails: Vec<String>,
    /// Transcripts by e-mail as text, or as HTML with a text alternative.
    pub transcript_format: MailFormat,
    /// Every missed conversation (its messages and contact details) goes to these addresses.
    pub missed_emails: Vec<String>,
    /// Every message left in the offline form goes to these addresses.
    pub offline_emails: Vec<String>,
    /// The visitor (or the staff for them) may ask for the transcript by e-mail.
    pub visitor_transcripts: bool,
    /// The Reply-To of transcripts sent to visitors.
    pub transcript_reply_to: Option<String>,
}

/// How transcripts are e-mailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailFormat {
    #[default]
    Text,
    /// HTML, with the text as its alternative.
    Html,
}

/// The most addresses one list of a site's settings holds.
pub const MAX_ADDRESSES: usize = 50;

/// A plausible e-mail address: what a mail server would be asked to deliver to, and nothing
/// that could break a header.
pub fn email_ok(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        })
}

/// A list of addresses from a setting's JSON.
fn addresses(v: &Value) -> Result<Vec<String>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err("expected a list of e-mail addresses".into()),
    };
    if items.len() > MAX_ADDRESSES {
        return Err(format!("at most {MAX_ADDRESSES} addresses"));
    }
    items
        .iter()
        .map(|i| match i.as_str() {
            Some(a) if email_ok(a.trim()) => Ok(a.trim().to_owned()),
            _ => Err(format!("{i} is not an e-mail address")),
        })
        .collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            routing: Routing::Manual,
            max_chats: 5,
            accept_timeout: Duration::from_secs(30),
            reassign_after: None,
            close_after_inactive: Some(Duration::from_secs(60 * 60)),
            visitor_grace: Duration::from_secs(60),
            operator_grace: Duration::from_secs(60),
            notify_unavailable: true,
            unavailable_text: Localized::default_unavailable(),
            language: Lang::En,
            offline_callback: None,
            widget_when_away: WhenAway::Busy,
            show_operator_name: true,
            allowed_origins: None,
            canned: Vec::new(),
            retention: None,
            max_waiting: None,
            max_connections: None,
            api_rate_per_sec: None,
            transcript_emails: Vec::new(),
            transcript_format: MailFormat::Text,
            missed_emails: Vec::new(),
            offline_emails: Vec::new(),
            visitor_transcripts: false,
            transcript_reply_to: None,
        }
    }
}

/// One rejected key of a settings patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

/// Every rejected key of a patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid settings: {}", .0.iter().map(|e| format!("{}: {}", e.key, e.message)).collect::<Vec<_>>().join("; "))]
pub struct SettingsErrors(pub Vec<SettingError>);

/// Relaxes the lower bounds the protocol puts on `reassign_after` (1 min) and
/// `close_after_inactive` (5 min). Only tests and demos use it; production config never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    pub allow_short_timers: bool,
}

impl Settings {
    /// Applies a JSON object of settings on top of `self`. Returns the new settings, or every
    /// error found; `self` is never half-changed.
    pub fn patched(
        &self,
        patch: &Map<String, Value>,
        bounds: Bounds,
    ) -> Result<Settings, SettingsErrors> {
        let mut s = self.clone();
        let mut errors = Vec::new();
        for (key, value) in patch {
            if let Err(message) = s.set(key, value, bounds) {
                errors.push(SettingError {
                    key: key.clone(),
                    message,
                });
            }
        }
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(SettingsErrors(errors))
        }
    }

    fn set(&mut self, key: &str, v: &Value, bounds: Bounds) -> Result<(), String> {
        let min = |d: Duration| {
            if bounds.allow_short_timers {
                Duration::ZERO
            } else {
                d
            }
        };
        match key {
            "routing" => {
                self.routing = serde_json::from_value(v.clone())
                    .map_err(|_| "expected manual, offer or auto".to_owned())?
            }
            "max_chats" => {
                let n = v
                    .as_u64()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or("expected an integer 1..=1000")?;
                self.max_chats = n as u32;
            }
            "accept_timeout" => {
                self.accept_timeout = duration(v)?.ok_or("cannot be off")?;
                if self.accept_timeout < Duration::from_secs(1) {
                    return Err("must be at least 1s".into());
                }
            }
            "reassign_after" => {
                let d = duration(v)?;
                if d.is_some_and(|d| d < min(Duration::from_secs(60))) {
                    return Err("must be off or at least 1m".into());
                }
                self.reassign_after = d;
            }
            "close_after_inactive" => {
                let d = duration(v)?;
                if d.is_some_and(|d| d < min(Duration::from_secs(300))) {
                    return Err("must be off or at least 5m".into());
                }
                self.close_after_inactive = d;
            }
            "visitor_grace" => self.visitor_grace = duration(v)?.unwrap_or(Duration::ZERO),
            "operator_grace" => self.operator_grace = duration(v)?.unwrap_or(Duration::ZERO),
            "notify_unavailable" => {
                self.notify_unavailable = v.as_bool().ok_or("expected true or false")?
            }
            "unavailable_text" => self.unavailable_text = Localized::from_json(v)?,
            "language" => {
                self.language = v
                    .as_str()
                    .and_then(Lang::parse)
                    .ok_or("expected en, ru or cs")?
            }
            "offline_callback" => self.offline_callback = duration(v)?,
            "retention" => {
                self.retention = match v {
                    Value::String(s) if s == "forever" => None,
                    other => {
                        let d = duration_any(other)?.ok_or("\"forever\" or a duration")?;
                        if d < Duration::from_secs(3600) {
                            return Err("must be at least 1h, or \"forever\"".into());
                        }
                        Some(d)
                    }
                }
            }
            "max_waiting" | "max_connections" | "api_rate_per_sec" => {
                let n = match v {
                    Value::String(s) if s == "off" => None,
                    Value::Null => None,
                    other => Some(
                        other
                            .as_u64()
                            .filter(|n| (1..=1_000_000).contains(n))
                            .ok_or("expected \"off\" or an integer 1..=1000000")?
                            as u32,
                    ),
                };
                match key {
                    "max_waiting" => self.max_waiting = n,
                    "max_connections" => self.max_connections = n,
                    _ => self.api_rate_per_sec = n,
                }
            }
            "transcript_emails" => self.transcript_emails = addresses(v)?,
            "missed_emails" => self.missed_emails = addresses(v)?,
            "offline_emails" => self.offline_emails = addresses(v)?,
            "transcript_format" => {
                self.transcript_format = match v.as_str() {
                    Some("text") => MailFormat::Text,
                    Some("html") => MailFormat::Html,
                    _ => return Err("expected text or html".into()),
                }
            }
            "visitor_transcripts" => {
                self.visitor_transcripts = v.as_bool().ok_or("expected true or false")?
            }
            "transcript_reply_to" => {
                self.transcript_reply_to = match v {
                    Value::Null => None,
                    Value::String(s) if s.trim().is_empty() => None,
                    Value::String(s) if email_ok(s.trim()) => Some(s.trim().to_owned()),
                    _ => return Err("expected an e-mail address, or null".into()),
                }
            }
            "widget_when_away" => {
                self.widget_when_away = serde_json::from_value(v.clone())
                    .map_err(|_| "expected busy or offline".to_owned())?
            }
            "show_operator_name" => {
                self.show_operator_name = v.as_bool().ok_or("expected true or false")?
            }
            "allowed_origins" => {
                self.allowed_origins = match v {
                    Value::Null => None,
                    Value::String(s) if s == "*" => None,
                    Value::Array(items) => {
                        let mut out = Vec::with_capacity(items.len());
                        for i in items {
                            let o = i.as_str().ok_or("expected a list of origins")?;
                            if o == "*" {
                                return Err("use \"*\" alone for any origin".into());
                            }
                            out.push(o.trim_end_matches('/').to_owned());
                        }
                        Some(out)
                    }
                    _ => return Err("expected \"*\" or a list of origins".into()),
                }
            }
            "canned" => {
                let canned: Vec<Canned> = serde_json::from_value(v.clone())
                    .map_err(|_| "expected a list of {shortcut, text}".to_owned())?;
                // Every operator's `welcome` carries them: bounded by size, so that a long
                // list cannot make a frame no connection can take.
                let bytes: usize = canned.iter().map(|c| c.shortcut.len() + c.text.len()).sum();
                if canned.len() > MAX_CANNED
                    || bytes > MAX_CANNED_BYTES
                    || canned.iter().any(|c| {
                        c.shortcut.is_empty()
                            || c.shortcut.len() > 32
                            || c.text.is_empty()
                            || c.text.len() > 2000
                    })
                {
                    return Err(format!(
                        "at most {MAX_CANNED} responses, {MAX_CANNED_BYTES} bytes in all; a \
                         shortcut is 1 to 32 bytes, a text 1 to 2000"
                    ));
                }
                self.canned = canned;
            }
            _ => return Err("unknown setting".into()),
        }
        Ok(())
    }

    /// The settings as JSON, with durations as humantime strings (or "off").
    pub fn to_json(&self) -> Value {
        let d = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        let od = |o: Option<Duration>| o.map(d).unwrap_or_else(|| Value::String("off".into()));
        let mut m = BTreeMap::new();
        m.insert("routing", Value::from(self.routing.as_str()));
        m.insert("max_chats", Value::from(self.max_chats));
        m.insert("accept_timeout", d(self.accept_timeout));
        m.insert("reassign_after", od(self.reassign_after));
        m.insert("close_after_inactive", od(self.close_after_inactive));
        m.insert("visitor_grace", d(self.visitor_grace));
        m.insert("operator_grace", d(self.operator_grace));
        m.insert("notify_unavailable", Value::from(self.notify_unavailable));
        m.insert("unavailable_text", self.unavailable_text.to_json());
        m.insert("language", Value::from(self.language.as_str()));
        m.insert("offline_callback", od(self.offline_callback));
        m.insert(
            "retention",
            self.retention
                .map(d)
                .unwrap_or_else(|| Value::from("forever")),
        );
        m.insert(
            "widget_when_away",
            Value::from(match self.widget_when_away {
                WhenAway::Busy => "busy",
                WhenAway::Offline => "offline",
            }),
        );
        m.insert("show_operator_name", Value::from(self.show_operator_name));
        m.insert(
            "allowed_origins",
            match &self.allowed_origins {
                None => Value::from("*"),
                Some(list) => Value::from(list.clone()),
            },
        );
        m.insert(
            "canned",
            serde_json::to_value(&self.canned).unwrap_or(Value::Null),
        );
        let limit = |n: Option<u32>| n.map(Value::from).unwrap_or_else(|| Value::from("off"));
        m.insert("max_waiting", limit(self.max_waiting));
        m.insert("max_connections", limit(self.max_connections));
        m.insert("api_rate_per_sec", limit(self.api_rate_per_sec));
        m.insert(
            "transcript_emails",
            Value::from(self.transcript_emails.clone()),
        );
        m.insert(
            "transcript_format",
            Value::from(match self.transcript_format {
                MailFormat::Text => "text",
                MailFormat::Html => "html",
            }),
        );
        m.insert("missed_emails", Value::from(self.missed_emails.clone()));
        m.insert("offline_emails", Value::from(self.offline_emails.clone()));
        m.insert("visitor_transcripts", Value::from(self.visitor_transcripts));
        m.insert(
            "transcript_reply_to",
            self.transcript_reply_to
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        );
        serde_json::to_value(m).unwrap_or(Value::Null)
    }

    /// Whether a browser `Origin` may open a socket or call the visitor API.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) => true,
            // Non-browser clients send no Origin; origin checks guard browsers only.
            (Some(_), None) => true,
            (Some(list), Some(o)) => list.iter().any(|a| a == o.trim_end_matches('/')),
        }
    }
}

/// The longest any timer setting may be: a deadline is `now` plus the setting in
/// milliseconds, which must stay far from overflowing, and no chat waits a year.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

fn duration(v: &Value) -> Result<Option<Duration>, String> {
    let d = duration_any(v)?;
    if d.is_some_and(|d| d > MAX_DURATION) {
        return Err("must be at most 366 days".into());
    }
    Ok(d)
}

fn duration_any(v: &Value) -> Result<Option<Duration>, String> {
    match v {
        Value::String(s) if s == "off" => Ok(None),
        Value::String(s) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| format!("bad duration: {e}")),
        Value::Number(n) => n
            .as_u64()
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or_else(|| "expected milliseconds".to_owned()),
        Value::Bool(false) | Value::Null => Ok(None),
        _ => Err("expected a duration such as \"30s\", milliseconds, or \"off\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_match_protocol() {
        let s = Settings::default();
        assert_eq!(s.routing, Routing::Manual);
        assert_eq!(s.max_chats, 5);
        assert_eq!(s.accept_timeout, Duration::from_secs(30));
        assert_eq!(s.reassign_after, None);
        assert_eq!(s.close_after_inactive, Some(Duration::from_secs(3600)));
        assert_eq!(s.visitor_grace, Duration::from_secs(60));
        assert!(s.notify_unavailable && s.show_operator_name);
        assert_eq!(s.widget_when_away, WhenAway::Busy);
    }

    #[test]
    fn patch_applies_every_valid_key() {
        let s = Settings::default()
            .patched(
                &patch(json!({"routing":"offer","max_chats":2,"accept_timeout":"10s","reassign_after":"2m",
                    "visitor_grace":1500,"offline_callback":"1h","allowed_origins":["https://a.example/"]})),
                Bounds::default(),
            )
            .unwrap();
        assert_eq!(s.routing, Routing::Offer);
        assert_eq!(s.max_chats, 2);
        assert_eq!(s.accept_timeout, Duration::from_secs(10));
        assert_eq!(s.reassign_after, Some(Duration::from_secs(120)));
        assert_eq!(s.visitor_grace, Duration::from_millis(1500));
        assert_eq!(s.offline_callback, Some(Duration::from_secs(3600)));
        assert!(s.origin_allowed(Some("https://a.example")));
        assert!(!s.origin_allowed(Some("https://evil.example")));
    }

    #[test]
    fn patch_reports_every_bad_key_and_changes_nothing() {
        let base = Settings::default();
        let err = base
            .patched(
                &patch(json!({"routing":"random","max_chats":0,"reassign_after":"10s","close_after_inactive":"1m","nope":1,"visitor_grace":"5s"})),
                Bounds::default(),
            )
            .unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "close_after_inactive",
                "max_chats",
                "nope",
                "reassign_after",
                "routing"
            ]
        );
    }

    #[test]
    fn durations_past_a_year_are_refused() {
        for key in [
            "accept_timeout",
            "reassign_after",
            "close_after_inactive",
            "visitor_grace",
            "operator_grace",
            "offline_callback",
        ] {
            let err = Settings::default()
                .patched(&patch(json!({ key: u64::MAX })), Bounds::default())
                .unwrap_err();
            assert_eq!(err.0[0].key, key);
            assert!(Settings::default()
                .patched(&patch(json!({ key: "400days" })), Bounds::default())
                .is_err());
            assert!(Settings::default()
                .patched(&patch(json!({ key: "365days" })), Bounds::default())
                .is_ok());
        }
    }

    #[test]
    fn short_timers_only_with_relaxed_bounds() {
        let p = patch(json!({"reassign_after":"2s","close_after_inactive":"3s"}));
        assert!(Settings::default().patched(&p, Bounds::default()).is_err());
        let s = Settings::default()
            .patched(
                &p,
                Bounds {
                    allow_short_timers: true,
                },
            )
            .unwrap();
        assert_eq!(s.reassign_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn json_round_trips() {
        let s = Settings::default()
            .patched(
                &patch(json!({"routing":"auto","reassign_after":"90s"})),
                Bounds::default(),
            )
            .unwrap();
        let j = s.to_json();
        let back = Settings::default()
            .patched(j.as_object().unwrap(), Bounds::default())
            .unwrap();
        assert_eq!(back, s);
    }
}
