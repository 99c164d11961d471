//! What the HTTP API adds to the sockets' use cases: a conversation's messages read through
//! the archive and then the live log (so that what was just written is there), conversations
//! started with a known visitor, the details and tags of a conversation changed by the staff
//! or an integration (live while it is open, in the archive after), and erasure.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::authz::{self, Access};
use super::{Engine, Gateway, ServiceError};
use crate::archive::{ConvFilter, ConvPatch, Patched, Store};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::core::{Command, ConvId, OperatorId, QueueId, SiteId, VisitorId, VisitorProfile};
use crate::engine::{AppendOutcome, NewMessage};
use crate::protocol::{Author, ConvState, Conversation, ErrorCode, Msg, Role};

/// The most messages a transcript holds.
pub const WHOLE_MAX: usize = 100_000;

/// New details of a conversation (`None`: unchanged; params merged, an empty value removes).
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Replaces the tags.
    pub tags: Option<Vec<String>>,
}

/// What a changed conversation is now: live (open) or as the archive keeps it (closed).
#[derive(Debug)]
pub enum Changed {
    Live(Box<Conversation>),
    Archived(Box<crate::archive::ConversationDetail>),
}

impl<E: Engine> Gateway<E> {
    /// The archive, or `unavailable` when none is configured.
    pub fn archive_or_refuse(&self) -> Result<&Arc<dyn Store>, ServiceError> {
        self.archive.as_ref().ok_or(ServiceError::refuse(
            ErrorCode::Unavailable,
            "this gateway keeps no archive (see GATEWAY_DATABASE_URL)",
        ))
    }

    /// Up to `limit` messages of a conversation of `site` after `after`, in `seq` order: what
    /// the archive holds, then what the live log holds beyond it (written moments ago).
    pub async fn messages_after(
        &self,
        site: &SiteId,
        conv: &ConvId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Msg>, ServiceError> {
        let archive = self.archive_or_refuse()?;
        let mut out = archive.messages(site, conv.as_str(), after, limit).await?;
        if out.len() < limit {
            let live_site = self.engine.meta(conv).await?.map(|m| m.site);
            if live_site.as_ref() == Some(site) {
                let from = out.last().map_or(after, |m| m.seq);
                out.extend(self.engine.read_log(conv, from, limit - out.len()).await?);
            }
        }
        Ok(out)
    }

    /// Every message of a conversation (authorised by the caller), in `seq` order, up to
    /// [`WHOLE_MAX`]: through the archive when there is one, else what the live log holds.
    pub async fn whole_conversation(
        &self,
        site: &SiteId,
        conv: &ConvId,
    ) -> Result<Vec<Msg>, ServiceError> {
        const PAGE: usize = 500;
        let mut out: Vec<Msg> = Vec::new();
        loop {
            let after = out.last().map_or(0, |m| m.seq);
            let page = match &self.archive {
                Some(_) => self.messages_after(site, conv, after, PAGE).await?,
                None => self.engine.read_log(conv, after, PAGE).await?,
            };
            let n = page.len();
            out.extend(page);
            if n < PAGE || out.len() >= WHOLE_MAX {
                return Ok(out);
            }
        }
    }

    /// A conversation of `site` as the live engine has it (open, or closed a short while).
    pub async fn live_conversation(
        &self,
        site: &SiteId,
        conv: &ConvId,
    ) -> Result<Option<Conversation>, ServiceError> {
        let Some(meta) = self.engine.meta(conv).await?.filter(|m| &m.site == site) else {
            return Ok(None);
        };
        let mut c = meta.snapshot;
        c.last_seq = self.engine.last_seq(conv).await?;
        Ok(Some(c))
    }

    /// Whether a conversation of `site` is open in the live engine.
    pub async fn is_open(&self, site: &SiteId, conv: &ConvId) -> Result<bool, ServiceError> {
        Ok(self
            .engine
            .meta(conv)
            .await?
            .is_some_and(|m| &m.site == site && m.state != ConvState::Closed))
    }

    /// The staff or an integration start a conversation with a known visitor, given to
    /// `operator` (present, with room) or queued, and write its first message: as the
    /// operator when there is one, else as `p` (an integration writes as a bot). The
    /// visitor's details come from `profile`, else from their latest conversation.
    pub async fn invite(
        &self,
        p: &Principal,
        visitor: VisitorId,
        queue: Option<QueueId>,
        operator: Option<OperatorId>,
        mut profile: VisitorProfile,
        text: String,
    ) -> Result<(Conversation, Msg), ServiceError> {
        authz::manager(p)?;
        self.check_text(&text)?;
        if let Some(latest) = self.engine.visitor_latest(&p.site, &visitor).await? {
            if let Some(m) = self.engine.meta(&latest).await? {
                let old = &m.snapshot.visitor;
                profile.name = profile.name.or(old.name.clone());
                profile.email = profile.email.or(old.email.clone());
                profile.phone = profile.phone.or(old.phone.clone());
            }
        }
        let reply = self
            .apply(
                &p.site,
                Command::Invite {
                    visitor,
                    conv: super::new_conv_id(),
                    queue,
                    operator,
                    profile: Box::new(profile),
                },
            )
            .await?;
        let conv = self.reply_conv(reply).await?;
        let from = match &conv.operator {
            Some(o) => Author {
                role: Role::Operator,
                id: o.id.clone(),
                name: Some(o.name.clone()),
            },
            None => self.author(p),
        };
        let id = ConvId(conv.id.clone());
        let out = self
            .engine
            .append(NewMessage {
                site: p.site.clone(),
                conv: id.clone(),
                cid: Some(format!("invite.{}", conv.id)),
                from,
                text,
                ts: now_ms(),
                code: None,
                args: None,
            })
            .await?;
        let msg = match out {
            AppendOutcome::Stored(a) => a.msg,
            AppendOutcome::Duplicate(m) => m,
            AppendOutcome::Refused(_) => {
                return Err(ServiceError::refuse(
                    ErrorCode::Conflict,
                    "the conversation closed before its first message",
                ))
            }
        };
        self.note_message(&p.site, &id, msg.seq);
        let mut conv = conv;
        conv.last_seq = msg.seq;
        Ok((conv, msg))
    }

    /// Changes a conversation's details and tags: live while it is open (everyone in it and
    /// the listings see it), in the archive once it is closed.
    pub async fn change(
        &self,
        p: &Principal,
        conv: &ConvId,
        d: Details,
    ) -> Result<Changed, ServiceError> {
        authz::manager(p)?;
        if self.is_open(&p.site, conv).await? {
            self.authorize(p, conv, Access::Manage).await?;
            let mut last = None;
            if d.name.is_some() || d.email.is_some() || d.phone.is_some() || !d.params.is_empty() {
                let reply = self
                    .apply(
                        &p.site,
                        Command::Identify {
                            visitor: None,
                            conv: conv.clone(),
                            name: d.name,
                            email: d.email,
                            phone: d.phone,
                            params: d.params,
                        },
                    )
                    .await?;
                last = Some(self.reply_conv(reply).await?);
            }
            if let Some(tags) = d.tags {
                let current = match &last {
                    Some(c) => c.tags.clone(),
                    None => self.authorize(p, conv, Access::Manage).await?.snapshot.tags,
                };
                let add: Vec<String> = tags
                    .iter()
                    .filter(|t| !current.contains(t))
                    .cloned()
                    .collect();
                let remove: Vec<String> =
                    current.into_iter().filter(|t| !tags.contains(t)).collect();
                last = Some(self.tag(p, conv, add, remove).await?);
            }
            let c = match last {
                Some(c) => c,
                None => self.authorize(p, conv, Access::Manage).await?.snapshot,
            };
            return Ok(Changed::Live(Box::new(self.as_seen_by(p, c))));
        }
        let archive = self.archive_or_refuse()?;
        let patch = ConvPatch {
            tags: d
                .tags
                .map(|t| crate::core::normalise_tags(&t))
                .transpose()?,
            name: d.name,
            email: d.email,
            phone: d.phone,
            params: d.params,
            by: p.id().to_owned(),
            ts: now_ms(),
        };
        match archive
            .patch_conversation(&p.site, conv.as_str(), &patch)
            .await?
        {
            Patched::Done(d) => Ok(Changed::Archived(d)),
            // Closed a moment ago, and not in the archive yet.
            Patched::NotFound
                if self
                    .engine
                    .meta(conv)
                    .await?
                    .is_some_and(|m| m.site == p.site) =>
            {
                Err(ServiceError::refuse(
                    ErrorCode::Conflict,
                    "the conversation is being archived; retry in a moment",
                ))
            }
            Patched::NotFound => Err(ServiceError::refuse(
                ErrorCode::NotFound,
                "no such conversation",
            )),
            // Closed live a moment ago, and its close is still on its way to the archive.
            Patched::Open => Err(ServiceError::refuse(
                ErrorCode::Conflict,
                "the conversation is being archived; retry in a moment",
            )),
        }
    }

    /// The staff's change of a conversation's parameters, while it is open and after: an
    /// operator changes only those the site's parameter definitions mark `editable`, and only
    /// in a conversation they hold or held; a supervisor any of the site's.
    pub async fn edit_params(
        &self,
        p: &Principal,
        conv: &ConvId,
        params: BTreeMap<String, String>,
    ) -> Result<Conversation, ServiceError> {
        authz::staff(p)?;
        if params.is_empty() {
            return Err(ServiceError::refuse(
                ErrorCode::BadRequest,
                "params: name at least one parameter",
            ));
        }
        if let Some(op) = p.operator() {
            let dir = self.directory(&p.site);
            if params
                .keys()
                .any(|code| !dir.params.get(code).is_some_and(|d| d.editable))
            {
                return Err(ServiceError::refuse(
                    ErrorCode::Forbidden,
                    "operators change only the parameters the site marks editable",
                ));
            }
            if !self.is_open(&p.site, conv).await? {
                let archive = self.archive_or_refuse()?;
                let held = match archive.conversation(&p.site, conv.as_str()).await? {
                    // The archive's record once it holds the close (before, it may be a
                    // snapshot from before the operator got it).
                    Some(d) if d.summary.conv.state == crate::protocol::ConvState::Closed => {
                        d.held_by(op.as_str())
                    }
                    // Closed a moment ago and not archived yet: the live record says who
                    // held it (the archive's answer below is then "retry").
                    _ => self
                        .engine
                        .meta(conv)
                        .await?
                        .is_some_and(|m| m.site == p.site && m.operator.as_ref() == Some(op)),
                };
                if !held {
                    return Err(ServiceError::refuse(
                        ErrorCode::NotFound,
                        "no such conversation",
                    ));
                }
            }
        }
        let details = Details {
            params,
            ..Details::default()
        };
        Ok(match self.change(p, conv, details).await? {
            Changed::Live(c) => *c,
            Changed::Archived(d) => d.summary.conv,
        })
    }

    /// Erases a visitor of `p`'s site: their open conversation is closed, the live engine
    /// forgets their conversations, and the archive keeps them only as counts. Returns how
    /// many conversations were touched.
    pub async fn erase_visitor(
        &self,
        p: &Principal,
        visitor: &VisitorId,
    ) -> Result<u64, ServiceError> {
        authz::manager(p)?;
        let archive = self.archive_or_refuse()?.clone();
        let mut convs: Vec<ConvId> = Vec::new();
        if let Some(latest) = self.engine.visitor_latest(&p.site, visitor).await? {
            if self.is_open(&p.site, &latest).await? {
                self.close(p, &latest, None, Vec::new()).await?;
            }
            convs.push(latest);
        }
        let filter = ConvFilter {
            visitor: Some(visitor.to_string()),
            ..ConvFilter::default()
        };
        let mut after = None;
        loop {
            let page = archive.conversations(&p.site, &filter, after, 500).await?;
            convs.extend(page.items.into_iter().map(|c| ConvId(c.conv.id)));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        convs.sort_unstable();
        convs.dedup();
        self.engine.forget_visitor(&p.site, visitor, &convs).await?;
        let n = archive
            .erase_visitor(&p.site, visitor.as_str(), now_ms())
            .await?;
        tracing::info!(site = %p.site, by = p.id(), conversations = n, "visitor erased");
        Ok(n.max(convs.len() as u64))
    }
}
