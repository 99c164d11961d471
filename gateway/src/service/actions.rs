//! Actions (`api-v1.md`, `actions`): buttons in the console's conversation menu that call a
//! site's own systems ("Create case"). Running one queues a delivery like a webhook event's —
//! the conversation and its messages, signed with the action's own secret — so the call is
//! made off the socket's path, retried through a receiver's outage and a node's death under
//! the same `webhook-id` (receivers deduplicate by it), and listed in the deliveries. The
//! receiver's answer `{"note","link"}` is kept on the conversation as a note the staff see.

use serde::Deserialize;

use super::authz::{self, Access};
use super::notify::{delivery, Job, Outcome};
use super::webhooks::event_id;
use super::{Engine, Gateway, ServiceError};
use crate::auth::{Principal, User};
use crate::clock::now_ms;
use crate::core::{Command, ConvId, SiteId};
use crate::protocol::ErrorCode;

/// The most messages an action's call carries (the latest are cut).
const ACTION_MESSAGES: usize = 500;
/// The longest note kept from an answer, in characters.
const MAX_NOTE: usize = 1000;

/// What a receiver may answer an action with (anything else in a 2xx is ignored).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    link: Option<String>,
}

/// The note an answer makes: its text (clipped, control characters out) or, without one, the
/// action's name; its link when it is an `http(s)://` URL.
fn note_of(name: &str, body: &[u8]) -> (String, Option<String>) {
    let a: Answer = serde_json::from_slice(body).unwrap_or_default();
    let text: String = a
        .note
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_NOTE)
        .collect();
    let text = match text.trim() {
        "" => name.to_owned(),
        t => t.to_owned(),
    };
    let link = a.link.filter(|l| crate::directory::url_ok(l));
    (text, link)
}

impl<E: Engine> Gateway<E> {
    /// Runs an action on a conversation for a member of the staff: an operator on one they
    /// hold, a supervisor on one of the lines they moderate. The call is queued, and its
    /// event's id returned; the answer comes back as a note.
    pub async fn run_action(
        &self,
        p: &Principal,
        conv: &ConvId,
        action: &str,
    ) -> Result<String, ServiceError> {
        authz::manager(p)?;
        let meta = self.authorize(p, conv, Access::Manage).await?;
        if let User::Operator(op) = &p.user {
            if meta.operator.as_ref() != Some(op) {
                return Err(ServiceError::refuse(
                    ErrorCode::Forbidden,
                    "not your conversation",
                ));
            }
        }
        let store = self.archive_or_refuse()?;
        let site = &p.site;
        let dir = self.directory(site);
        let Some(a) = dir
            .actions
            .get(action)
            .filter(|a| a.applies_to(&meta.snapshot.queue))
        else {
            return Err(ServiceError::refuse(
                ErrorCode::NotFound,
                "no such action for this conversation",
            ));
        };
        let c = self.conversation(p, conv).await?;
        let mut messages = self
            .messages_after(site, conv, 0, ACTION_MESSAGES + 1)
            .await?;
        let cut = messages.len() > ACTION_MESSAGES;
        messages.truncate(ACTION_MESSAGES);
        let now = now_ms();
        let id = event_id(
            site,
            &format!(
                "action:{}:{conv}:{now}:{}",
                a.id,
                crate::directory::random_hex(4)
            ),
        );
        let event = serde_json::json!({
            "id": id, "type": "action", "ts": now, "site": site.as_str(),
            "data": {
                "action": {"id": a.id, "name": a.name},
                "by": {"id": p.id(), "name": p.name.as_deref().unwrap_or(p.id()), "role": p.role()},
                "conversation": c,
                "messages": messages,
                "messages_cut": cut,
            },
        });
        let job = Job::Action {
            conv: conv.to_string(),
            event,
        };
        let d = delivery(
            site.as_str(),
            "action",
            format!("ac:{}:{id}", a.id),
            &a.id,
            &job,
            now,
        );
        store.add_deliveries(&[d], now).await?;
        self.deliveries_due.notify_one();
        tracing::info!(site = %site, conv = %conv, action = %a.id, by = p.id(), "action queued");
        Ok(id)
    }

    /// One call of an action: to its URL and with its secret as they are now; a 2xx answer's
    /// note is kept on the conversation.
    pub(super) async fn call_action(
        &self,
        site: &SiteId,
        action: &str,
        conv: &str,
        event: &serde_json::Value,
    ) -> (Outcome, Option<u16>) {
        let dir = self.directory(site);
        let Some(a) = dir.actions.get(action) else {
            return (Outcome::Fail("the action was deleted".into()), None);
        };
        if !a.active {
            return (Outcome::Fail("the action was turned off".into()), None);
        }
        if !crate::webhook::host_allowed(&self.cfg.webhook_hosts, &a.url) {
            return (
                Outcome::Fail("the action's host is not allowed (GATEWAY_WEBHOOK_HOSTS)".into()),
                None,
            );
        }
        let (outcome, status, body) = self.post_signed(&a.url, &a.secret, event).await;
        let Outcome::Done = outcome else {
            return (outcome, status);
        };
        let (text, link) = note_of(&a.name, &body);
        let cmd = Command::Note {
            conv: ConvId(conv.to_owned()),
            by_id: a.id.clone(),
            by: a.name.clone(),
            text,
            link,
        };
        match self.apply(site, cmd).await {
            Ok(_) => (Outcome::Done, status),
            // Closed meanwhile: the receiver has the call; there is no open conversation to
            // show its note on.
            Err(ServiceError::Rejected(r)) if r.code == ErrorCode::NotFound => {
                tracing::info!(site = %site, conv, action, "action answered after the conversation closed");
                (Outcome::Done, status)
            }
            // The engine is down: call again later, under the same id.
            Err(e) => (
                Outcome::Retry(format!("the answer's note was not kept: {e}")),
                status,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_makes_a_note_with_a_safe_link() {
        let (t, l) = note_of(
            "Create case",
            br#"{"note":"Case 42\nopened","link":"https://crm.example/c/42"}"#,
        );
        assert_eq!(t, "Case 42 opened");
        assert_eq!(l.as_deref(), Some("https://crm.example/c/42"));
        let (t, l) = note_of("Create case", br#"{"link":"javascript:alert(1)"}"#);
        assert_eq!(t, "Create case");
        assert_eq!(l, None);
        let (t, l) = note_of("Create case", b"not json");
        assert_eq!((t.as_str(), l), ("Create case", None));
        let long = format!(r#"{{"note":"{}"}}"#, "x".repeat(5000));
        assert_eq!(note_of("a", long.as_bytes()).0.chars().count(), MAX_NOTE);
    }
}
