//! What leaves the gateway for people outside it: transcripts, missed conversations and
//! offline messages by e-mail.
//!
//! The archiver turns what the outbox carries into **notices** as it archives it (a
//! conversation closed, a message left in the offline form), in the archive's own database
//! and under ids made from their cause (`close:<conv>`), so an entry archived twice makes one
//! notice. A notice is worked off by the deliveries loop: it reads the conversation as the
//! archive holds it (whole: the archiver wrote it before the notice), decides who gets what,
//! and adds one delivery per address (`mail:<conv>:transcript:<address>`, one per address
//! however many levels list it). Each delivery is sent, retried with backoff for days when
//! the mail server is down, and recorded attempt by attempt. Nothing here is on the message
//! path: the live path writes the outbox, nothing more.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::webhooks::webhook_deliveries;
use super::{Engine, Gateway, ServiceError};
use crate::archive::{Attempt, ConvRecord, Delivery, NewDelivery, Store};
use crate::clock::now_ms;
use crate::core::settings::MailFormat;
use crate::core::{ConvId, SiteId};
use crate::i18n::Lang;
use crate::mail::{Mail, MailError};
use crate::protocol::{ConvState, Msg, Role};

/// Deliveries claimed at once.
const CLAIM: usize = 32;
/// How long a delivery is retried before it is given up: past a day of outage, as promised.
pub const GIVE_UP_AFTER_MS: u64 = 3 * 24 * 3600 * 1000;
/// An offline form's notice waits this long for the visitor's words to be archived.
const OFFLINE_SETTLE_MS: u64 = 2_000;

/// What a notice or an e-mail delivery carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Job {
    /// A conversation closed: transcripts and the missed-conversation e-mail.
    Closed { conv: String },
    /// A message left in the offline form.
    Offline { conv: String },
    /// One event to one webhook (`webhook-id` is the event's id: the same on every retry).
    Webhook { event: serde_json::Value },
    /// One run of an action on a conversation (signed like a webhook's event).
    Action {
        conv: String,
        event: serde_json::Value,
    },
    /// One e-mail to the site's supervisors: a webhook was turned off after failing for
    /// long (its words made when it was queued, in the site's language).
    Letter {
        to: String,
        subject: String,
        text: String,
    },
    /// One e-mail about a conversation.
    Mail {
        conv: String,
        what: MailKind,
        to: String,
        lang: String,
        html: bool,
    },
}

/// Which e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// To the company, the conversation's line or its operators.
    Transcript,
    /// To the visitor, who asked.
    VisitorTranscript,
    Missed,
    Offline,
}

impl MailKind {
    fn as_str(self) -> &'static str {
        match self {
            MailKind::Transcript => "transcript",
            MailKind::VisitorTranscript => "visitor",
            MailKind::Missed => "missed",
            MailKind::Offline => "offline",
        }
    }
}

pub(super) fn delivery(
    site: &str,
    kind: &str,
    id: String,
    target: &str,
    job: &Job,
    due_at: u64,
) -> NewDelivery {
    NewDelivery {
        id,
        site: site.to_owned(),
        kind: kind.to_owned(),
        target: target.to_owned(),
        body: serde_json::to_string(job).expect("a job serialises"),
        due_at,
    }
}

/// The first `bytes` bytes of the SHA-256 of `s`, as hex: a stable id made from a cause.
pub(super) fn digest_hex(s: &str, bytes: usize) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d.iter().take(bytes).map(|b| format!("{b:02x}")).collect()
}

/// The notices an archived conversation event makes (called by the archiver after it wrote
/// the event and, for a close, the conversation whole).
pub(super) fn notices(site: &SiteId, r: &ConvRecord) -> Vec<NewDelivery> {
    let conv = &r.conv.id;
    let mut out = Vec::new();
    if r.conv.state == ConvState::Closed {
        let job = Job::Closed { conv: conv.clone() };
        out.push(delivery(
            site.as_str(),
            "notice",
            format!("close:{conv}"),
            conv,
            &job,
            r.ts,
        ));
    }
    if r.conv.offline && r.event == "queued" {
        let job = Job::Offline { conv: conv.clone() };
        let due = r.ts + OFFLINE_SETTLE_MS;
        out.push(delivery(
            site.as_str(),
            "notice",
            format!("offline:{conv}"),
            conv,
            &job,
            due,
        ));
    }
    out
}

/// Backoff before attempt `n + 1`: 15 s doubling to an hour, with jitter.
fn backoff(n: u32) -> u64 {
    use rand::Rng;
    let base = 15_000u64.saturating_mul(1 << n.min(12)).min(3_600_000);
    base / 2 + rand::rng().random_range(0..=base / 2)
}

/// How an attempt went.
pub(super) enum Outcome {
    Done,
    /// Try again (after the backoff).
    Retry(String),
    /// Give up now.
    Fail(String),
}

impl<E: Engine> Gateway<E> {
    /// Sends what is due, until the process ends (a node without an archive has nothing to
    /// send).
    pub async fn run_deliveries(self: Arc<Self>) {
        let Some(store) = self.archive.clone() else {
            return;
        };
        let mut idle = Duration::from_millis(200);
        loop {
            let lease = self.cfg.delivery_lease.as_millis() as u64;
            let claimed = match store.claim_deliveries(now_ms(), lease, CLAIM).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "deliveries not readable");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = self.deliveries_due.notified() => {}
                }
                idle = (idle * 2).min(Duration::from_secs(1));
                continue;
            }
            idle = Duration::from_millis(200);
            let sends = claimed.into_iter().map(|d| {
                let gw = self.clone();
                let store = store.clone();
                async move { gw.attempt(&*store, d).await }
            });
            futures_util::future::join_all(sends).await;
        }
    }

    /// One attempt of a delivery, recorded.
    async fn attempt(&self, store: &dyn Store, d: Delivery) {
        let started = std::time::Instant::now();
        let mut status = None;
        let outcome = match serde_json::from_str::<Job>(&d.body) {
            Err(e) => Outcome::Fail(format!("unreadable: {e}")),
            // A webhook's call also says what the receiver answered, for its log.
            Ok(Job::Webhook { event }) => {
                let site = SiteId(d.site.clone());
                let (o, s) = self.call_webhook(&site, &d.target, &event).await;
                status = s;
                match o {
                    Outcome::Retry(e) => self.failing_webhook(store, &site, &d, e).await,
                    o => o,
                }
            }
            Ok(Job::Action { conv, event }) => {
                let (o, s) = self
                    .call_action(&SiteId(d.site.clone()), &d.target, &conv, &event)
                    .await;
                status = s;
                o
            }
            Ok(job) => match self.work(store, &d, job).await {
                Ok(o) => o,
                Err(e) => Outcome::Retry(e.to_string()),
            },
        };
        let at = now_ms();
        let (ok, error, retry_at) = match outcome {
            Outcome::Done => (true, None, None),
            Outcome::Fail(e) => (false, Some(e), None),
            Outcome::Retry(e) if at.saturating_sub(d.created_at) >= GIVE_UP_AFTER_MS => {
                (false, Some(format!("given up: {e}")), None)
            }
            Outcome::Retry(e) => (false, Some(e), Some(at + backoff(d.attempts))),
        };
        if let Some(e) = &error {
            tracing::warn!(delivery = %d.id, attempts = d.attempts + 1, retry = retry_at.is_some(), error = %e, "delivery failed");
        }
        let a = Attempt {
            at,
            ok,
            status,
            error,
            ms: started.elapsed().as_millis() as u64,
        };
        if let Err(e) = store.delivery_attempted(&d.id, &a, retry_at).await {
            // Its lease runs out and it is tried again: an e-mail may then go twice, with
            // the same Message-ID.
            tracing::warn!(delivery = %d.id, error = %e, "attempt not recorded");
        }
    }

    async fn work(
        &self,
        store: &dyn Store,
        d: &Delivery,
        job: Job,
    ) -> Result<Outcome, ServiceError> {
        let site = SiteId(d.site.clone());
        match job {
            Job::Closed { conv } => self.expand_closed(store, &site, &conv).await,
            Job::Offline { conv } => self.expand_offline(store, &site, &conv, d.attempts).await,
            // Called by `attempt`, which records the receiver's status.
            Job::Webhook { .. } | Job::Action { .. } => {
                Ok(Outcome::Fail("not a job for the mail worker".into()))
            }
            Job::Letter { to, subject, text } => {
                let Some(mailer) = self.mailer.as_ref() else {
                    return Ok(Outcome::Retry("no mail server (GATEWAY_SMTP_URL)".into()));
                };
                let mail = Mail {
                    to,
                    subject,
                    text,
                    html: None,
                    reply_to: None,
                    message_id: message_key(&d.id),
                };
                Ok(match mailer.send(&mail).await {
                    Ok(()) => Outcome::Done,
                    Err(MailError::Permanent(e)) => Outcome::Fail(e),
                    Err(MailError::Transient(e)) => Outcome::Retry(e),
                })
            }
            Job::Mail {
                conv,
                what,
                to,
                lang,
                html,
            } => {
                let Some(mailer) = self.mailer.as_ref() else {
                    return Ok(Outcome::Retry("no mail server (GATEWAY_SMTP_URL)".into()));
                };
                let lang = Lang::parse(&lang).unwrap_or_default();
                let mail = match self
                    .compose(&site, &conv, what, &to, lang, html, &d.id)
                    .await?
                {
                    Ok(mail) => mail,
                    Err(not_now) => return Ok(not_now),
                };
                Ok(match mailer.send(&mail).await {
                    Ok(()) => Outcome::Done,
                    Err(MailError::Permanent(e)) => Outcome::Fail(e),
                    Err(MailError::Transient(e)) => Outcome::Retry(e),
                })
            }
        }
    }

    /// A closed conversation's e-mails: the transcript to the company, its line and the
    /// operators who held it (who asked for copies), one per address; the missed-conversation
    /// e-mail when no operator answered.
    async fn expand_closed(
        &self,
        store: &dyn Store,
        site: &SiteId,
        conv: &str,
    ) -> Result<Outcome, ServiceError> {
        let Some(s) = self.site(site) else {
            return Ok(Outcome::Done);
        };
        let Some(detail) = store.conversation(site, conv).await? else {
            return Ok(Outcome::Retry("not archived yet".into()));
        };
        let settings = s.settings();
        let dir = self.directory(site);
        // The close's webhooks, with the archive's figures.
        let ts = detail.summary.closed_at.unwrap_or_else(now_ms);
        let summary = serde_json::json!({ "conversation": &detail.summary });
        let mut hooks = webhook_deliveries(
            &dir,
            site,
            "conversation.closed",
            &format!("{conv}:closed"),
            ts,
            summary.clone(),
        );
        if detail.summary.missed {
            hooks.extend(webhook_deliveries(
                &dir,
                site,
                "conversation.missed",
                &format!("{conv}:missed"),
                ts,
                summary,
            ));
        }
        if !hooks.is_empty() {
            store.add_deliveries(&hooks, now_ms()).await?;
        }
        if self.mailer.is_none() {
            return Ok(Outcome::Done);
        }
        let c = &detail.summary.conv;
        let mut transcript: Vec<String> = settings.transcript_emails.clone();
        if let Some(q) = dir.queues.get(&c.queue) {
            transcript.extend(q.transcript_emails.iter().cloned());
        }
        let mut held: BTreeSet<&str> = detail
            .events
            .iter()
            .filter_map(|e| e.to.as_deref())
            .collect();
        if let Some(op) = &c.operator {
            held.insert(op.id.as_str());
        }
        for op in held {
            if let Some(staff) = dir.operators.get(op).filter(|st| st.transcript_copy) {
                transcript.extend(staff.email.iter().cloned());
            }
        }
        let lang = settings.language.as_str().to_owned();
        let html = settings.transcript_format == MailFormat::Html;
        let now = now_ms();
        let mut out = Vec::new();
        let mut mail = |what: MailKind, to: &str| {
            let job = Job::Mail {
                conv: conv.to_owned(),
                what,
                to: to.to_owned(),
                lang: lang.clone(),
                html,
            };
            let id = format!("mail:{conv}:{}:{}", what.as_str(), to.to_lowercase());
            out.push(delivery(site.as_str(), "mail", id, to, &job, now));
        };
        for to in unique(&transcript) {
            mail(MailKind::Transcript, &to);
        }
        if detail.summary.missed {
            for to in unique(&settings.missed_emails) {
                mail(MailKind::Missed, &to);
            }
        }
        store.add_deliveries(&out, now).await?;
        Ok(Outcome::Done)
    }

    /// A message left in the offline form, to `offline_emails` (once the visitor's words are
    /// archived, or after a few tries without them).
    async fn expand_offline(
        &self,
        store: &dyn Store,
        site: &SiteId,
        conv: &str,
        attempts: u32,
    ) -> Result<Outcome, ServiceError> {
        if self.mailer.is_none() {
            return Ok(Outcome::Done);
        }
        let Some(s) = self.site(site) else {
            return Ok(Outcome::Done);
        };
        let words = self
            .messages_after(site, &ConvId(conv.to_owned()), 0, 1)
            .await?;
        if words.is_empty() && attempts < 5 {
            return Ok(Outcome::Retry(
                "the visitor's message is not archived yet".into(),
            ));
        }
        let settings = s.settings();
        let now = now_ms();
        let out: Vec<NewDelivery> = unique(&settings.offline_emails)
            .into_iter()
            .map(|to| {
                let job = Job::Mail {
                    conv: conv.to_owned(),
                    what: MailKind::Offline,
                    to: to.clone(),
                    lang: settings.language.as_str().to_owned(),
                    html: settings.transcript_format == MailFormat::Html,
                };
                let id = format!("mail:{conv}:offline:{}", to.to_lowercase());
                delivery(site.as_str(), "mail", id, &to, &job, now)
            })
            .collect();
        store.add_deliveries(&out, now).await?;
        Ok(Outcome::Done)
    }

    /// The visitor's own transcript, asked for by the visitor of the conversation or by
    /// staff who may manage it: one e-mail to that address once the conversation is closed,
    /// in the visitor's language (`lang`, else the site's), replying to the site's
    /// `transcript_reply_to`.
    pub async fn request_transcript_mail(
        &self,
        p: &crate::auth::Principal,
        conv: &ConvId,
        to: &str,
        lang: Option<Lang>,
    ) -> Result<(), ServiceError> {
        let access = if p.is_staff() {
            super::Access::Manage
        } else {
            super::Access::Read
        };
        self.authorize(p, conv, access).await?;
        let site = &p.site;
        let store = self.archive_or_refuse()?;
        if self.mailer.is_none() {
            return Err(ServiceError::refuse(
                crate::protocol::ErrorCode::Unavailable,
                "this gateway sends no e-mail",
            ));
        }
        let settings = self.site_or_refuse(site)?.settings();
        if !settings.visitor_transcripts {
            return Err(ServiceError::refuse(
                crate::protocol::ErrorCode::Forbidden,
                "this site does not e-mail transcripts to visitors",
            ));
        }
        let to = to.trim();
        if !crate::core::settings::email_ok(to) {
            return Err(ServiceError::refuse(
                crate::protocol::ErrorCode::BadRequest,
                "not an e-mail address",
            ));
        }
        let job = Job::Mail {
            conv: conv.to_string(),
            what: MailKind::VisitorTranscript,
            to: to.to_owned(),
            lang: lang.unwrap_or(settings.language).as_str().to_owned(),
            html: settings.transcript_format == MailFormat::Html,
        };
        let now = now_ms();
        let id = format!("mail:{conv}:visitor:{}", to.to_lowercase());
        store
            .add_deliveries(&[delivery(site.as_str(), "mail", id, to, &job, now)], now)
            .await?;
        Ok(())
    }

    /// The e-mail a delivery sends, from the conversation as the archive holds it; or why
    /// not now: it is gone (erased, past retention), or a transcript's conversation is not
    /// closed yet (a visitor may ask before the end).
    #[allow(clippy::too_many_arguments)]
    async fn compose(
        &self,
        site: &SiteId,
        conv: &str,
        what: MailKind,
        to: &str,
        lang: Lang,
        html: bool,
        delivery_id: &str,
    ) -> Result<Result<Mail, Outcome>, ServiceError> {
        let store = self.archive_or_refuse()?;
        let Some(detail) = store.conversation(site, conv).await? else {
            // Not archived yet (asked for a moment after it started), or erased: retried
            // until the delivery is given up.
            return Ok(Err(Outcome::Retry(
                "the conversation is not in the archive".into(),
            )));
        };
        let c = &detail.summary.conv;
        if c.state != ConvState::Closed && what != MailKind::Offline {
            return Ok(Err(Outcome::Retry(
                "the conversation is not closed yet".into(),
            )));
        }
        let messages = self
            .whole_conversation(site, &ConvId(conv.to_owned()))
            .await?;
        let s = self.site(site);
        let site_name = s
            .as_ref()
            .map_or_else(|| site.to_string(), |s| s.card().name.clone());
        let settings = s.map(|s| s.settings()).unwrap_or_default();
        let words = crate::i18n::mail_words(lang);
        let visitor = c
            .visitor
            .name
            .clone()
            .or_else(|| detail.prechat.name.clone())
            .unwrap_or_else(|| words.anonymous.to_owned());
        let subject = match what {
            MailKind::Transcript => format!("{} {} — {}", words.transcript, conv, visitor),
            MailKind::VisitorTranscript => format!("{} {}", words.your_chat, site_name),
            MailKind::Missed => format!("{} — {}", words.missed, visitor),
            MailKind::Offline => format!("{} — {}", words.offline, visitor),
        };
        // What the reader needs besides the messages: who the visitor is (for the staff).
        let mut facts: Vec<(&str, String)> = Vec::new();
        if what != MailKind::VisitorTranscript {
            facts.push((words.visitor, visitor.clone()));
            if let Some(e) = c.visitor.email.clone().or(detail.prechat.email.clone()) {
                facts.push((words.email, e));
            }
            if let Some(p) = c.visitor.phone.clone().or(detail.prechat.phone.clone()) {
                facts.push((words.phone, p));
            }
            facts.push((words.queue, c.queue.clone()));
            if let Some(op) = &c.operator {
                facts.push((words.operator, op.name.clone()));
            }
            facts.push((words.conversation, conv.to_owned()));
        }
        let shown: Vec<&Msg> = match what {
            // What the visitor wrote: the point of a missed or offline e-mail.
            MailKind::Missed | MailKind::Offline => messages
                .iter()
                .filter(|m| m.from.role == Role::Visitor)
                .collect(),
            _ => messages.iter().collect(),
        };
        let owned: Vec<Msg> = shown.into_iter().cloned().collect();
        let mut text = String::new();
        for (k, v) in &facts {
            text.push_str(&format!("{k}: {}\n", crate::mail::one_line(v)));
        }
        if !facts.is_empty() {
            text.push('\n');
        }
        text.push_str(&crate::transcript::transcript_text(&owned, lang));
        let html = html.then(|| mail_html(&facts, &owned, lang, &subject));
        let domain = settings
            .transcript_reply_to
            .as_deref()
            .and_then(|r| r.rsplit_once('@').map(|(_, d)| d.to_owned()))
            .unwrap_or_else(|| "chat-gateway.invalid".into());
        Ok(Ok(Mail {
            to: to.to_owned(),
            subject,
            text,
            html,
            reply_to: (what == MailKind::VisitorTranscript)
                .then(|| settings.transcript_reply_to.clone())
                .flatten(),
            message_id: format!("<{}@{domain}>", message_key(delivery_id)),
        }))
    }
}

/// The addresses of a list, each once (compared without case), in their first order.
pub(super) fn unique(list: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    list.iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty() && seen.insert(a.to_lowercase()))
        .map(str::to_owned)
        .collect()
}

/// A delivery's id as the local part of a Message-ID: stable, and only characters a
/// Message-ID may hold.
pub(super) fn message_key(id: &str) -> String {
    digest_hex(id, 16)
}

/// The HTML part: the facts and the messages, every value escaped.
fn mail_html(facts: &[(&str, String)], messages: &[Msg], lang: Lang, title: &str) -> String {
    let esc = crate::transcript::escape;
    let mut out = format!(
        "<!doctype html><html lang=\"{}\"><meta charset=\"utf-8\"><title>{}</title><body>",
        lang.as_str(),
        esc(title)
    );
    if !facts.is_empty() {
        out.push_str("<table>");
        for (k, v) in facts {
            out.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                esc(k),
                esc(v)
            ));
        }
        out.push_str("</table>");
    }
    out.push_str(&crate::transcript::messages_table(messages, lang));
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_listed_twice_is_written_to_once() {
        let list = vec![
            "Sales@Example.com".to_owned(),
            "ops@example.com".into(),
            "sales@example.com ".into(),
        ];
        assert_eq!(unique(&list), ["Sales@Example.com", "ops@example.com"]);
    }

    #[test]
    fn backoff_grows_to_an_hour() {
        assert!((7_500..=15_000).contains(&backoff(0)));
        assert!((1_800_000..=3_600_000).contains(&backoff(20)));
    }

    #[test]
    fn message_ids_are_stable_and_plain() {
        let k = message_key("mail:c_1:transcript:a@example.com");
        assert_eq!(k, message_key("mail:c_1:transcript:a@example.com"));
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
