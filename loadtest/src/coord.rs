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

/// When a barrier was passed, and the gateway's memory and CPU time then (with a pid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySample {
    pub at: String,
    pub rss_kb: Option<u64>,
    pub cpu_ms: Option<u64>,
    pub elapsed_ms: u64,
}

/// Times every barrier, and samples `--gateway-pid` (when given) there.
pub struct Probe {
    pid: Option<u32>,
    started: std::time::Instant,
    samples: Mutex<Vec<GatewaySample>>,
}

impl Probe {
    pub fn new(pid: Option<u32>) -> Probe {
        Probe {
            pid,
            started: std::time::Instant::now(),
            samples: Mutex::default(),
        }
    }

    /// Records the time of a barrier, with the gateway's memory and CPU when its pid is known.
    pub fn sample(&self, at: &str) {
        let s = GatewaySample {
            at: at.to_owned(),
            rss_kb: self.pid.and_then(procfs::rss_kb),
            cpu_ms: self.pid.and_then(|pid| procfs::cpu_ms(Some(pid))),
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
