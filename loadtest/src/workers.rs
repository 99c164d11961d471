//! The parent of worker processes (`--workers N`): one process may hold only ~20,000 file
//! descriptors here, so a run of more sockets is split over N copies of this binary.
//!
//! The parent starts each worker with the same command line plus `LOADTEST_WORKER=i/N` and
//! the run id in the environment. Workers talk JSON lines on stdout ([`WorkerLine`]): a
//! progress line every second, a barrier arrival, and finally their [`Outcome`]. The parent
//! releases a barrier (`go <name>` on every worker's stdin) once every live worker arrived,
//! sampling the gateway first, so gateway samples describe the whole run's sockets. A worker
//! that dies stops counting at barriers, is reported as an error (`worker:died`), and fails
//! the run: its share of the measurements is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::cli::Cli;
use crate::coord::{Probe, WorkerLine};
use crate::scenarios::Outcome;
use crate::stats::Progress;

/// Runs `--workers` copies of this program and merges what they measured.
pub async fn run_parent(cli: &Cli, run_id: &str, probe: Arc<Probe>) -> Result<Outcome> {
    let n = cli.common.workers;
    let exe = std::env::current_exe().context("locating the loadtest binary")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<WorkerLine>)>();
    let mut children: Vec<Child> = Vec::with_capacity(n);
    let mut stdins: Vec<Option<ChildStdin>> = Vec::with_capacity(n);
    for i in 0..n {
        let mut child = Command::new(&exe)
            .args(&args)
            .env("LOADTEST_WORKER", format!("{i}/{n}"))
            .env("LOADTEST_RUN_ID", run_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdins.push(child.stdin.take());
        children.push(child);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<WorkerLine>(&line) {
                    Ok(l) => {
                        let _ = tx.send((i, Some(l)));
                    }
                    Err(_) => eprintln!("worker {i}: {line}"),
                }
            }
            let _ = tx.send((i, None));
        });
    }
    drop(tx);

    let mut live: BTreeSet<usize> = (0..n).collect();
    let mut finished: BTreeSet<usize> = BTreeSet::new();
    let mut arrived: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut progress: Vec<Progress> = vec![Progress::default(); n];
    let mut merged: Option<Outcome> = None;
    let mut died = 0u64;
    let mut prev = Progress::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((i, line)) = msg else { break };
                match line {
                    Some(WorkerLine::Progress { p }) => progress[i] = p,
                    Some(WorkerLine::Barrier { name }) => {
                        arrived.entry(name).or_default().insert(i);
                    }
                    Some(WorkerLine::Result { outcome }) => {
                        finished.insert(i);
                        match &mut merged {
                            Some(m) => m.merge(*outcome),
                            None => merged = Some(*outcome),
                        }
                    }
                    None => {
                        live.remove(&i);
                        stdins[i] = None;
                        if !finished.contains(&i) {
                            eprintln!("loadtest: worker {i} ended without a result");
                            died += 1;
                        }
                    }
                }
                release_barriers(&mut arrived, &live, &mut stdins, &probe).await;
            }
            _ = tick.tick() => {
                if !cli.common.quiet {
                    let mut all = Progress::default();
                    for p in &progress {
                        all.merge(p);
                    }
                    eprintln!("{}", all.line(&prev));
                    prev = all;
                }
            }
        }
    }
    for mut c in children {
        let _ = c.wait().await;
    }
    let Some(mut outcome) = merged else {
        bail!("no worker produced a result");
    };
    if died > 0 {
        *outcome
            .stats
            .errors
            .entry("worker:died".into())
            .or_default() += died;
    }
    Ok(outcome)
}

/// Releases every barrier that all live workers reached, sampling the gateway first.
async fn release_barriers(
    arrived: &mut BTreeMap<String, BTreeSet<usize>>,
    live: &BTreeSet<usize>,
    stdins: &mut [Option<ChildStdin>],
    probe: &Probe,
) {
    let ready: Vec<String> = arrived
        .iter()
        .filter(|(_, who)| live.is_subset(who))
        .map(|(name, _)| name.clone())
        .collect();
    for name in ready {
        arrived.remove(&name);
        probe.sample(&name);
        let line = format!("go {name}\n");
        for i in live {
            if let Some(stdin) = &mut stdins[*i] {
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    stdins[*i] = None;
                }
            }
        }
    }
}
