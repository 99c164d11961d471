//! Key and channel names. Every name carries a hash tag so that what one atomic step touches
//! lives in one Redis Cluster slot:
//!
//! | name | what | tag |
//! |---|---|---|
//! | `cg:{s:<site>}:st` | hash: the site's routing state, one field per entity, `ver` | site |
//! | `cg:{s:<site>}:log` | stream: which fields each version changed (capped) | site |
//! | `cg:{s:<site>}:timers` | sorted set: timers by deadline | site |
//! | `cg:{s:<site>}:settings` | string: settings changed at runtime (JSON) | site |
//! | `cg:{s:<site>}:outbox` | stream: what leaves for the archive (consumer groups) | site |
//! | `cg:{s:<site>}:drafts:<op>` | hash: an operator's drafts by conversation | site |
//! | `cg:{s:<site>}:listing:<queue>` | the site-wide slot of a queue's listing (250 ms) | site |
//! | `cg:{s:<site>}:staff` | channel: queue listings and operator list | site |
//! | `cg:{v:<site>:<visitor>}:latest` | string: the visitor's newest conversation | visitor |
//! | `cg:{v:<site>:<visitor>}:ban` | string: until when the visitor is banned (expires then) | visitor |
//! | `cg:{c:<conv>}:m` | hash: who the conversation belongs to, `seq`, activity | conv |
//! | `cg:{c:<conv>}:log` | stream: the messages, entry id `<seq>-0` (capped) | conv |
//! | `cg:{c:<conv>}:cids` | hash: `role:id:cid` → `seq`, for idempotent sends | conv |
//! | `cg:{c:<conv>}` | channel: the conversation's messages and events | conv |
//! | `cg:{u:<site>:<role>:<id>}` | channel: one user's connections | user |
//! | `cg:{gw}:nodes` / `cg:{gw}:dead` | hash of heartbeats / set of nodes to sweep | - |
//! | `cg:{gw}:bus` | channel: control messages to every node | - |

use crate::bus::Channel;
use crate::core::{ConvId, OperatorId, QueueId, SiteId, VisitorId};

pub fn site_state(site: &SiteId) -> String {
    format!("cg:{{s:{site}}}:st")
}

pub fn site_log(site: &SiteId) -> String {
    format!("cg:{{s:{site}}}:log")
}

pub fn timers(site: &SiteId) -> String {
    format!("cg:{{s:{site}}}:timers")
}

pub fn outbox(site: &SiteId) -> String {
    format!("cg:{{s:{site}}}:outbox")
}

pub fn settings(site: &SiteId) -> String {
    format!("cg:{{s:{site}}}:settings")
}

/// The site-wide slot of a queue's listing (`SET NX PX`).
pub fn listing(site: &SiteId, queue: &QueueId) -> String {
    format!("cg:{{s:{site}}}:listing:{queue}")
}

pub fn drafts(site: &SiteId, op: &OperatorId) -> String {
    format!("cg:{{s:{site}}}:drafts:{op}")
}

pub fn visitor_latest(site: &SiteId, visitor: &VisitorId) -> String {
    format!("cg:{{v:{site}:{visitor}}}:latest")
}

pub fn ban(site: &SiteId, visitor: &VisitorId) -> String {
    format!("cg:{{v:{site}:{visitor}}}:ban")
}

pub fn conv_meta(conv: &ConvId) -> String {
    format!("cg:{{c:{conv}}}:m")
}

pub fn conv_log(conv: &ConvId) -> String {
    format!("cg:{{c:{conv}}}:log")
}

pub fn conv_cids(conv: &ConvId) -> String {
    format!("cg:{{c:{conv}}}:cids")
}

pub const NODES: &str = "cg:{gw}:nodes";
pub const DEAD: &str = "cg:{gw}:dead";

/// The exact pub/sub channel name of a bus channel.
pub fn channel(ch: &Channel) -> String {
    match ch {
        Channel::Conv(c) => format!("cg:{{c:{c}}}"),
        Channel::User(site, role, id) => format!("cg:{{u:{site}:{}:{id}}}", role.as_str()),
        Channel::Staff(site) => format!("cg:{{s:{site}}}:staff"),
        Channel::Nodes => "cg:{gw}:bus".to_owned(),
    }
}

/// The field of a site-state hash holding one entity.
pub mod field {
    pub const VERSION: &str = "ver";
    pub const QUEUE_CLOCK: &str = "qc";
    pub const OPERATOR: &str = "o:";
    pub const VISITOR: &str = "v:";
    pub const CONV: &str = "c:";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;

    /// The part of a key Redis Cluster hashes.
    fn tag(key: &str) -> &str {
        let open = key.find('{').expect("tagged");
        let close = key[open..].find('}').expect("closed") + open;
        &key[open + 1..close]
    }

    #[test]
    fn what_one_script_touches_shares_a_slot() {
        let conv = ConvId::from("c_1");
        let site = SiteId::from("demo");
        assert_eq!(tag(&conv_meta(&conv)), tag(&conv_log(&conv)));
        assert_eq!(tag(&conv_meta(&conv)), tag(&conv_cids(&conv)));
        assert_eq!(
            tag(&conv_meta(&conv)),
            tag(&channel(&Channel::Conv(conv.clone())))
        );
        assert_eq!(tag(&site_state(&site)), tag(&site_log(&site)));
        assert_eq!(tag(&site_state(&site)), tag(&timers(&site)));
        assert_eq!(tag(NODES), tag(DEAD));
        // Users spread over the cluster instead of piling onto their site's slot.
        assert_ne!(
            tag(&channel(&Channel::User(
                site.clone(),
                Role::Visitor,
                "v1".into()
            ))),
            tag(&site_state(&site))
        );
    }
}
