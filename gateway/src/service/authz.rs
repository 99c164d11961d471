//! Authorisation: which conversations a principal may touch, and how. Every frame's `conv`
//! is checked here, never trusted: visitors reach only their own conversations, staff only
//! their site's, and another site's conversation answers `not_found`, as a missing one does.

use super::{Engine, Gateway, ServiceError};
use crate::auth::{Principal, User};
use crate::core::{ConvId, OperatorId, VisitorId};
use crate::engine::{ConvMeta, SiteTx};
use crate::protocol::{ConvState, ErrorCode};

/// What a connection may do with a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// History, typing, read receipts, watch.
    Read,
    /// Lifecycle requests (close, tag, transfer …).
    Manage,
    /// Taking or declining (accept, decline): any conversation of the site; the core says
    /// whether it is `taken`.
    Route,
}

impl<E: Engine> Gateway<E> {
    /// Checks that `p` may touch `conv`: visitors only their own, staff only their site's.
    pub async fn authorize(
        &self,
        p: &Principal,
        conv: &ConvId,
        access: Access,
    ) -> Result<ConvMeta, ServiceError> {
        let meta = self.engine.meta(conv).await?.ok_or(ServiceError::refuse(
            ErrorCode::NotFound,
            "no such conversation",
        ))?;
        // The same answer for another site's conversation as for a missing one: ids do not leak.
        if meta.site != p.site {
            return Err(ServiceError::refuse(
                ErrorCode::NotFound,
                "no such conversation",
            ));
        }
        let ok = match &p.user {
            User::Visitor(v) => &meta.visitor == v,
            // Operators read what they hold and what waits for someone to take it; another
            // operator's live chat is for supervisors (`watch`). A closed conversation is
            // readable by whoever held it, and by an operator now talking to that visitor
            // (its history comes with the conversation that continues it).
            User::Operator(op) => {
                let holder = meta.operator.as_ref() == Some(op);
                match (access, meta.state) {
                    (Access::Route, _) => true,
                    (_, ConvState::Queued | ConvState::Offered) => true,
                    (_, ConvState::Active) => holder,
                    (Access::Manage, ConvState::Closed) => true,
                    (Access::Read, ConvState::Closed) => {
                        holder || self.talks_to(p, op, &meta.visitor).await?
                    }
                }
            }
            // Supervisors: every conversation of the lines they moderate (all, when the
            // directory gives them no supervisor group). Integrations: every one.
            User::Supervisor(_) => p
                .queues
                .as_ref()
                .is_none_or(|qs| qs.iter().any(|q| q.as_str() == meta.snapshot.queue)),
            User::Bot(_) => true,
        };
        if !ok {
            return Err(match p.user {
                User::Visitor(_) => {
                    ServiceError::refuse(ErrorCode::NotFound, "no such conversation")
                }
                _ => ServiceError::refuse(ErrorCode::Forbidden, "not your conversation"),
            });
        }
        Ok(meta)
    }

    /// Whether the operator holds, or is offered, a conversation with this visitor now.
    async fn talks_to(
        &self,
        p: &Principal,
        op: &OperatorId,
        visitor: &VisitorId,
    ) -> Result<bool, ServiceError> {
        let mut tx = self.engine.begin(&p.site).await?;
        let st = tx.state();
        Ok(st.operators.get(op).is_some_and(|o| {
            o.convs
                .iter()
                .chain(o.offers.iter())
                .any(|c| st.convs.get(c).is_some_and(|c| &c.visitor == visitor))
        }))
    }
}

/// The operator `p` is, or `forbidden`.
pub(super) fn operator(p: &Principal) -> Result<&OperatorId, ServiceError> {
    p.operator()
        .ok_or(ServiceError::refuse(ErrorCode::Forbidden, "operators only"))
}

/// The visitor `p` is, or `forbidden` with `message`.
pub(super) fn visitor<'p>(
    p: &'p Principal,
    message: &'static str,
) -> Result<&'p VisitorId, ServiceError> {
    p.visitor()
        .ok_or(ServiceError::refuse(ErrorCode::Forbidden, message))
}

/// `Ok` for operators and supervisors.
pub(super) fn staff(p: &Principal) -> Result<(), ServiceError> {
    if p.is_staff() {
        Ok(())
    } else {
        Err(ServiceError::refuse(ErrorCode::Forbidden, "staff only"))
    }
}

/// `Ok` for the staff and integrations (who manage conversations without holding them).
pub(super) fn manager(p: &Principal) -> Result<(), ServiceError> {
    if p.is_staff() || matches!(p.user, User::Bot(_)) {
        Ok(())
    } else {
        Err(ServiceError::refuse(ErrorCode::Forbidden, "staff only"))
    }
}

/// `Ok` for supervisors.
pub(super) fn supervisor(p: &Principal) -> Result<(), ServiceError> {
    if p.is_supervisor() {
        Ok(())
    } else {
        Err(ServiceError::refuse(
            ErrorCode::Forbidden,
            "supervisors only",
        ))
    }
}
