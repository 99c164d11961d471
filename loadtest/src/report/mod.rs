//! The end of a run: joins what every process measured into one [`Report`], checks the
//! thresholds (`--max-p99`, `--max-lost`, …) and the scenario's own sanity checks, and
//! renders the human summary. The JSON report is the same struct, serialised.
//!
//! Messages/s in this report count every stored message, both directions together: with
//! `chat --rate R` visitors store R messages/s and operators answer each, so about 2R.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{Cli, Common, Scenario};
use crate::coord::GatewaySample;
use crate::ledger::{tally_loss, LossTally};
use crate::scenarios::{ramp, Outcome};
use crate::stats::{fmt_us, StatsSnapshot, Summary, C, H};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// Every threshold and sanity check held.
    pub pass: bool,
    pub run_id: String,
    pub wall_s: f64,
    pub processes: u64,
    pub settings: Settings,
    /// Routing mode the gateway announced in `welcome`.
    pub routing: Option<String>,
    pub connections: Connections,
    pub messages: Messages,
    /// Microseconds.
    pub latency_us: BTreeMap<&'static str, Summary>,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub gateway: GatewayReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampReport>,
    pub loadtest_cpu_ms: u64,
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    #[serde(flatten)]
    pub common: Common,
    pub args: Scenario,
}

#[derive(Debug, Default, Serialize)]
pub struct Connections {
    pub attempts: u64,
    pub ok: u64,
    pub failed: u64,
    pub reconnects: u64,
    pub peak_open: u64,
    /// Sessions welcomed by each gateway node (by node id).
    pub by_node: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Messages {
    pub sent: u64,
    pub resent: u64,
    pub acked: u64,
    /// Sends neither acked nor refused when the run ended (silently dropped, or still in
    /// flight).
    pub unacked: u64,
    /// Sends refused with an error that retrying cannot fix (counted in `errors` by code).
    pub refused: u64,
    pub received_v2o: u64,
    pub received_o2v: u64,
    /// Stored messages delivered to the peer per second of the sending phase.
    pub delivered_per_s: f64,
    pub conversations: u64,
    pub lost_v2o: u64,
    pub lost_o2v: u64,
    pub lost: u64,
    /// The same message stored under two seqs (visible twice even after dropping by seq).
    pub duplicated: u64,
    /// The same seq delivered again (allowed; clients drop it).
    pub redelivered: u64,
    pub out_of_order: u64,
    /// Messages received as the replay after a reconnect.
    pub replayed: u64,
    /// Visitors and operators of the run (chat, reconnect-storm), and how many of them never
    /// reported what they received: loss in their conversations cannot be counted.
    pub participants: u64,
    pub reports_missing: u64,
    /// Conversations with acked messages that no participant of the receiving side reported
    /// on, and those messages (neither counted as lost nor as delivered).
    pub one_sided_conversations: u64,
    pub unverified: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct GatewayReport {
    pub pids: Vec<u32>,
    pub redis_pids: Vec<u32>,
    /// Barrier times, and the gateways' VmRSS and CPU time there when their pids were given.
    pub samples: Vec<GatewaySample>,
    /// Gateway CPU (all given gateway processes) per message delivered during the sending
    /// phase (chat).
    pub cpu_us_per_message: Option<f64>,
    /// Gateway CPU use during the sending phase, in % of one core (chat).
    pub cpu_percent: Option<f64>,
    /// Redis CPU per delivered message, and in % of one core (chat, with `--redis-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_message: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_percent: Option<f64>,
    /// Gateways and Redis together per delivered message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_message: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub sockets: u64,
    pub open_at_sample: u64,
    pub open_at_end: u64,
    pub rss_before_kb: Option<u64>,
    pub rss_after_kb: Option<u64>,
    pub rss_per_socket_bytes: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct StormReport {
    pub visitors: u64,
    pub cut: u64,
    pub resumed: u64,
    pub not_recovered: u64,
    /// From the order to reconnect until the last visitor held every missed message.
    pub all_resumed_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct RampReport {
    pub steps: Vec<RampStep>,
    /// The highest step rate whose every process held.
    pub held_rate: Option<f64>,
    pub stopped_by: Option<String>,
    pub open_at_end: u64,
}

#[derive(Debug, Serialize)]
pub struct RampStep {
    pub rate: f64,
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    pub session_us: Summary,
    pub stopped_by: Option<String>,
}

/// One threshold or sanity check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub limit: String,
    pub actual: String,
    pub pass: bool,
}

fn check(name: &str, limit: impl ToString, actual: impl ToString, pass: bool) -> Check {
    Check {
        name: name.to_owned(),
        limit: limit.to_string(),
        actual: actual.to_string(),
        pass,
    }
}

fn sample<'a>(samples: &'a [GatewaySample], at: &str) -> Option<&'a GatewaySample> {
    samples.iter().find(|s| s.at == at)
}

/// Builds the report of a finished run.
pub fn build(
    cli: &Cli,
    run_id: &str,
    outcome: Outcome,
    samples: &[GatewaySample],
    wall: Duration,
) -> Report {
    let st: &StatsSnapshot = &outcome.stats;
    let loss: LossTally = tally_loss(&outcome.convs);
    let c = &cli.common;
    let mut latency_us = BTreeMap::new();
    for &h in H::ALL {
        latency_us.insert(h.name(), st.summary(h));
    }
    let send_window = match (sample(samples, "connected"), sample(samples, "sent")) {
        (Some(a), Some(b)) if b.elapsed_ms > a.elapsed_ms => {
            Duration::from_millis(b.elapsed_ms - a.elapsed_ms)
        }
        _ => c.duration,
    };
    let received = st.counter(C::RecvV2o) + st.counter(C::RecvO2v);
    let participants = match &cli.scenario {
        Scenario::Chat(a) => (a.visitors + a.operators) as u64,
        Scenario::ReconnectStorm(a) => (a.visitors + a.operators) as u64,
        Scenario::Idle(_) | Scenario::Ramp(_) => 0,
    };
    let messages = Messages {
        sent: st.counter(C::Sent),
        resent: st.counter(C::Resent),
        acked: st.counter(C::Acked),
        unacked: st.counter(C::Unacked),
        refused: st.counter(C::Refused),
        received_v2o: st.counter(C::RecvV2o),
        received_o2v: st.counter(C::RecvO2v),
        delivered_per_s: if matches!(cli.scenario, Scenario::Chat(_)) {
            round1(received as f64 / send_window.as_secs_f64().max(1e-3))
        } else {
            0.0
        },
        conversations: loss.conversations,
        lost_v2o: loss.lost_v2o,
        lost_o2v: loss.lost_o2v,
        lost: loss.total(),
        duplicated: st.counter(C::Duplicated),
        redelivered: st.counter(C::Redelivered),
        out_of_order: st.counter(C::OutOfOrder),
        replayed: st.counter(C::Replayed),
        participants,
        reports_missing: participants.saturating_sub(st.counter(C::Snapshots)),
        one_sided_conversations: loss.one_sided,
        unverified: loss.unverified,
    };
    let mut gateway = GatewayReport {
        pids: c.gateway_pid.clone(),
        redis_pids: c.redis_pid.clone(),
        samples: samples.to_vec(),
        ..GatewayReport::default()
    };
    // CPU per message (chat only: elsewhere reconnects dominate): the gateway's CPU time from
    // all sockets up until the drain ended, over what was delivered in that time.
    let chat = matches!(cli.scenario, Scenario::Chat(_));
    let window = (sample(samples, "connected"), sample(samples, "drained"));
    if let (true, (Some(a), Some(b))) = (chat, window) {
        let secs = b.elapsed_ms.saturating_sub(a.elapsed_ms) as f64 / 1000.0;
        let used = |x: Option<u64>, y: Option<u64>| {
            x.zip(y).map(|(x, y)| y.saturating_sub(x) as f64 * 1000.0)
        };
        let per_msg = |us: f64| (received > 0).then(|| round1(us / received as f64));
        let percent = |us: f64| (secs > 0.0).then(|| round1(us / 1e6 / secs * 100.0));
        let gw_us = used(a.cpu_ms, b.cpu_ms);
        let redis_us = used(a.redis_cpu_ms, b.redis_cpu_ms);
        if let Some(us) = gw_us {
            gateway.cpu_us_per_message = per_msg(us);
            gateway.cpu_percent = percent(us);
        }
        if let Some(us) = redis_us {
            gateway.redis_cpu_us_per_message = per_msg(us);
            gateway.redis_cpu_percent = percent(us);
        }
        if let (Some(g), Some(r)) = (gw_us, redis_us) {
            gateway.server_cpu_us_per_message = per_msg(g + r);
        }
    }
    let mut checks = Vec::new();
    let p99_name;
    let p99 = match cli.scenario {
        Scenario::Chat(_) | Scenario::ReconnectStorm(_) => {
            p99_name = "p99 delivery (worst direction)";
            st.summary(H::V2o).p99.max(st.summary(H::O2v).p99)
        }
        Scenario::Idle(_) | Scenario::Ramp(_) => {
            p99_name = "p99 connect + welcome";
            st.summary(H::Session).p99
        }
    };
    if let Some(max) = c.max_p99 {
        let limit = max.as_micros() as u64;
        checks.push(check(p99_name, fmt_us(limit), fmt_us(p99), p99 <= limit));
    }
    let mut threshold = |name: &str, limit: Option<u64>, actual: u64| {
        if let Some(limit) = limit {
            checks.push(check(name, limit, actual, actual <= limit));
        }
    };
    threshold("lost", c.max_lost, messages.lost);
    threshold("duplicated", c.max_dup, messages.duplicated);
    threshold("out of order", c.max_out_of_order, messages.out_of_order);
    threshold("errors", c.max_errors, st.errors_total());
    // Chat-like scenarios drain before they end: any send still unanswered was dropped.
    let unacked_limit = c.max_unacked.or((participants > 0).then_some(0));
    threshold("unacked", unacked_limit, messages.unacked);
    // A worker that died took its sockets' measurements and reports with it.
    let workers = c.workers.max(1) as u64;
    if workers > 1 {
        checks.push(check(
            "worker processes finished",
            workers,
            outcome.processes,
            outcome.processes >= workers,
        ));
    }
    if participants > 0 {
        checks.push(check(
            "participants reported",
            if c.allow_missing_reports {
                "any (--allow-missing-reports)".to_owned()
            } else {
                format!("all {participants}, no conversation one-sided")
            },
            format!(
                "{} of {participants}, {} one-sided",
                participants - messages.reports_missing,
                messages.one_sided_conversations
            ),
            c.allow_missing_reports
                || (messages.reports_missing == 0 && messages.one_sided_conversations == 0),
        ));
    }

    let (mut idle, mut storm, mut ramp) = (None, None, None);
    match &cli.scenario {
        Scenario::Chat(a) => {
            if a.rate > 0.0 && a.operators > 0 && a.visitors > 0 {
                let ok = st.counter(C::RecvV2o) > 0 && st.counter(C::RecvO2v) > 0;
                checks.push(check(
                    "messages delivered both ways",
                    "> 0",
                    format!(
                        "{} v→o, {} o→v",
                        messages.received_v2o, messages.received_o2v
                    ),
                    ok,
                ));
            }
        }
        Scenario::Idle(a) => {
            let open = outcome.sums.get("open_at_sample").copied().unwrap_or(0);
            let before = sample(samples, "baseline").and_then(|s| s.rss_kb);
            let after = sample(samples, "connected").and_then(|s| s.rss_kb);
            let per_socket = match (before, after) {
                (Some(b), Some(a)) if open > 0 => {
                    Some(round1(a.saturating_sub(b) as f64 * 1024.0 / open as f64))
                }
                _ => None,
            };
            checks.push(check(
                "sockets held",
                a.sockets,
                open,
                open == a.sockets as u64,
            ));
            idle = Some(IdleReport {
                sockets: a.sockets as u64,
                open_at_sample: open,
                open_at_end: outcome.sums.get("open_at_end").copied().unwrap_or(0),
                rss_before_kb: before,
                rss_after_kb: after,
                rss_per_socket_bytes: per_socket,
            });
        }
        Scenario::ReconnectStorm(a) => {
            let resumed = outcome.sums.get("visitors_resumed").copied().unwrap_or(0);
            let all = outcome
                .maxes
                .get("all_resumed_ms")
                .copied()
                .filter(|&ms| ms != u64::MAX);
            checks.push(check(
                "visitors resumed",
                a.visitors,
                resumed,
                resumed == a.visitors as u64 && all.is_some(),
            ));
            storm = Some(StormReport {
                visitors: a.visitors as u64,
                cut: st.counter(C::Cut),
                resumed,
                not_recovered: st.counter(C::NotRecovered),
                all_resumed_ms: all,
            });
        }
        Scenario::Ramp(_) => {
            let steps: Vec<RampStep> = outcome
                .steps
                .iter()
                .map(|s| RampStep {
                    rate: s.rate,
                    attempted: s.attempted,
                    ok: s.ok,
                    failed: s.failed,
                    session_us: s.session.summary(),
                    stopped_by: s.stopped_by.clone(),
                })
                .collect();
            // A step that only hit the socket cap still held.
            let held_rate = steps
                .iter()
                .take_while(|s| {
                    s.stopped_by.is_none() || s.stopped_by.as_deref() == Some(ramp::CAP_REACHED)
                })
                .map(|s| s.rate)
                .last();
            let stopped_by = steps.iter().find_map(|s| s.stopped_by.clone());
            ramp = Some(RampReport {
                steps,
                held_rate,
                stopped_by,
                open_at_end: outcome.sums.get("open_at_end").copied().unwrap_or(0),
            });
        }
    }
    let pass = checks.iter().all(|c| c.pass);
    Report {
        scenario: cli.scenario.name(),
        pass,
        run_id: run_id.to_owned(),
        wall_s: round1(wall.as_secs_f64()),
        processes: outcome.processes,
        settings: Settings {
            common: c.clone(),
            args: cli.scenario.clone(),
        },
        routing: outcome.routing.clone(),
        connections: Connections {
            attempts: st.counter(C::ConnAttempts),
            ok: st.counter(C::ConnOk),
            failed: st.counter(C::ConnFailed),
            reconnects: st.counter(C::Reconnects),
            peak_open: st.peak_open,
            by_node: st.nodes.clone(),
        },
        messages,
        latency_us,
        errors_total: st.errors_total(),
        errors: st.errors.clone(),
        closes: st.closes.clone(),
        gateway,
        idle,
        storm,
        ramp,
        loadtest_cpu_ms: outcome.loadtest_cpu_ms,
        checks,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

mod human;
#[cfg(test)]
mod tests;
