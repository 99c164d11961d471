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
                let serves = p
                    .queues
                    .as_ref()
                    .is_none_or(|qs| qs.iter().any(|q| q.as_str() == meta.snapshot.queue));
                match operator_may(access, meta.state, holder, serves) {
                    Verdict::Yes => true,
                    Verdict::No => false,
                    Verdict::IfTalksTo => self.talks_to(p, op, &meta.visitor).await?,
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

/// An operator's answer from the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Yes,
    No,
    /// Only if the operator holds, or is offered, a conversation with its visitor now (its
    /// history comes with the conversation that continues it).
    IfTalksTo,
}

/// What an operator may do with a conversation, by its state and how the operator stands to
/// it: whether they hold it (for a closed one: held it last), and whether they serve its line.
/// Supervisors see every conversation of the lines they moderate, integrations every one,
/// visitors their own (in [`Gateway::authorize`]); what is refused here is refused whatever
/// the frame (`docs/protocol.md` §7 is this table).
///
/// | access | queued, offered | active | closed |
/// |---|---|---|---|
/// | `Route` (accept, decline) | yes: the core decides | yes: the core answers `taken` | yes: the core answers `not_found` |
/// | `Read` (history, get, typing, read) | a line they serve | holder | holder, or talking to its visitor now |
/// | `Manage` (close, tag, transfer, ban, params, actions, transcript by e-mail) | a line they serve | holder | holder |
pub(super) fn operator_may(
    access: Access,
    state: ConvState,
    holder: bool,
    serves: bool,
) -> Verdict {
    let yes = |b: bool| if b { Verdict::Yes } else { Verdict::No };
    match (access, state) {
        (Access::Route, _) => Verdict::Yes,
        (_, ConvState::Queued | ConvState::Offered) => yes(serves),
        (_, ConvState::Active) => yes(holder),
        (Access::Manage, ConvState::Closed) => yes(holder),
        (Access::Read, ConvState::Closed) if holder => Verdict::Yes,
        (Access::Read, ConvState::Closed) => Verdict::IfTalksTo,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cell of the operators' matrix.
    #[test]
    fn the_operators_matrix_cell_by_cell() {
        use Access::*;
        use ConvState::*;
        use Verdict::*;
        let waiting = [Queued, Offered];
        for state in [Queued, Offered, Active, Closed] {
            for holder in [false, true] {
                for serves in [false, true] {
                    assert_eq!(operator_may(Route, state, holder, serves), Yes);
                    let want = |access| match state {
                        _ if waiting.contains(&state) => {
                            if serves {
                                Yes
                            } else {
                                No
                            }
                        }
                        Active => {
                            if holder {
                                Yes
                            } else {
                                No
                            }
                        }
                        _ if holder => Yes,
                        _ if access == Read => IfTalksTo,
                        _ => No,
                    };
                    for access in [Read, Manage] {
                        assert_eq!(
                            operator_may(access, state, holder, serves),
                            want(access),
                            "{access:?} {state:?} holder={holder} serves={serves}"
                        );
                    }
                }
            }
        }
    }
}
