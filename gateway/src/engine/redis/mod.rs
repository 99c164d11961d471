//! The Redis engine: any number of nodes on one Redis or a Redis Cluster.
//!
//! - **Site state** lives in a hash with one field per operator, visitor and open
//!   conversation, plus a version. Each node keeps a copy per site behind a local lock; a
//!   transition first catches the copy up (one script: nothing, the fields changed since its
//!   version, or everything), runs the pure core on it, and commits only the entities the
//!   core touched, with a compare-and-set on the version (one script). A lost race rolls the
//!   copy back and runs the command again: two nodes' accepts have exactly one winner, and a
//!   transition costs what it changes, not what the site holds.
//! - **Messages** are appended by one script (dedup, `seq`, capped stream, activity, publish).
//! - **Timers** are a sorted set per site, claimed with a lease by any node.
//! - **Presence** is counted per node inside the site state; nodes prove they are alive with a
//!   heartbeat timed by Redis' clock, and any node sweeps a node that stopped.
//! - **Pub/sub** is in [`bus`].
//!
//! The files follow the engine's capability traits: [`site`] (`SiteStore`), [`log`] (`ConvLog`),
//! [`timers`] (`Timers`), [`data`] (`SiteData`), [`bus`] (`Broker`), [`nodes`] (`Nodes`); [`codec`]
//! reads and writes what Redis holds.
//!
//! See `ARCHITECTURE.md` for the key layout and how each fault is handled.

mod bus;
mod codec;
mod conn;
mod data;
pub mod keys;
mod log;
mod nodes;
mod outbox;
mod scripts;
mod site;
mod timers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::Value;
use tokio::sync::{mpsc, Mutex as AsyncMutex};

use super::EngineError;
use crate::bus::{Channel, Local, SubChange};
use crate::config::RedisConfig;
use crate::core::{NodeId, SiteId};
use bus::{Bus, Subscriber};
use conn::Conn;
use site::Copy;

pub use site::RedisTx;

/// Tunables of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub redis: RedisConfig,
    /// Messages kept per conversation stream.
    pub max_log: usize,
    /// How long a closed conversation's keys are kept.
    pub retention: Duration,
    /// A node silent for this long is swept.
    pub node_timeout: Duration,
    /// Whether an archive reads the outbox: a conversation's log then keeps every message
    /// not yet archived, whatever its cap, and a closed one's keys expire once archived.
    pub archive: bool,
}

/// How long an open conversation's keys live without any write (refreshed by every one).
const OPEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries kept in a site's change log: how far behind a node may fall and still catch up
/// with a delta rather than a full read.
const STATE_LOG_CAP: usize = 10_000;

/// The largest `seq` a script is given: Lua prints numbers from 10^14 on with an exponent,
/// which is not a stream id. Any larger bound means the same (no log reaches that far).
const SEQ_ARG_MAX: u64 = 10_000_000_000_000;

#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    opts: RedisOptions,
    sites: SiteList,
    /// The node's local connections.
    local: Arc<dyn Local>,
    bus: Arc<Bus>,
    copies: DashMap<SiteId, Arc<AsyncMutex<Copy>>>,
    /// When this node's command connection last started working without interruption.
    healthy_since: Mutex<Option<Instant>>,
    /// The node life registered among the live ones.
    joined: Mutex<Option<NodeId>>,
    /// Outbox consumer groups known to exist.
    groups: outbox::Groups,
}

/// The sites this node serves, shared by the engine's loops and the subscriber (which
/// reloads them after the bus reconnects); replaced whole when sites come or go.
#[derive(Clone, Default)]
pub struct SiteList(Arc<parking_lot::RwLock<Arc<Vec<SiteId>>>>);

impl SiteList {
    pub fn get(&self) -> Arc<Vec<SiteId>> {
        self.0.read().clone()
    }

    pub fn set(&self, sites: Vec<SiteId>) {
        *self.0.write() = Arc::new(sites);
    }
}

/// A Redis failure as the engine reports it: a timeout, the store out of reach (or saying it
/// cannot serve now), or an answer that makes no sense.
fn from_redis(e: redis::RedisError) -> EngineError {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    if e.is_timeout() {
        return EngineError::Timeout;
    }
    let unreachable = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            K::Io
                | K::ClusterConnectionNotFound
                | K::Server(
                    S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly
                )
        );
    if unreachable {
        EngineError::Connection(Box::new(e))
    } else {
        EngineError::Protocol {
            what: "redis refused the command".into(),
            source: Some(Box::new(e)),
        }
    }
}

impl RedisEngine {
    /// Connects (retrying for up to `wait`), subscribes this node's control channel, and
    /// starts the pub/sub tasks.
    pub async fn connect(
        opts: RedisOptions,
        sites: Vec<SiteId>,
        local: Arc<dyn Local>,
        wait: Duration,
    ) -> Result<RedisEngine, EngineError> {
        let deadline = Instant::now() + wait;
        let bus = Bus::new(local.clone());
        // `lost` carries one unit per lost pub/sub connection.
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let (conn, pubsub) = loop {
            let attempt = async {
                let c = conn::commands(&opts.redis).await?;
                let p = conn::pubsub(&opts.redis, bus.pushes(lost_tx.clone())).await?;
                Ok::<_, redis::RedisError>((c, p))
            };
            match attempt.await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, urls = ?opts.redis.urls, "redis not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(from_redis(e)),
            }
        };
        let sites = SiteList(Arc::new(parking_lot::RwLock::new(Arc::new(sites))));
        let inner = Arc::new(Inner {
            conn,
            opts,
            sites,
            local: local.clone(),
            bus: bus.clone(),
            copies: DashMap::new(),
            healthy_since: Mutex::new(Some(Instant::now())),
            joined: Mutex::new(None),
            groups: outbox::Groups::default(),
        });
        // Unbounded, deliberately: the hub reports changes from synchronous code that must
        // never wait, and the subscriber drains them at once into a set of channels, Redis up
        // or down, so the backlog is bounded by the channels the node has, not by time.
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        local.set_bus(changes_tx.clone());
        tokio::spawn(
            Subscriber {
                bus: bus.clone(),
                conn: pubsub,
                changes: changes_rx,
                lost: lost_rx,
                replayer: inner.clone(),
                sites: inner.sites.clone(),
            }
            .run(),
        );
        let _ = changes_tx.send(SubChange::Changed(Channel::Nodes));
        if !bus
            .wait_active(&[Channel::Nodes], inner.opts.redis.timeout * 5)
            .await
        {
            return Err(EngineError::Timeout);
        }
        Ok(RedisEngine { inner })
    }

    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }
}

impl Inner {
    /// Runs a command with the engine's deadline.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, EngineError> {
        let mut c = self.conn.clone();
        self.deadline(cmd.query_async::<T>(&mut c)).await
    }

    async fn script(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Value, EngineError> {
        let mut c = self.conn.clone();
        self.deadline(inv.invoke_async::<Value>(&mut c)).await
    }

    async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.opts.redis.timeout, fut).await {
            Ok(Ok(v)) => {
                self.mark_healthy(true);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.mark_healthy(false);
                }
                Err(from_redis(e))
            }
            Err(_) => {
                self.mark_healthy(false);
                Err(EngineError::Timeout)
            }
        }
    }

    fn mark_healthy(&self, ok: bool) {
        let mut since = self.healthy_since.lock();
        match (ok, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => *since = None,
            _ => {}
        }
    }

    fn copy(&self, site: &SiteId) -> Arc<AsyncMutex<Copy>> {
        self.copies
            .entry(site.clone())
            .or_insert_with(|| Arc::new(AsyncMutex::new(Copy::new(site))))
            .clone()
    }
}
