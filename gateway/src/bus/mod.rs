//! What travels between nodes: channels, bus messages and their audiences, and the seam
//! between an engine's bus and the node's local connections.
//!
//! Engines publish [`BusMsg`]s on [`Channel`]s and hand what they receive to a [`Local`] (the
//! node's hub). They know nothing else of the node: the hub reports which channels have local
//! listeners ([`SubChange`]), and connections held back during a replay are [`Gated`] handles.

pub mod wire;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::{ConnId, ConvId, NodeId, QueueId, SiteId};
pub use crate::outbound::Outbound;
use crate::protocol::{CloseReason, Role, ServerFrame};

/// A pub/sub channel. Names are exact (never patterns).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Everyone attached to a conversation: its visitor, its operator, watching supervisors.
    Conv(ConvId),
    /// Every connection of one user of a site.
    User(SiteId, Role, String),
    /// Every staff connection of a site (queues, operator list).
    Staff(SiteId),
    /// Every node (control messages such as "settings changed"); no connection listens.
    Nodes,
}

/// Which subscribers of a channel a frame is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    All,
    Staff,
    Visitors,
    /// Staff who serve the queue.
    Queue(QueueId),
}

/// What travels between nodes.
#[derive(Debug, Clone)]
pub enum BusMsg {
    Frame {
        audience: Audience,
        frame: Arc<Outbound>,
        /// The `seq` of a `msg` frame (0 for other frames): lets a node resume a channel from
        /// the log after its subscription was interrupted.
        seq: u64,
        /// The `ts` of a `msg` frame (0 for other frames), for the delivery latency metric.
        ts: u64,
        /// A connection the frame is not for: the one whose action it echoes.
        except: Option<ConnRef>,
    },
    /// On a user channel: that user's connections join a conversation's channel, receiving
    /// `frame` (the event they join with) directly. `after_seq` is the conversation's last
    /// `seq` when the attach was decided: a node whose subscription to the conversation's
    /// channel is not yet confirmed replays the log after it once it is.
    Attach {
        conv: ConvId,
        frame: Option<Arc<Outbound>>,
        after_seq: u64,
    },
    /// On a user channel: that user's connections receive `frame`, then leave the channel.
    Detach {
        conv: ConvId,
        frame: Option<Arc<Outbound>>,
    },
    /// On a user channel: close that user's connections (e.g. banned).
    Close(CloseReason),
    /// On [`Channel::Nodes`]: a site's settings changed; every node reloads them.
    Settings(SiteId),
}

impl BusMsg {
    pub fn frame(audience: Audience, frame: ServerFrame) -> BusMsg {
        let (seq, ts) = match &frame {
            ServerFrame::Msg(m) => (m.seq, m.ts),
            _ => (0, 0),
        };
        BusMsg::Frame {
            audience,
            frame: Outbound::new(frame),
            seq,
            ts,
            except: None,
        }
    }

    /// A frame for everyone in the audience but the connection `except`.
    pub fn frame_except(audience: Audience, frame: ServerFrame, except: ConnRef) -> BusMsg {
        match BusMsg::frame(audience, frame) {
            BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                ..
            } => BusMsg::Frame {
                audience,
                frame,
                seq,
                ts,
                except: Some(except),
            },
            _ => unreachable!("BusMsg::frame makes a frame"),
        }
    }
}

/// One connection anywhere in the deployment (`welcome.conn` is its text form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRef {
    pub node: NodeId,
    pub conn: ConnId,
}

/// Control events for the node itself (not for any connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    SettingsChanged(SiteId),
    /// A message whose text holds a keyword of the site's tags: tag its conversation (off
    /// the sender's path).
    AutoTag {
        site: SiteId,
        conv: crate::core::ConvId,
        text: String,
    },
}

/// A local connection whose `msg` frames of a conversation are held back while its log is
/// replayed (see the hub's gates).
pub trait Gated: Send + Sync {
    /// Delivers the replayed frames after the gate's cursor, then the held ones, in `seq`
    /// order and each once, and stops holding back.
    fn release(&self, conv: &ConvId, replayed: &[(u64, Arc<Outbound>)]);
    /// The replay cannot be done: stop holding back and close the connection with `reason`
    /// (it reconnects and resumes with its cursors).
    fn give_up(&self, conv: &ConvId, reason: CloseReason);
}

/// Connections held back on one conversation, and the `seq` after which the log is replayed
/// to them.
pub struct Held {
    pub conv: ConvId,
    pub after: u64,
    pub conns: Vec<Arc<dyn Gated>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("conv", &self.conv)
            .field("after", &self.after)
            .field("conns", &self.conns.len())
            .finish()
    }
}

/// What the hub tells the engine's bus (the Redis engine's subscriber task).
#[derive(Debug)]
pub enum SubChange {
    /// A channel's local listeners went from none to some, or back: the bus reconciles its
    /// subscription with [`Local::has`] (events of one channel may arrive out of order; the
    /// hub's map is the truth).
    Changed(Channel),
    /// Connections just attached to a conversation's channel: once the node's subscription
    /// to it is confirmed, replay the log after `held.after` to them, so that nothing
    /// published before the subscription took effect is missed.
    Catchup(Held),
}

/// The node-local side of the bus: where an engine delivers what it receives.
pub trait Local: Send + Sync + 'static {
    /// Hands a bus message to the local subscribers of `ch`.
    fn dispatch(&self, ch: &Channel, msg: &BusMsg);
    /// Whether any local connection listens on a channel.
    fn has(&self, ch: &Channel) -> bool;
    /// Every channel with at least one local subscriber (to resubscribe after a reconnect).
    fn channels(&self) -> Vec<Channel>;
    /// Holds back `msg` frames on every conversation channel, for a replay after the bus
    /// lost messages: each with the last `seq` it carried.
    fn hold_all(&self) -> Vec<Held>;
    /// Closes every local connection (the store lost what it counted of them).
    fn close_all(&self, reason: CloseReason);
    /// Routes subscription changes to the engine's bus.
    fn set_bus(&self, tx: tokio::sync::mpsc::UnboundedSender<SubChange>);
}
