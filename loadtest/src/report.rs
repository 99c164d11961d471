//! The end of a run: joins what every process measured into one [`Report`], checks the
//! thresholds (`--max-p99`, `--max-lost`, …) and the scenario's own sanity checks, and
//! renders the human summary. The JSON report is the same struct, serialised.
//!
//! Messages/s in this report count every stored message, both directions together: with
//! `chat --rate R` visitors store R messages/s and operators answer each, so about 2R.

use std::collections::BTreeMap;
use std::fmt::Write as _;
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

impl Report {
    /// The human summary printed at the end of a run.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let w = &mut o;
        let s = &self.settings.common;
        let _ = writeln!(
            w,
            "\n== loadtest {} · {} · {} node(s) · {} process(es) · {:.1}s ==",
            self.scenario,
            match s.encoding {
                crate::proto::Encoding::Json => "json",
                crate::proto::Encoding::Msgpack => "msgpack",
            },
            s.urls.len(),
            self.processes,
            self.wall_s
        );
        if let Some(r) = &self.routing {
            let _ = writeln!(w, "routing        {r}");
        }
        if s.latency_from == crate::cli::LatencyFrom::Scheduled {
            let _ = writeln!(
                w,
                "latency from   the rate schedule (--latency-from scheduled): sends that fell \
                 behind it count their wait"
            );
        }
        let c = &self.connections;
        let _ = writeln!(
            w,
            "connections    {} ok, {} failed, {} reconnects, peak {} open",
            c.ok, c.failed, c.reconnects, c.peak_open
        );
        if c.by_node.len() > 1 {
            let list: Vec<String> = c.by_node.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(w, "sessions/node  {}", list.join(", "));
        }
        let m = &self.messages;
        if m.sent > 0 || m.received_v2o + m.received_o2v > 0 {
            let _ = writeln!(
                w,
                "messages       {} sent ({} re-sent), {} acked, {} unacked, {} refused, received \
                 v→o {} o→v {}{}",
                m.sent,
                m.resent,
                m.acked,
                m.unacked,
                m.refused,
                m.received_v2o,
                m.received_o2v,
                if m.delivered_per_s > 0.0 {
                    format!(", {:.0} delivered/s", m.delivered_per_s)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                w,
                "delivery       lost {} (v→o {}, o→v {}), duplicated {}, out of order {}, \
                 redelivered {}, replayed {} · {} conversations",
                m.lost,
                m.lost_v2o,
                m.lost_o2v,
                m.duplicated,
                m.out_of_order,
                m.redelivered,
                m.replayed,
                m.conversations
            );
        }
        if m.participants > 0 {
            let _ = writeln!(
                w,
                "reports        {} of {} participants reported{}, {} conversations one-sided{}",
                m.participants - m.reports_missing,
                m.participants,
                if m.reports_missing > 0 {
                    format!(
                        " ({} missing: loss in their conversations is unknown)",
                        m.reports_missing
                    )
                } else {
                    String::new()
                },
                m.one_sided_conversations,
                if m.unverified > 0 {
                    format!(" ({} acked messages unverified)", m.unverified)
                } else {
                    String::new()
                }
            );
        }
        for (name, label) in [
            ("v2o", "visitor→op"),
            ("o2v", "op→visitor"),
            ("ack", "send→ack"),
            ("connect", "connect"),
            ("welcome", "hello→welcome"),
            ("session", "connect+welcome"),
            ("resume", "resume"),
        ] {
            if let Some(sum) = self.latency_us.get(name).filter(|s| s.count > 0) {
                let _ = writeln!(w, "{label:<15}{}", sum.line());
            }
        }
        if let Some(i) = &self.idle {
            let per = i
                .rss_per_socket_bytes
                .map(|b| format!("{:.2} KiB per socket", b / 1024.0))
                .unwrap_or_else(|| "give --gateway-pid for memory per socket".into());
            let rss = match (i.rss_before_kb, i.rss_after_kb) {
                (Some(b), Some(a)) => format!(" (RSS {b} KiB → {a} KiB)"),
                _ => String::new(),
            };
            let _ = writeln!(
                w,
                "idle           {} of {} sockets held: {per}{rss}",
                i.open_at_sample, i.sockets
            );
        }
        if let Some(st) = &self.storm {
            let _ = writeln!(
                w,
                "storm          {} cut, {} of {} resumed{}, {} not recovered",
                st.cut,
                st.resumed,
                st.visitors,
                st.all_resumed_ms
                    .map(|ms| format!(" in {}", fmt_us(ms * 1000)))
                    .unwrap_or_default(),
                st.not_recovered
            );
        }
        if let Some(r) = &self.ramp {
            for s in &r.steps {
                let _ =
                    writeln!(
                    w,
                    "ramp step      {:>7.0}/s: {} ok, {} failed, connect+welcome p50 {} p99 {}{}",
                    s.rate,
                    s.ok,
                    s.failed,
                    fmt_us(s.session_us.p50),
                    fmt_us(s.session_us.p99),
                    s.stopped_by.as_ref().map(|w| format!("  ← stop: {w}")).unwrap_or_default()
                );
            }
            let _ = writeln!(
                w,
                "ramp           held {} connections/s; {}",
                r.held_rate
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "no".into()),
                r.stopped_by.as_deref().unwrap_or("ran to --duration")
            );
        }
        let g = &self.gateway;
        if let Some(cpu) = g.cpu_us_per_message {
            let _ = writeln!(
                w,
                "gateway CPU    {cpu:.1} µs per delivered message ({:.1}% of a core, {} process(es))",
                g.cpu_percent.unwrap_or(0.0),
                g.pids.len()
            );
        }
        if let Some(cpu) = g.redis_cpu_us_per_message {
            let _ = writeln!(
                w,
                "redis CPU      {cpu:.1} µs per delivered message ({:.1}% of a core)",
                g.redis_cpu_percent.unwrap_or(0.0)
            );
        }
        if let Some(cpu) = g.server_cpu_us_per_message {
            let _ = writeln!(
                w,
                "server CPU     {cpu:.1} µs per delivered message (gateways + redis)"
            );
        }
        if let Some(last) = g.samples.iter().rev().find_map(|s| s.rss_kb) {
            let _ = writeln!(w, "gateway RSS    {last} KiB at the last barrier");
        }
        let _ = writeln!(w, "load tester    {} ms CPU", self.loadtest_cpu_ms);
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                w,
                "errors         {} — {}",
                self.errors_total,
                list.join(", ")
            );
        }
        if !self.closes.is_empty() {
            let list: Vec<String> = self
                .closes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(w, "closes         {}", list.join(", "));
        }
        for ch in &self.checks {
            let _ = writeln!(
                w,
                "{} {}: {} (limit {})",
                if ch.pass { "PASS" } else { "FAIL" },
                ch.name,
                ch.actual,
                ch.limit
            );
        }
        let _ = writeln!(
            w,
            "{}",
            if self.pass {
                "result: PASS"
            } else {
                "result: FAIL"
            }
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ConvLedger, Role};
    use crate::stats::Stats;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["loadtest"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    /// A chat outcome: one conversation, visitor sent 2 and 4, operator answered 3 (and 5,
    /// which the visitor never got when `lose_one`).
    fn chat_outcome(lose_one: bool, v2o_us: u64) -> Outcome {
        let stats = Stats::default();
        let (mut v, mut o) = (ConvLedger::default(), ConvLedger::default());
        v.attach(0);
        o.attach(0);
        for seq in 1..=5 {
            let by_visitor = seq % 2 == 0;
            if by_visitor {
                v.on_ack(seq);
                stats.inc(C::RecvV2o);
                stats.record_us(H::V2o, v2o_us);
            } else if seq > 1 {
                o.on_ack(seq);
                stats.inc(C::RecvO2v);
                stats.record_us(H::O2v, 500);
            }
            o.on_msg(seq, None);
            if !(lose_one && seq == 5) {
                v.on_msg(seq, None);
            }
        }
        // Both participants reported.
        stats.add(C::Snapshots, 2);
        Outcome {
            stats: stats.snapshot(),
            convs: vec![
                v.report("c1", Role::Visitor),
                o.report("c1", Role::Operator),
            ],
            processes: 1,
            ..Outcome::default()
        }
    }

    #[test]
    fn a_healthy_chat_passes_its_thresholds() {
        let cli = cli(&[
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
            "--max-p99",
            "5ms",
            "--max-lost",
            "0",
            "--max-dup",
            "0",
        ]);
        let r = build(
            &cli,
            "t",
            chat_outcome(false, 900),
            &[],
            Duration::from_secs(3),
        );
        assert!(r.pass, "{}", r.human());
        assert_eq!(r.messages.lost, 0);
        assert_eq!(r.checks.len(), 6);
        let text = r.human();
        assert!(text.contains("result: PASS"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["scenario"], "chat");
        assert_eq!(json["messages"]["lost"], 0);
        assert!(json["latency_us"]["v2o"]["p99"].as_u64().unwrap() >= 899);
        assert!(json["settings"].get("secret").is_none());
    }

    #[test]
    fn loss_and_latency_fail_the_run() {
        let cli = cli(&[
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
            "--max-lost",
            "0",
        ]);
        let r = build(
            &cli,
            "t",
            chat_outcome(true, 900),
            &[],
            Duration::from_secs(3),
        );
        assert!(!r.pass);
        assert_eq!((r.messages.lost_o2v, r.messages.lost_v2o), (1, 0));
        assert!(
            r.human().contains("FAIL lost: 1 (limit 0)"),
            "{}",
            r.human()
        );

        let cli = super::tests::cli(&[
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
            "--max-p99",
            "5ms",
        ]);
        let r = build(
            &cli,
            "t",
            chat_outcome(false, 7_000),
            &[],
            Duration::from_secs(3),
        );
        assert!(!r.pass);
        // Without thresholds, only the sanity check applies.
        let cli = super::tests::cli(&["chat", "--visitors", "1", "--operators", "1"]);
        assert!(build(&cli, "t", chat_outcome(true, 7_000), &[], Duration::ZERO).pass);
    }

    #[test]
    fn a_chat_that_delivered_nothing_fails() {
        let cli = cli(&["chat"]);
        let empty = Outcome {
            processes: 1,
            ..Outcome::default()
        };
        let r = build(&cli, "t", empty, &[], Duration::from_secs(1));
        assert!(!r.pass);
    }

    #[test]
    fn a_missing_operator_report_fails_the_run_instead_of_hiding_its_loss() {
        // The operator's task never reported (aborted, or its worker died): its conversation
        // shows no v→o loss, but the run must not pass as if everything had been checked.
        let cli = cli(&[
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
            "--max-lost",
            "0",
        ]);
        let mut outcome = chat_outcome(false, 900);
        outcome.convs.retain(|r| r.role == Role::Visitor);
        outcome.stats.counters.insert(C::Snapshots.name().into(), 1);
        let r = build(&cli, "t", outcome, &[], Duration::from_secs(3));
        let text = r.human();
        assert!(!r.pass, "{text}");
        assert!(text.contains("1 of 2 participants reported"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["messages"]["reports_missing"], 1, "{json:#}");
        assert_eq!(json["messages"]["one_sided_conversations"], 1, "{json:#}");
        // The opt-out keeps the numbers but not the failure.
        let cli = super::tests::cli(&[
            "--allow-missing-reports",
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
        ]);
        let mut outcome = chat_outcome(false, 900);
        outcome.convs.retain(|r| r.role == Role::Visitor);
        outcome.stats.counters.insert(C::Snapshots.name().into(), 1);
        let r = build(&cli, "t", outcome, &[], Duration::from_secs(3));
        assert!(r.pass, "{}", r.human());
        assert_eq!(r.messages.reports_missing, 1);
    }

    #[test]
    fn sends_never_acked_fail_a_chat_unless_allowed() {
        // A gateway that silently drops a send: no ack, no error, and so no loss either
        // (the message was never stored). It is counted when the sender's task ends.
        let with_unacked = || {
            let mut o = chat_outcome(false, 900);
            o.stats.counters.insert("sent".into(), 5);
            o.stats.counters.insert("acked".into(), 3);
            o.stats.counters.insert("unacked".into(), 1);
            o.stats.counters.insert("send_refused".into(), 1);
            o.stats.errors.insert("send:too_large".into(), 1);
            o
        };
        let cli = cli(&["chat", "--visitors", "1", "--operators", "1"]);
        let r = build(&cli, "t", with_unacked(), &[], Duration::from_secs(3));
        let text = r.human();
        assert!(!r.pass, "{text}");
        assert!(text.contains("1 unacked, 1 refused"), "{text}");
        assert!(text.contains("FAIL unacked: 1 (limit 0)"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["messages"]["unacked"], 1, "{json:#}");
        assert_eq!(json["messages"]["refused"], 1, "{json:#}");
        let cli = super::tests::cli(&[
            "--max-unacked",
            "1",
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
        ]);
        assert!(build(&cli, "t", with_unacked(), &[], Duration::ZERO).pass);
        // Scenarios that send nothing have no default limit.
        let cli = super::tests::cli(&["idle", "--sockets", "0"]);
        let idle = Outcome {
            stats: with_unacked().stats,
            processes: 1,
            ..Outcome::default()
        };
        let r = build(&cli, "t", idle, &[], Duration::ZERO);
        assert!(
            r.checks.iter().all(|c| c.name != "unacked"),
            "{}",
            r.human()
        );
    }

    #[test]
    fn a_dead_worker_fails_the_run() {
        // Two workers asked for, one result: the other's sockets and reports are gone.
        let cli = cli(&["--workers", "2", "idle", "--sockets", "10"]);
        let mut stats = Stats::default().snapshot();
        stats.errors.insert("worker:died".into(), 1);
        let outcome = Outcome {
            stats,
            sums: BTreeMap::from([("open_at_sample".into(), 10)]),
            processes: 1,
            ..Outcome::default()
        };
        let r = build(&cli, "t", outcome, &[], Duration::from_secs(2));
        let text = r.human();
        assert!(!r.pass, "{text}");
        assert!(text.contains("FAIL worker processes"), "{text}");
        // Both workers reported: no failure.
        let both = Outcome {
            sums: BTreeMap::from([("open_at_sample".into(), 10)]),
            processes: 2,
            ..Outcome::default()
        };
        assert!(build(&cli, "t", both, &[], Duration::ZERO).pass);
    }

    #[test]
    fn the_latency_origin_is_in_the_settings_and_said_when_not_the_default() {
        let plain = cli(&["chat", "--visitors", "1", "--operators", "1"]);
        let r = build(&plain, "t", chat_outcome(false, 900), &[], Duration::ZERO);
        assert_eq!(
            serde_json::to_value(&r).unwrap()["settings"]["latency_from"],
            "sent"
        );
        assert!(!r.human().contains("latency from"), "{}", r.human());
        let sched = cli(&[
            "--latency-from",
            "scheduled",
            "chat",
            "--visitors",
            "1",
            "--operators",
            "1",
        ]);
        let r = build(&sched, "t", chat_outcome(false, 900), &[], Duration::ZERO);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["settings"]["latency_from"], "scheduled");
        assert!(
            r.human().contains("latency from   the rate schedule"),
            "{}",
            r.human()
        );
    }

    #[test]
    fn idle_memory_per_socket_comes_from_the_barrier_samples() {
        let cli = cli(&["idle", "--sockets", "1000"]);
        let samples = vec![
            GatewaySample {
                at: "baseline".into(),
                rss_kb: Some(10_000),
                cpu_ms: Some(1),
                redis_cpu_ms: None,
                elapsed_ms: 0,
            },
            GatewaySample {
                at: "connected".into(),
                rss_kb: Some(17_000),
                cpu_ms: Some(90),
                redis_cpu_ms: None,
                elapsed_ms: 900,
            },
        ];
        let outcome = Outcome {
            sums: BTreeMap::from([("open_at_sample".into(), 1000)]),
            processes: 1,
            ..Outcome::default()
        };
        let r = build(&cli, "t", outcome, &samples, Duration::from_secs(2));
        let idle = r.idle.as_ref().unwrap();
        assert_eq!(idle.rss_per_socket_bytes, Some(7168.0));
        assert!(r.pass);
        assert!(r.human().contains("7.00 KiB per socket"), "{}", r.human());
    }
}
