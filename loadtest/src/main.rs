//! `loadtest`: drives many WebSocket sockets against one or more chat-gateway nodes and
//! reports delivery latency, loss, duplication and order, errors and close codes, and the
//! gateway's memory and CPU; thresholds turn the report into an exit status.
//!
//! One process runs in one of three modes. Alone, it runs the scenario itself. With
//! `--workers N` (N > 1) it is a parent: it starts N copies of itself as workers, each with a
//! share of the sockets, relays their barriers and progress, and merges their results
//! ([`workers`]). As a worker (`LOADTEST_WORKER=i/n`, set by the parent) it runs its share and
//! sends its result to the parent on stdout.

mod auth;
mod cli;
mod client;
mod coord;
mod ledger;
mod procfs;
mod proto;
mod report;
mod roles;
mod scenarios;
mod stats;
mod workers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Cli, Scenario, WorkerSlot};
use crate::coord::{Coord, Link, Probe, WorkerLine};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let limit = time_budget(&cli) * 2 + Duration::from_secs(60);
    let result = rt.block_on(async {
        tokio::time::timeout(limit, run(cli))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the run did not end within {limit:?}")))
    });
    // Socket tasks may still be winding down; they must not hold the process up.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(slot) = cli.common.worker {
        return run_worker(&cli, slot).await;
    }
    let run_id = cli.common.run_id.clone().unwrap_or_else(random_run_id);
    let started = std::time::Instant::now();
    let probe = Arc::new(Probe::new(
        cli.common.gateway_pid.clone(),
        cli.common.redis_pid.clone(),
    ));
    let outcome = if cli.common.workers > 1 {
        workers::run_parent(&cli, &run_id, probe.clone()).await?
    } else {
        let coord = Coord::Local(probe.clone());
        scenarios::run(&cli, WorkerSlot::SOLO, coord, &run_id).await?
    };
    let report = report::build(&cli, &run_id, outcome, &probe.samples(), started.elapsed());
    print!("{}", report.human());
    if let Some(path) = &cli.common.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    Ok(if report.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A worker runs its share and hands the result to the parent as one JSON line.
async fn run_worker(cli: &Cli, slot: WorkerSlot) -> Result<ExitCode> {
    let link = Arc::new(Link::start());
    let run_id = cli
        .common
        .run_id
        .clone()
        .context("a worker needs the parent's run id")?;
    let outcome = scenarios::run(cli, slot, Coord::Worker(link.clone()), &run_id).await?;
    link.emit(&WorkerLine::Result {
        outcome: Box::new(outcome),
    });
    Ok(ExitCode::SUCCESS)
}

fn random_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A generous estimate of how long the run takes; tokens outlive it and the whole run is
/// aborted at twice this.
pub fn time_budget(cli: &Cli) -> Duration {
    let c = &cli.common;
    let base = c.setup_timeout + c.duration + c.drain + Duration::from_secs(30);
    match &cli.scenario {
        Scenario::Chat(_) => base,
        Scenario::Idle(a) => base + a.settle,
        // Setup, chat before and after, the push (bounded by the setup timeout) and the
        // resume (bounded by --duration).
        Scenario::ReconnectStorm(a) => base + c.setup_timeout + a.chat * 2,
        // Each step may wait up to 15 s for its stragglers.
        Scenario::Ramp(a) => {
            let step = a.step_duration.as_secs_f64().max(0.001);
            let steps = (c.duration.as_secs_f64() / step).ceil().max(1.0) as u32;
            base + Duration::from_secs(15) * steps.min(1000)
        }
    }
}
