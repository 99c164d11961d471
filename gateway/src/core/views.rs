//! Read-only views of a site's state: a conversation as staff see it, a queue's waiting list,
//! the census of open conversations.

use super::state::{Conv, SiteState};
use super::{ConvId, QueueId, QUEUE_LIST_LIMIT};
use crate::protocol::{ConvState, Conversation, OperatorRef, VisitorView};

/// Renders a conversation as staff see it (`last_seq` is filled from the log by the caller).
pub fn view(state: &SiteState, id: &ConvId) -> Option<Conversation> {
    state.convs.get(id).map(|c| render(state, id, c))
}

pub(super) fn render(st: &SiteState, id: &ConvId, c: &Conv) -> Conversation {
    Conversation {
        id: id.0.clone(),
        site: st.site.0.clone(),
        queue: c.queue.0.clone(),
        state: c.state,
        visitor: VisitorView {
            id: c.visitor.0.clone(),
            name: c.profile.name.clone(),
            online: st
                .visitors
                .get(&c.visitor)
                .is_some_and(|v| v.conns.is_online()),
            preview: c.profile.preview.clone(),
            email: c.profile.email.clone(),
            phone: c.profile.phone.clone(),
            params: c.profile.params.clone(),
        },
        operator: c.operator.as_ref().map(|o| OperatorRef {
            id: o.0.clone(),
            name: st
                .operators
                .get(o)
                .map(|op| op.name.clone())
                .unwrap_or_default(),
        }),
        last_seq: 0,
        tags: c.tags.clone(),
        created_at: c.created_at,
        previous: c.previous.as_ref().map(|p| p.0.clone()),
        recovered: None,
        outcome: None,
        draft: None,
        offline: c.offline,
        notes: c.notes.clone(),
        read: None,
        last_message: None,
        activity: None,
    }
}

/// The conversations waiting in a queue, oldest first.
pub fn waiting(state: &SiteState, queue: &QueueId) -> (Vec<Conversation>, usize) {
    let mut w: Vec<(&ConvId, &Conv)> = state
        .convs
        .iter()
        .filter(|(_, c)| {
            &c.queue == queue && matches!(c.state, ConvState::Queued | ConvState::Offered)
        })
        .collect();
    w.sort_by_key(|(_, c)| c.queued_at);
    let count = w.len();
    let list = w
        .into_iter()
        .take(QUEUE_LIST_LIMIT)
        .map(|(id, c)| render(state, id, c))
        .collect();
    (list, count)
}

/// How many open conversations a site has in each state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Waiting in a queue, no operator asked yet.
    pub queued: usize,
    /// Offered to an operator who has not answered yet.
    pub offered: usize,
    pub active: usize,
}

impl std::ops::AddAssign for Census {
    fn add_assign(&mut self, o: Census) {
        self.queued += o.queued;
        self.offered += o.offered;
        self.active += o.active;
    }
}

/// Counts a site's open conversations by state.
pub fn census(state: &SiteState) -> Census {
    let mut c = Census::default();
    for (_, conv) in state.convs.iter() {
        match conv.state {
            ConvState::Queued => c.queued += 1,
            ConvState::Offered => c.offered += 1,
            ConvState::Active => c.active += 1,
            ConvState::Closed => {}
        }
    }
    c
}
