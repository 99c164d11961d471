//! A connection's life as the service sees it: authenticated at `hello`, registered with the
//! hub on its user's channels, counted in the site's presence, opened with `welcome` (its
//! conversations, the replay of what it missed, the staff lists), attached to and detached from
//! conversations, and finally taken out of the count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::authz::Access;
use super::{user_channel, Engine, Gateway, ServiceError};
use crate::auth::{Principal, User};
use crate::bus::Channel;
use crate::clock::now_ms;
use crate::core::{self, Command, ConnId, ConvId, Millis, OperatorId, Reply, SiteId};
use crate::engine::{ConvMeta, Replay, SiteTx};
use crate::hub::{ConnShared, Counted, Outbox};
use crate::protocol::{
    ClientSettings, CloseReason, ConvEvent, ConvState, Conversation, Encoding, Me, Role,
    ServerFrame,
};

/// The cursors of a `hello`: conversation id → last `seq` the client has.
pub type Cursors = BTreeMap<String, u64>;

/// Most cursors one `hello` may carry.
const MAX_CURSORS: usize = 100;

impl<E: Engine> Gateway<E> {
    /// Checks a `hello`: the token, the site, the page's origin, a visitor's ban, the cursors.
    /// On refusal, the close reason and its text.
    pub async fn authenticate(
        &self,
        token: &str,
        origin: Option<&str>,
        ip: Option<std::net::IpAddr>,
        device: Option<&str>,
        cursors: &Cursors,
    ) -> Result<Principal, (CloseReason, &'static str)> {
        let principal = self.verify_token(token).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            (CloseReason::Unauthorized, "invalid or expired token")
        })?;
        let site = self
            .site(&principal.site)
            .ok_or((CloseReason::Forbidden, "unknown site"))?;
        let principal = self.admit_staff(principal).await?;
        if !site.settings().origin_allowed(origin) {
            return Err((CloseReason::Forbidden, "origin not allowed"));
        }
        if let Some(v) = principal.visitor() {
            let ip = ip.map(|a| a.to_string());
            if self.is_banned(&principal.site, v).await
                || self.banned_in_directory(&principal.site, v, ip.as_deref(), device)
            {
                return Err((CloseReason::Forbidden, "banned"));
            }
        }
        if cursors.len() > MAX_CURSORS {
            return Err((CloseReason::Malformed, "too many cursors"));
        }
        Ok(principal)
    }

    /// A new connection of `p`: registered with the hub and listening on its user's channel
    /// (and the site's staff channel), before anything is decided for it.
    pub fn open_connection(
        &self,
        id: ConnId,
        p: &Principal,
        encoding: Encoding,
    ) -> (Arc<ConnShared>, Outbox) {
        let (conn, rx) = ConnShared::new(
            id,
            p.role(),
            encoding,
            p.queues.clone(),
            self.cfg.outbound_max_bytes,
            self.frame_cap(),
            now_ms(),
        );
        self.hub.register(conn.clone());
        for ch in own_channels(p) {
            self.hub.subscribe(conn.id, ch);
        }
        (conn, rx)
    }

    /// The connection is gone: it leaves every channel.
    pub fn close_connection(&self, conn: &ConnShared) {
        self.hub.unregister(conn.id);
    }

    /// `welcome`, the missed messages of recovered conversations, any pending offers, and
    /// the staff lists: what a connection receives first. The connection is counted in its
    /// site's presence on the way (`ConnShared::counted`): staff always, a visitor only with
    /// an open conversation.
    pub async fn welcome(
        &self,
        conn: &ConnShared,
        p: &Principal,
        cursors: Cursors,
        lang: Option<&str>,
    ) -> Result<Vec<ServerFrame>, ServiceError> {
        // The user's own channel is live before the connection counts: whatever is decided
        // for them from then on (an assignment, an offer, a visitor's new conversation)
        // reaches this socket.
        self.engine.wait_subscribed(&own_channels(p)).await?;
        if p.visitor().is_none() {
            conn.set_counted(self.connected(p).await?);
        }
        let (mut live, offers) = self.own_conversations(p).await?;
        // A browsing visitor costs no transition of the site; one with an open conversation
        // counts in its presence. One that starts after this read reaches the connection as
        // an attach, and the connection counts itself then (`count_visitor`).
        if !live.is_empty() {
            self.count_visitor(p, conn).await?;
        }
        let mut ids: Vec<ConvId> = offers.iter().map(|(id, _)| id.clone()).collect();
        // Conversations named in cursors that the principal may read are recovered too (a
        // visitor's just-closed conversation, say); visitors and supervisors also follow
        // them live, an operator only what they hold.
        for c in cursors.keys() {
            let id = ConvId(c.clone());
            if live.contains(&id) || ids.contains(&id) || c.is_empty() || c.len() > 128 {
                continue;
            }
            if self.authorize(p, &id, Access::Read).await.is_ok() {
                if p.operator().is_some() {
                    ids.push(id);
                } else {
                    live.push(id);
                }
            }
        }
        let conv_channels: Vec<Channel> = live.iter().map(|id| Channel::Conv(id.clone())).collect();
        ids.splice(0..0, live);
        for ch in &conv_channels {
            self.hub.subscribe(conn.id, ch.clone());
        }
        self.engine.wait_subscribed(&conv_channels).await?;
        let drafts = self.drafts_of(p).await?;
        let mut conversations: Vec<Conversation> = Vec::with_capacity(ids.len());
        let mut replays = Vec::new();
        for id in &ids {
            let Some(meta) = self.engine.meta(id).await? else {
                continue;
            };
            let mut c = self.snapshot_for(p, &meta, &drafts).await?;
            let mut known = c.last_seq;
            if let Some(&after) = cursors.get(id.as_str()) {
                match self.engine.replay(id, after).await? {
                    Replay::Recovered(msgs) => {
                        c.recovered = Some(true);
                        known = known.max(msgs.last().map_or(0, |m| m.seq));
                        replays.extend(msgs.into_iter().map(ServerFrame::Msg));
                    }
                    Replay::Lost => c.recovered = Some(false),
                }
            }
            // A replay after a bus outage starts from here, not from the first message.
            self.hub.note_seq(id, known);
            conversations.push(c);
        }
        // Pending offers again as `offer` frames after `welcome`: it lists them, but only an
        // offer carries its deadline, which a console needs to count down and drop it on time.
        let offered: Vec<ServerFrame> = offers
            .iter()
            .filter_map(|(id, expires_at)| {
                let c = conversations.iter().find(|c| c.id == id.as_str())?;
                Some(ServerFrame::Offer {
                    conv: Box::new(c.clone()),
                    expires_at: *expires_at,
                })
            })
            .collect();
        // `welcome` is one frame, and no frame may outgrow what the socket can write: the
        // conversations that do not fit in it follow as `conv` frames (event `updated`,
        // reason `welcome`), before anything that refers to them.
        let listed = self.fitting(conversations.iter());
        let overflow: Vec<ServerFrame> = conversations
            .split_off(listed)
            .into_iter()
            .map(|c| ServerFrame::Conv {
                event: ConvEvent::Updated,
                conv: Box::new(c),
                reason: Some("welcome".into()),
            })
            .collect();
        let mut frames = vec![ServerFrame::Welcome {
            conn: self.conn_name(conn.id),
            node: self.node.to_string(),
            me: Me {
                role: p.role(),
                id: p.id().to_owned(),
                site: p.site.to_string(),
                name: p.name.clone(),
            },
            conversations,
            settings: self.client_settings(p, lang),
        }];
        frames.extend(overflow);
        frames.extend(replays);
        frames.extend(offered);
        if p.is_staff() {
            frames.extend(self.staff_snapshot(p).await?);
        }
        Ok(frames)
    }

    /// A conversation as `p` may see it (staff: in full, with what listings leave out).
    pub async fn conversation(
        &self,
        p: &Principal,
        conv: &ConvId,
    ) -> Result<Conversation, ServiceError> {
        let meta = self.authorize(p, conv, Access::Read).await?;
        let drafts = self.drafts_of(p).await?;
        self.snapshot_for(p, &meta, &drafts).await
    }

    /// The connection follows a conversation live from `known_seq` on (what its client has).
    pub fn attach(&self, conn: &Arc<ConnShared>, conv: ConvId, known_seq: u64) {
        self.hub.attach(conn, conv, known_seq);
    }

    /// A supervisor's read-only watch of a conversation, on or off; answers with it.
    pub async fn watch(
        &self,
        p: &Principal,
        conn: &Arc<ConnShared>,
        conv: &ConvId,
        on: bool,
    ) -> Result<Conversation, ServiceError> {
        super::authz::supervisor(p)?;
        let meta = self.authorize(p, conv, Access::Read).await?;
        let c = self.snapshot_for(p, &meta, &BTreeMap::new()).await?;
        if on {
            self.hub.attach(conn, conv.clone(), c.last_seq);
        } else {
            self.hub.unsubscribe(conn.id, &Channel::Conv(conv.clone()));
        }
        Ok(c)
    }

    /// Counts a visitor's connection in the presence of their open conversation, unless it
    /// counts for it already; nothing for a visitor without one.
    pub async fn count_visitor(
        &self,
        p: &Principal,
        conn: &ConnShared,
    ) -> Result<(), ServiceError> {
        let Some(visitor) = p.visitor() else {
            return Ok(());
        };
        let life = self.life();
        let counted = conn
            .counted()
            .filter(|c| c.life == life)
            .and_then(|c| c.conv);
        let reply = self
            .apply(
                &p.site,
                Command::VisitorConnected {
                    visitor: visitor.clone(),
                    node: life.clone(),
                    counted,
                },
            )
            .await?;
        if let Reply::Counted(conv) = reply {
            conn.set_counted(Some(Counted {
                life,
                conv: Some(conv),
            }));
        }
        Ok(())
    }

    /// Counts a new staff connection of `p` in its site's presence; returns where it was
    /// counted, which its disconnect must name.
    async fn connected(&self, p: &Principal) -> Result<Option<Counted>, ServiceError> {
        let life = self.life();
        let cmd = match &p.user {
            User::Operator(op) => Command::OperatorConnected {
                op: op.clone(),
                node: life.clone(),
                name: p.name.clone().unwrap_or_else(|| op.to_string()),
                max_chats: p.max_chats,
                queues: p.queues.clone(),
            },
            // Visitors count with their conversation (`count_visitor`).
            User::Visitor(_) => return Ok(None),
            // Present (never routed to), so that they can take conversations over.
            User::Supervisor(s) => Command::SupervisorConnected {
                op: OperatorId(s.0.clone()),
                node: life.clone(),
                name: p.name.clone().unwrap_or_else(|| s.to_string()),
            },
            // Integrations call the HTTP API; they hold no socket.
            User::Bot(_) => return Ok(None),
        };
        self.apply(&p.site, cmd).await?;
        Ok(Some(Counted { life, conv: None }))
    }

    /// Takes a connection out of its site's presence where it was counted, retrying in the
    /// background until the engine takes it: a disconnect that is never recorded would leave
    /// the user online for good.
    pub async fn disconnected(self: &Arc<Self>, p: &Principal, counted: Counted) {
        let Counted { life, conv } = counted;
        let cmd = match &p.user {
            User::Operator(op) => Command::OperatorDisconnected {
                op: op.clone(),
                node: life,
            },
            User::Visitor(v) => {
                let Some(conv) = conv else {
                    return;
                };
                Command::VisitorDisconnected {
                    visitor: v.clone(),
                    node: life,
                    conv,
                }
            }
            User::Supervisor(s) => Command::OperatorDisconnected {
                op: OperatorId(s.0.clone()),
                node: life,
            },
            User::Bot(_) => return,
        };
        if let Err(e) = self.apply(&p.site, cmd.clone()).await {
            tracing::warn!(error = %e, "disconnect not recorded yet; retrying");
            let gw = self.clone();
            let site = p.site.clone();
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(200);
                loop {
                    tokio::time::sleep(pause).await;
                    match gw.apply(&site, cmd.clone()).await {
                        Ok(_) | Err(ServiceError::Rejected(_)) => return,
                        Err(_) => pause = (pause * 2).min(Duration::from_secs(5)),
                    }
                }
            });
        }
    }

    /// The settings a client sees in `welcome`, the notice in the reader's language (`lang`).
    fn client_settings(&self, p: &Principal, lang: Option<&str>) -> ClientSettings {
        self.client_settings_of(&p.site, p.role(), lang)
    }

    /// A site's settings as a client of `role` sees them.
    pub(super) fn client_settings_of(
        &self,
        site: &SiteId,
        role: Role,
        lang: Option<&str>,
    ) -> ClientSettings {
        // A site deleted a moment ago answers with the defaults (its clients are being
        // closed).
        let (s, dir) = match self.site(site) {
            Some(site) => (site.settings(), site.directory.read().clone()),
            None => Default::default(),
        };
        let mut out = ClientSettings {
            routing: s.routing.as_str().to_owned(),
            widget_when_away: match s.widget_when_away {
                core::settings::WhenAway::Busy => "busy".into(),
                core::settings::WhenAway::Offline => "offline".into(),
            },
            show_operator_name: s.show_operator_name,
            ping_interval_ms: self.cfg.ping_interval.as_millis() as u64,
            unavailable_text: s.unavailable_text.get(lang, s.language).to_owned(),
            language: Some(s.language.as_str().to_owned()),
            queues: dir.lines.iter().map(|q| q.0.clone()).collect(),
            canned: Vec::new(),
            tags: Vec::new(),
            outcomes: Vec::new(),
            params: Vec::new(),
            actions: Vec::new(),
            mail_transcripts: s.visitor_transcripts && self.mailer.is_some(),
        };
        if role.is_staff() {
            staff_catalogues(&s, &dir, &mut out);
        }
        out
    }

    /// The conversations a connection attaches to at `hello`.
    ///
    /// Only the ones a connection attaches to live are listed first (`.0`): a visitor's own,
    /// an operator's held ones. An operator's pending offers (`.1`) are shown in `welcome`
    /// without a live attachment: the offer may go elsewhere, and another operator's chat is
    /// not theirs to follow; each comes with its deadline, which `welcome` does not carry.
    async fn own_conversations(
        &self,
        p: &Principal,
    ) -> Result<(Vec<ConvId>, Vec<(ConvId, Millis)>), ServiceError> {
        match &p.user {
            User::Visitor(v) => {
                let latest = self.engine.visitor_latest(&p.site, v).await?;
                let mut out = Vec::new();
                if let Some(c) = latest {
                    if let Some(meta) = self.engine.meta(&c).await? {
                        if meta.state != ConvState::Closed {
                            out.push(c);
                        }
                    }
                }
                Ok((out, Vec::new()))
            }
            User::Bot(_) => Ok((Vec::new(), Vec::new())),
            User::Operator(_) | User::Supervisor(_) => {
                // A supervisor holds the conversations they took over.
                let op = OperatorId(p.id().to_owned());
                let mut tx = self.engine.begin(&p.site).await?;
                let st = tx.state();
                Ok(match st.operators.get(&op) {
                    Some(o) => (
                        o.convs.iter().cloned().collect(),
                        o.offers
                            .iter()
                            .filter_map(|id| {
                                let expires = st.convs.get(id)?.offer_expires?;
                                Some((id.clone(), expires))
                            })
                            .collect(),
                    ),
                    None => (Vec::new(), Vec::new()),
                })
            }
        }
    }

    /// A conversation as this principal may see it, with `last_seq` and, for operators, draft.
    async fn snapshot_for(
        &self,
        p: &Principal,
        meta: &ConvMeta,
        drafts: &BTreeMap<ConvId, String>,
    ) -> Result<Conversation, ServiceError> {
        let id = ConvId(meta.snapshot.id.clone());
        let mut c = meta.snapshot.clone();
        let summary = self
            .engine
            .summaries(std::slice::from_ref(&id))
            .await?
            .pop()
            .unwrap_or_default();
        c.last_seq = summary.last_seq;
        c.read = Some(summary.read);
        c.last_message = summary.last_visitor;
        if p.visitor().is_some() {
            c = self.for_visitor(c);
        } else {
            c.draft = drafts.get(&id).cloned();
        }
        Ok(c)
    }

    async fn drafts_of(&self, p: &Principal) -> Result<BTreeMap<ConvId, String>, ServiceError> {
        let Some(op) = p.operator() else {
            return Ok(BTreeMap::new());
        };
        Ok(self.engine.drafts(&p.site, op).await?.into_iter().collect())
    }
}

/// The channels a connection listens on from its first moment: its user's, and for staff
/// the site's staff channel.
fn own_channels(p: &Principal) -> Vec<Channel> {
    let mut chs = vec![user_channel(&p.site, p.role(), p.id())];
    if p.role() != Role::Visitor {
        chs.push(Channel::Staff(p.site.clone()));
    }
    if p.is_supervisor() {
        // A supervisor is present as an operator (to take conversations over): what is
        // decided for that operator — attach, detach — reaches their connections.
        chs.push(user_channel(&p.site, Role::Operator, p.id()));
    }
    chs
}

/// What only staff are sent with the settings: canned responses (the settings' own, then the
/// directory's, per line), and the directory's active tags, active outcomes, parameter
/// labels and active actions.
fn staff_catalogues(
    s: &crate::core::Settings,
    dir: &crate::directory::Directory,
    out: &mut ClientSettings,
) {
    out.canned = s
        .canned
        .iter()
        .cloned()
        .chain(dir.canned.values().map(|c| crate::protocol::Canned {
            shortcut: c.shortcut.clone(),
            text: c.text.clone(),
            queues: c.queues.clone(),
        }))
        .collect();
    out.tags = dir
        .tags
        .values()
        .filter(|t| t.active)
        .map(|t| crate::protocol::TagOption {
            name: t.name.clone(),
            color: t.color.clone(),
            text_color: t.text_color.clone(),
        })
        .collect();
    out.outcomes = dir
        .outcomes
        .values()
        .filter(|o| o.active)
        .map(|o| crate::protocol::OutcomeOption {
            id: o.id.clone(),
            name: o.name.clone(),
        })
        .collect();
    out.params = dir
        .params
        .values()
        .map(|p| crate::protocol::ParamOption {
            code: p.code.clone(),
            label: p.label.clone(),
            editable: p.editable,
            show: serde_json::to_value(p.show)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        })
        .collect();
    out.actions = dir
        .actions
        .values()
        .filter(|a| a.active)
        .map(|a| crate::protocol::ActionOption {
            id: a.id.clone(),
            name: a.name.clone(),
            queues: a.queues.clone(),
        })
        .collect();
}
