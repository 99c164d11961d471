//! The invariants of a site's state, checked after every transition in tests and debug
//! builds, and by a property test over random command sequences.

use super::routing::max_chats;
use super::state::SiteState;
use super::Settings;
use crate::protocol::ConvState;

/// Checks the invariants of a site state; used by tests and debug assertions.
pub fn check_invariants(st: &SiteState, settings: &Settings) -> Result<(), String> {
    for (id, c) in &st.convs {
        match (&c.state, &c.operator, &c.offered_to) {
            (ConvState::Active, Some(op), None) => {
                let o = st
                    .operators
                    .get(op)
                    .ok_or(format!("{id}: operator {op} unknown"))?;
                if !o.convs.contains(id) {
                    return Err(format!("{id}: not in {op}'s conversations"));
                }
            }
            (ConvState::Offered, None, Some(op)) => {
                let o = st
                    .operators
                    .get(op)
                    .ok_or(format!("{id}: offered to unknown {op}"))?;
                if !o.offers.contains(id) {
                    return Err(format!("{id}: not in {op}'s offers"));
                }
            }
            (ConvState::Queued, None, None) => {}
            other => return Err(format!("{id}: inconsistent state {other:?}")),
        }
        let v = st
            .visitors
            .get(&c.visitor)
            .ok_or(format!("{id}: visitor unknown"))?;
        if v.conv.as_ref() != Some(id) {
            return Err(format!("{id}: visitor's conversation is {:?}", v.conv));
        }
    }
    for (id, o) in &st.operators {
        if o.convs.len() as u32 > max_chats(o, settings) {
            return Err(format!("{id}: load {} above max_chats", o.convs.len()));
        }
        for c in &o.convs {
            let conv = st.convs.get(c).ok_or(format!("{id}: holds closed {c}"))?;
            if conv.operator.as_ref() != Some(id) {
                return Err(format!(
                    "{id}: holds {c} whose operator is {:?}",
                    conv.operator
                ));
            }
        }
        for c in &o.offers {
            let conv = st.convs.get(c).ok_or(format!("{id}: offered closed {c}"))?;
            if conv.offered_to.as_ref() != Some(id) {
                return Err(format!("{id}: offer of {c} is {:?}", conv.offered_to));
            }
        }
    }
    Ok(())
}
