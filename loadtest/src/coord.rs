//! Keeping worker processes in step, and sampling the gateway at those steps.
//!
//! A scenario calls [`Coord::barrier`] at the points where every process must agree (all
//! sockets up, cut everyone now, …). Alone, the barrier just samples the gateway. As a
//! worker, it tells the parent it arrived (a JSON line on stdout) and waits for `go <name>`
//! on stdin; the parent releases everyone once all live workers arrived, after sampling the
//! gateway itself. So gateway samples are always taken once, by the top process, at the
//! moment every socket of the run is in the same state.

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::procfs;
use crate::scenarios::Outcome;
use crate::stats::Progress;

/// When a barrier was passed, and the gateways' memory and CPU time then (with pids), and
/// Redis' CPU time (with its pids). Several processes are added up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySample {
    pub at: String,
    pub rss_kb: Option<u64>,
    pub cpu_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cpu_ms: Option<u64>,
    pub elapsed_ms: u64,
}

/// Times every barrier, and samples `--gateway-pid`s and `--redis-pid`s (when given) there.
pub struct Probe {
    gateways: Vec<u32>,
    redis: Vec<u32>,
    started: std::time::Instant,
    samples: Mutex<Vec<GatewaySample>>,
}

/// The sum of `f` over `pids`; `None` without pids or when one cannot be read.
fn total(pids: &[u32], f: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| f(p)).sum()
}

impl Probe {
    pub fn new(gateways: Vec<u32>, redis: Vec<u32>) -> Probe {
        Probe {
            gateways,
            redis,
            started: std::time::Instant::now(),
            samples: Mutex::default(),
        }
    }

    /// Records the time of a barrier, with memory and CPU of the processes whose pids are known.
    pub fn sample(&self, at: &str) {
        let cpu = |p| procfs::cpu_ms(Some(p));
        let s = GatewaySample {
            at: at.to_owned(),
            rss_kb: total(&self.gateways, procfs::rss_kb),
            cpu_ms: total(&self.gateways, cpu),
            redis_cpu_ms: total(&self.redis, cpu),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        };
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
    }

    pub fn samples(&self) -> Vec<GatewaySample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One line from a worker to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum WorkerLine {
    Progress { p: Progress },
    Barrier { name: String },
    Result { outcome: Box<Outcome> },
}

/// The parent's side of a worker: JSON lines out, `go` lines in.
pub struct Link {
    out: Mutex<std::io::Stdout>,
    go: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Link {
    /// Starts reading stdin. When the parent goes away stdin closes and every later
    /// barrier fails, which ends the worker.
    pub fn start() -> Link {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Link {
            out: Mutex::new(std::io::stdout()),
            go: tokio::sync::Mutex::new(rx),
        }
    }

    pub fn emit(&self, line: &WorkerLine) {
        let json = serde_json::to_string(line).expect("worker lines serialise");
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{json}");
        let _ = out.flush();
    }
}

pub enum Coord {
    Local(Arc<Probe>),
    Worker(Arc<Link>),
}

impl Coord {
    pub async fn barrier(&self, name: &str) -> Result<()> {
        match self {
            Coord::Local(probe) => {
                probe.sample(name);
                Ok(())
            }
            Coord::Worker(link) => {
                link.emit(&WorkerLine::Barrier {
                    name: name.to_owned(),
                });
                let mut go = link.go.lock().await;
                match go.recv().await {
                    Some(line) if line.trim() == format!("go {name}") => Ok(()),
                    Some(line) => bail!("worker expected `go {name}`, got `{line}`"),
                    None => bail!("parent went away at barrier `{name}`"),
                }
            }
        }
    }

    pub fn is_worker(&self) -> bool {
        matches!(self, Coord::Worker(_))
    }
}
