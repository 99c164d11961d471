//! Command line: global options shared by every scenario, one subcommand per scenario, and
//! the parsers for durations (`5ms`, `1.5s`) and worker slots (`2/4`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::proto::Encoding;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load tester for chat-gateway: many sockets, delivery latency, loss and order checks",
    after_help = "Exit status: 0 when every threshold and the scenario's own check hold, 1 when one \
                  fails, 2 when the run could not be set up."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// Gateway WebSocket URL; repeat for several nodes (sockets are spread round-robin).
    /// Only loopback addresses are accepted.
    #[arg(
        long = "url",
        global = true,
        default_value = "ws://127.0.0.1:8080/v1/ws"
    )]
    pub urls: Vec<String>,

    /// Local source addresses to bind, spread round-robin (each gives ~28k ephemeral ports),
    /// e.g. `127.0.0.2,127.0.0.3`.
    #[arg(long, global = true, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Fork this many worker processes, each with a share of the sockets (one process may
    /// hold ~20,000 file descriptors here). Results are merged; a worker that dies fails the
    /// run.
    #[arg(long, global = true, default_value_t = 1)]
    pub workers: usize,

    /// Wire encoding (subprotocol chat.v1.json or chat.v1.msgpack).
    #[arg(long, global = true, value_enum, default_value = "json")]
    pub encoding: Encoding,

    /// HS256 secret to mint tokens with (the gateway's GATEWAY_JWT_SECRET).
    #[arg(
        long,
        global = true,
        env = "GATEWAY_JWT_SECRET",
        hide_env_values = true
    )]
    #[serde(skip)]
    pub secret: Option<String>,

    /// Site id put in every token.
    #[arg(long, global = true, default_value = "demo")]
    pub site: String,

    /// Queue visitors start conversations in.
    #[arg(long, global = true, default_value = "general")]
    pub queue: String,

    /// How long the measured phase lasts (chat: sending; idle: holding; ramp: the whole
    /// ramp; reconnect-storm: the resume deadline). Every scenario stops by itself.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "10s")]
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,

    /// Wait this long after sending stops for in-flight messages before counting losses.
    #[arg(long, global = true, value_parser = parse_duration, default_value = "2s")]
    #[serde(serialize_with = "ser_duration")]
    pub drain: Duration,

    /// Upper bound on setting up (connecting every socket, assigning conversations).
    #[arg(long, global = true, value_parser = parse_duration, default_value = "60s")]
    #[serde(serialize_with = "ser_duration")]
    pub setup_timeout: Duration,

    /// New connections per second while setting up (all processes together).
    #[arg(long, global = true, default_value_t = 2000.0)]
    pub connect_rate: f64,

    /// Most WebSocket handshakes in flight at once, per process.
    #[arg(long, global = true, default_value_t = 512)]
    pub connect_concurrency: usize,

    /// Operators' accepts and pushes per second, per operator (the gateway's default rate
    /// limit is 20 frames/s, burst 40). 0 = unpaced.
    #[arg(long, global = true, default_value_t = 15.0)]
    pub op_pace: f64,

    /// Where a visitor message's latency starts (visitor→operator, and send→ack). `sent`
    /// (default): when the send is written to the socket, so the figures are the gateway's
    /// own delivery time, comparable with earlier results even when the tester, sharing the
    /// machine, falls behind. `scheduled`: when the rate schedule called for it, like wrk2;
    /// a tester or gateway that falls behind sends the late messages at once and their wait
    /// counts as latency, instead of quietly lowering the rate (coordinated omission).
    #[arg(long, global = true, value_enum, default_value = "sent")]
    pub latency_from: LatencyFrom,

    /// Gateway process to sample resident memory (VmRSS) and CPU time of, from /proc; repeat
    /// for several nodes (their memory and CPU are added up).
    #[arg(long, global = true)]
    pub gateway_pid: Vec<u32>,

    /// Redis process(es) to sample CPU time of, reported apart from the gateways' and with
    /// them as the servers' CPU per delivered message.
    #[arg(long, global = true)]
    pub redis_pid: Vec<u32>,

    /// Write the JSON report here.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,

    /// Fail when delivery latency p99 (either direction) exceeds this, e.g. `5ms`. In `idle`
    /// and `ramp`, applies to the connect + welcome time instead.
    #[arg(long, global = true, value_parser = parse_duration)]
    #[serde(serialize_with = "ser_opt_duration")]
    pub max_p99: Option<Duration>,

    /// Fail when more messages than this were lost.
    #[arg(long, global = true)]
    pub max_lost: Option<u64>,

    /// Fail when more messages than this were duplicated: the same message (cid) stored under
    /// a second seq, which a client dropping duplicates by seq would still show twice. (Seqs
    /// delivered twice are dropped by clients; they are reported as `redelivered`.)
    #[arg(long, global = true)]
    pub max_dup: Option<u64>,

    /// Fail when more messages than this arrived out of order (a seq lower than one already
    /// seen, replays after a reconnect included).
    #[arg(long, global = true)]
    pub max_out_of_order: Option<u64>,

    /// Fail when more errors than this happened (failed connects, error frames other than
    /// an expected `taken`, unexpected closes, timeouts).
    #[arg(long, global = true)]
    pub max_errors: Option<u64>,

    /// Fail when more sends than this were never acked (nor refused with an error) by the end
    /// of the run: a gateway that silently drops a send stores nothing, so it shows up here
    /// and not as loss. `chat` and `reconnect-storm` stop sending and drain before the end,
    /// so they fail on any unless this is given.
    #[arg(long, global = true)]
    pub max_unacked: Option<u64>,

    /// Pass a `chat` or `reconnect-storm` run even when some participant never reported what
    /// it received (its task was aborted, or its worker process died) or a conversation was
    /// heard from one side only. By default that fails the run: the loss in those
    /// conversations cannot be counted, and would otherwise read as 0.
    #[arg(long, global = true)]
    pub allow_missing_reports: bool,

    /// No live progress line.
    #[arg(long, global = true)]
    pub quiet: bool,

    /// Prefix of every user id in this run (default: random), so runs never share
    /// conversations. Worker processes get their parent's through the environment.
    #[arg(long, global = true, env = "LOADTEST_RUN_ID")]
    pub run_id: Option<String>,

    /// Internal: run as worker `i/n` of a parent process (set by the parent).
    #[arg(long, global = true, hide = true, env = "LOADTEST_WORKER", value_parser = parse_worker_slot)]
    #[serde(skip)]
    pub worker: Option<WorkerSlot>,
}

/// Where delivery latency starts: the moment a message was written, or the moment the rate
/// schedule called for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyFrom {
    Sent,
    Scheduled,
}

#[derive(Debug, Clone, Subcommand, Serialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub enum Scenario {
    /// Visitors chat with operators: operators go active and take conversations (manual,
    /// offer or auto routing), visitors send at a total rate, operators answer each message.
    Chat(ChatArgs),
    /// Hold N authenticated sockets and report the gateway's memory per socket.
    Idle(IdleArgs),
    /// Cut every visitor at once, let operators write meanwhile, reconnect with cursors and
    /// check every missed message arrives exactly once.
    ReconnectStorm(StormArgs),
    /// Raise new connections per second step by step until errors or a latency bound. With
    /// `--stay` it is a churn: each visitor leaves after that long, so arrivals and departures
    /// run at the same rate; `--chatting` of them start a conversation (and close it before
    /// leaving). `churn` is the same scenario under its other name.
    #[command(alias = "churn")]
    Ramp(RampArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Chat(_) => "chat",
            Scenario::Idle(_) => "idle",
            Scenario::ReconnectStorm(_) => "reconnect-storm",
            Scenario::Ramp(_) => "ramp",
        }
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ChatArgs {
    /// Number of visitors (one conversation each).
    #[arg(long, default_value_t = 50)]
    pub visitors: usize,
    /// Number of operators.
    #[arg(long, default_value_t = 5)]
    pub operators: usize,
    /// Visitor messages per second, all visitors together (operators answer each one, so
    /// the gateway stores twice this).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// `max_chats` claim of operator tokens.
    #[arg(long, default_value_t = 1000)]
    pub max_chats: u32,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct IdleArgs {
    /// Sockets to hold.
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// Role of the sockets' tokens.
    #[arg(long, value_enum, default_value = "visitor")]
    pub role: IdleRole,
    /// Wait this long after the last socket connected before sampling memory.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    #[serde(serialize_with = "ser_duration")]
    pub settle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleRole {
    Visitor,
    Operator,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct StormArgs {
    #[arg(long, default_value_t = 200)]
    pub visitors: usize,
    #[arg(long, default_value_t = 4)]
    pub operators: usize,
    /// Messages each operator writes into each of its conversations while visitors are away.
    #[arg(long, default_value_t = 3)]
    pub missed: u32,
    /// Visitor messages per second (all together) before the cut and after the resume, so
    /// some sends are in flight when the sockets drop (they are retried with the same cid).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// How long visitors chat before the cut and after everyone resumed.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    #[serde(serialize_with = "ser_duration")]
    pub chat: Duration,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How visitor sockets are cut: `rst` (abrupt reset) or `fin` (TCP close without a
    /// WebSocket close frame).
    #[arg(long, value_enum, default_value = "rst")]
    pub cut: CutMode,
    #[arg(long, default_value_t = 1000)]
    pub max_chats: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CutMode {
    Rst,
    Fin,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct RampArgs {
    /// Connections per second of the first step.
    #[arg(long, default_value_t = 100.0)]
    pub start_rate: f64,
    /// Added to the rate at every step.
    #[arg(long, default_value_t = 100.0)]
    pub step: f64,
    /// Length of one step.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    #[serde(serialize_with = "ser_duration")]
    pub step_duration: Duration,
    /// Stop at a step whose connect + welcome p99 exceeds this.
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    #[serde(serialize_with = "ser_duration")]
    pub latency_bound: Duration,
    /// Stop at a step with more failed connections than this.
    #[arg(long, default_value_t = 0)]
    pub step_errors: u64,
    /// Never hold more sockets than this (all processes together).
    #[arg(long, default_value_t = 18_000)]
    pub max_sockets: usize,
    /// Churn: each visitor leaves this long after its welcome (default: stays to the end).
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "ser_opt_duration")]
    pub stay: Option<Duration>,
    /// Churn: the share of visitors (0 to 1) that start a conversation after `welcome` and
    /// close it before they leave; their session time runs to the start's `ok`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub chatting: f64,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("a share from 0 to 1".into())
    }
}

/// This process's place among the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSlot {
    pub index: usize,
    pub count: usize,
}

impl WorkerSlot {
    pub const SOLO: WorkerSlot = WorkerSlot { index: 0, count: 1 };

    /// The global indices `0..total` this worker owns (interleaved, so every worker gets a
    /// fair share of every URL and source address).
    pub fn share(self, total: usize) -> impl Iterator<Item = usize> {
        (self.index..total).step_by(self.count.max(1))
    }

    pub fn share_len(self, total: usize) -> usize {
        self.share(total).count()
    }

    /// This worker's part of a total rate.
    pub fn rate(self, total: f64) -> f64 {
        total / self.count.max(1) as f64
    }
}

pub fn parse_worker_slot(s: &str) -> Result<WorkerSlot, String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n")?;
    let index = i.parse().map_err(|_| "bad worker index")?;
    let count: usize = n.parse().map_err(|_| "bad worker count")?;
    if count == 0 || index >= count {
        return Err("worker index must be below the count".into());
    }
    Ok(WorkerSlot { index, count })
}

/// Parses `250us`, `5ms`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (use us, ms, s, m, h)"
            ))
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("duration `{s}` out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.5ms"), Ok(Duration::from_micros(500)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in [
            "",
            "ms",
            "5 parsecs",
            "-1s",
            "1e3s",
            "5msx",
            "1..2s",
            "99999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn worker_slots() {
        assert_eq!(
            parse_worker_slot("1/3"),
            Ok(WorkerSlot { index: 1, count: 3 })
        );
        assert!(parse_worker_slot("3/3").is_err());
        assert!(parse_worker_slot("0/0").is_err());
        assert!(parse_worker_slot("x").is_err());
        let w = WorkerSlot { index: 1, count: 3 };
        assert_eq!(w.share(8).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(w.share_len(8), 3);
        assert_eq!(WorkerSlot::SOLO.share(3).collect::<Vec<_>>(), vec![0, 1, 2]);
        // Every index belongs to exactly one worker.
        let mut all: Vec<usize> = (0..3)
            .flat_map(|i| WorkerSlot { index: i, count: 3 }.share(10))
            .collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn cli_is_well_formed_and_parses_thresholds() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "loadtest",
            "chat",
            "--visitors",
            "10",
            "--max-p99",
            "5ms",
            "--max-lost",
            "0",
            "--url",
            "ws://127.0.0.1:1/v1/ws",
            "--url",
            "ws://127.0.0.1:2/v1/ws",
            "--source-ips",
            "127.0.0.2,127.0.0.3",
            "--encoding",
            "msgpack",
            "--latency-from",
            "scheduled",
        ])
        .unwrap();
        assert_eq!(cli.common.latency_from, LatencyFrom::Scheduled);
        let default = Cli::try_parse_from(["loadtest", "chat"]).unwrap();
        assert_eq!(default.common.latency_from, LatencyFrom::Sent);
        assert_eq!(cli.common.max_p99, Some(Duration::from_millis(5)));
        assert_eq!(cli.common.max_lost, Some(0));
        assert_eq!(cli.common.urls.len(), 2);
        assert_eq!(cli.common.source_ips.len(), 2);
        assert_eq!(cli.common.encoding, Encoding::Msgpack);
        let Scenario::Chat(chat) = cli.scenario else {
            panic!()
        };
        assert_eq!(chat.visitors, 10);
    }
}
