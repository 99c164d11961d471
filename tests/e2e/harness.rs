//! Harness of the black-box tests: real gateway processes (the binary cargo just built) on
//! free ports of 127.0.0.1, sharing a real `redis-server` (or Redis Cluster) that the harness
//! starts, and a WebSocket client that speaks protocol v1 as plain JSON, the way a third-party
//! client written from `protocol-v1.md` alone would.
//!
//! Nothing here sleeps to synchronise: a test waits for the frame or state it expects, with a
//! deadline.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "e2e-secret-0123456789abcdef";
/// Deadline of one wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// `GATEWAY_NODE_TIMEOUT` of every test node: a node silent this long is declared dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings every test node gets unless the test says otherwise: short timers, so that the
/// fault tests finish in seconds.
pub fn base_env() -> Vec<(String, String)> {
    let node_timeout = format!("{}ms", NODE_TIMEOUT.as_millis());
    [
        ("GATEWAY_JWT_SECRET", SECRET),
        ("GATEWAY_LISTEN", "127.0.0.1:0"),
        ("GATEWAY_ALLOW_SHORT_TIMERS", "true"),
        ("GATEWAY_NODE_TIMEOUT", node_timeout.as_str()),
        ("GATEWAY_DRAIN_WINDOW", "500ms"),
        ("GATEWAY_REDIS_TIMEOUT", "1s"),
        ("GATEWAY_RATE_PER_SEC", "1000"),
        ("GATEWAY_RATE_BURST", "1000"),
        // The tests start many conversations from one address; the abuse tests lower these.
        ("GATEWAY_STARTS_PER_IP", "100000"),
        ("GATEWAY_STARTS_PER_VISITOR", "100000"),
        ("GATEWAY_SESSIONS_PER_IP", "100000"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A sites file with the given settings for site `demo` (queue `general`).
pub fn sites_file(settings: Value) -> tempfile_path::Path {
    let sites = json!([{ "id": "demo", "queues": ["general", "vip"], "settings": settings }]);
    tempfile_path::write(&serde_json::to_string(&sites).unwrap())
}

/// A temporary file removed when dropped.
pub mod tempfile_path {
    use std::sync::atomic::{AtomicU32, Ordering};

    pub struct Path(pub std::path::PathBuf);

    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(text: &str) -> Path {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cg-e2e-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, text).expect("write temp file");
        Path(p)
    }
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A temporary directory (a node's data dir), removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cg-e2e-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One gateway process.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `target/…/gateway` with `env` and waits for its "listening on" line.
    pub fn start(name: &str, env: &[(String, String)]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        // A node's own data dir unless the test gives one (what a node keeps never carries
        // over into another test).
        let data = std::env::temp_dir().join(format!(
            "cg-e2e-data-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GATEWAY_DATA_DIR", &data)
            .env("GATEWAY_NODE_ID", name)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("gateway binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.strip_prefix("listening on http://") {
                        if let Ok(a) = rest.trim().parse() {
                            let _ = tx.send(a);
                        }
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node {name} printed no address:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Node {
            name: name.to_owned(),
            addr,
            child: Some(child),
            logs,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: the node vanishes without a word.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit by itself.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits (with the deadline) until a log line contains `needle`: stdout and stderr are
    /// read by separate threads, so a line may trail the address.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id, while the node runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The node's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// One scrape of `GET /metrics`: each sample line as `name{labels}` → value, labels as
    /// the exporter wrote them.
    pub async fn metrics(&self) -> Metrics {
        let (code, body) = http_get(&self.http("/metrics"))
            .await
            .expect("the node answers /metrics");
        assert_eq!(code, 200, "{body}");
        let samples = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("a sample line");
                (k.to_owned(), v.parse::<f64>().expect("a sample value"))
            })
            .collect();
        Metrics {
            samples,
            text: body,
        }
    }
}

/// One scrape of a node's Prometheus metrics.
pub struct Metrics {
    pub samples: std::collections::BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    /// The value of `name` with exactly these labels (in any order); 0 when absent, as
    /// Prometheus treats a counter not yet incremented.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        self.samples.iter().find_map(|(key, v)| {
            let (n, rest) = key.split_once('{').unwrap_or((key, "}"));
            if n != name {
                return None;
            }
            let mut have: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            have.sort();
            (have == want).then_some(*v)
        })
    }

    /// Every sample of `name` whatever its labels: (labels text, value).
    pub fn all(&self, name: &str) -> Vec<(String, f64)> {
        self.samples
            .iter()
            .filter_map(|(key, v)| {
                let (n, rest) = key.split_once('{').unwrap_or((key, ""));
                (n == name).then(|| (rest.trim_end_matches('}').to_owned(), *v))
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- logs of node {} -----\n{}", self.name, self.logs());
        }
        self.kill();
    }
}

/// An HS256 token as a site's backend (or `gateway token`) would mint it.
pub fn token(role: &str, sub: &str, name: &str) -> String {
    token_with(role, sub, name, json!({}))
}

pub fn token_with(role: &str, sub: &str, name: &str, extra: Value) -> String {
    token_signed(SECRET, role, sub, name, extra)
}

/// A token signed with another secret (a node's generated one).
pub fn token_signed(secret: &str, role: &str, sub: &str, name: &str, extra: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({
        "sub": sub, "site": "demo", "role": role, "name": name,
        "iat": now, "exp": now + 3600,
    });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A protocol v1 client speaking JSON.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_rid: u64,
    /// Frames read while waiting for something else, handed out first.
    backlog: VecDeque<Value>,
    pub welcome: Value,
}

impl Client {
    /// Connects and says hello with cursors; returns once `welcome` arrived.
    pub async fn connect(url: &str, token: &str, cursors: Value) -> Client {
        let mut c = Client::open(url).await;
        c.send(json!({"t": "hello", "token": token, "cursors": cursors}))
            .await;
        let w = c.next().await.expect("welcome");
        assert_eq!(w["t"], "welcome", "expected welcome, got {w}");
        c.welcome = w;
        c
    }

    /// Opens the socket (JSON) without saying hello.
    pub async fn open(url: &str) -> Client {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("chat.v1.json"),
        );
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            ws,
            next_rid: 0,
            backlog: VecDeque::new(),
            welcome: Value::Null,
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    /// The next frame, answering pings; `None` once the socket closed.
    async fn next(&mut self) -> Option<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Some(v);
        }
        self.next_wire().await
    }

    async fn next_wire(&mut self) -> Option<Value> {
        self.next_wire_by(tokio::time::Instant::now() + WAIT).await
    }

    async fn next_wire_by(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        tokio::time::timeout_at(deadline, self.wire_or_close())
            .await
            .expect("timed out waiting for a frame")
            .ok()
    }

    /// Skips frames until one matches, within [`WAIT`] in all.
    pub async fn recv_until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = match self.backlog.pop_front() {
                Some(v) => Some(v),
                None => tokio::time::timeout_at(deadline, self.wire_or_close())
                    .await
                    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                    .ok(),
            };
            match next {
                Some(v) if pred(&v) => return v,
                Some(_) => continue,
                None => panic!("socket closed while waiting for {what}"),
            }
        }
    }

    /// Sends a request with a fresh `rid` and returns its answer (`ok` or `error`); other
    /// frames stay queued for `recv_until`.
    pub async fn request(&mut self, mut v: Value) -> Value {
        self.next_rid += 1;
        let rid = self.next_rid;
        v["rid"] = json!(rid);
        self.send(v).await;
        if let Some(i) = self
            .backlog
            .iter()
            .position(|f| f["rid"] == json!(rid) && (f["t"] == "ok" || f["t"] == "error"))
        {
            return self.backlog.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let f = self
                .next_wire_by(deadline)
                .await
                .expect("socket closed before the answer");
            if f["rid"] == json!(rid) && (f["t"] == "ok" || f["t"] == "error") {
                return f;
            }
            self.backlog.push_back(f);
        }
    }

    /// Waits for the server to close the socket; the close code (`None`: just gone).
    pub async fn closed(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.recv_or_close())
                .await
                .expect("timed out waiting for close")
            {
                Ok(_) => continue,
                Err(code) => return code,
            }
        }
    }

    /// The next frame (queued ones first), or the close code once the socket closed.
    pub async fn recv_or_close(&mut self) -> Result<Value, Option<u16>> {
        match self.backlog.pop_front() {
            Some(v) => Ok(v),
            None => self.wire_or_close().await,
        }
    }

    /// The next frame off the socket, or the close code once it closed.
    async fn wire_or_close(&mut self) -> Result<Value, Option<u16>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
                    if v["t"] == "ping" {
                        self.send(json!({"t": "pong"})).await;
                        continue;
                    }
                    return Ok(v);
                }
                Some(Ok(Message::Close(Some(f)))) => return Err(Some(f.code.into())),
                Some(Ok(Message::Close(None))) => return Err(Some(1005)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Every `msg` frame of a conversation still queued, then drops the rest.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }
}

/// The `msg` frames received until `seq` of `conv` arrived, deduplicated by `seq` the way
/// clients do it; panics on a gap, and on a repeated `seq` that carries another message.
pub async fn read_msgs_until(c: &mut Client, conv: &str, last: u64, from: u64) -> Vec<Value> {
    let mut got: Vec<Value> = Vec::new();
    let mut next = from;
    while next <= last {
        let f = c
            .recv_until(&format!("msg {next} of {conv}"), |f| {
                f["t"] == "msg" && f["conv"] == conv
            })
            .await;
        let seq = f["seq"].as_u64().unwrap();
        if seq < next {
            // A duplicate: clients drop it by seq. It must be the same message, though.
            if let Some(kept) = seq.checked_sub(from).and_then(|i| got.get(i as usize)) {
                assert_eq!(
                    (&kept["from"], &kept["cid"], &kept["text"]),
                    (&f["from"], &f["cid"], &f["text"]),
                    "seq {seq} of {conv} delivered twice with different contents"
                );
            }
            continue;
        }
        assert_eq!(
            seq, next,
            "gap or reorder in {conv}: expected {next}, got {f}"
        );
        got.push(f);
        next += 1;
    }
    got
}

/// Polls an HTTP GET until `pred` holds for the body (or panics).
pub async fn http_until(url: &str, what: &str, pred: impl Fn(u16, &str) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((code, body)) = http_get(url).await {
            if pred(code, &body) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} at {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP GET of a full `http://host:port/path` URL.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    http_request("GET", url, &[], "").await
}

pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    testsupport::http(host, method, &path, headers, body).await
}
