//! Newtypes for every id, so a conversation id can never be passed where a visitor id belongs.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

id_type!(
    /// A site (tenant): one widget key, its queues, settings and staff.
    SiteId
);
id_type!(
    /// A conversation, unique across sites.
    ConvId
);
id_type!(
    /// An operator, unique within a site.
    OperatorId
);
id_type!(
    /// A visitor, unique within a site.
    VisitorId
);
id_type!(
    /// A supervisor, unique within a site.
    SupervisorId
);
id_type!(
    /// An integration calling the HTTP API (its API key's id).
    BotId
);
id_type!(
    /// A gateway node.
    NodeId
);
id_type!(
    /// A queue of a site.
    QueueId
);

/// A connection, unique within a node (the node id makes it global).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A message's position in its conversation: 1, 2, 3, … with no gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);
