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
//! See `ARCHITECTURE.md` for the key layout and how each fault is handled.

mod bus;
mod conn;
pub mod keys;
mod scripts;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::{mpsc, Mutex as AsyncMutex, OwnedMutexGuard};

use super::{
    AppendOutcome, AppendRefusal, Appended, ConvMeta, Engine, EngineError, Heartbeat, HistoryPage,
    NewMessage, Replay, SiteTx, TimerClaim, TIMER_LEASE_MS,
};
use crate::config::RedisConfig;
use crate::core::{
    Activity, ConvId, Millis, NodeId, OperatorId, SiteId, SiteState, TimerKind, VisitorId,
};
use crate::hub::{wire, BusMsg, Channel, Hub, Outbound, SubChange};
use crate::metrics as m;
use crate::protocol::{ConvState, Encoding, Msg, ServerFrame};
use bus::{Bus, Replayer, Subscriber};
use conn::Conn;
use keys::field;

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
    sites: Vec<SiteId>,
    hub: Arc<Hub>,
    bus: Arc<Bus>,
    copies: DashMap<SiteId, Arc<AsyncMutex<Copy>>>,
    /// When this node's command connection last started working without interruption.
    healthy_since: Mutex<Option<Instant>>,
    /// The node life registered among the live ones.
    joined: Mutex<Option<NodeId>>,
}

/// A Redis failure as the engine reports it.
fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> EngineError {
    EngineError::Unavailable(Box::new(e))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Garbled(String);

fn garbled(what: impl Into<String>) -> EngineError {
    EngineError::Unavailable(Box::new(Garbled(what.into())))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("msgpack encoding of own type")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EngineError> {
    rmp_serde::from_slice(bytes).map_err(|e| garbled(format!("stored value: {e}")))
}

/// A stored `msg` frame back into the message.
fn decode_msg(frame: &[u8]) -> Result<Msg, EngineError> {
    match ServerFrame::decode(Encoding::MsgPack, frame) {
        Ok(ServerFrame::Msg(m)) => Ok(m),
        Ok(_) => Err(garbled("stored frame is not a msg")),
        Err(e) => Err(garbled(format!("stored frame: {e}"))),
    }
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_str(v: &Value) -> Option<&str> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(_) | Value::SimpleString(_) => as_str(v)?.parse().ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(_) | Value::SimpleString(_) => as_str(v)?.parse().ok(),
        _ => None,
    }
}

fn array(v: Value) -> Result<Vec<Value>, EngineError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(garbled(format!("expected an array, got {other:?}"))),
    }
}

/// A timer's member in its site's sorted set.
fn timer_member(kind: &TimerKind) -> String {
    match kind {
        TimerKind::Offer(c) => format!("offer:{c}"),
        TimerKind::Reassign(c) => format!("reassign:{c}"),
        TimerKind::Inactive(c) => format!("inactive:{c}"),
        TimerKind::Callback(c) => format!("callback:{c}"),
        TimerKind::VisitorGrace(v) => format!("vgrace:{v}"),
        TimerKind::OperatorGrace(o) => format!("ograce:{o}"),
    }
}

fn parse_timer(member: &str) -> Option<TimerKind> {
    let (kind, id) = member.split_once(':')?;
    Some(match kind {
        "offer" => TimerKind::Offer(ConvId::from(id)),
        "reassign" => TimerKind::Reassign(ConvId::from(id)),
        "inactive" => TimerKind::Inactive(ConvId::from(id)),
        "callback" => TimerKind::Callback(ConvId::from(id)),
        "vgrace" => TimerKind::VisitorGrace(VisitorId::from(id)),
        "ograce" => TimerKind::OperatorGrace(OperatorId::from(id)),
        _ => return None,
    })
}

fn state_str(s: ConvState) -> &'static str {
    match s {
        ConvState::Queued => "queued",
        ConvState::Offered => "offered",
        ConvState::Active => "active",
        ConvState::Closed => "closed",
    }
}

/// A `msg` frame encoded around its `seq`: `(prefix, suffix)` such that
/// `prefix + msgpack(seq) + suffix` is the frame. The split is found by encoding a sentinel
/// `seq` (`0xcf` then eight `0xff`): `0xff` never occurs in UTF-8, so the text around it
/// cannot imitate it.
fn msg_frame_parts(msg: &Msg) -> (Vec<u8>, Vec<u8>) {
    let mut probe = msg.clone();
    probe.seq = u64::MAX;
    let bytes = ServerFrame::Msg(probe).encode(Encoding::MsgPack);
    let mut needle = vec![0xa3, b's', b'e', b'q', 0xcf];
    needle.extend_from_slice(&[0xff; 8]);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("an encoded msg frame has a seq field");
    let prefix = bytes[..at + 4].to_vec();
    let suffix = bytes[at + needle.len()..].to_vec();
    (prefix, suffix)
}

fn ttl_secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl RedisEngine {
    /// Connects (retrying for up to `wait`), subscribes this node's control channel, and
    /// starts the pub/sub tasks.
    pub async fn connect(
        opts: RedisOptions,
        sites: Vec<SiteId>,
        hub: Arc<Hub>,
        wait: Duration,
    ) -> Result<RedisEngine, EngineError> {
        let deadline = Instant::now() + wait;
        let (conn, (pubsub, pushes)) = loop {
            let attempt = async {
                let c = conn::commands(&opts.redis).await?;
                let p = conn::pubsub(&opts.redis).await?;
                Ok::<_, redis::RedisError>((c, p))
            };
            match attempt.await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, urls = ?opts.redis.urls, "redis not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        let bus = Bus::new(hub.clone());
        let inner = Arc::new(Inner {
            conn,
            opts,
            sites: sites.clone(),
            hub: hub.clone(),
            bus: bus.clone(),
            copies: DashMap::new(),
            healthy_since: Mutex::new(Some(Instant::now())),
            joined: Mutex::new(None),
        });
        // Unbounded, deliberately: the hub reports changes from synchronous code that must
        // never wait, and the subscriber drains them at once into a set of channels, Redis up
        // or down, so the backlog is bounded by the channels the node has, not by time.
        // `lost` carries one unit per lost pub/sub connection.
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        hub.set_bus(changes_tx.clone());
        tokio::spawn(bus.clone().receive(pushes, lost_tx));
        tokio::spawn(
            Subscriber {
                bus: bus.clone(),
                conn: pubsub,
                changes: changes_rx,
                lost: lost_rx,
                replayer: inner.clone(),
                sites,
            }
            .run(),
        );
        let _ = changes_tx.send(SubChange::Changed(Channel::Nodes));
        if !bus
            .wait_active(&[Channel::Nodes], inner.opts.redis.timeout * 5)
            .await
        {
            return Err(garbled("the control channel could not be subscribed"));
        }
        Ok(RedisEngine { inner })
    }

    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }
}

impl Inner {
    /// Runs a command with the engine's deadline; failures are `Unavailable`.
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
                Err(unavailable(e))
            }
            Err(_) => {
                self.mark_healthy(false);
                Err(garbled("redis did not answer in time"))
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

    /// Brings a site's copy up to date with Redis.
    async fn catch_up(&self, site: &SiteId, copy: &mut Copy) -> Result<(), EngineError> {
        let out = self
            .script(
                scripts::CATCH_UP
                    .key(keys::site_state(site))
                    .key(keys::site_log(site))
                    .arg(copy.state.version)
                    .arg(&copy.epoch),
            )
            .await?;
        let st = &mut copy.state;
        let mut parts = array(out)?.into_iter();
        let ver = parts
            .next()
            .as_ref()
            .and_then(as_u64)
            .ok_or_else(|| garbled("catch-up without a version"))?;
        match parts.next().as_ref().and_then(as_str) {
            None => Ok(()),
            Some("delta") => {
                let names = array(parts.next().unwrap_or(Value::Nil))?;
                let values = array(parts.next().unwrap_or(Value::Nil))?;
                for (n, v) in names.iter().zip(values.iter()) {
                    let Some(name) = as_str(n) else { continue };
                    apply_field(st, name, as_bytes(v))?;
                }
                st.version = ver;
                Ok(())
            }
            Some("full") => {
                let flat = array(parts.next().unwrap_or(Value::Nil))?;
                let epoch = parts.next().as_ref().and_then(as_str).map(str::to_owned);
                if ver < st.version || (st.version > 0 && epoch.as_deref() != Some(&copy.epoch)) {
                    // The store went back in time (Redis lost its data): whoever this node
                    // counted is gone from it, so its clients must connect and be counted
                    // again.
                    tracing::error!(site = %site, had = st.version, now = ver, "site state went back in time; reconnecting clients");
                    for c in self.hub.all() {
                        c.close(crate::protocol::CloseReason::Restarting);
                    }
                }
                let mut fresh = SiteState::new(site.clone());
                for pair in flat.chunks(2) {
                    let [n, v] = pair else { continue };
                    let Some(name) = as_str(n) else { continue };
                    apply_field(&mut fresh, name, as_bytes(v))?;
                }
                fresh.version = ver;
                *st = fresh;
                // A store nobody committed to yet has no epoch: the copy's first commit
                // gives it one of its own.
                copy.epoch = epoch.filter(|e| !e.is_empty()).unwrap_or_else(new_epoch);
                Ok(())
            }
            Some(other) => Err(garbled(format!("catch-up answered {other:?}"))),
        }
    }

    /// Reads a log after a cursor as `(seq, frame bytes)`; `None` when it no longer reaches.
    async fn replay_raw(
        &self,
        conv: &ConvId,
        after: u64,
    ) -> Result<Option<Vec<(u64, Bytes)>>, EngineError> {
        let out = self
            .script(
                scripts::REPLAY
                    .key(keys::conv_meta(conv))
                    .key(keys::conv_log(conv))
                    .arg(after),
            )
            .await?;
        let parts = array(out)?;
        match parts.first().and_then(as_str) {
            Some("ok") => {
                let mut frames = Vec::with_capacity(parts.len() / 2);
                for pair in parts[1..].chunks(2) {
                    let [s, f] = pair else {
                        return Err(garbled("replay pair"));
                    };
                    let seq = as_u64(s).ok_or_else(|| garbled("replay seq"))?;
                    let frame = as_bytes(f).ok_or_else(|| garbled("replay frame"))?;
                    frames.push((seq, Bytes::copy_from_slice(frame)));
                }
                Ok(Some(frames))
            }
            Some("lost") => Ok(None),
            other => Err(garbled(format!("replay answered {other:?}"))),
        }
    }
}

impl Inner {
    /// Whether the commit with `token` produced `version`, asked a few times over about a
    /// second (Redis may be coming back); `None` when nobody can tell.
    async fn committed(&self, site: &SiteId, version: u64, token: u64) -> Option<bool> {
        for pause in [50u64, 200, 750] {
            let out = self
                .script(
                    scripts::COMMITTED
                        .key(keys::site_log(site))
                        .arg(version)
                        .arg(token),
                )
                .await;
            if let Ok(v) = out {
                return Some(as_i64(&v) == Some(1));
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        None
    }
}

impl Replayer for Inner {
    async fn replay_frames(&self, conv: &ConvId, after: u64) -> Option<Vec<(u64, Arc<Outbound>)>> {
        match self.replay_raw(conv, after).await {
            Ok(Some(frames)) => Some(
                frames
                    .into_iter()
                    .map(|(seq, f)| (seq, Outbound::from_msgpack(f)))
                    .collect(),
            ),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(conv = %conv, error = %e, "replay read failed");
                None
            }
        }
    }
}

/// Sets one field of a site's state from its stored bytes (`None`: deleted).
fn apply_field(st: &mut SiteState, name: &str, value: Option<&[u8]>) -> Result<(), EngineError> {
    if name == field::VERSION {
        return Ok(());
    }
    if name == field::QUEUE_CLOCK {
        st.queue_clock = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return Ok(());
    }
    if let Some(id) = name.strip_prefix(field::OPERATOR) {
        let v = value.map(decode).transpose()?;
        st.operators.apply(OperatorId::from(id), v);
    } else if let Some(id) = name.strip_prefix(field::VISITOR) {
        let v = value.map(decode).transpose()?;
        st.visitors.apply(VisitorId::from(id), v);
    } else if let Some(id) = name.strip_prefix(field::CONV) {
        let v = value.map(decode).transpose()?;
        st.convs.apply(ConvId::from(id), v);
    }
    Ok(())
}

/// A node's copy of a site's state, and the epoch of the stored state it copies: a store
/// that lost its data and started over gets a new epoch, so an old copy is never patched
/// with changes from the new history.
struct Copy {
    state: SiteState,
    epoch: String,
}

impl Copy {
    fn new(site: &SiteId) -> Copy {
        Copy {
            state: SiteState::new(site.clone()),
            epoch: new_epoch(),
        }
    }
}

fn new_epoch() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

/// A site's copy checked out for one transition.
pub struct RedisTx {
    inner: Arc<Inner>,
    guard: OwnedMutexGuard<Copy>,
}

impl SiteTx for RedisTx {
    fn state(&mut self) -> &mut SiteState {
        &mut self.guard.state
    }

    async fn commit(&mut self, timers: &[(TimerKind, Option<Millis>)]) -> Result<(), EngineError> {
        let epoch = self.guard.epoch.clone();
        let st = &mut self.guard.state;
        let site = st.site.clone();
        if !st.is_touched() {
            // Nothing to store; timer changes alone need no compare-and-set.
            for (kind, at) in timers {
                let cmd = match at {
                    Some(at) => {
                        let mut c = redis::cmd("ZADD");
                        c.arg(keys::timers(&site)).arg(*at).arg(timer_member(kind));
                        c
                    }
                    None => {
                        let mut c = redis::cmd("ZREM");
                        c.arg(keys::timers(&site)).arg(timer_member(kind));
                        c
                    }
                };
                self.inner.run::<()>(&cmd).await?;
            }
            return Ok(());
        }
        let mut names: Vec<String> = Vec::new();
        let mut sets: Vec<(String, Vec<u8>)> = Vec::new();
        let mut dels: Vec<String> = Vec::new();
        let mut put = |name: String, value: Option<Vec<u8>>| {
            names.push(name.clone());
            match value {
                Some(v) => sets.push((name, v)),
                None => dels.push(name),
            }
        };
        for (id, v) in st.operators.changes() {
            put(format!("{}{id}", field::OPERATOR), v.map(encode));
        }
        for (id, v) in st.visitors.changes() {
            put(format!("{}{id}", field::VISITOR), v.map(encode));
        }
        for (id, v) in st.convs.changes() {
            put(format!("{}{id}", field::CONV), v.map(encode));
        }
        put(
            field::QUEUE_CLOCK.to_owned(),
            Some(st.queue_clock.to_string().into_bytes()),
        );
        let timer_sets: Vec<(String, Millis)> = timers
            .iter()
            .filter_map(|(k, at)| at.map(|at| (timer_member(k), at)))
            .collect();
        let timer_dels: Vec<String> = timers
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(k, _)| timer_member(k))
            .collect();
        let token: u64 = {
            use rand::Rng;
            rand::rng().random()
        };
        let expected = st.version - 1;
        let mut inv = scripts::COMMIT.prepare_invoke();
        inv.key(keys::site_state(&site))
            .key(keys::site_log(&site))
            .key(keys::timers(&site))
            .arg(expected)
            .arg(names.join("\n"))
            .arg(STATE_LOG_CAP)
            .arg(token)
            .arg(&epoch)
            .arg(sets.len())
            .arg(dels.len())
            .arg(timer_sets.len())
            .arg(timer_dels.len());
        for (n, v) in &sets {
            inv.arg(n).arg(v.as_slice());
        }
        for d in &dels {
            inv.arg(d);
        }
        for (m, at) in &timer_sets {
            inv.arg(m).arg(*at);
        }
        for m in &timer_dels {
            inv.arg(m);
        }
        let result = self.inner.script(&inv).await;
        let landed = match result.as_ref().ok().and_then(as_i64) {
            Some(v) => Ok(v),
            None => match &result {
                Err(_) => {
                    // The answer was lost: look for the commit's token before giving up.
                    match self.inner.committed(&site, st.version, token).await {
                        Some(true) => Ok(st.version as i64),
                        _ => Err(()),
                    }
                }
                Ok(_) => Err(()),
            },
        };
        let st = &mut self.guard.state;
        match landed {
            Ok(v) if v >= 0 && v as u64 == st.version => {
                st.clear_touched();
                Ok(())
            }
            outcome => {
                // Not stored, or not known to be: the copy goes back to what it was read as.
                // If it was stored after all, the next catch-up brings it back.
                st.rollback();
                match (outcome, result) {
                    (Ok(-1), _) => Err(EngineError::Conflict),
                    (_, Err(e)) => Err(e),
                    (Ok(v), _) => Err(garbled(format!("commit stored version {v}"))),
                    (Err(()), Ok(other)) => Err(garbled(format!("commit answered {other:?}"))),
                }
            }
        }
    }
}

impl Drop for RedisTx {
    /// A transition dropped before its commit leaves no trace in the copy.
    fn drop(&mut self) {
        self.guard.state.rollback();
    }
}

impl Engine for RedisEngine {
    type Tx = RedisTx;

    async fn begin(&self, site: &SiteId) -> Result<RedisTx, EngineError> {
        let copy = self.inner.copy(site);
        let mut guard = copy.lock_owned().await;
        self.inner.catch_up(site, &mut guard).await?;
        Ok(RedisTx {
            inner: self.inner.clone(),
            guard,
        })
    }

    async fn append(&self, m: NewMessage) -> Result<AppendOutcome, EngineError> {
        let role = m.from.role;
        let ckey = m
            .cid
            .as_ref()
            .map(|c| format!("{}:{}:{c}", role.as_str(), m.from.id))
            .unwrap_or_default();
        let msg = Msg {
            conv: m.conv.0.clone(),
            seq: 0,
            from: m.from,
            text: m.text,
            ts: m.ts,
            cid: m.cid,
        };
        let (prefix, suffix) = msg_frame_parts(&msg);
        // The bus envelope around the frame (see `hub::wire`): kind, audience, except, then
        // `seq` (added by the script), then `ts`.
        let mut middle = Vec::with_capacity(9);
        rmp::encode::write_uint(&mut middle, msg.ts).expect("writing to a Vec cannot fail");
        let channel = keys::channel(&Channel::Conv(m.conv.clone()));
        let mut inv = scripts::APPEND.prepare_invoke();
        inv.key(keys::conv_meta(&m.conv))
            .key(keys::conv_log(&m.conv))
            .key(keys::conv_cids(&m.conv))
            .arg(m.site.as_str())
            .arg(role.as_str())
            .arg(&msg.from.id)
            .arg(&ckey)
            // Kind, audience "all", no connection excepted (msgpack nil).
            .arg(&b"Fa\xc0"[..])
            .arg(middle)
            .arg(prefix)
            .arg(suffix)
            .arg(self.inner.opts.max_log)
            .arg(msg.ts)
            .arg(ttl_secs(OPEN_TTL))
            .arg(&channel)
            .arg(if self.inner.conn.is_cluster() {
                "1"
            } else {
                "0"
            });
        let out = array(self.inner.script(&inv).await?)?;
        match out.first().and_then(as_str) {
            Some("ok") => {
                metrics::counter!(m::BUS_OUT, "kind" => "msg").increment(1);
                let seq = out.get(1).and_then(as_u64).ok_or_else(|| garbled("seq"))?;
                let conv_state = match out.get(2).and_then(as_str) {
                    Some("queued") => ConvState::Queued,
                    Some("offered") => ConvState::Offered,
                    Some("active") => ConvState::Active,
                    Some("closed") => ConvState::Closed,
                    other => return Err(garbled(format!("conversation state {other:?}"))),
                };
                let started_unanswered = out.get(3).and_then(as_u64) == Some(1);
                Ok(AppendOutcome::Stored(Appended {
                    msg: Msg { seq, ..msg },
                    conv_state,
                    started_unanswered,
                }))
            }
            Some("dup") => {
                let frame = out
                    .get(1)
                    .and_then(as_bytes)
                    .ok_or_else(|| garbled("dup"))?;
                Ok(AppendOutcome::Duplicate(decode_msg(frame)?))
            }
            Some("dup_gone") => {
                // The retry carries the same text; the stored copy was trimmed.
                let seq = out
                    .get(1)
                    .and_then(as_u64)
                    .ok_or_else(|| garbled("dup seq"))?;
                Ok(AppendOutcome::Duplicate(Msg { seq, ..msg }))
            }
            Some("nf") => Ok(AppendOutcome::Refused(AppendRefusal::NotFound)),
            Some("closed") => Ok(AppendOutcome::Refused(AppendRefusal::Closed)),
            Some("forbidden") => Ok(AppendOutcome::Refused(AppendRefusal::Forbidden)),
            other => Err(garbled(format!("append answered {other:?}"))),
        }
    }

    async fn replay(&self, conv: &ConvId, after: u64) -> Result<Replay, EngineError> {
        match self.inner.replay_raw(conv, after).await? {
            Some(frames) => Ok(Replay::Recovered(
                frames
                    .iter()
                    .map(|(_, f)| decode_msg(f))
                    .collect::<Result<_, _>>()?,
            )),
            None => Ok(Replay::Lost),
        }
    }

    async fn history(
        &self,
        conv: &ConvId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, EngineError> {
        let out = array(
            self.inner
                .script(
                    scripts::HISTORY
                        .key(keys::conv_log(conv))
                        .arg(before.map_or(-1, |b| b.min(SEQ_ARG_MAX) as i64))
                        .arg(limit.max(1)),
                )
                .await?,
        )?;
        let complete = out.first().and_then(as_u64) == Some(1);
        let messages = out
            .iter()
            .skip(1)
            .map(|f| {
                as_bytes(f)
                    .ok_or_else(|| garbled("history frame"))
                    .and_then(decode_msg)
            })
            .collect::<Result<_, _>>()?;
        Ok(HistoryPage { messages, complete })
    }

    async fn last_seq(&self, conv: &ConvId) -> Result<u64, EngineError> {
        let v: Option<u64> = self
            .inner
            .run(redis::cmd("HGET").arg(keys::conv_meta(conv)).arg("seq"))
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn last_seqs(&self, convs: &[ConvId]) -> Result<Vec<u64>, EngineError> {
        // Concurrent single-key reads share the multiplexed connection (a pipeline would
        // have to be split by slot on a cluster).
        let reads = convs.iter().map(|c| self.last_seq(c));
        futures_util::future::try_join_all(reads).await
    }

    async fn meta(&self, conv: &ConvId) -> Result<Option<ConvMeta>, EngineError> {
        let snap: Option<Vec<u8>> = self
            .inner
            .run(redis::cmd("HGET").arg(keys::conv_meta(conv)).arg("snap"))
            .await?;
        match snap {
            Some(b) => Ok(Some(ConvMeta::from_snapshot(&decode(&b)?))),
            None => Ok(None),
        }
    }

    async fn put_meta(
        &self,
        conv: &ConvId,
        meta: ConvMeta,
        version: u64,
    ) -> Result<(), EngineError> {
        let ttl = if meta.state == ConvState::Closed {
            self.inner.opts.retention
        } else {
            OPEN_TTL
        };
        self.inner
            .script(
                scripts::PUT_META
                    .key(keys::conv_meta(conv))
                    .key(keys::conv_log(conv))
                    .key(keys::conv_cids(conv))
                    .arg(version)
                    .arg(meta.site.as_str())
                    .arg(meta.visitor.as_str())
                    .arg(meta.operator.as_ref().map(|o| o.as_str()).unwrap_or(""))
                    .arg(state_str(meta.state))
                    .arg(encode(&meta.snapshot))
                    .arg(ttl_secs(ttl)),
            )
            .await?;
        Ok(())
    }

    async fn activity(&self, conv: &ConvId) -> Result<Activity, EngineError> {
        let (last, unans): (Option<u64>, Option<u64>) = self
            .inner
            .run(
                redis::cmd("HMGET")
                    .arg(keys::conv_meta(conv))
                    .arg("last_ts")
                    .arg("unans"),
            )
            .await?;
        Ok(Activity {
            last_ts: last.unwrap_or(0),
            unanswered_since: unans.filter(|&u| u > 0),
        })
    }

    async fn visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
    ) -> Result<Option<ConvId>, EngineError> {
        let v: Option<String> = self
            .inner
            .run(redis::cmd("GET").arg(keys::visitor_latest(site, visitor)))
            .await?;
        Ok(v.map(ConvId))
    }

    async fn set_visitor_latest(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        conv: &ConvId,
    ) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("SET")
                    .arg(keys::visitor_latest(site, visitor))
                    .arg(conv.as_str())
                    .arg("EX")
                    .arg(ttl_secs(OPEN_TTL)),
            )
            .await
    }

    async fn publish(&self, ch: &Channel, msg: BusMsg) -> Result<(), EngineError> {
        let payload = wire::encode(&msg);
        let cmd = self.inner.conn.publish_cmd(&keys::channel(ch), &payload);
        self.inner.run::<()>(&cmd).await?;
        metrics::counter!(m::BUS_OUT, "kind" => "event").increment(1);
        Ok(())
    }

    async fn set_timer(
        &self,
        site: &SiteId,
        kind: &TimerKind,
        at: Millis,
        only_if_absent: bool,
    ) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys::timers(site));
        if only_if_absent {
            cmd.arg("NX");
        }
        cmd.arg(at).arg(timer_member(kind));
        self.inner.run::<()>(&cmd).await
    }

    async fn cancel_timer(&self, site: &SiteId, kind: &TimerKind) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("ZREM")
                    .arg(keys::timers(site))
                    .arg(timer_member(kind)),
            )
            .await
    }

    async fn due_timers(&self, now: Millis, limit: usize) -> Result<Vec<TimerClaim>, EngineError> {
        let lease = now + TIMER_LEASE_MS;
        let mut out = Vec::new();
        for site in &self.inner.sites {
            if out.len() >= limit {
                break;
            }
            let due = array(
                self.inner
                    .script(
                        scripts::CLAIM_TIMERS
                            .key(keys::timers(site))
                            .arg(now)
                            .arg(limit - out.len())
                            .arg(lease),
                    )
                    .await?,
            )?;
            for m in &due {
                match as_str(m).and_then(parse_timer) {
                    Some(kind) => out.push(TimerClaim {
                        site: site.clone(),
                        kind,
                        lease,
                    }),
                    None => tracing::warn!(site = %site, member = ?m, "unknown timer dropped"),
                }
            }
        }
        Ok(out)
    }

    async fn finish_timer(&self, claim: &TimerClaim) -> Result<(), EngineError> {
        self.inner
            .script(
                scripts::FINISH_TIMER
                    .key(keys::timers(&claim.site))
                    .arg(timer_member(&claim.kind))
                    .arg(claim.lease),
            )
            .await?;
        Ok(())
    }

    async fn next_timer(&self) -> Result<Option<Millis>, EngineError> {
        let mut next: Option<Millis> = None;
        for site in &self.inner.sites {
            let first: Vec<(String, f64)> = self
                .inner
                .run(
                    redis::cmd("ZRANGE")
                        .arg(keys::timers(site))
                        .arg(0)
                        .arg(0)
                        .arg("WITHSCORES"),
                )
                .await?;
            if let Some((_, at)) = first.first() {
                let at = *at as Millis;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next)
    }

    async fn set_draft(
        &self,
        site: &SiteId,
        op: &OperatorId,
        conv: &ConvId,
        text: Option<String>,
    ) -> Result<(), EngineError> {
        let key = keys::drafts(site, op);
        match text {
            Some(t) => {
                let mut p = redis::pipe();
                p.atomic()
                    .cmd("HSET")
                    .arg(&key)
                    .arg(conv.as_str())
                    .arg(t)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(ttl_secs(OPEN_TTL))
                    .ignore();
                let mut c = self.inner.conn.clone();
                self.inner.deadline(p.query_async::<()>(&mut c)).await
            }
            None => {
                self.inner
                    .run::<()>(redis::cmd("HDEL").arg(&key).arg(conv.as_str()))
                    .await
            }
        }
    }

    async fn drafts(
        &self,
        site: &SiteId,
        op: &OperatorId,
    ) -> Result<Vec<(ConvId, String)>, EngineError> {
        let all: BTreeMap<String, String> = self
            .inner
            .run(redis::cmd("HGETALL").arg(keys::drafts(site, op)))
            .await?;
        Ok(all.into_iter().map(|(c, t)| (ConvId(c), t)).collect())
    }

    async fn save_settings(&self, site: &SiteId, settings: &Json) -> Result<(), EngineError> {
        self.inner
            .run::<()>(
                redis::cmd("SET")
                    .arg(keys::settings(site))
                    .arg(settings.to_string()),
            )
            .await
    }

    async fn load_settings(&self, site: &SiteId) -> Result<Option<Json>, EngineError> {
        let v: Option<String> = self
            .inner
            .run(redis::cmd("GET").arg(keys::settings(site)))
            .await?;
        match v {
            Some(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| garbled(format!("stored settings: {e}"))),
            None => Ok(None),
        }
    }

    async fn set_ban(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        until: Option<Millis>,
    ) -> Result<(), EngineError> {
        let key = keys::ban(site, visitor);
        match until {
            // The key expires when the ban does (Redis' clock); the value says until when.
            Some(t) => {
                self.inner
                    .run::<()>(redis::cmd("SET").arg(&key).arg(t).arg("PXAT").arg(t))
                    .await
            }
            None => self.inner.run::<()>(redis::cmd("DEL").arg(&key)).await,
        }
    }

    async fn banned_until(
        &self,
        site: &SiteId,
        visitor: &VisitorId,
        now: Millis,
    ) -> Result<Option<Millis>, EngineError> {
        let until: Option<u64> = self
            .inner
            .run(redis::cmd("GET").arg(keys::ban(site, visitor)))
            .await?;
        Ok(until.filter(|&t| t > now))
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.inner.run::<()>(&redis::cmd("PING")).await
    }

    async fn wait_subscribed(&self, channels: &[Channel]) -> Result<(), EngineError> {
        if self
            .inner
            .bus
            .wait_active(channels, self.inner.opts.redis.timeout * 2)
            .await
        {
            Ok(())
        } else {
            Err(garbled("subscriptions not confirmed in time"))
        }
    }

    async fn heartbeat(&self, life: &NodeId) -> Result<Heartbeat, EngineError> {
        // A life registers once ("join"); after that it only proves itself ("beat"), and a
        // beat that finds it gone from the registry means it was swept.
        let joined = self.inner.joined.lock().as_ref() == Some(life);
        let out = self
            .inner
            .script(
                scripts::HEARTBEAT
                    .key(keys::NODES)
                    .key(keys::DEAD)
                    .arg(life.as_str())
                    .arg(if joined { "beat" } else { "join" }),
            )
            .await?;
        match as_str(&out) {
            Some("alive") => {
                *self.inner.joined.lock() = Some(life.clone());
                Ok(Heartbeat::Alive)
            }
            Some("evicted") => Ok(Heartbeat::Evicted),
            other => Err(garbled(format!("heartbeat answered {other:?}"))),
        }
    }

    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<NodeId>, EngineError> {
        // Judge others only after being connected for two timeouts: after an outage every
        // node's heartbeat is old, and the live ones need a moment to reconnect and beat.
        let settled = self
            .inner
            .healthy_since
            .lock()
            .is_some_and(|t| t.elapsed() >= self.inner.opts.node_timeout * 2);
        if !settled {
            return Ok(Vec::new());
        }
        let out = self
            .inner
            .script(
                scripts::DEAD_NODES
                    .key(keys::NODES)
                    .key(keys::DEAD)
                    .arg(self.inner.opts.node_timeout.as_millis() as u64),
            )
            .await?;
        Ok(array(out)?
            .iter()
            .filter_map(as_str)
            .filter(|n| *n != me.as_str())
            .map(NodeId::from)
            .collect())
    }

    async fn forget_node(&self, node: &NodeId) -> Result<(), EngineError> {
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SREM")
            .arg(keys::DEAD)
            .arg(node.as_str())
            .ignore()
            .cmd("HDEL")
            .arg(keys::NODES)
            .arg(node.as_str())
            .ignore();
        let mut c = self.inner.conn.clone();
        self.inner.deadline(p.query_async::<()>(&mut c)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Author, Role};

    fn msg(text: &str, cid: Option<&str>) -> Msg {
        Msg {
            conv: "c_1".into(),
            seq: 0,
            from: Author {
                role: Role::Visitor,
                id: "v_1".into(),
                name: Some("Ann".into()),
            },
            text: text.into(),
            ts: 1_700_000_000_000,
            cid: cid.map(str::to_owned),
        }
    }

    #[test]
    fn frame_parts_rebuild_the_exact_frame_for_any_seq() {
        for text in ["hi", "ÿ\u{ff}\u{10ffff} with seq in it: seq", ""] {
            let mut m = msg(text, Some("k1"));
            let (prefix, suffix) = msg_frame_parts(&m);
            for seq in [1u64, 127, 128, 255, 256, 65_535, 65_536, 1 << 32, 1 << 40] {
                m.seq = seq;
                let mut rebuilt = prefix.clone();
                rmp::encode::write_uint(&mut rebuilt, seq).unwrap();
                rebuilt.extend_from_slice(&suffix);
                assert_eq!(
                    rebuilt,
                    ServerFrame::Msg(m.clone())
                        .encode(Encoding::MsgPack)
                        .to_vec(),
                    "seq {seq} text {text:?}"
                );
            }
        }
    }

    #[test]
    fn timer_members_round_trip() {
        for k in [
            TimerKind::Offer(ConvId::from("c:1")),
            TimerKind::Reassign(ConvId::from("c2")),
            TimerKind::Inactive(ConvId::from("c3")),
            TimerKind::Callback(ConvId::from("c4")),
            TimerKind::VisitorGrace(VisitorId::from("v:x")),
            TimerKind::OperatorGrace(OperatorId::from("o")),
        ] {
            assert_eq!(parse_timer(&timer_member(&k)), Some(k));
        }
    }
}
