//! Scenario drivers. A driver spawns the socket tasks of its share of the run, moves them
//! through [`Phase`]s, meets the other worker processes at barriers, and returns an
//! [`Outcome`] — everything this process measured, mergeable with the others'.

pub mod chat;
pub mod idle;
pub mod ramp;
pub mod storm;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::Minter;
use crate::cli::{Cli, Common, CutMode, Scenario, WorkerSlot};
use crate::client::Net;
use crate::coord::{Coord, WorkerLine};
use crate::ledger::ConvReport;
use crate::procfs;
use crate::roles::{Ctx, Phase};
use crate::stats::{HistData, Progress, Stats, StatsSnapshot, C};

/// What one process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub stats: StatsSnapshot,
    pub convs: Vec<ConvReport>,
    /// Ramp steps, in order.
    pub steps: Vec<StepOutcome>,
    /// Scenario values that add up across processes (sockets open at a barrier, …).
    pub sums: BTreeMap<String, u64>,
    /// Scenario values where the largest counts (time until everyone resumed, …).
    pub maxes: BTreeMap<String, u64>,
    pub routing: Option<String>,
    /// CPU time the load tester itself used (all processes).
    pub loadtest_cpu_ms: u64,
    pub processes: u64,
}

impl Outcome {
    pub fn merge(&mut self, o: Outcome) {
        self.stats.merge(&o.stats);
        self.convs.extend(o.convs);
        for (i, s) in o.steps.into_iter().enumerate() {
            match self.steps.get_mut(i) {
                Some(mine) => mine.merge(&s),
                None => self.steps.push(s),
            }
        }
        for (k, v) in o.sums {
            *self.sums.entry(k).or_default() += v;
        }
        for (k, v) in o.maxes {
            let e = self.maxes.entry(k).or_default();
            *e = (*e).max(v);
        }
        if self.routing.is_none() {
            self.routing = o.routing;
        }
        self.loadtest_cpu_ms += o.loadtest_cpu_ms;
        self.processes += o.processes;
    }
}

/// One ramp step of one or more processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Target connections per second, all processes together.
    pub rate: f64,
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// Connect + welcome time of this step's sockets.
    pub session: HistData,
    /// Why this process stopped ramping after this step, if it did.
    pub stopped_by: Option<String>,
}

impl StepOutcome {
    fn merge(&mut self, o: &StepOutcome) {
        self.attempted += o.attempted;
        self.ok += o.ok;
        self.failed += o.failed;
        self.session.merge(&o.session);
        if self.stopped_by.is_none() {
            self.stopped_by.clone_from(&o.stopped_by);
        }
    }
}

/// A scenario driver's handle on its process.
pub struct Env {
    pub common: Common,
    pub slot: WorkerSlot,
    pub ctx: Arc<Ctx>,
    pub coord: Coord,
    phase_tx: watch::Sender<Phase>,
    tasks: JoinSet<()>,
    pub sums: BTreeMap<String, u64>,
    pub maxes: BTreeMap<String, u64>,
    pub steps: Vec<StepOutcome>,
}

impl Env {
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    pub fn phase(&self, p: Phase, label: &'static str) {
        self.ctx.stats.set_phase(label);
        let _ = self.phase_tx.send(p);
    }

    pub async fn barrier(&self, name: &str) -> Result<()> {
        self.coord.barrier(name).await
    }

    /// Polls `cond` until it holds or `limit` passes; false on timeout.
    pub async fn wait_for(&self, limit: Duration, cond: impl Fn(&Stats) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(&self.ctx.stats) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns one task per item, evenly spaced at `rate` per second (0 = all at once).
    pub async fn spawn_paced<F, Fut>(&mut self, items: Vec<usize>, rate: f64, mut make: F)
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = tokio::time::Instant::now();
        let every = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            Duration::ZERO
        };
        for (k, item) in items.into_iter().enumerate() {
            if !every.is_zero() {
                tokio::time::sleep_until(start + every.mul_f64(k as f64)).await;
            }
            self.tasks.spawn(make(item));
        }
    }

    /// This process's share of the connect rate.
    pub fn connect_rate(&self) -> f64 {
        self.slot.rate(self.common.connect_rate)
    }

    /// Ends the run: every task closes its socket; stragglers are aborted.
    pub async fn finish(&mut self) {
        self.phase(Phase::Finish, "closing");
        let tasks = &mut self.tasks;
        let joined = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            self.ctx.stats.error("shutdown:timeout");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
    }

    /// Counts a setup shortfall (`missing` sockets that never got where they should) as
    /// errors and says so.
    pub fn shortfall(&self, what: &str, missing: u64) {
        if missing > 0 {
            if !self.coord.is_worker() || self.slot.index == 0 {
                eprintln!("loadtest: {missing} {what} (setup timeout)");
            }
            for _ in 0..missing {
                self.ctx.stats.error(&format!("setup:{what}"));
            }
        }
    }

    /// Fails the run when not one socket got through setting up (wrong URL, secret or
    /// site), instead of waiting out the setup timeout and reporting a run of nothing.
    pub fn require_some_connection(&self) -> Result<()> {
        let s = self.stats();
        if s.get(C::ConnOk) == 0 && s.get(C::ConnFailed) > 0 {
            let (kind, n) = s.top_error().unwrap_or_default();
            anyhow::bail!(
                "no socket could be set up ({} failed, most often `{kind}` × {n}); check --url, \
                 --secret and --site",
                s.get(C::ConnFailed)
            );
        }
        Ok(())
    }

    pub fn note(&self, msg: &str) {
        if self.slot.index == 0 {
            eprintln!("loadtest: {msg}");
        }
    }
}

/// Runs the chosen scenario in this process (alone, or as one worker).
pub async fn run(cli: &Cli, slot: WorkerSlot, coord: Coord, run_id: &str) -> Result<Outcome> {
    let common = cli.common.clone();
    let secret = common
        .secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("no --secret (or GATEWAY_JWT_SECRET) given: tokens are minted with it")?;
    let net = Net::new(
        &common.urls,
        &common.source_ips,
        common.encoding,
        common.connect_concurrency,
    )
    .await?;
    let (size, operators, max_chats, push, cut_mode) = match &cli.scenario {
        Scenario::Chat(a) => (a.size, a.operators, a.max_chats, 0, CutMode::Rst),
        Scenario::ReconnectStorm(a) => (a.size, a.operators, a.max_chats, a.missed, a.cut),
        Scenario::Idle(_) | Scenario::Ramp(_) => (0, 0, 0, 0, CutMode::Rst),
    };
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let ttl = crate::time_budget(cli) + Duration::from_secs(3600);
    let ctx = Arc::new(Ctx {
        net,
        stats: Stats::default(),
        minter: Minter::new(secret, &common.site, ttl),
        run_id: run_id.to_owned(),
        queue: common.queue.clone(),
        text: "x".repeat(size),
        op_pace: common.op_pace,
        operators,
        max_chats,
        push_per_conv: push,
        cut_mode,
        latency_from: common.latency_from,
        phase: phase_rx,
        reports: Mutex::default(),
        routing: Mutex::default(),
    });
    let progress = spawn_progress(ctx.clone(), &coord, common.quiet);
    let mut env = Env {
        common,
        slot,
        ctx: ctx.clone(),
        coord,
        phase_tx,
        tasks: JoinSet::new(),
        sums: BTreeMap::new(),
        maxes: BTreeMap::new(),
        steps: Vec::new(),
    };
    let result = match &cli.scenario {
        Scenario::Chat(a) => chat::run(&mut env, a).await,
        Scenario::Idle(a) => idle::run(&mut env, a).await,
        Scenario::ReconnectStorm(a) => storm::run(&mut env, a).await,
        Scenario::Ramp(a) => ramp::run(&mut env, a).await,
    };
    if result.is_err() {
        env.finish().await;
    }
    progress.abort();
    result?;
    let convs = std::mem::take(&mut *ctx.reports.lock().unwrap_or_else(|e| e.into_inner()));
    let routing = ctx
        .routing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Outcome {
        stats: ctx.stats.snapshot(),
        convs,
        steps: std::mem::take(&mut env.steps),
        sums: std::mem::take(&mut env.sums),
        maxes: std::mem::take(&mut env.maxes),
        routing,
        loadtest_cpu_ms: procfs::cpu_ms(None).unwrap_or(0),
        processes: 1,
    })
}

/// Once a second: the progress line on stderr, or to the parent as a JSON line.
fn spawn_progress(ctx: Arc<Ctx>, coord: &Coord, quiet: bool) -> tokio::task::JoinHandle<()> {
    let link = match coord {
        Coord::Worker(link) => Some(link.clone()),
        Coord::Local(_) => None,
    };
    tokio::spawn(async move {
        let mut prev = Progress::default();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            every.tick().await;
            let p = ctx.stats.progress();
            match &link {
                Some(link) => link.emit(&WorkerLine::Progress { p }),
                None => {
                    if !quiet {
                        eprintln!("{}", p.line(&prev));
                    }
                    prev = p;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;

    #[test]
    fn outcomes_merge_steps_sums_and_maxes() {
        let mut h = new_hist();
        h.record(100).unwrap();
        let step = |ok, stop: Option<&str>| StepOutcome {
            rate: 100.0,
            attempted: ok,
            ok,
            failed: 0,
            session: HistData::from_hist(&h),
            stopped_by: stop.map(str::to_owned),
        };
        let mut a = Outcome {
            steps: vec![step(5, None)],
            sums: BTreeMap::from([("open".into(), 10)]),
            maxes: BTreeMap::from([("resume_ms".into(), 70)]),
            processes: 1,
            ..Outcome::default()
        };
        let b = Outcome {
            steps: vec![step(7, None), step(3, Some("errors"))],
            sums: BTreeMap::from([("open".into(), 5)]),
            maxes: BTreeMap::from([("resume_ms".into(), 90)]),
            routing: Some("manual".into()),
            processes: 1,
            ..Outcome::default()
        };
        a.merge(b);
        assert_eq!(a.steps.len(), 2);
        assert_eq!(a.steps[0].ok, 12);
        assert_eq!(a.steps[0].session.summary().count, 2);
        assert_eq!(a.steps[1].stopped_by.as_deref(), Some("errors"));
        assert_eq!(a.sums["open"], 15);
        assert_eq!(a.maxes["resume_ms"], 90);
        assert_eq!(a.routing.as_deref(), Some("manual"));
        assert_eq!(a.processes, 2);
    }
}
