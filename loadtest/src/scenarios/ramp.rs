//! `ramp`: open idle sockets at `--start-rate` connections per second, adding `--step` every
//! `--step-duration`, holding every socket, until a step has more than `--step-errors`
//! failed connections, or its connect + welcome p99 exceeds `--latency-bound`, or
//! `--duration` / `--max-sockets` is reached. Each worker process decides for its own share;
//! the report merges the steps and names the highest rate that held.
//!
//! With `--stay`, a churn: every visitor leaves that long after its welcome, so the sockets
//! held level off at rate × stay while arrivals keep rising; `--chatting` of them start a
//! conversation first (their session time runs to the start's `ok`) and close it as they
//! leave. `--max-sockets` then bounds arrivals, not sockets held.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;

use super::{Env, StepOutcome};
use crate::cli::RampArgs;
use crate::roles::{idler, Phase};
use crate::stats::{new_hist, HistData, Summary};

/// Why the last step of a ramp that never failed ended.
pub const CAP_REACHED: &str = "--max-sockets reached";

struct StepLive {
    ok: AtomicU64,
    failed: AtomicU64,
    session: Mutex<Histogram<u64>>,
}

impl StepLive {
    fn record(&self, r: Result<Duration, String>) {
        match r {
            Ok(d) => {
                self.ok.fetch_add(1, Relaxed);
                let us = (d.as_micros() as u64).max(1);
                self.session
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(us);
            }
            Err(_) => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
    }

    fn done(&self) -> u64 {
        self.ok.load(Relaxed) + self.failed.load(Relaxed)
    }
}

/// Why a step ends the ramp, if it does.
pub fn verdict(failed: u64, session_p99_us: u64, a: &RampArgs) -> Option<String> {
    if failed > a.step_errors {
        Some(format!("{failed} failed connections"))
    } else if session_p99_us > a.latency_bound.as_micros() as u64 {
        Some(format!("p99 {}", crate::stats::fmt_us(session_p99_us)))
    } else {
        None
    }
}

pub async fn run(env: &mut Env, a: &RampArgs) -> Result<()> {
    let step_secs = a.step_duration.as_secs_f64().max(0.001);
    let max_steps = ((env.common.duration.as_secs_f64() / step_secs).ceil() as usize).max(1);
    let cap = env.slot.share_len(a.max_sockets) as u64;
    let stride = env.slot.count;
    let mut next_socket = env.slot.index;
    let mut opened = 0u64;
    let mut carry = 0.0;
    env.barrier("baseline").await?;
    env.phase(Phase::Setup, "ramp");
    for k in 0..max_steps {
        let rate = a.start_rate + a.step * k as f64;
        let mine = env.slot.rate(rate);
        let exact = mine * step_secs + carry;
        let mut n = exact.floor() as u64;
        carry = exact - n as f64;
        n = n.min(cap.saturating_sub(opened));
        let sockets: Vec<usize> = (0..n as usize).map(|i| next_socket + i * stride).collect();
        next_socket += n as usize * stride;
        opened += n;
        let live = Arc::new(StepLive {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            session: Mutex::new(new_hist()),
        });
        let ctx = env.ctx.clone();
        let step_live = live.clone();
        let (stay, chatting) = (a.stay, a.chatting);
        env.spawn_paced(sockets, mine, move |socket| {
            let live = step_live.clone();
            idler::run(
                ctx.clone(),
                idler::Plan {
                    socket,
                    role: "visitor",
                    stay,
                    chat: idler::chats(socket, chatting),
                },
                move |r| live.record(r),
            )
        })
        .await;
        // Sockets still connecting belong to this step.
        let settle = (a.latency_bound * 4)
            .max(Duration::from_secs(2))
            .min(Duration::from_secs(15));
        let deadline = tokio::time::Instant::now() + settle;
        while live.done() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let session = live
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ok = live.ok.load(Relaxed);
        let failed = live.failed.load(Relaxed) + n.saturating_sub(live.done());
        let mut stopped_by = verdict(failed, Summary::of(&session).p99, a);
        if stopped_by.is_none() && opened >= cap {
            stopped_by = Some(CAP_REACHED.into());
        }
        let last = stopped_by.is_some();
        env.steps.push(StepOutcome {
            rate,
            attempted: n,
            ok,
            failed,
            session: HistData::from_hist(&session),
            stopped_by,
        });
        if last {
            break;
        }
    }
    env.sums.insert("open_at_end".into(), env.stats().open());
    env.barrier("ramped").await?;
    env.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Scenario};
    use clap::Parser;

    #[test]
    fn a_step_fails_on_errors_or_latency() {
        let cli = Cli::try_parse_from(["loadtest", "ramp", "--latency-bound", "50ms"]).unwrap();
        let Scenario::Ramp(a) = cli.scenario else {
            panic!()
        };
        assert_eq!(verdict(0, 49_000, &a), None);
        assert!(verdict(1, 1_000, &a).unwrap().contains("failed"));
        assert!(verdict(0, 51_000, &a).unwrap().contains("p99"));
    }
}
