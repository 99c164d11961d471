//! Conversations as their participants use them: a visitor starts one (or gets the open one
//! back), anyone in it sends, reads history, types and reports what they read; a visitor adds
//! contact details; either side closes it; operators keep drafts.

use std::collections::BTreeMap;

use super::authz::{self, Access};
use super::transitions::actor;
use super::{truncate, user_channel, Engine, Gateway, ServiceError};
use crate::auth::Principal;
use crate::bus::{Audience, BusMsg, Channel, ConnRef};
use crate::clock::now_ms;
use crate::core::{Command, ConvId, Outcome, QueueId, Reply, SiteId, TimerKind, VisitorProfile};
use crate::engine::{AppendOutcome, AppendRefusal, Appended, HistoryPage, NewMessage};
use crate::hub::{ConnShared, Counted};
use crate::metrics as m;
use crate::protocol::{
    Author, ConvState, Conversation, ErrorCode, Msg, Preview, ReadMarks, Role, ServerFrame,
    MAX_CID_LEN,
};

const HISTORY_MAX: usize = 200;
const PREVIEW_MAX: usize = 200;
const DRAFT_MAX: usize = 8000;

impl<E: Engine> Gateway<E> {
    /// A visitor starts a conversation, or gets their open one back. A new conversation's
    /// presence counts the connection `conn` it was started from.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        p: &Principal,
        conn: Option<&ConnShared>,
        queue: Option<QueueId>,
        mut profile: VisitorProfile,
        previous: Option<ConvId>,
        offline: bool,
    ) -> Result<Conversation, ServiceError> {
        let visitor = authz::visitor(p, "only visitors start conversations")?;
        if profile.name.is_none() {
            profile.name = p.name.clone();
        }
        let latest = match self.engine.visitor_latest(&p.site, visitor).await? {
            Some(c) => self.engine.meta(&c).await?.map(|m| (c, m.state)),
            None => None,
        };
        // A start that only returns the open conversation costs nothing; every other one,
        // however it comes (a `start`, or a message into a closed conversation), counts
        // against the visitor's and the address's limits.
        if !latest
            .as_ref()
            .is_some_and(|(_, state)| *state != ConvState::Closed)
        {
            let ip = profile
                .preview
                .as_ref()
                .and_then(|pr| pr.ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            if self.abuse.start(ip, &p.site, visitor).is_err() {
                return Err(ServiceError::refuse(
                    ErrorCode::RateLimited,
                    "too many conversations started; try again later",
                ));
            }
        }
        let previous = match previous {
            Some(prev) => Some(prev),
            None => latest
                .filter(|(_, state)| *state == ConvState::Closed)
                .map(|(c, _)| c),
        };
        // The connection is noted as counted for the new conversation before it exists, so
        // that its attach (an effect of the start) does not count it a second time; put back
        // if the start made none.
        let id = super::new_conv_id();
        let before = conn.map(|c| {
            let before = c.counted();
            c.set_counted(Some(Counted {
                life: self.life(),
                conv: Some(id.clone()),
            }));
            before
        });
        let reply = self
            .apply(
                &p.site,
                Command::Start {
                    visitor: visitor.clone(),
                    node: self.life(),
                    conv: id.clone(),
                    queue,
                    profile: Box::new(profile),
                    previous,
                    offline,
                },
            )
            .await;
        if let (Some(c), Some(before)) = (conn, before) {
            if !matches!(&reply, Ok(Reply::Conv(new)) if new.id == id.as_str()) {
                c.set_counted(before);
            }
        }
        match reply? {
            Reply::Conv(c) => {
                let mut c = self.for_visitor(*c);
                c.last_seq = self.engine.last_seq(&ConvId(c.id.clone())).await?;
                Ok(c)
            }
            _ => Err(ServiceError::refuse(
                ErrorCode::Conflict,
                "conversation not started",
            )),
        }
    }

    /// Stores a message from `p`. A visitor writing into their closed conversation gets a new
    /// conversation linked to it; the returned message says where it went.
    ///
    /// The append itself authorises the author (site, participant, state), so a message costs
    /// one engine round trip.
    pub async fn send(
        &self,
        p: &Principal,
        conn: Option<&ConnShared>,
        conv: &ConvId,
        cid: String,
        text: String,
    ) -> Result<Msg, ServiceError> {
        if cid.is_empty() || cid.chars().count() > MAX_CID_LEN {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "cid must be 1 to 64 characters",
            ));
        }
        self.check_text(&text)?;
        let author = self.author(p);
        let mut target = conv.clone();
        let mut reopened = false;
        loop {
            let out = self
                .engine
                .append(NewMessage {
                    site: p.site.clone(),
                    conv: target.clone(),
                    cid: Some(cid.clone()),
                    from: author.clone(),
                    text: text.clone(),
                    ts: now_ms(),
                    code: None,
                    args: None,
                })
                .await?;
            let refusal = match out {
                AppendOutcome::Duplicate(m) => return Ok(m),
                AppendOutcome::Stored(a) => {
                    metrics::counter!(m::MESSAGES, "role" => p.role().as_str()).increment(1);
                    self.note_message(&p.site, &target, a.msg.seq);
                    self.note_keywords(&p.site, &target, &text);
                    if p.visitor().is_some() {
                        self.after_visitor_message(&p.site, &target, &a).await;
                    }
                    return Ok(a.msg);
                }
                AppendOutcome::Refused(r) => r,
            };
            let visitor = p.visitor();
            match (refusal, visitor) {
                (AppendRefusal::Closed, Some(v)) if !reopened => {
                    // A retry of the same cid may already sit in the visitor's new conversation.
                    if let Some(latest) = self.engine.visitor_latest(&p.site, v).await? {
                        if latest != target {
                            if let Some(m) = self.engine.meta(&latest).await? {
                                if m.state != ConvState::Closed
                                    && m.snapshot.previous.as_deref() == Some(target.as_str())
                                {
                                    target = latest;
                                    reopened = true;
                                    continue;
                                }
                            }
                        }
                    }
                    let meta = self.authorize(p, &target, Access::Read).await?;
                    let old = &meta.snapshot;
                    let profile = VisitorProfile {
                        name: old.visitor.name.clone(),
                        email: old.visitor.email.clone(),
                        phone: old.visitor.phone.clone(),
                        params: old.visitor.params.clone(),
                        preview: old.visitor.preview.clone(),
                    };
                    let c = self
                        .start(
                            p,
                            conn,
                            Some(QueueId(old.queue.clone())),
                            profile,
                            Some(target.clone()),
                            false,
                        )
                        .await?;
                    target = ConvId(c.id);
                    reopened = true;
                }
                (AppendRefusal::Closed, _) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::Conflict,
                        "conversation is closed",
                    ))
                }
                (AppendRefusal::NotFound, _) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::NotFound,
                        "no such conversation",
                    ))
                }
                (AppendRefusal::Forbidden, Some(_)) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::NotFound,
                        "no such conversation",
                    ))
                }
                (AppendRefusal::Forbidden, None) => {
                    return Err(ServiceError::refuse(
                        ErrorCode::Forbidden,
                        "you do not hold this conversation",
                    ))
                }
            }
        }
    }

    /// A message's text is not empty and fits `max_text`.
    pub(super) fn check_text(&self, text: &str) -> Result<(), ServiceError> {
        if text.trim().is_empty() {
            return Err(ServiceError::refuse(ErrorCode::BadRequest, "empty message"));
        }
        if text.len() > self.cfg.max_text {
            return Err(ServiceError::refuse(
                ErrorCode::TooLarge,
                "message too long",
            ));
        }
        Ok(())
    }

    async fn after_visitor_message(&self, site: &SiteId, conv: &ConvId, a: &Appended) {
        if a.conv_state != ConvState::Active {
            if let Err(e) = self
                .apply(site, Command::VisitorWrote { conv: conv.clone() })
                .await
            {
                tracing::warn!(error = %e, "unavailability check failed");
            }
        } else if a.started_unanswered {
            let Some(s) = self.site(site) else { return };
            if let Some(d) = s.settings().reassign_after {
                let at = a.msg.ts + d.as_millis() as u64;
                if let Err(e) = self
                    .engine
                    .set_timer(site, &TimerKind::Reassign(conv.clone()), at, true)
                    .await
                {
                    tracing::warn!(error = %e, "reassign timer not set");
                }
            }
        }
    }

    /// A page of a conversation's messages, newest last.
    pub async fn history(
        &self,
        p: &Principal,
        conv: &ConvId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ServiceError> {
        self.authorize(p, conv, Access::Read).await?;
        let limit = (limit.unwrap_or(50) as usize).clamp(1, HISTORY_MAX);
        let mut page = self.engine.history(conv, before, limit).await?;
        // The answer is one frame: a page keeps the newest messages that fit, at least one,
        // and says it is not complete, so the client asks for the rest.
        let keep = self.fitting(page.messages.iter().rev()).max(1);
        if keep < page.messages.len() {
            page.messages.drain(..page.messages.len() - keep);
            page.complete = false;
        }
        Ok(page)
    }

    /// A page of history and how far each side has read (a client that just got the
    /// conversation — a reload, a transfer — shows read receipts from them).
    pub async fn history_with_marks(
        &self,
        p: &Principal,
        conv: &ConvId,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(HistoryPage, ReadMarks), ServiceError> {
        let page = self.history(p, conv, before, limit).await?;
        let read = self
            .engine
            .summaries(std::slice::from_ref(conv))
            .await?
            .pop()
            .unwrap_or_default()
            .read;
        Ok((page, read))
    }

    /// Tells the others in the conversation that `p` is typing (not the connection `from`,
    /// whose action it is).
    pub async fn typing(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &ConvId,
        on: bool,
        preview: Option<String>,
    ) -> Result<(), ServiceError> {
        let meta = self.authorize(p, conv, Access::Read).await?;
        if let Some(op) = p.operator() {
            if meta.operator.as_ref() != Some(op) {
                return Err(ServiceError::refuse(
                    ErrorCode::Forbidden,
                    "you do not hold this conversation",
                ));
            }
        }
        let from = self.author(p);
        let ch = Channel::Conv(conv.clone());
        let preview = preview.map(|t| truncate(t, PREVIEW_MAX)).filter(|_| on);
        let frame = |preview| ServerFrame::Typing {
            conv: conv.0.clone(),
            from: from.clone(),
            on,
            preview,
        };
        if p.visitor().is_some() && preview.is_some() {
            // The sneak peek reaches staff only.
            self.engine
                .publish(
                    &ch,
                    BusMsg::frame_except(Audience::Staff, frame(preview), from_conn.clone()),
                )
                .await?;
            self.engine
                .publish(
                    &ch,
                    BusMsg::frame_except(Audience::Visitors, frame(None), from_conn),
                )
                .await?;
        } else {
            self.engine
                .publish(
                    &ch,
                    BusMsg::frame_except(Audience::All, frame(None), from_conn),
                )
                .await?;
        }
        Ok(())
    }

    /// Tells the others in the conversation what `p` has read up to.
    pub async fn read(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &ConvId,
        seq: u64,
    ) -> Result<(), ServiceError> {
        self.authorize(p, conv, Access::Read).await?;
        // Kept, so that receipts survive a reload or a transfer (`read` in snapshots).
        self.engine
            .set_read(conv, p.visitor().is_some(), seq)
            .await?;
        let frame = ServerFrame::Read {
            conv: conv.0.clone(),
            by: Author {
                role: p.role(),
                id: p.id().to_owned(),
                name: None,
            },
            seq,
        };
        self.engine
            .publish(
                &Channel::Conv(conv.clone()),
                BusMsg::frame_except(Audience::All, frame, from_conn),
            )
            .await?;
        Ok(())
    }

    /// How a principal appears as the author of messages and typing: operators without their
    /// name when the site hides operator names.
    pub(super) fn author(&self, p: &Principal) -> Author {
        let hide = p.operator().is_some()
            && self
                .site(&p.site)
                .is_some_and(|s| !s.settings().show_operator_name);
        Author {
            role: p.role(),
            id: p.id().to_owned(),
            name: if hide { None } else { p.name.clone() },
        }
    }

    /// The unavailability notice for a visitor whose message could not be stored (the
    /// engine is down), when the site sends one, in the visitor's language (`lang`) if the
    /// site has words for it.
    pub fn unavailable_notice(
        &self,
        p: &Principal,
        lang: Option<&str>,
        conv: &str,
    ) -> Option<ServerFrame> {
        p.visitor()?;
        let s = self.site(&p.site)?.settings();
        s.notify_unavailable.then(|| ServerFrame::Notice {
            conv: Some(conv.to_owned()),
            code: "unavailable".into(),
            text: s.unavailable_text.get(lang, s.language).to_owned(),
        })
    }

    /// New contact details or parameters from a visitor for their open conversation (`conv`,
    /// or their newest one); the staff see them at once (`conv` `updated`, reason `visitor`).
    pub async fn identify(
        &self,
        p: &Principal,
        conv: Option<&ConvId>,
        [name, email, phone]: [Option<String>; 3],
        params: BTreeMap<String, String>,
    ) -> Result<Conversation, ServiceError> {
        let visitor = authz::visitor(p, "only visitors identify themselves")?;
        let conv = match conv {
            Some(c) => ConvId(self.authorize(p, c, Access::Read).await?.snapshot.id),
            None => self
                .engine
                .visitor_latest(&p.site, visitor)
                .await?
                .ok_or_else(|| ServiceError::refuse(ErrorCode::NotFound, "no open conversation"))?,
        };
        let reply = self
            .apply(
                &p.site,
                Command::Identify {
                    visitor: Some(visitor.clone()),
                    conv,
                    name,
                    email,
                    phone,
                    params,
                },
            )
            .await?;
        let c = self.reply_conv(reply).await?;
        Ok(self.for_visitor(c))
    }

    /// Ends a conversation (either side); closing twice answers with the final snapshot.
    pub async fn close(
        &self,
        p: &Principal,
        conv: &ConvId,
        outcome: Option<String>,
        tags: Vec<String>,
    ) -> Result<Option<Conversation>, ServiceError> {
        let meta = self.authorize(p, conv, Access::Manage).await?;
        if p.is_staff() {
            self.check_catalogue(&p.site, outcome.as_deref(), &tags)?;
        }
        let mut closed = if meta.state == ConvState::Closed {
            meta.snapshot
        } else {
            let reply = self
                .apply(
                    &p.site,
                    Command::Close {
                        by: actor(p),
                        conv: conv.clone(),
                        outcome: outcome.map(Outcome::from),
                        tags,
                    },
                )
                .await?;
            match reply {
                Reply::Conv(c) => *c,
                _ => return Ok(None),
            }
        };
        closed.last_seq = self.engine.last_seq(conv).await?;
        Ok(Some(self.as_seen_by(p, closed)))
    }

    /// Saves an operator's draft and echoes it to their other connections.
    pub async fn draft(
        &self,
        p: &Principal,
        from_conn: ConnRef,
        conv: &ConvId,
        text: String,
    ) -> Result<(), ServiceError> {
        let op = authz::operator(p)?;
        if text.len() > DRAFT_MAX {
            return Err(ServiceError::refuse(ErrorCode::TooLarge, "draft too long"));
        }
        self.authorize(p, conv, Access::Read).await?;
        let stored = (!text.is_empty()).then(|| text.clone());
        self.engine.set_draft(&p.site, op, conv, stored).await?;
        let frame = ServerFrame::Draft {
            conv: conv.0.clone(),
            text,
        };
        self.engine
            .publish(
                &user_channel(&p.site, Role::Operator, op.as_str()),
                BusMsg::frame_except(Audience::All, frame, from_conn),
            )
            .await?;
        Ok(())
    }

    /// The most bytes of one list the gateway puts in one frame.
    pub(super) fn list_cap(&self) -> usize {
        (self.cfg.outbound_max_bytes / 4).min(super::FRAME_LIST_BYTES)
    }

    /// How many of `items`, in order, fit in one frame the gateway builds from a list
    /// (a history page, a queue listing): [`super::FRAME_LIST_BYTES`] of JSON, or a quarter of
    /// the outbound budget if less. A frame larger than the asker's budget would close it
    /// with 4008.
    pub(super) fn fitting<'a, T: serde::Serialize + 'a>(
        &self,
        items: impl Iterator<Item = &'a T>,
    ) -> usize {
        let cap = self.list_cap();
        let mut bytes = 0;
        items
            .take_while(|item| {
                bytes += serde_json::to_vec(item).map_or(0, |v| v.len());
                bytes <= cap
            })
            .count()
    }
}

/// Builds the operator-facing preview from what the browser sent at the upgrade.
pub fn preview_from(
    user_agent: Option<&str>,
    language: Option<&str>,
    country: Option<String>,
    page_url: &str,
    referrer: &str,
) -> Preview {
    let parser = woothee::parser::Parser::new();
    let (browser, os, device) = match user_agent.and_then(|ua| parser.parse(ua)) {
        Some(r) => (
            format!("{} {}", r.name, r.version).trim().to_owned(),
            r.os.to_owned(),
            r.category.to_owned(),
        ),
        None => ("unknown".into(), "unknown".into(), "unknown".into()),
    };
    Preview {
        browser,
        os,
        device,
        page_url: page_url.to_owned(),
        referrer: referrer.to_owned(),
        country,
        language: language
            .and_then(|l| l.split(',').next())
            .map(|l| l.split(';').next().unwrap_or(l).trim().to_owned())
            .filter(|l| !l.is_empty()),
        ip: None,
        device_id: None,
    }
}
