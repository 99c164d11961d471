//! What staff do: set their status; accept, decline, transfer, assign and tag conversations;
//! and what they see: the queues' waiting lists (published at most once per
//! [`LISTING_INTERVAL`] per queue and node, with the state as it is when they leave) and the
//! operator list.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::authz::{self, Access};
use super::transitions::actor;
use super::{truncate, Engine, Gateway, ServiceError};
use crate::auth::Principal;
use crate::bus::{Audience, BusMsg, Channel};
use crate::core::{self, Command, ConvId, OperatorId, QueueId, Reply, SiteId};
use crate::engine::{EngineError, SiteTx};
use crate::protocol::{
    ActivityView, ConvState, Conversation, OperatorStatus, ServerFrame, TransferTarget,
};

/// The shortest time between two listings of one queue of a site (from any node).
pub const LISTING_INTERVAL: Duration = Duration::from_millis(250);

/// Longest transfer note, in bytes.
const NOTE_MAX: usize = 500;

impl<E: Engine> Gateway<E> {
    /// An operator's routing status.
    pub async fn status(
        &self,
        p: &Principal,
        status: OperatorStatus,
    ) -> Result<OperatorStatus, ServiceError> {
        let op = authz::operator(p)?;
        let cmd = Command::SetStatus {
            op: op.clone(),
            status,
        };
        match self.apply(&p.site, cmd).await? {
            Reply::Status(s) => Ok(s),
            _ => Ok(status),
        }
    }

    /// An operator takes a conversation.
    pub async fn accept(&self, p: &Principal, conv: &ConvId) -> Result<Conversation, ServiceError> {
        let op = authz::operator(p)?.clone();
        let cmd = Command::Accept {
            op,
            conv: conv.clone(),
        };
        self.decide(p, conv, Access::Route, cmd).await
    }

    /// Declines an offer, gives back a held conversation, or passes on a queued one; answers
    /// with the conversation as it is afterwards.
    pub async fn decline(
        &self,
        p: &Principal,
        conv: &ConvId,
    ) -> Result<Conversation, ServiceError> {
        let op = authz::operator(p)?.clone();
        let cmd = Command::Decline {
            op,
            conv: conv.clone(),
        };
        self.decide(p, conv, Access::Route, cmd).await
    }

    /// Hands a conversation to another operator or queue.
    pub async fn transfer(
        &self,
        p: &Principal,
        conv: &ConvId,
        to: TransferTarget,
        note: Option<String>,
    ) -> Result<Conversation, ServiceError> {
        authz::manager(p)?;
        let cmd = Command::Transfer {
            by: actor(p),
            conv: conv.clone(),
            to,
            note: note.map(|n| truncate(n, NOTE_MAX)),
        };
        self.decide(p, conv, Access::Manage, cmd).await
    }

    /// A supervisor hands a conversation to an operator.
    pub async fn assign(
        &self,
        p: &Principal,
        conv: &ConvId,
        operator: OperatorId,
    ) -> Result<Conversation, ServiceError> {
        authz::supervisor(p)?;
        let cmd = Command::Assign {
            conv: conv.clone(),
            op: operator,
        };
        self.decide(p, conv, Access::Manage, cmd).await
    }

    /// Adds and removes a conversation's tags.
    pub async fn tag(
        &self,
        p: &Principal,
        conv: &ConvId,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Conversation, ServiceError> {
        authz::manager(p)?;
        self.check_catalogue(&p.site, None, &add)?;
        let cmd = Command::Tag {
            conv: conv.clone(),
            add,
            remove,
        };
        self.decide(p, conv, Access::Manage, cmd).await
    }

    /// A supervisor takes a conversation over: they become its operator (whoever held it
    /// loses it) and write into it as themselves.
    pub async fn take_over(
        &self,
        p: &Principal,
        conv: &ConvId,
    ) -> Result<Conversation, ServiceError> {
        authz::supervisor(p)?;
        let cmd = Command::TakeOver {
            conv: conv.clone(),
            sup: OperatorId(p.id().to_owned()),
        };
        self.decide(p, conv, Access::Manage, cmd).await
    }

    /// The site's active conversations as a supervisor watches them: operator, timings (how
    /// long the visitor has waited for an answer, their last message, the first response),
    /// longest waiting first; what fits in one frame, and how many there are.
    pub async fn active(&self, p: &Principal) -> Result<(Vec<Conversation>, u64), ServiceError> {
        authz::supervisor(p)?;
        let mut convs: Vec<Conversation> = {
            let mut tx = self.engine.begin(&p.site).await?;
            let st = tx.state();
            st.convs
                .iter()
                .filter(|(_, c)| c.state == ConvState::Active && moderates(p, &c.queue))
                .filter_map(|(id, _)| core::view(st, id))
                .collect()
        };
        let ids: Vec<ConvId> = convs.iter().map(|c| ConvId(c.id.clone())).collect();
        let activity =
            futures_util::future::try_join_all(ids.iter().map(|c| self.engine.activity(c))).await?;
        for (c, a) in convs.iter_mut().zip(activity) {
            c.activity = Some(ActivityView {
                waiting_since: a.unanswered_since,
                visitor_ts: a.visitor_ts,
                operator_ts: a.operator_ts,
                first_response_ms: a.first_response_ms(),
            });
        }
        convs.sort_by_key(|c| {
            (
                c.activity.and_then(|a| a.waiting_since).unwrap_or(u64::MAX),
                c.created_at,
            )
        });
        let count = convs.len() as u64;
        self.fit_listing(&mut convs);
        self.fill_summaries(&mut convs).await?;
        Ok((convs, count))
    }

    /// Authorises `p` on `conv`, runs the command, and answers with the conversation.
    async fn decide(
        &self,
        p: &Principal,
        conv: &ConvId,
        access: Access,
        cmd: Command,
    ) -> Result<Conversation, ServiceError> {
        self.authorize(p, conv, access).await?;
        let reply = self.apply(&p.site, cmd).await?;
        self.reply_conv(reply).await
    }

    /// The queue listings and operator list a staff connection starts from.
    pub(super) async fn staff_snapshot(
        &self,
        p: &Principal,
    ) -> Result<Vec<ServerFrame>, ServiceError> {
        let site = self.site_or_refuse(&p.site)?;
        let (mut queues, ops) = {
            let mut tx = self.engine.begin(&p.site).await?;
            let st = tx.state();
            let dir = site.directory.read().clone();
            let queues: Vec<(QueueId, Vec<Conversation>, usize)> = dir
                .lines
                .iter()
                .filter(|q| moderates(p, q))
                .map(|q| {
                    let (w, n) = core::waiting(st, q);
                    (q.clone(), w, n)
                })
                .collect();
            let ops: Vec<ServerFrame> = st
                .operators
                .iter()
                .map(|(id, o)| ServerFrame::Operator {
                    id: id.0.clone(),
                    name: o.name.clone(),
                    status: o.status,
                    online: o.conns.is_online(),
                    load: o.convs.len() as u32,
                    supervisor: o.supervisor,
                })
                .collect();
            (queues, ops)
        };
        let mut frames = Vec::new();
        for (q, waiting, count) in &mut queues {
            self.fit_listing(waiting);
            self.fill_summaries(waiting).await?;
            frames.push(ServerFrame::Queue {
                queue: q.0.clone(),
                waiting: std::mem::take(waiting),
                count: Some(*count as u64),
            });
        }
        frames.extend(ops);
        Ok(frames)
    }

    /// Publishes the waiting lists of changed queues: at once after a quiet spell, then at
    /// most once per [`LISTING_INTERVAL`] while changes keep coming — per site, not per node:
    /// a listing is published only by the node that claims the queue's slot; a node that
    /// finds it taken tries again after it, and then lists the state as it is by then.
    pub async fn run_listings(self: Arc<Self>) {
        loop {
            self.listings.changed.notified().await;
            for (site, queue) in self.listings.take() {
                let claimed = self
                    .engine
                    .claim_listing(&site, &queue, LISTING_INTERVAL.as_millis() as u64)
                    .await;
                let published = match claimed {
                    Ok(true) => self.publish_listing(&site, &queue).await,
                    // Another node listed it within the slot: again after it.
                    Ok(false) => {
                        self.listings.mark(&site, queue);
                        continue;
                    }
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = published {
                    tracing::warn!(site = %site, queue = %queue, error = %e, "queue listing not published");
                    // Try again with the next round.
                    self.listings.mark(&site, queue);
                }
            }
            tokio::time::sleep(LISTING_INTERVAL).await;
        }
    }

    /// Cuts a queue's waiting list (longest waiting first) to what fits in one frame. Items
    /// leave out the visitor's parameters (staff fetch a conversation whole with `get`): a
    /// listing goes to every operator of the queue, each time it changes. An item too large
    /// for what is left is skipped, not the end of the list. `count` still says how many wait.
    fn fit_listing(&self, waiting: &mut Vec<Conversation>) {
        for c in waiting.iter_mut() {
            c.visitor.params.clear();
        }
        let cap = self.list_cap();
        let mut bytes = 0;
        waiting.retain(|c| {
            let len = serde_json::to_vec(c).map_or(usize::MAX, |v| v.len());
            let fits = bytes + len <= cap;
            if fits {
                bytes += len;
            }
            fits
        });
    }

    /// Fills `last_seq` of listed conversations, the visitor's last message and the read
    /// marks, with one engine round trip.
    async fn fill_summaries(&self, convs: &mut [Conversation]) -> Result<(), EngineError> {
        if convs.is_empty() {
            return Ok(());
        }
        let ids: Vec<ConvId> = convs.iter().map(|c| ConvId(c.id.clone())).collect();
        let summaries = self.engine.summaries(&ids).await?;
        for (c, s) in convs.iter_mut().zip(summaries) {
            c.last_seq = s.last_seq;
            c.last_message = s.last_visitor;
            c.read = Some(s.read);
        }
        Ok(())
    }

    async fn publish_listing(&self, site: &SiteId, queue: &QueueId) -> Result<(), ServiceError> {
        let (mut waiting, count) = {
            let mut tx = self.engine.begin(site).await?;
            core::waiting(tx.state(), queue)
        };
        self.fit_listing(&mut waiting);
        self.fill_summaries(&mut waiting).await?;
        let frame = ServerFrame::Queue {
            queue: queue.0.clone(),
            waiting,
            count: Some(count as u64),
        };
        self.engine
            .publish(
                &Channel::Staff(site.clone()),
                BusMsg::frame(Audience::Queue(queue.clone()), frame),
            )
            .await?;
        Ok(())
    }
}

/// Queues whose waiting list changed and has not been published since.
///
/// A burst of new conversations changes a queue many times a second; each staff connection
/// gets the listing at most once per [`LISTING_INTERVAL`] per queue, with the state as it is
/// when it leaves (never an older list after a newer one from the same node).
#[derive(Default)]
pub(super) struct Listings {
    dirty: parking_lot::Mutex<BTreeSet<(SiteId, QueueId)>>,
    changed: tokio::sync::Notify,
}

impl Listings {
    pub(super) fn mark(&self, site: &SiteId, queue: QueueId) {
        self.dirty.lock().insert((site.clone(), queue));
        self.changed.notify_one();
    }

    fn take(&self) -> BTreeSet<(SiteId, QueueId)> {
        std::mem::take(&mut *self.dirty.lock())
    }
}

/// Whether `p` sees a line's conversations: an operator the lines they serve, a supervisor the
/// lines they moderate (`None`: every line of the site).
fn moderates(p: &Principal, queue: &QueueId) -> bool {
    p.queues.as_ref().is_none_or(|qs| qs.contains(queue))
}
