//! Smoke runs of the load tester against the real `gateway` binary, on loopback: every
//! scenario for a few seconds with a few hundred sockets, checked through the exit status and
//! the JSON report. Heavy runs are documented commands (`docs/benchmarks.md`), not tests.
//!
//! The gateway binary must be built first (`scripts/test` runs `cargo build --workspace
//! --bins` before the tests); `GATEWAY_BIN` overrides where it is looked for. Each test
//! starts its own gateway on port 0 and waits for the `listening on http://ADDR` line. Runs
//! take turns (one lock), so that the two cores of a CI machine are not shared by several
//! load tests at once. A multi-node run starts several gateways and passes one `--url` per
//! node to [`loadtest`].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

const SECRET: &str = "smoke-test-secret-0123456789";
const SITES: &str = r#"[
  {"id": "demo", "settings": {"routing": "manual"}},
  {"id": "offer", "settings": {"routing": "offer"}},
  {"id": "auto", "settings": {"routing": "auto"}}
]"#;

/// How long one load-test run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/gateway");
    assert!(
        bin.exists(),
        "the gateway binary is missing at {}: build it first with `cargo build --workspace \
         --bins` (scripts/test does), or point GATEWAY_BIN at one",
        bin.display()
    );
    bin
}

/// A gateway process, killed when dropped.
struct Gateway {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Gateway {
    /// Starts a node with the in-memory engine; `env` adds or overrides settings.
    fn start(env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new("gw");
        let sites = dir.0.join("sites.json");
        std::fs::write(&sites, SITES).unwrap();
        let mut cmd = Command::new(gateway_bin());
        cmd.env("GATEWAY_LISTEN", "127.0.0.1:0")
            .env("GATEWAY_JWT_SECRET", SECRET)
            .env("GATEWAY_SITES", &sites)
            .env("GATEWAY_DATA_DIR", dir.0.join("data"))
            .env("RUST_LOG", "warn")
            // A load test starts its conversations from one address.
            .env("GATEWAY_STARTS_PER_IP", "10000000")
            .env("GATEWAY_STARTS_PER_VISITOR", "100000")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("starting the gateway");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("the gateway did not print `listening on http://ADDR` within 30 s");
            }
        };
        Gateway {
            child,
            addr,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "loadtest-smoke-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `loadtest --quiet` against `urls` with `args`; returns the exit code and the JSON
/// report.
fn loadtest(urls: &[String], args: &[&str]) -> (i32, Value) {
    let (code, report, _) = run_loadtest(urls, args, true, |_| {});
    (code, report)
}

/// Runs `loadtest` with its live progress line; returns the exit code, the JSON report and
/// what it wrote on stderr.
fn loadtest_with_progress(urls: &[String], args: &[&str]) -> (i32, Value, String) {
    run_loadtest(urls, args, false, |_| {})
}

/// The live progress lines in a run's stderr (`[   1.0s] phase  open … | errors N`).
fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("s] ") && l.contains(" | errors "))
        .collect()
}

/// Runs `loadtest`; `started` gets its process id as soon as it runs.
fn run_loadtest(
    urls: &[String],
    args: &[&str],
    quiet: bool,
    started: impl FnOnce(u32),
) -> (i32, Value, String) {
    let dir = TempDir::new("report");
    let json = dir.0.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadtest"));
    for u in urls {
        cmd.arg("--url").arg(u);
    }
    if quiet {
        cmd.arg("--quiet");
    }
    cmd.arg("--json")
        .arg(&json)
        .args(args)
        .env("GATEWAY_JWT_SECRET", SECRET)
        .stdin(Stdio::null());
    let (tx, rx) = mpsc::channel();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    started(pid);
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let read = |r: &mut dyn std::io::Read| {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        };
        let err_thread = std::thread::spawn(move || read(&mut { stderr }));
        let out = read(&mut { stdout });
        let status = child.wait();
        let _ = tx.send((status, out, err_thread.join().unwrap_or_default()));
    });
    let Ok((status, out, err)) = rx.recv_timeout(RUN_LIMIT) else {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("loadtest {args:?} did not finish within {RUN_LIMIT:?}");
    };
    let code = status.unwrap().code().unwrap_or(-1);
    println!("loadtest {args:?} exited {code}\n{out}{err}");
    let report = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); loadtest said:\n{out}{err}"));
    (
        code,
        serde_json::from_str(&report).expect("the JSON report parses"),
        err,
    )
}

fn n(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no number at {path}: {v:#}"))
}

/// What every healthy chat-like report shows.
fn assert_healthy_delivery(r: &Value, conversations: u64) {
    assert_eq!(r["pass"], true, "{r:#}");
    assert_eq!(n(r, "/messages/conversations"), conversations);
    for k in [
        "lost",
        "duplicated",
        "out_of_order",
        "reports_missing",
        "one_sided_conversations",
        "unacked",
        "refused",
    ] {
        assert_eq!(n(r, &format!("/messages/{k}")), 0, "{k}: {r:#}");
    }
    // Every send was accounted for: acked, refused, or counted as unacked.
    assert_eq!(
        n(r, "/messages/sent"),
        n(r, "/messages/acked") + n(r, "/messages/refused") + n(r, "/messages/unacked"),
        "{r:#}"
    );
    assert!(n(r, "/messages/received_v2o") > 0 && n(r, "/messages/received_o2v") > 0);
    assert!(n(r, "/latency_us/v2o/count") > 0);
    assert!(n(r, "/latency_us/o2v/p99") >= n(r, "/latency_us/o2v/p50"));
    assert!(n(r, "/latency_us/ack/count") > 0);
}

#[test]
fn chat_in_manual_routing_delivers_everything_once_in_order() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r) = loadtest(
        &[gw.url()],
        &[
            "--gateway-pid",
            &gw.pid(),
            "--duration",
            "3s",
            "--connect-rate",
            "300",
            "--max-lost",
            "0",
            "--max-dup",
            "0",
            "--max-out-of-order",
            "0",
            "chat",
            "--visitors",
            "200",
            "--operators",
            "10",
            "--rate",
            "100",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["scenario"], "chat");
    assert_eq!(r["routing"], "manual");
    assert_healthy_delivery(&r, 200);
    assert_eq!(n(&r, "/connections/failed"), 0);
    assert!(
        r["gateway"]["cpu_us_per_message"].as_f64().unwrap() > 0.0,
        "{r:#}"
    );
}

#[test]
fn chat_in_offer_and_auto_routing_over_msgpack_and_two_workers() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    for site in ["offer", "auto"] {
        // The parent merges its workers' progress into one live line.
        let (code, r, stderr) = loadtest_with_progress(
            &[gw.url()],
            &[
                "--site",
                site,
                "--encoding",
                "msgpack",
                "--workers",
                "2",
                "--source-ips",
                "127.0.0.2,127.0.0.3",
                "--duration",
                "2s",
                "--connect-rate",
                "300",
                "--max-lost",
                "0",
                "--max-dup",
                "0",
                "chat",
                "--visitors",
                "100",
                "--operators",
                "4",
                "--rate",
                "60",
            ],
        );
        assert_eq!(code, 0, "{site}: {r:#}");
        assert_eq!(r["routing"], site);
        assert_eq!(n(&r, "/processes"), 2);
        assert_healthy_delivery(&r, 100);
        let lines = progress_lines(&stderr);
        assert!(
            lines.iter().any(|l| l.contains(" chat ")),
            "a progress line in the chat phase: {stderr}"
        );
        assert!(
            !stderr.contains("worker 0:") && !stderr.contains("worker 1:"),
            "{stderr}"
        );
    }
}

#[test]
fn idle_reports_gateway_memory_per_socket() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r) = loadtest(
        &[gw.url()],
        &[
            "--gateway-pid",
            &gw.pid(),
            "--duration",
            "1s",
            "--max-errors",
            "0",
            "idle",
            "--sockets",
            "300",
            "--settle",
            "500ms",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(n(&r, "/idle/open_at_sample"), 300);
    let per_socket = r["idle"]["rss_per_socket_bytes"]
        .as_f64()
        .expect("memory per socket");
    assert!(
        per_socket > 0.0 && per_socket < 1024.0 * 1024.0,
        "{per_socket}"
    );
    assert_eq!(n(&r, "/errors_total"), 0);
}

#[test]
fn reconnect_storm_resumes_every_visitor_without_loss() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r) = loadtest(
        &[gw.url()],
        &[
            "--latency-from",
            "scheduled",
            "--duration",
            "30s",
            "--connect-rate",
            "300",
            "--max-lost",
            "0",
            "--max-dup",
            "0",
            "--max-out-of-order",
            "0",
            "reconnect-storm",
            "--visitors",
            "200",
            "--operators",
            "4",
            "--missed",
            "2",
            "--rate",
            "40",
            "--chat",
            "1s",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_healthy_delivery(&r, 200);
    assert_eq!(n(&r, "/storm/cut"), 200);
    assert_eq!(n(&r, "/storm/resumed"), 200);
    assert_eq!(n(&r, "/storm/not_recovered"), 0);
    assert!(n(&r, "/storm/all_resumed_ms") > 0);
    // Every visitor got at least its operator's missed messages as a replay.
    assert!(n(&r, "/messages/replayed") >= 200 * 2, "{r:#}");
    // Latency is measured from the rate schedule, which starts afresh after the cut: the
    // seconds visitors were away on purpose are not made up as "late" messages (they would
    // show as a v→o max of the whole cut, push and resume, ~10 s here).
    assert_eq!(r["settings"]["latency_from"], "scheduled");
    assert!(n(&r, "/latency_us/v2o/count") > 0);
    assert!(n(&r, "/latency_us/v2o/max") < 4_000_000, "{r:#}");
}

/// The value of a counter series on the gateway's `/metrics` (0 when absent).
fn metric(gw: &Gateway, series: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `churn` (`ramp --stay`): each visitor leaves after its stay, so fewer are open at the end
/// than arrived; the chatting share starts a conversation after its welcome and closes it as
/// it leaves.
#[test]
fn churn_visitors_leave_after_their_stay_and_a_share_starts_and_closes_a_conversation() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r) = loadtest(
        &[gw.url()],
        &[
            "--duration",
            "2s",
            "churn",
            "--start-rate",
            "50",
            "--step",
            "50",
            "--step-duration",
            "1s",
            "--latency-bound",
            "5s",
            "--stay",
            "300ms",
            "--chatting",
            "0.5",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(n(&r, "/ramp/steps/0/ok"), 50, "{r:#}");
    assert_eq!(n(&r, "/ramp/steps/1/ok"), 100, "{r:#}");
    assert_eq!(n(&r, "/errors_total"), 0, "{r:#}");
    let open = n(&r, "/ramp/open_at_end");
    assert!(open < 150, "nobody left: {r:#}");
    let starts = metric(&gw, r#"gateway_frames_in_total{type="start"}"#);
    let closes = metric(&gw, r#"gateway_frames_in_total{type="close"}"#);
    assert!((20.0..=130.0).contains(&starts), "{starts} of 150 started");
    // Every chatting visitor that left closed its conversation; only those still there when
    // the run ended (within their stay) did not.
    assert!(closes <= starts, "{closes} closes of {starts} starts");
    assert!(
        starts - closes <= open as f64,
        "{starts} started, {closes} closed, {open} still open at the end"
    );
}

#[test]
fn ramp_steps_up_and_a_failed_threshold_exits_1() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r, stderr) = loadtest_with_progress(
        &[gw.url()],
        &[
            "--duration",
            "2s",
            "ramp",
            "--start-rate",
            "50",
            "--step",
            "50",
            "--step-duration",
            "1s",
            "--latency-bound",
            "5s",
        ],
    );
    assert_eq!(code, 0, "{r:#}");
    let steps = r["ramp"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{r:#}");
    assert_eq!(n(&r, "/ramp/steps/0/ok"), 50);
    assert_eq!(n(&r, "/ramp/steps/1/ok"), 100);
    assert_eq!(r["ramp"]["held_rate"].as_f64(), Some(100.0));
    // The live progress line, once a second while the sockets ramp up.
    let lines = progress_lines(&stderr);
    assert!(!lines.is_empty(), "no progress line: {stderr}");
    assert!(lines.iter().any(|l| !l.contains(" open 0 ")), "{lines:#?}");

    // An impossible latency bound fails the run with exit status 1.
    let (code, r) = loadtest(
        &[gw.url()],
        &[
            "--duration",
            "1s",
            "--max-p99",
            "1us",
            "idle",
            "--sockets",
            "20",
            "--settle",
            "0s",
        ],
    );
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["pass"], false);
}

/// A worker process that dies takes its sockets' measurements with it: the parent carries on
/// with the others, and the run fails (exit 1) instead of passing on what is left.
#[test]
fn a_dead_worker_fails_the_run() {
    let _turn = one_at_a_time();
    let gw = Gateway::start(&[]);
    let (code, r, stderr) = run_loadtest(
        &[gw.url()],
        &[
            "--workers",
            "2",
            "--duration",
            "2s",
            "idle",
            "--sockets",
            "40",
            "--settle",
            "0s",
        ],
        true,
        |parent| {
            // Kill the first worker once the parent has started both.
            let children = format!("/proc/{parent}/task/{parent}/children");
            let mut workers = Vec::new();
            testsupport::wait_until("two workers", Duration::from_secs(20), || {
                workers = std::fs::read_to_string(&children)
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                workers.len() >= 2
            });
            let killed = Command::new("kill")
                .args(["-KILL", &workers[0]])
                .status()
                .unwrap();
            assert!(killed.success());
        },
    );
    assert_eq!(code, 1, "{r:#}\n{stderr}");
    assert_eq!(r["pass"], false);
    assert_eq!(n(&r, "/processes"), 1);
    assert_eq!(n(&r, "/errors/worker:died"), 1, "{r:#}");
    let check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "worker processes finished")
        .expect("a check of the workers");
    assert_eq!(check["pass"], false, "{check:#}");
    assert!(stderr.contains("ended without a result"), "{stderr}");
}

/// Three gateway processes on one real Redis: visitors and operators spread over the nodes
/// (most conversations cross nodes), nothing lost, duplicated or reordered; the gateways' and
/// Redis' CPU time are sampled (`--gateway-pid` ×3, `--redis-pid`).
#[test]
fn chat_across_three_nodes_on_redis() {
    let _turn = one_at_a_time();
    let redis = testsupport::RedisServer::start();
    let url = redis.url();
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&[("GATEWAY_REDIS_URL", url.as_str())]))
        .collect();
    let mut args: Vec<String> = Vec::new();
    for g in &nodes {
        args.extend(["--gateway-pid".into(), g.pid()]);
    }
    let redis_pid = redis.pid().expect("redis-server runs");
    args.extend(["--redis-pid".into(), redis_pid.to_string()]);
    for a in [
        "--site",
        "auto",
        "--duration",
        "3s",
        "--connect-rate",
        "300",
        "--max-lost",
        "0",
        "--max-dup",
        "0",
        "--max-out-of-order",
        "0",
        "chat",
        "--visitors",
        "150",
        "--operators",
        "9",
        "--rate",
        "100",
    ] {
        args.push(a.into());
    }
    let urls: Vec<String> = nodes.iter().map(Gateway::url).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, r) = loadtest(&urls, &args);
    assert_eq!(code, 0, "{r:#}");
    assert_healthy_delivery(&r, 150);
    let by_node = r["connections"]["by_node"]
        .as_object()
        .expect("sessions by node");
    assert_eq!(by_node.len(), 3, "every node served sessions: {by_node:?}");
    assert_eq!(r["gateway"]["pids"].as_array().map(Vec::len), Some(3));
    assert!(r["gateway"]["cpu_us_per_message"].as_f64().unwrap() > 0.0);
    assert_eq!(
        r["gateway"]["redis_pids"][0].as_u64(),
        Some(u64::from(redis_pid))
    );
    let g = &r["gateway"];
    assert!(
        g["redis_cpu_us_per_message"]
            .as_f64()
            .is_some_and(|us| us >= 0.0),
        "a Redis CPU figure: {g:#}"
    );
    assert!(
        g["redis_cpu_percent"].as_f64().is_some(),
        "Redis CPU in % of a core: {g:#}"
    );
    let server = g["server_cpu_us_per_message"]
        .as_f64()
        .expect("server CPU per message");
    assert!(
        server > 0.0 && server >= g["cpu_us_per_message"].as_f64().unwrap(),
        "gateways + redis per message: {g:#}"
    );
    // Every barrier sampled Redis too.
    for s in g["samples"].as_array().unwrap() {
        assert!(s["redis_cpu_ms"].as_u64().is_some(), "{s:#}");
    }
}
