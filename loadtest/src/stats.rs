//! Live counters and HDR histograms shared by every socket task of one process, and their
//! serialisable snapshots that worker processes send to the parent to be merged.
//!
//! Counters are atomics; each histogram sits behind its own short-held mutex (records are a
//! few nanoseconds, and no lock is ever held across an `.await`). Histograms hold
//! microseconds from 1 µs to 1 hour with 3 significant figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

macro_rules! names {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }
        }
    };
}

names! {
    /// Monotonic event counters.
    pub enum C {
        ConnAttempts = "conn_attempts",
        ConnOk = "conn_ok",
        ConnFailed = "conn_failed",
        Reconnects = "reconnects",
        Sent = "sent",
        Resent = "resent",
        Acked = "acked",
        /// Sends still neither acked nor refused when their sender's task ended.
        Unacked = "unacked",
        /// Sends refused with an error that retrying cannot fix (`too_large`, …).
        Refused = "send_refused",
        RecvV2o = "recv_v2o",
        RecvO2v = "recv_o2v",
        Redelivered = "redelivered",
        Duplicated = "duplicated",
        OutOfOrder = "out_of_order",
        OperatorsActive = "operators_active",
        Started = "conversations_started",
        Assigned = "conversations_assigned",
        Accepted = "accepts_ok",
        AcceptTaken = "accepts_taken",
        Cut = "cut",
        Resumed = "resumed",
        NotRecovered = "not_recovered",
        Replayed = "replayed",
        PushDone = "push_done",
        PushAcked = "push_acked",
        Snapshots = "snapshots",
    }
}

names! {
    /// Latency histograms.
    pub enum H {
        /// TCP connect + WebSocket upgrade.
        Connect = "connect",
        /// `hello` sent → `welcome` received.
        Welcome = "welcome",
        /// Connect start → `welcome` received (what a user waits for).
        Session = "session",
        /// `send` → its `ok` (a visitor's first send counts from the time it was due with
        /// `--latency-from scheduled`).
        Ack = "ack",
        /// Visitor's send time (in the cid: when it was written, or when it was due with
        /// `--latency-from scheduled`) → operator receives the `msg`.
        V2o = "v2o",
        /// Operator's send time → visitor receives the `msg`.
        O2v = "o2v",
        /// Reconnect ordered → every missed message received.
        Resume = "resume",
    }
}

const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

struct LiveHist {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

/// Live statistics of one process.
pub struct Stats {
    pub started: Instant,
    counters: Vec<AtomicU64>,
    open: AtomicU64,
    peak_open: AtomicU64,
    hists: Vec<Mutex<LiveHist>>,
    errors: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    nodes: Mutex<BTreeMap<String, u64>>,
    phase: Mutex<&'static str>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            counters: C::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            hists: H::ALL
                .iter()
                .map(|_| {
                    Mutex::new(LiveHist {
                        total: new_hist(),
                        interval: new_hist(),
                    })
                })
                .collect(),
            errors: Mutex::default(),
            closes: Mutex::default(),
            nodes: Mutex::default(),
            phase: Mutex::new("setup"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stats {
    pub fn inc(&self, c: C) {
        self.add(c, 1);
    }

    pub fn add(&self, c: C, n: u64) {
        self.counters[c as usize].fetch_add(n, Relaxed);
    }

    pub fn get(&self, c: C) -> u64 {
        self.counters[c as usize].load(Relaxed)
    }

    pub fn opened(&self) {
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak_open.fetch_max(now, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    pub fn record(&self, h: H, d: Duration) {
        self.record_us(h, d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&self, h: H, us: u64) {
        let us = us.clamp(1, HIST_MAX_US);
        let mut g = lock(&self.hists[h as usize]);
        g.total.saturating_record(us);
        g.interval.saturating_record(us);
    }

    pub fn error(&self, kind: &str) {
        *lock(&self.errors).entry(kind.to_owned()).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    /// The most frequent error kind so far, with its count.
    pub fn top_error(&self) -> Option<(String, u64)> {
        lock(&self.errors)
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| (k.clone(), *n))
    }

    /// Records how a connection ended: a close code, or `eof` / `io` without one.
    pub fn close(&self, code: &str) {
        *lock(&self.closes).entry(code.to_owned()).or_default() += 1;
    }

    /// Counts a session welcomed by gateway node `node`.
    pub fn node(&self, node: &str) {
        let mut g = lock(&self.nodes);
        match g.get_mut(node) {
            Some(n) => *n += 1,
            None => {
                g.insert(node.to_owned(), 1);
            }
        }
    }

    pub fn set_phase(&self, phase: &'static str) {
        *lock(&self.phase) = phase;
    }

    /// A copy of one histogram's totals.
    pub fn hist(&self, h: H) -> Histogram<u64> {
        lock(&self.hists[h as usize]).total.clone()
    }

    /// Counters for the live progress line; resets the interval histograms.
    pub fn progress(&self) -> Progress {
        let interval_p99 = |h: H| {
            let mut g = lock(&self.hists[h as usize]);
            let p = if g.interval.is_empty() {
                0
            } else {
                g.interval.value_at_quantile(0.99)
            };
            g.interval.reset();
            p
        };
        Progress {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            phase: lock(&self.phase).to_string(),
            open: self.open(),
            conn_ok: self.get(C::ConnOk),
            conn_failed: self.get(C::ConnFailed),
            sent: self.get(C::Sent),
            acked: self.get(C::Acked),
            recv: self.get(C::RecvV2o) + self.get(C::RecvO2v),
            errors: self.errors_total(),
            assigned: self.get(C::Assigned),
            resumed: self.get(C::Resumed),
            p99_v2o_us: interval_p99(H::V2o),
            p99_o2v_us: interval_p99(H::O2v),
            p99_welcome_us: interval_p99(H::Welcome),
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            counters: C::ALL
                .iter()
                .map(|&c| (c.name().to_owned(), self.get(c)))
                .collect(),
            peak_open: self.peak_open.load(Relaxed),
            errors: lock(&self.errors).clone(),
            closes: lock(&self.closes).clone(),
            nodes: lock(&self.nodes).clone(),
            hists: H::ALL
                .iter()
                .map(|&h| (h.name().to_owned(), HistData::from_hist(&self.hist(h))))
                .collect(),
        }
    }
}

/// A histogram as `(value, count)` pairs: lossless at the histogram's precision, plain JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistData(pub Vec<(u64, u64)>);

impl HistData {
    pub fn from_hist(h: &Histogram<u64>) -> Self {
        HistData(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn to_hist(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for &(v, n) in &self.0 {
            h.saturating_record_n(v.clamp(1, HIST_MAX_US), n);
        }
        h
    }

    pub fn merge(&mut self, other: &HistData) {
        let mut h = self.to_hist();
        h.add(other.to_hist()).expect("same bounds");
        *self = HistData::from_hist(&h);
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.to_hist())
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `p50 1.2ms  p90 …  max …` for the human summary.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            fmt_us(self.p50),
            fmt_us(self.p90),
            fmt_us(self.p99),
            fmt_us(self.p999),
            fmt_us(self.max),
            self.count
        )
    }
}

/// Formats microseconds with a unit that keeps 3 significant figures.
pub fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Everything one process measured, mergeable with other processes' snapshots.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub counters: BTreeMap<String, u64>,
    pub peak_open: u64,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    /// Sessions welcomed per gateway node id.
    #[serde(default)]
    pub nodes: BTreeMap<String, u64>,
    pub hists: BTreeMap<String, HistData>,
}

impl StatsSnapshot {
    pub fn merge(&mut self, o: &StatsSnapshot) {
        for (k, v) in &o.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
        // Worker processes run side by side, so their peaks add up.
        self.peak_open += o.peak_open;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.closes {
            *self.closes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.nodes {
            *self.nodes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.hists {
            self.hists.entry(k.clone()).or_default().merge(v);
        }
    }

    pub fn counter(&self, c: C) -> u64 {
        self.counters.get(c.name()).copied().unwrap_or(0)
    }

    pub fn summary(&self, h: H) -> Summary {
        self.hists
            .get(h.name())
            .map(HistData::summary)
            .unwrap_or_default()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One second's progress of one process; worker processes send theirs to the parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub elapsed_ms: u64,
    pub phase: String,
    pub open: u64,
    pub conn_ok: u64,
    pub conn_failed: u64,
    pub sent: u64,
    pub acked: u64,
    pub recv: u64,
    pub errors: u64,
    pub assigned: u64,
    pub resumed: u64,
    pub p99_v2o_us: u64,
    pub p99_o2v_us: u64,
    pub p99_welcome_us: u64,
}

impl Progress {
    /// Sums counters; interval p99s cannot be added, so the worst one is kept.
    pub fn merge(&mut self, o: &Progress) {
        self.elapsed_ms = self.elapsed_ms.max(o.elapsed_ms);
        if self.phase.is_empty() {
            self.phase.clone_from(&o.phase);
        }
        self.open += o.open;
        self.conn_ok += o.conn_ok;
        self.conn_failed += o.conn_failed;
        self.sent += o.sent;
        self.acked += o.acked;
        self.recv += o.recv;
        self.errors += o.errors;
        self.assigned += o.assigned;
        self.resumed += o.resumed;
        self.p99_v2o_us = self.p99_v2o_us.max(o.p99_v2o_us);
        self.p99_o2v_us = self.p99_o2v_us.max(o.p99_o2v_us);
        self.p99_welcome_us = self.p99_welcome_us.max(o.p99_welcome_us);
    }

    /// The live line; `prev` (a second earlier) gives rates.
    pub fn line(&self, prev: &Progress) -> String {
        let secs = (self.elapsed_ms.saturating_sub(prev.elapsed_ms) as f64 / 1e3).max(1e-3);
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
        let p = |us: u64| if us == 0 { "-".to_owned() } else { fmt_us(us) };
        format!(
            "[{:>6.1}s] {:<9} open {} (+{}/s, fail {}) | sent {}/s acked {} recv {}/s | \
             assigned {} resumed {} | p99 v→o {} o→v {} welcome {} | errors {}",
            self.elapsed_ms as f64 / 1e3,
            self.phase,
            self.open,
            rate(self.conn_ok, prev.conn_ok),
            self.conn_failed,
            rate(self.sent, prev.sent),
            self.acked,
            rate(self.recv, prev.recv),
            self.assigned,
            self.resumed,
            p(self.p99_v2o_us),
            p(self.p99_o2v_us),
            p(self.p99_welcome_us),
            self.errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_of_a_uniform_distribution() {
        let mut h = new_hist();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 10_000);
        assert_eq!(s.min, 1);
        // 3 significant figures: within 0.1 %.
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 1e-3;
        assert!(close(s.p50, 5_000), "{s:?}");
        assert!(close(s.p90, 9_000), "{s:?}");
        assert!(close(s.p99, 9_900), "{s:?}");
        assert!(close(s.p999, 9_990), "{s:?}");
        assert!(close(s.max, 10_000), "{s:?}");
        assert!((s.mean - 5000.5).abs() < 5.0);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Summary::of(&new_hist()), Summary::default());
        assert_eq!(Summary::default().line(), "no samples");
    }

    #[test]
    fn hist_data_round_trips_and_merges() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in [10, 20, 20, 1_000_000] {
            a.record(v).unwrap();
        }
        for v in [20, 5_000] {
            b.record(v).unwrap();
        }
        let mut da = HistData::from_hist(&a);
        assert_eq!(Summary::of(&da.to_hist()), Summary::of(&a));
        da.merge(&HistData::from_hist(&b));
        let mut both = a.clone();
        both.add(&b).unwrap();
        assert_eq!(da.summary(), Summary::of(&both));
        assert_eq!(da.summary().count, 6);
        let json = serde_json::to_string(&da).unwrap();
        assert_eq!(serde_json::from_str::<HistData>(&json).unwrap(), da);
    }

    #[test]
    fn out_of_range_values_saturate() {
        let s = Stats::default();
        s.record_us(H::Ack, 0);
        s.record_us(H::Ack, u64::MAX);
        let sum = Summary::of(&s.hist(H::Ack));
        assert_eq!(sum.count, 2);
        assert_eq!(sum.min, 1);
    }

    #[test]
    fn snapshots_merge_counters_maps_and_histograms() {
        let a = Stats::default();
        a.inc(C::Sent);
        a.error("rate_limited");
        a.close("1012");
        a.node("n1");
        a.opened();
        a.record(H::V2o, Duration::from_micros(500));
        let b = Stats::default();
        b.add(C::Sent, 2);
        b.error("rate_limited");
        b.error("eof");
        b.node("n1");
        b.node("n2");
        b.opened();
        b.opened();
        b.closed();
        b.record(H::V2o, Duration::from_micros(1500));
        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        assert_eq!(m.counter(C::Sent), 3);
        assert_eq!(m.errors["rate_limited"], 2);
        assert_eq!(m.errors_total(), 3);
        assert_eq!(m.closes["1012"], 1);
        assert_eq!((m.nodes["n1"], m.nodes["n2"]), (2, 1));
        assert_eq!(m.peak_open, 3);
        assert_eq!(m.summary(H::V2o).count, 2);
        assert!(m.summary(H::V2o).max >= 1499);
    }

    #[test]
    fn progress_merges_and_renders() {
        let mut a = Progress {
            elapsed_ms: 2000,
            sent: 100,
            p99_v2o_us: 900,
            ..Progress::default()
        };
        let b = Progress {
            elapsed_ms: 2010,
            sent: 50,
            p99_v2o_us: 1200,
            ..Progress::default()
        };
        a.merge(&b);
        assert_eq!(a.sent, 150);
        assert_eq!(a.p99_v2o_us, 1200);
        let prev = Progress {
            elapsed_ms: 1010,
            sent: 50,
            ..Progress::default()
        };
        let line = a.line(&prev);
        assert!(line.contains("sent 100/s"), "{line}");
        assert!(line.contains("v→o 1.20ms"), "{line}");
    }

    #[test]
    fn formats_microseconds() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_234), "1.23ms");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }
}
