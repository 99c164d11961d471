//! The pure core: conversation lifecycle, routing, presence rules and timers of one site.
//!
//! `state + command -> new state + effects`. Nothing here does IO, reads a clock or spawns a
//! task: the caller passes `now`, executes the returned [`Effect`]s (publish a frame, append a
//! system message, set a timer) and persists the state. Both engines run every transition
//! through [`handle`], so there is one implementation of every rule.
//!
//! A command that is rejected leaves the state untouched: every handler validates first and
//! mutates after.
//!
//! **Invariant:** a conversation has at most one operator, and it is in that operator's `convs`.
//! **Invariant:** an operator's `convs` never grows past their `max_chats`.
//! **Invariant:** an operator who let an offer lapse, declined, or was reassigned away is never
//! offered or auto-assigned that conversation again (`tried`).

mod commands;
mod effects;
pub mod ids;
mod invariants;
mod lifecycle;
mod presence;
mod routing;
pub mod settings;
mod state;
mod timers;
pub mod tracked;
mod views;

#[cfg(test)]
mod tests;

pub use commands::{handle, no_lines, Actor, Command, Ctx, LineSettings, Reject, Reply};
pub use effects::{ConvUpdate, Effect, Note, Outcome, Reason};
pub use ids::{
    BotId, ConnId, ConvId, NodeId, OperatorId, QueueId, Seq, SiteId, SupervisorId, VisitorId,
};
pub use invariants::check_invariants;
pub use lifecycle::{check_profile, normalise_tags};
pub use routing::{availability, max_chats, serves, Availability};
pub use settings::{Routing, Settings};
pub use state::{Activity, Conns, Conv, Operator, Participant, SiteState, Visitor, VisitorProfile};
pub use timers::TimerKind;
pub use tracked::Tracked;
pub use views::{census, view, waiting, Census};

/// Unix time in milliseconds.
pub type Millis = u64;

/// Longest tag, in bytes, and most tags on one conversation.
pub const MAX_TAG_LEN: usize = 40;
pub const MAX_TAGS: usize = 20;
/// At most this many waiting conversations are listed in one `queue` frame.
pub const QUEUE_LIST_LIMIT: usize = 100;
/// The most custom parameters a conversation's visitor carries.
pub const MAX_PARAMS: usize = 50;
/// Longest parameter name and value, in bytes.
pub const MAX_PARAM_KEY: usize = 64;
pub const MAX_PARAM_VALUE: usize = 1024;
/// The most bytes a visitor's parameters take in all (names and values): what a visitor
/// stores reaches every operator of the queue in listings, offers and `welcome`, so it is
/// bounded by size, not only by count — also when `identify` adds to it frame by frame.
pub const MAX_PARAMS_BYTES: usize = 8 * 1024;
/// Longest name, e-mail, phone, page URL and referrer a visitor gives, in bytes.
pub const MAX_NAME: usize = 100;
pub const MAX_EMAIL: usize = 200;
pub const MAX_PHONE: usize = 50;
pub const MAX_URL: usize = 2000;
