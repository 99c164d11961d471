//! Webhooks: the events made for a site's webhooks (from what the archiver archives, a
//! close's notice, a ban, a test), the signed call of one event, and turning a webhook off
//! once every call failed for `GATEWAY_WEBHOOK_DISABLE_AFTER`, telling the site's
//! supervisors. The calls leave through the deliveries that `notify.rs` works off.

use super::notify::{delivery, digest_hex, unique, Job, Outcome};
use super::{Engine, Gateway, ServiceError};
use crate::archive::{ConvRecord, Delivery, NewDelivery, Store};
use crate::clock::now_ms;
use crate::core::SiteId;

/// An event's id: made from what caused it, so that the same cause archived twice is the
/// same event (receivers deduplicate by `webhook-id`).
pub(super) fn event_id(site: &SiteId, cause: &str) -> String {
    format!("evt_{}", digest_hex(&format!("{site}\n{cause}"), 12))
}

/// An event for each of the site's webhooks that wants its type (`api-v1.md`, "Webhooks":
/// `{"id","type","ts","site","data"}`).
pub(super) fn webhook_deliveries(
    dir: &crate::directory::Directory,
    site: &SiteId,
    kind: &str,
    cause: &str,
    ts: u64,
    data: serde_json::Value,
) -> Vec<NewDelivery> {
    let hooks: Vec<&crate::directory::Webhook> =
        dir.webhooks.values().filter(|w| w.wants(kind)).collect();
    if hooks.is_empty() {
        return Vec::new();
    }
    let id = event_id(site, cause);
    let event = serde_json::json!({
        "id": id, "type": kind, "ts": ts, "site": site.as_str(), "data": data,
    });
    hooks
        .into_iter()
        .map(|w| {
            let job = Job::Webhook {
                event: event.clone(),
            };
            delivery(
                site.as_str(),
                "webhook",
                format!("wh:{}:{id}", w.id),
                &w.id,
                &job,
                now_ms(),
            )
        })
        .collect()
}

impl<E: Engine> Gateway<E> {
    /// Sends a `webhook.test` event to one webhook now (the console's "send test event");
    /// returns the event's id.
    pub async fn test_webhook(&self, site: &SiteId, hook: &str) -> Result<String, super::DirError> {
        let store = self.archive_or_refuse()?;
        let dir = self.directory(site);
        let w = dir.webhooks.get(hook).ok_or(super::DirError::NotFound)?;
        let now = now_ms();
        let id = event_id(
            site,
            &format!("test:{hook}:{now}:{}", crate::directory::random_hex(4)),
        );
        let event = serde_json::json!({
            "id": id, "type": "webhook.test", "ts": now, "site": site.as_str(),
            "data": {"webhook": w.id, "url": w.url},
        });
        let d = delivery(
            site.as_str(),
            "webhook",
            format!("wh:{}:{id}", w.id),
            &w.id,
            &Job::Webhook { event },
            now,
        );
        store.add_deliveries(&[d], now).await?;
        Ok(id)
    }
}

/// The webhook events of an archived conversation event (a close's wait for the archive's
/// figures: `expand_closed`).
pub(super) fn record_events(
    dir: &crate::directory::Directory,
    site: &SiteId,
    r: &ConvRecord,
) -> Vec<NewDelivery> {
    let started = (r.event == "queued" && r.reason.as_deref().is_none_or(|x| x == "invited"))
        || r.event == "reopened";
    let kind = match r.event.as_str() {
        _ if started => "conversation.started",
        "assigned" => "conversation.assigned",
        "transferred" => "conversation.transferred",
        _ => return Vec::new(),
    };
    let cause = format!("{}:{}", r.conv.id, r.key);
    let data = serde_json::json!({"conversation": r.conv, "reason": r.reason});
    let mut out = webhook_deliveries(dir, site, kind, &cause, r.ts, data.clone());
    if started && r.conv.offline {
        out.extend(webhook_deliveries(
            dir,
            site,
            "offline_message.created",
            &format!("{}:offline", r.conv.id),
            r.ts,
            data,
        ));
    }
    out
}

/// Whether a webhook has failed for `window`: the failing event is that old, and nothing
/// reached the receiver since `window` ago (`last_done`: its last delivery that went through).
fn failing_too_long(now: u64, created_at: u64, last_done: Option<u64>, window: u64) -> bool {
    now.saturating_sub(created_at) >= window
        && last_done.is_none_or(|t| now.saturating_sub(t) >= window)
}

impl<E: Engine> Gateway<E> {
    /// One call of a webhook: to its URL and with its secret as they are now.
    pub(super) async fn call_webhook(
        &self,
        site: &SiteId,
        hook: &str,
        event: &serde_json::Value,
    ) -> (Outcome, Option<u16>) {
        let dir = self.directory(site);
        let Some(w) = dir.webhooks.get(hook) else {
            return (Outcome::Fail("the webhook was deleted".into()), None);
        };
        if !w.active {
            return (Outcome::Fail("the webhook is inactive".into()), None);
        }
        if !crate::webhook::host_allowed(&self.cfg.webhook_hosts, &w.url) {
            return (
                Outcome::Fail("the webhook's host is not allowed (GATEWAY_WEBHOOK_HOSTS)".into()),
                None,
            );
        }
        let (outcome, status, _) = self.post_signed(&w.url, &w.secret, event).await;
        (outcome, status)
    }

    /// A webhook's call failed: retried, unless every call of the webhook failed for
    /// `GATEWAY_WEBHOOK_DISABLE_AFTER` (this event is that old, and nothing reached the
    /// receiver since), when the webhook is turned off and the site's supervisors are told.
    pub(super) async fn failing_webhook(
        &self,
        store: &dyn Store,
        site: &SiteId,
        d: &Delivery,
        error: String,
    ) -> Outcome {
        let window = self.cfg.webhook_disable_after.as_millis() as u64;
        let now = now_ms();
        if !failing_too_long(now, d.created_at, None, window) {
            return Outcome::Retry(error);
        }
        match store.last_delivered(&d.site, &d.target).await {
            Ok(last) if failing_too_long(now, d.created_at, last, window) => {}
            _ => return Outcome::Retry(error),
        }
        let hook = match self.disable_webhook(site, &d.target, &error).await {
            Ok(Some(was)) => was,
            // Off already (another node, an admin): nothing more to say.
            Ok(None) => return Outcome::Fail(format!("{error}; the webhook is off")),
            Err(e) => {
                tracing::warn!(site = %site, webhook = %d.target, error = %e, "failing webhook not turned off");
                return Outcome::Retry(error);
            }
        };
        let failing = humantime::format_duration(self.cfg.webhook_disable_after).to_string();
        tracing::warn!(site = %site, webhook = %hook.id, url = %hook.url, failing, "webhook turned off: every call failed");
        if self.mailer.is_some() {
            if let Err(e) = self
                .tell_supervisors(store, site, &hook, &failing, &error)
                .await
            {
                tracing::warn!(site = %site, error = %e, "supervisors not told of the webhook turned off");
            }
        }
        Outcome::Fail(format!(
            "{error}; every call failed for {failing}: the webhook was turned off"
        ))
    }

    /// An e-mail to each active supervisor of the site with an address: which webhook was
    /// turned off, why, and how to turn it on again.
    async fn tell_supervisors(
        &self,
        store: &dyn Store,
        site: &SiteId,
        hook: &crate::directory::Webhook,
        failing: &str,
        error: &str,
    ) -> Result<(), ServiceError> {
        let dir = self.directory(site);
        let lang = self
            .site(site)
            .map(|s| s.settings().language)
            .unwrap_or_default();
        let w = crate::i18n::webhook_off_words(lang);
        let subject = crate::mail::one_line(&format!("{} {}", w.subject, hook.url));
        let text = format!(
            "{}\n\n  {}\n  {}: {}\n  {}: {}\n  {}: {}\n\n{}\n\n  PATCH /v1/sites/{site}/webhooks/{} {{\"active\": true}}\n",
            w.body,
            hook.url,
            w.webhook,
            hook.id,
            w.failing,
            failing,
            w.last_error,
            error,
            w.again,
            hook.id,
        );
        let now = now_ms();
        let to: Vec<String> = dir
            .operators
            .values()
            .filter(|s| s.active && s.role == crate::directory::StaffRole::Supervisor)
            .filter_map(|s| s.email.clone())
            .collect();
        let out: Vec<NewDelivery> = unique(&to)
            .into_iter()
            .map(|to| {
                let job = Job::Letter {
                    to: to.clone(),
                    subject: subject.clone(),
                    text: text.clone(),
                };
                // One e-mail per address each time the webhook is turned off.
                let id = format!(
                    "mail:webhook-off:{}:{}:{}",
                    hook.id,
                    hook.disabled_at.unwrap_or_default(),
                    to.to_lowercase()
                );
                delivery(site.as_str(), "mail", id, &to, &job, now)
            })
            .collect();
        if !out.is_empty() {
            store.add_deliveries(&out, now).await?;
        }
        Ok(())
    }

    /// POSTs an event signed with `secret`: how it went, the receiver's status and answer.
    pub(super) async fn post_signed(
        &self,
        url: &str,
        secret: &str,
        event: &serde_json::Value,
    ) -> (Outcome, Option<u16>, bytes::Bytes) {
        let id = event["id"].as_str().unwrap_or_default();
        let body = bytes::Bytes::from(serde_json::to_vec(event).expect("an event serialises"));
        match self
            .webhooks
            .post(url, secret, id, now_ms() / 1000, body)
            .await
        {
            crate::webhook::Answer::Status(s, answer) if (200..300).contains(&s) => {
                (Outcome::Done, Some(s), answer)
            }
            crate::webhook::Answer::Status(s, answer) => (
                Outcome::Retry(format!("the receiver answered {s}")),
                Some(s),
                answer,
            ),
            crate::webhook::Answer::Failed(e) => (Outcome::Retry(e), None, bytes::Bytes::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_failing_too_long_only_when_nothing_went_through_for_the_window() {
        let day = 24 * 3600 * 1000;
        let now = 10 * day;
        // A fresh event: not yet, however long ago the last success.
        assert!(!failing_too_long(now, now - 1000, None, day));
        // A day-old event and nothing ever delivered, or nothing for a day.
        assert!(failing_too_long(now, now - day, None, day));
        assert!(failing_too_long(
            now,
            now - day - 1,
            Some(now - 2 * day),
            day
        ));
        // A day-old event, but another got through an hour ago: the receiver works, sometimes.
        assert!(!failing_too_long(
            now,
            now - 2 * day,
            Some(now - 3_600_000),
            day
        ));
    }
}
