//! The simulated participants. Each socket is one tokio task running a small state machine:
//! [`visitor`] (start, wait for an operator, send at a rate, resume after a cut),
//! [`operator`] (go active, take conversations in any routing mode, answer every visitor
//! message, write into conversations on demand) and [`idler`] (authenticate and sit still).
//!
//! The scenario driver steers all of them at once through a [`Phase`] broadcast and watches
//! their progress through the shared counters in [`Stats`]. Tasks treat phases as "at least
//! this far", so a task that missed an intermediate phase still does the right thing.

pub mod idler;
pub mod operator;
pub mod visitor;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::{timeout_at, Interval, MissedTickBehavior};

use crate::auth::Minter;
use crate::cli::{CutMode, LatencyFrom};
use crate::client::{Ended, Event, Net, WsConn};
use crate::ledger::ConvReport;
use crate::proto::{ClientFrame, Conversation, ServerFrame, Welcome};
use crate::stats::{Stats, C, H};

/// Where the run is; ordered, and tasks act on "at least this phase".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Connecting, starting and assigning conversations.
    Setup,
    /// Visitors send at their rate; operators answer.
    Run,
    /// Storm: every visitor drops its socket.
    Cut,
    /// Storm: operators write `push_per_conv` messages into each of their conversations.
    Push,
    /// Storm: visitors reconnect with cursors, then chat again.
    Resume,
    /// Nobody starts a new message; in-flight ones finish.
    Stop,
    /// Every participant reports its delivery ledger.
    Snapshot,
    /// Close sockets and end.
    Finish,
}

/// What every task of one process shares.
pub struct Ctx {
    pub net: Net,
    pub stats: Stats,
    pub minter: Minter,
    pub run_id: String,
    pub queue: String,
    /// Message body (the `--size` bytes).
    pub text: String,
    /// Operators' accepts/pushes per second each; 0 = unpaced.
    pub op_pace: f64,
    /// Operators in the whole run (manual routing splits the queue between them).
    pub operators: usize,
    pub max_chats: u32,
    pub push_per_conv: u32,
    pub cut_mode: CutMode,
    pub latency_from: LatencyFrom,
    pub phase: watch::Receiver<Phase>,
    pub reports: Mutex<Vec<ConvReport>>,
    /// Routing mode announced in `welcome.settings`.
    pub routing: Mutex<Option<String>>,
}

impl Ctx {
    pub fn report(&self, r: ConvReport) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    /// Whether a conversation belongs to this run (its visitor's id carries the run id):
    /// operators leave other runs' conversations alone.
    pub fn is_ours(&self, c: &Conversation) -> bool {
        c.visitor.as_ref().is_some_and(|v| {
            v.id.strip_prefix("lt-")
                .and_then(|rest| rest.strip_prefix(self.run_id.as_str()))
                .is_some_and(|rest| rest.starts_with('-'))
        })
    }

    fn note_routing(&self, w: &Welcome) {
        if let Some(r) = &w.settings.routing {
            let mut g = self.routing.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(r.clone());
            }
        }
    }
}

/// Counts a socket as open for as long as it lives. Holds its own handle on the context so
/// the task body stays free to borrow itself mutably.
pub struct OpenGuard(Shared);

impl OpenGuard {
    pub fn new(ctx: &Shared) -> Self {
        ctx.stats.opened();
        OpenGuard(ctx.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.stats.closed();
    }
}

/// Connects socket `index`, says `hello` and waits for `welcome`. On failure, counts it and
/// returns the error kind.
pub async fn establish(
    ctx: &Ctx,
    index: usize,
    token: &str,
    cursors: BTreeMap<&str, u64>,
) -> Result<(WsConn, Welcome), String> {
    let t0 = Instant::now();
    let result = async {
        let mut conn = ctx.net.connect(index, &ctx.stats).await?;
        let sent = Instant::now();
        conn.send(&ClientFrame::Hello { token, cursors })
            .await
            .map_err(|e| format!("hello:{}", e.label))?;
        let deadline = tokio::time::Instant::from_std(sent + Duration::from_secs(10));
        loop {
            match timeout_at(deadline, conn.recv()).await {
                Err(_) => return Err("welcome:timeout".to_owned()),
                Ok(Event::Frame(ServerFrame::Welcome(w))) => {
                    ctx.stats.record(H::Welcome, sent.elapsed());
                    return Ok((conn, w));
                }
                Ok(Event::Frame(ServerFrame::Ping)) => {
                    let _ = conn.send(&ClientFrame::Pong).await;
                }
                Ok(Event::Frame(ServerFrame::Error(e))) => {
                    return Err(format!("welcome:{}", e.code));
                }
                Ok(Event::Frame(_)) | Ok(Event::Undecodable) => continue,
                Ok(Event::Closed(end)) => return Err(format!("welcome:close_{}", end.label)),
            }
        }
    }
    .await;
    match result {
        Ok((conn, w)) => {
            ctx.stats.inc(C::ConnOk);
            ctx.stats.node(&w.node);
            ctx.stats.record(H::Session, t0.elapsed());
            ctx.note_routing(&w);
            Ok((conn, w))
        }
        Err(kind) => {
            ctx.stats.inc(C::ConnFailed);
            ctx.stats.error(&kind);
            Err(kind)
        }
    }
}

/// Records an unexpected end of a connection. Drains (1012) are expected: counted as a
/// close code, not an error.
pub fn note_end(stats: &Stats, end: &Ended) {
    stats.close(&end.label);
    if end.code != Some(1012) {
        stats.error(&format!("close:{}", end.label));
    }
}

/// How long to wait before reconnecting after `end`, or `None` to stay closed
/// (the table of close codes in protocol v1).
pub fn reconnect_delay(end: &Ended, attempt: u32) -> Option<Duration> {
    match end.code {
        Some(1000 | 4000 | 4001 | 4003) => None,
        Some(1012) => Some(jitter(500)),
        _ => Some(backoff(attempt)),
    }
}

/// Exponential backoff from 250 ms to 5 s, with jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 250u64.saturating_mul(1 << attempt.min(5)).min(5_000);
    Duration::from_millis(base) + jitter(250)
}

pub fn jitter(max_ms: u64) -> Duration {
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// Wall-clock microseconds: cids carry it so that any process on this machine can compute
/// a delivery latency.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Delivery latency of a message whose cid says it was sent at `sent_us`.
pub fn latency_us(sent_us: u64) -> u64 {
    now_us().saturating_sub(sent_us)
}

/// Evenly spaced permits, `rate` per second (0 = no pacing).
pub struct Pacer {
    every: Duration,
    next: Instant,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        let every = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        Pacer {
            every,
            next: Instant::now(),
        }
    }

    pub fn ready_at(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.next)
    }

    pub fn take(&mut self) {
        self.next = self.next.max(Instant::now()) + self.every;
    }
}

/// FNV-1a, the same in every process: manual routing gives each conversation a preferred
/// operator so that operators do not all race for the same one.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The silence after which a client gives up on a connection: ping interval + 10 s.
pub fn silence_limit(w: &Welcome) -> Duration {
    Duration::from_millis(w.settings.ping_interval_ms.unwrap_or(25_000)) + Duration::from_secs(10)
}

/// Sleeps `d` unless the run finishes first; false when it did.
pub async fn wait_or_finish(phase_rx: &mut watch::Receiver<Phase>, d: Duration) -> bool {
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    loop {
        if *phase_rx.borrow_and_update() >= Phase::Finish {
            return false;
        }
        tokio::select! {
            _ = &mut deadline => return true,
            r = phase_rx.changed() => if r.is_err() { return false },
        }
    }
}

/// A visitor's rate schedule: a tick every `period`. Measuring from `sent`, a late tick is
/// delayed and the schedule slides (what the tester could not send is never sent). Measuring
/// from `scheduled`, late ticks fire at once until the schedule is caught up, and each says
/// how long ago it was due, so the message is stamped with the time it should have left.
pub struct Schedule {
    interval: Interval,
    from: LatencyFrom,
}

impl Schedule {
    pub fn new(first: tokio::time::Instant, period: Duration, from: LatencyFrom) -> Schedule {
        let mut interval = tokio::time::interval_at(first, period);
        interval.set_missed_tick_behavior(match from {
            LatencyFrom::Sent => MissedTickBehavior::Delay,
            LatencyFrom::Scheduled => MissedTickBehavior::Burst,
        });
        Schedule { interval, from }
    }

    /// Waits for the next tick; returns how far to back-date the message: how late the tick
    /// is (`scheduled`), or zero (`sent`).
    pub async fn tick(&mut self) -> Duration {
        let due = self.interval.tick().await;
        match self.from {
            LatencyFrom::Sent => Duration::ZERO,
            LatencyFrom::Scheduled => tokio::time::Instant::now().saturating_duration_since(due),
        }
    }
}

/// Waits for the next tick of an optional schedule (forever when there is none).
pub async fn tick(t: &mut Option<Schedule>) -> Duration {
    match t {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

/// Waits until an optional instant (forever when there is none).
pub async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A shared, cheap handle for the task body.
pub type Shared = Arc<Ctx>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_policy_follows_the_close_code_table() {
        let code = |c| Ended {
            code: Some(c),
            label: c.to_string(),
        };
        for stay in [1000, 4000, 4001, 4003] {
            assert_eq!(reconnect_delay(&code(stay), 0), None, "{stay}");
        }
        assert!(reconnect_delay(&code(1012), 0).unwrap() <= Duration::from_millis(500));
        assert!(reconnect_delay(&code(4008), 0).unwrap() >= Duration::from_millis(250));
        assert!(reconnect_delay(&code(4029), 9).unwrap() >= Duration::from_secs(5));
        assert!(reconnect_delay(&Ended::other("eof"), 1).is_some());
        assert!(backoff(30) <= Duration::from_millis(5_250));
    }

    #[test]
    fn pacer_spaces_permits() {
        let mut p = Pacer::new(100.0);
        let first = p.ready_at();
        p.take();
        p.take();
        assert!(p.ready_at() - first >= Duration::from_millis(19));
        let mut free = Pacer::new(0.0);
        free.take();
        assert!(free.ready_at() <= tokio::time::Instant::now());
    }

    #[tokio::test]
    async fn a_late_schedule_back_dates_its_messages_only_from_scheduled() {
        let period = Duration::from_millis(20);
        for from in [LatencyFrom::Sent, LatencyFrom::Scheduled] {
            let mut s = Schedule::new(tokio::time::Instant::now(), period, from);
            // The tester is stuck for five and a half periods (a saturated tester blocks
            // just like this): ticks at 0, 20, 40, 60, 80 and 100 ms are all missed.
            std::thread::sleep(period * 11 / 2);
            let mut late = Vec::new();
            for _ in 0..4 {
                late.push(s.tick().await);
            }
            match from {
                LatencyFrom::Sent => assert!(late.iter().all(|l| l.is_zero()), "{late:?}"),
                LatencyFrom::Scheduled => {
                    // Every missed tick fires at once, each due one period after the last.
                    assert!(late[0] >= Duration::from_millis(110), "{late:?}");
                    assert!(late[3] >= Duration::from_millis(50), "{late:?}");
                    assert!(late.windows(2).all(|w| w[0] > w[1]), "{late:?}");
                }
            }
        }
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(""), 0xcbf29ce484222325);
        assert_eq!(fnv1a("a"), 0xaf63dc4c8601ec8c);
    }
}
