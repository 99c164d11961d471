//! Transitions: a command runs through the pure core on the site's state checked out of the
//! engine, is committed atomically (again on fresh state after a conflict), and its effects
//! are carried out in order — published, appended, recorded. An effect the engine could not
//! take is retried in the background: the state already moved.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, Gateway, ServiceError};
use crate::archive::{ConvRecord, OperatorRecord};
use crate::auth::{Principal, User};
use crate::bus::{Audience, BusMsg, Channel};
use crate::clock::now_ms;
use crate::core::{
    self, Actor, Command, ConvId, ConvUpdate, Ctx, Effect, Participant, Reason, Reply, SiteId,
    TimerKind, VisitorId,
};
use crate::engine::{AppendOutcome, ConvMeta, EngineError, NewMessage, SiteTx};
use crate::metrics as m;
use crate::outbound::Outbound;
use crate::outbox::OutboxEntry;
use crate::protocol::{Author, ConvEvent, Conversation, ErrorCode, Role, ServerFrame};

impl<E: Engine> Gateway<E> {
    /// Runs one command through the core atomically and carries out its effects.
    pub(super) async fn apply(&self, site: &SiteId, cmd: Command) -> Result<Reply, ServiceError> {
        let s = self.site_or_refuse(site)?;
        loop {
            let mut tx = self.engine.begin(site).await?;
            let settings = s.settings();
            let dir = s.directory.read().clone();
            let lines = s.line_settings.read().clone();
            let ctx = Ctx {
                settings: &settings,
                queues: &dir.lines,
                lines: &lines,
                now: now_ms(),
            };
            let now = ctx.now;
            let (reply, effects) = core::handle(tx.state(), ctx, cmd.clone())?;
            debug_assert!(core::check_invariants(tx.state(), &settings).is_ok());
            let (timers, effects) = split_timers(effects);
            let touched = tx.state().is_touched();
            let outbox = if self.archive.is_some() {
                outbox_entries(site, tx.state().version, &effects, now)
            } else {
                Vec::new()
            };
            match tx.commit(&timers, &outbox).await {
                Ok(()) => {
                    if touched {
                        s.changed();
                    }
                    // The effects go out in commit order (on this node): their turn is
                    // taken while the state is still held, and the state is let go before
                    // they run, so that the site's next transition commits meanwhile
                    // instead of waiting for these round trips.
                    let version = tx.state().version;
                    let turn = s.effects.clone().lock_owned().await;
                    drop(tx);
                    self.execute(site, version, effects).await;
                    drop(turn);
                    return Ok(reply);
                }
                Err(EngineError::Conflict) => {
                    metrics::counter!(m::TX_CONFLICTS).increment(1);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The conversation of a transition's reply, with its `last_seq`.
    pub(super) async fn reply_conv(&self, reply: Reply) -> Result<Conversation, ServiceError> {
        match reply {
            Reply::Conv(mut c) => {
                c.last_seq = self.engine.last_seq(&ConvId(c.id.clone())).await?;
                Ok(*c)
            }
            _ => Err(ServiceError::refuse(
                ErrorCode::Conflict,
                "no conversation in reply",
            )),
        }
    }

    /// Carries out a committed transition's effects in order. One that fails (the engine
    /// hiccuped) is retried in the background: the state moved, and a lost conversation
    /// record or membership would leave the conversation stuck.
    async fn execute(&self, site: &SiteId, version: u64, effects: Vec<Effect>) {
        // System messages get a cid unique to this transition, so a retry stores them once.
        let salt: u32 = {
            use rand::Rng;
            rand::rng().random()
        };
        for (i, e) in effects.into_iter().enumerate() {
            let cid =
                matches!(e, Effect::System { .. }).then(|| format!("sys.{version}.{salt:x}.{i}"));
            if let Err(err) = self
                .execute_one(site, version, e.clone(), cid.clone())
                .await
            {
                err.count();
                tracing::warn!(site = %site, error = %err, kind = err.kind(), "effect not carried out yet; retrying");
                self.retries.push(Retry {
                    site: site.clone(),
                    version,
                    effect: e,
                    cid,
                    attempts: 0,
                });
            }
        }
    }

    /// Retries effects that failed, with backoff, for about two minutes each.
    pub async fn run_retries(self: Arc<Self>) {
        loop {
            let batch = self.retries.wait().await;
            let mut failed = Vec::new();
            for mut r in batch {
                match self
                    .execute_one(&r.site, r.version, r.effect.clone(), r.cid.clone())
                    .await
                {
                    Ok(()) => {}
                    Err(e) if r.attempts >= RETRY_ATTEMPTS => {
                        tracing::error!(site = %r.site, error = %e, effect = ?r.effect, "effect given up");
                    }
                    Err(_) => {
                        r.attempts += 1;
                        failed.push(r);
                    }
                }
            }
            let any = !failed.is_empty();
            for r in failed {
                self.retries.push(r);
            }
            if any {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    async fn execute_one(
        &self,
        site: &SiteId,
        version: u64,
        e: Effect,
        cid: Option<String>,
    ) -> Result<(), EngineError> {
        match e {
            Effect::Conv {
                event,
                mut conv,
                reason,
            } => {
                let id = ConvId(conv.id.clone());
                conv.last_seq = self.engine.last_seq(&id).await?;
                if matches!(event, ConvEvent::Queued | ConvEvent::Reopened) && conv.last_seq == 0 {
                    self.engine
                        .set_visitor_latest(site, &VisitorId(conv.visitor.id.clone()), &id)
                        .await?;
                }
                self.engine
                    .put_meta(&id, ConvMeta::from_snapshot(&conv), version)
                    .await?;
                self.publish_conv(&id, event, &conv, reason).await
            }
            Effect::Queue { queue } => {
                self.listings.mark(site, queue);
                Ok(())
            }
            Effect::Operator {
                id,
                name,
                status,
                online,
                load,
                supervisor,
            } => {
                let frame = ServerFrame::Operator {
                    id: id.0,
                    name,
                    status,
                    online,
                    load,
                    supervisor,
                };
                self.engine
                    .publish(
                        &Channel::Staff(site.clone()),
                        BusMsg::frame(Audience::Staff, frame),
                    )
                    .await
            }
            Effect::Offer {
                op,
                mut conv,
                expires_at,
            } => {
                conv.last_seq = self.engine.last_seq(&ConvId(conv.id.clone())).await?;
                let frame = ServerFrame::Offer { conv, expires_at };
                self.engine
                    .publish(
                        &super::user_channel(site, Role::Operator, op.as_str()),
                        BusMsg::frame(Audience::All, frame),
                    )
                    .await
            }
            Effect::Attach { conv, who, update } => {
                let after_seq = self.engine.last_seq(&conv).await?;
                let frame = update.map(|u| self.member_frame(&who, u, after_seq));
                self.engine
                    .publish(
                        &participant_channel(site, &who),
                        BusMsg::Attach {
                            conv,
                            frame,
                            after_seq,
                        },
                    )
                    .await
            }
            Effect::Detach { conv, who, update } => {
                let last_seq = match update {
                    Some(_) => self.engine.last_seq(&conv).await?,
                    None => 0,
                };
                let frame = update.map(|u| self.member_frame(&who, u, last_seq));
                self.engine
                    .publish(
                        &participant_channel(site, &who),
                        BusMsg::Detach { conv, frame },
                    )
                    .await
            }
            Effect::System { conv, note } => {
                let lang = self
                    .site(site)
                    .map(|s| s.settings().language)
                    .unwrap_or_default();
                let (code, args) = crate::i18n::note_code(&note);
                let out = self
                    .engine
                    .append(NewMessage {
                        site: site.clone(),
                        conv,
                        cid,
                        from: system_author(),
                        text: crate::i18n::note_text(&note, lang),
                        ts: now_ms(),
                        code: Some(code.to_owned()),
                        args: (!args.is_empty()).then_some(args),
                    })
                    .await?;
                match out {
                    AppendOutcome::Refused(r) => tracing::warn!(?r, "system message refused"),
                    AppendOutcome::Stored(a) => {
                        self.note_message(site, &ConvId(a.msg.conv.clone()), a.msg.seq)
                    }
                    AppendOutcome::Duplicate(_) => {}
                }
                Ok(())
            }
            Effect::Notice { conv, code, text } => {
                let frame = ServerFrame::Notice {
                    conv: Some(conv.0.clone()),
                    code: code.to_owned(),
                    text,
                };
                self.engine
                    .publish(
                        &Channel::Conv(conv),
                        BusMsg::frame(Audience::Visitors, frame),
                    )
                    .await
            }
            // Committed with the state (see `apply`).
            Effect::SetTimer { .. } | Effect::CancelTimer { .. } => Ok(()),
        }
    }

    /// The `conv` frame a joining or leaving participant receives directly.
    fn member_frame(&self, who: &Participant, u: ConvUpdate, last_seq: u64) -> Arc<Outbound> {
        let mut conv = *u.conv;
        conv.last_seq = last_seq;
        if matches!(who, Participant::Visitor(_)) {
            conv = self.for_visitor(conv);
        }
        Outbound::new(ServerFrame::Conv {
            event: u.event,
            conv: Box::new(conv),
            reason: u.reason.map(|r| r.to_string()),
        })
    }

    /// Publishes a `conv` event: the full snapshot to staff, a trimmed one to the visitor.
    async fn publish_conv(
        &self,
        id: &ConvId,
        event: ConvEvent,
        conv: &Conversation,
        reason: Option<Reason>,
    ) -> Result<(), EngineError> {
        let reason = reason.map(|r| r.to_string());
        let ch = Channel::Conv(id.clone());
        let staff = ServerFrame::Conv {
            event,
            conv: Box::new(conv.clone()),
            reason: reason.clone(),
        };
        self.engine
            .publish(&ch, BusMsg::frame(Audience::Staff, staff))
            .await?;
        let visitor = ServerFrame::Conv {
            event,
            conv: Box::new(self.for_visitor(conv.clone())),
            reason,
        };
        self.engine
            .publish(&ch, BusMsg::frame(Audience::Visitors, visitor))
            .await
    }

    /// What a visitor may see of their own conversation.
    pub fn for_visitor(&self, mut c: Conversation) -> Conversation {
        c.visitor.preview = None;
        c.visitor.params.clear();
        c.visitor.email = None;
        c.visitor.phone = None;
        c.draft = None;
        c.notes.clear();
        c.last_message = None;
        c.activity = None;
        let show = self
            .site(&SiteId(c.site.clone()))
            .map(|s| s.settings().show_operator_name)
            .unwrap_or(true);
        if !show {
            if let Some(o) = &mut c.operator {
                o.name = String::new();
            }
        }
        c
    }

    /// A conversation as `p` may see it: trimmed for a visitor.
    pub(super) fn as_seen_by(&self, p: &Principal, c: Conversation) -> Conversation {
        if p.visitor().is_some() {
            self.for_visitor(c)
        } else {
            c
        }
    }
}

/// A transition's timer changes, the last one per timer (so sets and cancels are disjoint),
/// and its other effects.
fn split_timers(effects: Vec<Effect>) -> (Vec<(TimerKind, Option<core::Millis>)>, Vec<Effect>) {
    let mut timers: Vec<(TimerKind, Option<core::Millis>)> = Vec::new();
    let mut rest = Vec::with_capacity(effects.len());
    for e in effects {
        let (kind, at) = match e {
            Effect::SetTimer { kind, at } => (kind, Some(at)),
            Effect::CancelTimer { kind } => (kind, None),
            other => {
                rest.push(other);
                continue;
            }
        };
        timers.retain(|(k, _)| k != &kind);
        timers.push((kind, at));
    }
    (timers, rest)
}

/// What a committed transition leaves for the archive: each conversation event with its
/// snapshot, each operator's new status. Keys are unique to the transition, so an entry
/// handed out twice stores its event once.
fn outbox_entries(
    site: &SiteId,
    version: u64,
    effects: &[Effect],
    now: core::Millis,
) -> Vec<OutboxEntry> {
    let salt: u32 = {
        use rand::Rng;
        rand::rng().random()
    };
    let word = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    effects
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Effect::Conv {
                event,
                conv,
                reason,
            } => Some(OutboxEntry::Conv(Box::new(ConvRecord {
                version,
                key: format!("{version}.{salt:08x}.{i}"),
                event: word(serde_json::to_value(event)),
                reason: reason.as_ref().map(|r| r.to_string()),
                ts: now,
                conv: (**conv).clone(),
            }))),
            Effect::Operator {
                id,
                name,
                status,
                online,
                ..
            } => Some(OutboxEntry::Operator(OperatorRecord {
                site: site.clone(),
                operator: id.to_string(),
                name: name.clone(),
                status: word(serde_json::to_value(status)),
                online: *online,
                ts: now,
            })),
            _ => None,
        })
        .collect()
}

/// An effect to carry out again.
struct Retry {
    site: SiteId,
    version: u64,
    effect: Effect,
    cid: Option<String>,
    attempts: u32,
}

/// How many times a failed effect is retried (about two minutes with the pauses).
const RETRY_ATTEMPTS: u32 = 240;

/// Effects waiting to be carried out again.
///
/// Not capped: an entry is an effect of a transition that *was* committed (the engine said
/// yes, then failed on what followed), so it grows only with what was committed just before
/// an outage, and each entry leaves after [`RETRY_ATTEMPTS`]. Dropping one instead would
/// leave a user without an event their state already says they got.
#[derive(Default)]
pub(super) struct Retries {
    queue: parking_lot::Mutex<Vec<Retry>>,
    ready: tokio::sync::Notify,
}

impl Retries {
    fn push(&self, r: Retry) {
        self.queue.lock().push(r);
        self.ready.notify_one();
    }

    async fn wait(&self) -> Vec<Retry> {
        loop {
            let batch = std::mem::take(&mut *self.queue.lock());
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }
}

/// The channel of a participant's connections.
fn participant_channel(site: &SiteId, p: &Participant) -> Channel {
    match p {
        Participant::Visitor(v) => super::user_channel(site, Role::Visitor, v.as_str()),
        Participant::Operator(o) => super::user_channel(site, Role::Operator, o.as_str()),
    }
}

/// Who the core is told did something.
pub(super) fn actor(p: &Principal) -> Actor {
    match &p.user {
        User::Visitor(v) => Actor::Visitor(v.clone()),
        User::Operator(o) => Actor::Operator(o.clone()),
        User::Supervisor(s) => Actor::Supervisor(s.clone()),
        User::Bot(b) => Actor::Api(p.name.clone().unwrap_or_else(|| b.to_string())),
    }
}

fn system_author() -> Author {
    Author {
        role: Role::System,
        id: "system".into(),
        name: None,
    }
}
