//! Configuration: every setting has one `GATEWAY_…` name, is read here once, and is validated
//! into typed values. Every bad setting is reported at once, before any port is bound.
//!
//! Settings come from the environment or the same-named command-line flags (`gateway --help`);
//! `gateway config` prints the effective configuration.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::core::settings::Bounds;

mod sites;
pub use sites::{load_sites, parse_sites, SiteConfig};

/// Raw settings as given; see [`Config::from_raw`] for their meaning and defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct RawConfig {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Address of a listener that serves only `/metrics` (Prometheus). Unset: the client
    /// port serves `/metrics` to this machine alone (loopback, not through a proxy).
    #[arg(long, env = "GATEWAY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Redis URL (`redis://host:port`), or a comma-separated list of Redis Cluster seed nodes.
    /// Absent: the embedded in-memory engine (one node).
    #[arg(long, env = "GATEWAY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Treat a single GATEWAY_REDIS_URL as a Redis Cluster seed (a list always is one).
    #[arg(long, env = "GATEWAY_REDIS_CLUSTER", default_value = "false")]
    pub redis_cluster: String,
    /// How long one Redis command may take before it counts as failed.
    #[arg(long, env = "GATEWAY_REDIS_TIMEOUT", default_value = "2s")]
    pub redis_timeout: String,
    /// A node that has not proved it is alive for this long is declared dead by the others,
    /// and its connections are swept (Redis engine). It proves it every fifth of this.
    #[arg(long, env = "GATEWAY_NODE_TIMEOUT", default_value = "10s")]
    pub node_timeout: String,
    /// How long a closed conversation's log is kept.
    #[arg(long, env = "GATEWAY_RETENTION", default_value = "24h")]
    pub retention: String,
    /// HS256 secret for tokens. Absent: a random one is generated and a demo console link printed.
    #[arg(long, env = "GATEWAY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256/EdDSA tokens instead of the HS256 secret.
    #[arg(long, env = "GATEWAY_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,
    /// Algorithm of GATEWAY_JWT_PUBLIC_KEY: RS256 or EdDSA.
    #[arg(long, env = "GATEWAY_JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: String,
    /// This node's id. Default: random.
    #[arg(long, env = "GATEWAY_NODE_ID")]
    pub node_id: Option<String>,
    /// JSON file describing the sites (default: one site `demo`).
    #[arg(long, env = "GATEWAY_SITES")]
    pub sites: Option<String>,
    /// Public base URL used in printed links (default: http://<listen>).
    #[arg(long, env = "GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Time a new socket has to send `hello`.
    #[arg(long, env = "GATEWAY_HELLO_TIMEOUT", default_value = "10s")]
    pub hello_timeout: String,
    /// Application-level ping interval.
    #[arg(long, env = "GATEWAY_PING_INTERVAL", default_value = "25s")]
    pub ping_interval: String,
    /// Window over which clients are closed with 1012 on SIGTERM.
    #[arg(long, env = "GATEWAY_DRAIN_WINDOW", default_value = "5s")]
    pub drain_window: String,
    /// Byte budget of one connection's outbound queue (overflow closes with 4008).
    #[arg(long, env = "GATEWAY_OUTBOUND_MAX_BYTES", default_value = "262144")]
    pub outbound_max_bytes: String,
    /// Frames per second one connection may send (token bucket rate).
    #[arg(long, env = "GATEWAY_RATE_PER_SEC", default_value = "20")]
    pub rate_per_sec: String,
    /// Burst of the per-connection token bucket.
    #[arg(long, env = "GATEWAY_RATE_BURST", default_value = "40")]
    pub rate_burst: String,
    /// Open connections allowed from one IP address.
    #[arg(long, env = "GATEWAY_MAX_CONNS_PER_IP", default_value = "50000")]
    pub max_conns_per_ip: String,
    /// WebSocket read buffer per socket, bytes: allocated up front for every socket, so it is
    /// a large share of an idle socket's memory. Client frames are small (a `hello` with a
    /// token is a few hundred bytes); a larger one takes a few reads and grows the buffer.
    #[arg(long, env = "GATEWAY_WS_READ_BUFFER", default_value = "1024")]
    pub ws_read_buffer: String,
    /// WebSocket write buffer per socket, bytes.
    #[arg(long, env = "GATEWAY_WS_WRITE_BUFFER", default_value = "8192")]
    pub ws_write_buffer: String,
    /// The kernel's send buffer per socket, bytes (0: the kernel's own, which grows to
    /// net.ipv4.tcp_wmem's maximum, 4 MiB by default). It bounds what a client that stops
    /// reading pins in kernel memory before the outbound budget starts counting.
    #[arg(long, env = "GATEWAY_SOCKET_SEND_BUFFER", default_value = "65536")]
    pub socket_send_buffer: String,
    /// Largest accepted WebSocket frame and message, bytes.
    #[arg(long, env = "GATEWAY_MAX_FRAME", default_value = "65536")]
    pub max_frame: String,
    /// Longest message text, bytes.
    #[arg(long, env = "GATEWAY_MAX_TEXT", default_value = "8000")]
    pub max_text: String,
    /// Lifetime of visitor tokens from POST /v1/visitor/session.
    #[arg(long, env = "GATEWAY_VISITOR_TOKEN_TTL", default_value = "24h")]
    pub visitor_token_ttl: String,
    /// A request's headers must arrive within this (a client that trickles them is cut).
    #[arg(long, env = "GATEWAY_HTTP_HEADER_TIMEOUT", default_value = "10s")]
    pub http_header_timeout: String,
    /// A request's body must arrive within this (408 after it).
    #[arg(long, env = "GATEWAY_HTTP_BODY_TIMEOUT", default_value = "30s")]
    pub http_body_timeout: String,
    /// Open HTTP connections from one address (WebSockets count apart, once upgraded).
    #[arg(long, env = "GATEWAY_MAX_HTTP_CONNS_PER_IP", default_value = "1000")]
    pub max_http_conns_per_ip: String,
    /// Anonymous visitor sessions per address and minute.
    #[arg(long, env = "GATEWAY_SESSIONS_PER_IP", default_value = "60")]
    pub sessions_per_ip: String,
    /// Conversations one visitor may start per hour.
    #[arg(long, env = "GATEWAY_STARTS_PER_VISITOR", default_value = "30")]
    pub starts_per_visitor: String,
    /// Conversations started from one address per hour.
    #[arg(long, env = "GATEWAY_STARTS_PER_IP", default_value = "600")]
    pub starts_per_ip: String,
    /// After SIGTERM, the node exits within this whatever is still open.
    #[arg(long, env = "GATEWAY_SHUTDOWN_DEADLINE", default_value = "30s")]
    pub shutdown_deadline: String,
    /// How long after it expired a visitor token the gateway made is still renewed under the
    /// same visitor id (a returning visitor keeps their conversations).
    #[arg(long, env = "GATEWAY_VISITOR_RENEW_WITHIN", default_value = "7d")]
    pub visitor_renew_within: String,
    /// Messages kept per conversation log.
    #[arg(long, env = "GATEWAY_MAX_LOG", default_value = "1000")]
    pub max_log: String,
    /// Sites whose gauges carry their id as a label (the rest are summed as `other`).
    #[arg(long, env = "GATEWAY_METRICS_SITES", default_value = "20")]
    pub metrics_sites: String,
    /// Request header carrying the visitor's country, set by a trusted proxy (e.g. CF-IPCountry).
    #[arg(long, env = "GATEWAY_COUNTRY_HEADER")]
    pub country_header: Option<String>,
    /// The mail server: `smtp://user:pass@host:587` (STARTTLS), `smtps://…` (TLS),
    /// `smtp://host:25?tls=none` (a local relay). Unset: no e-mail.
    #[arg(long, env = "GATEWAY_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The sender of the gateway's e-mail, like `Chat <chat@example.com>`.
    #[arg(long, env = "GATEWAY_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// The only hosts webhooks may call, comma-separated (unset: any).
    #[arg(long, env = "GATEWAY_WEBHOOK_HOSTS")]
    pub webhook_hosts: Option<String>,
    /// A webhook whose calls all failed for this long is turned off (its site's supervisors
    /// are e-mailed).
    #[arg(long, env = "GATEWAY_WEBHOOK_DISABLE_AFTER", default_value = "24h")]
    pub webhook_disable_after: String,
    /// How long a node holds the e-mails and calls it claimed to send: after a node's death,
    /// another sends them once this has passed (at least 15s: a call may take 10s).
    #[arg(long, env = "GATEWAY_DELIVERY_LEASE", default_value = "2m")]
    pub delivery_lease: String,
    /// Runtime worker threads (default: one per CPU the process may use).
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<String>,
    /// Allow timers shorter than the protocol's minimums (tests and demos only).
    #[arg(long, env = "GATEWAY_ALLOW_SHORT_TIMERS", default_value = "false")]
    pub allow_short_timers: String,
    /// Directory for what one node keeps: the SQLite archive, a generated token secret, the
    /// in-memory engine's state across a restart.
    #[arg(long, env = "GATEWAY_DATA_DIR", default_value = "./data")]
    pub data_dir: String,
    /// The archive's database: `postgres://…` (what several nodes share) or `sqlite://<file>`.
    /// Absent: SQLite in GATEWAY_DATA_DIR with the in-memory engine; no archive with Redis.
    #[arg(long, env = "GATEWAY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// HTTP API requests per second per caller (API key or staff token).
    #[arg(long, env = "GATEWAY_API_RATE_PER_SEC", default_value = "20")]
    pub api_rate_per_sec: String,
    /// HTTP API burst per caller.
    #[arg(long, env = "GATEWAY_API_RATE_BURST", default_value = "40")]
    pub api_rate_burst: String,
    /// `on` or `off`: keep every conversation in the archive.
    #[arg(long, env = "GATEWAY_ARCHIVE", default_value = "on")]
    pub archive: String,
    /// `on` or `off`: the in-memory engine writes its state to the data dir when the node
    /// stops (SIGTERM) and reads it back at start.
    #[arg(long, env = "GATEWAY_KEEP_STATE", default_value = "on")]
    pub keep_state: String,
}

/// The file in the data dir that keeps a generated token secret.
pub const SECRET_FILE: &str = "secret";

/// The file in the data dir that keeps the in-memory engine's state across a restart.
pub const STATE_FILE: &str = "memory-state.msgpack";

fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is not on or off")),
    }
}

impl Config {
    /// Keeps a generated secret in the data dir (readable by the owner only), unless it is
    /// there already.
    pub fn persist_generated_secret(&self) -> std::io::Result<()> {
        let JwtConfig::Secret {
            secret,
            generated: true,
        } = &self.jwt
        else {
            return Ok(());
        };
        let path = self.data_dir.join(SECRET_FILE);
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()
    }
}

/// Where the archive is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveConfig {
    Off,
    Sqlite(PathBuf),
    Postgres(String),
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub redis: Option<RedisConfig>,
    pub node_timeout: Duration,
    pub retention: Duration,
    pub jwt: JwtConfig,
    pub node_id: Option<String>,
    pub sites: Vec<SiteConfig>,
    pub public_url: Option<String>,
    pub hello_timeout: Duration,
    pub ping_interval: Duration,
    pub drain_window: Duration,
    pub outbound_max_bytes: usize,
    pub rate_per_sec: NonZeroU32,
    pub rate_burst: NonZeroU32,
    pub api_rate_per_sec: NonZeroU32,
    pub api_rate_burst: NonZeroU32,
    pub max_conns_per_ip: u32,
    pub ws_read_buffer: usize,
    pub ws_write_buffer: usize,
    /// `None`: leave the kernel's send buffer alone.
    pub socket_send_buffer: Option<usize>,
    pub max_frame: usize,
    pub max_text: usize,
    pub visitor_token_ttl: Duration,
    pub visitor_renew_within: Duration,
    pub http_header_timeout: Duration,
    pub http_body_timeout: Duration,
    pub max_http_conns_per_ip: u32,
    pub shutdown_deadline: Duration,
    pub abuse: crate::abuse::AbuseLimits,
    pub max_log: usize,
    /// How many sites' gauges carry the site's id (in id order; the rest are `other`).
    pub metrics_sites: usize,
    pub country_header: Option<String>,
    /// The mail server and the sender (`None`: no e-mail).
    pub mail: Option<(crate::mail::SmtpConfig, String)>,
    /// The only hosts webhooks may call (empty: any).
    pub webhook_hosts: Vec<String>,
    /// A webhook failing for this long (every call, none delivered) is turned off.
    pub webhook_disable_after: Duration,
    /// How long a claimed delivery is its sender's.
    pub delivery_lease: Duration,
    /// Runtime worker threads; `None`: one per available CPU.
    pub workers: Option<usize>,
    pub bounds: Bounds,
    pub data_dir: PathBuf,
    pub archive: ArchiveConfig,
    /// The in-memory engine's state file (`None`: start empty every time; with Redis).
    pub keep_state: Option<PathBuf>,
}

/// Where the Redis engine connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One URL (single Redis) or the seed nodes of a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Per-command timeout.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum JwtConfig {
    /// HS256 with this secret; `generated` when none was configured.
    Secret { secret: String, generated: bool },
    PublicKey {
        algorithm: jsonwebtoken::Algorithm,
        pem: Vec<u8>,
    },
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    pub fn from_raw(raw: &RawConfig) -> Result<Config, ConfigErrors> {
        let mut errs = Vec::new();
        macro_rules! check {
            ($name:literal, $e:expr) => {
                match $e {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errs.push(format!("{}: {}", $name, e));
                        None
                    }
                }
            };
        }
        let dur = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string());
        let num = |s: &str| s.parse::<usize>().map_err(|e| e.to_string());
        let nz = |s: &str| s.parse::<NonZeroU32>().map_err(|e| e.to_string());
        let positive = |d: Duration| {
            if d.is_zero() {
                Err("must be more than zero".to_owned())
            } else {
                Ok(d)
            }
        };

        let listen = check!(
            "GATEWAY_LISTEN",
            raw.listen.parse::<SocketAddr>().map_err(|e| e.to_string())
        );
        let metrics_listen = check!(
            "GATEWAY_METRICS_LISTEN",
            raw.metrics_listen
                .as_deref()
                .map(|a| a.parse::<SocketAddr>().map_err(|e| e.to_string()))
                .transpose()
        );
        let allow_short = check!(
            "GATEWAY_ALLOW_SHORT_TIMERS",
            raw.allow_short_timers
                .parse::<bool>()
                .map_err(|e| e.to_string())
        );
        let bounds = Bounds {
            allow_short_timers: allow_short.unwrap_or(false),
        };
        let jwt = match (&raw.jwt_secret, &raw.jwt_public_key) {
            (Some(_), Some(_)) => {
                errs.push(
                    "GATEWAY_JWT_SECRET and GATEWAY_JWT_PUBLIC_KEY: set one, not both".into(),
                );
                None
            }
            (Some(s), None) if s.len() < 16 => {
                errs.push("GATEWAY_JWT_SECRET: must be at least 16 bytes".into());
                None
            }
            (Some(s), None) => Some(JwtConfig::Secret {
                secret: s.clone(),
                generated: false,
            }),
            (None, Some(path)) => {
                let alg = match raw.jwt_algorithm.as_str() {
                    "RS256" => Some(jsonwebtoken::Algorithm::RS256),
                    "EdDSA" => Some(jsonwebtoken::Algorithm::EdDSA),
                    other => {
                        errs.push(format!(
                            "GATEWAY_JWT_ALGORITHM: {other:?} is not RS256 or EdDSA"
                        ));
                        None
                    }
                };
                let pem = check!(
                    "GATEWAY_JWT_PUBLIC_KEY",
                    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
                );
                match (alg, pem) {
                    (Some(algorithm), Some(pem)) => Some(JwtConfig::PublicKey { algorithm, pem }),
                    _ => None,
                }
            }
            (None, None) => {
                // A secret generated before is kept in the data dir, so that tokens outlive
                // a restart of a one-node install (`persist_generated_secret`).
                let kept = std::fs::read_to_string(PathBuf::from(&raw.data_dir).join(SECRET_FILE))
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| s.len() >= 16);
                let secret = kept.unwrap_or_else(|| {
                    use rand::Rng;
                    rand::rng()
                        .sample_iter(&rand::distr::Alphanumeric)
                        .take(40)
                        .map(char::from)
                        .collect()
                });
                Some(JwtConfig::Secret {
                    secret,
                    generated: true,
                })
            }
        };
        let sites = match &raw.sites {
            None => Some(vec![SiteConfig::demo()]),
            Some(path) => match load_sites(&PathBuf::from(path), bounds) {
                Ok(s) => Some(s),
                Err(e) => {
                    errs.extend(e.into_iter().map(|e| format!("GATEWAY_SITES: {e}")));
                    None
                }
            },
        };
        let hello_timeout = check!("GATEWAY_HELLO_TIMEOUT", dur(&raw.hello_timeout));
        let ping_interval = check!(
            "GATEWAY_PING_INTERVAL",
            dur(&raw.ping_interval).and_then(|d| if d < Duration::from_millis(100) {
                Err("must be at least 100ms".into())
            } else {
                Ok(d)
            })
        );
        let drain_window = check!("GATEWAY_DRAIN_WINDOW", dur(&raw.drain_window));
        let outbound_max_bytes = check!(
            "GATEWAY_OUTBOUND_MAX_BYTES",
            num(&raw.outbound_max_bytes).and_then(|n| if n < 1024 {
                Err("must be at least 1024".into())
            } else {
                Ok(n)
            })
        );
        let rate_per_sec = check!("GATEWAY_RATE_PER_SEC", nz(&raw.rate_per_sec));
        let rate_burst = check!("GATEWAY_RATE_BURST", nz(&raw.rate_burst));
        let api_rate_per_sec = check!("GATEWAY_API_RATE_PER_SEC", nz(&raw.api_rate_per_sec));
        let api_rate_burst = check!("GATEWAY_API_RATE_BURST", nz(&raw.api_rate_burst));
        let max_conns_per_ip = check!(
            "GATEWAY_MAX_CONNS_PER_IP",
            raw.max_conns_per_ip
                .parse::<u32>()
                .map_err(|e| e.to_string())
        );
        let ws_read_buffer = check!(
            "GATEWAY_WS_READ_BUFFER",
            num(&raw.ws_read_buffer).and_then(|n| if n < 256 {
                Err("must be at least 256".into())
            } else {
                Ok(n)
            })
        );
        let ws_write_buffer = check!("GATEWAY_WS_WRITE_BUFFER", num(&raw.ws_write_buffer));
        let socket_send_buffer = check!(
            "GATEWAY_SOCKET_SEND_BUFFER",
            num(&raw.socket_send_buffer).and_then(|n| match n {
                0 => Ok(None),
                4096..=16_777_216 => Ok(Some(n)),
                _ => Err("must be 0 (the kernel's) or 4 KiB to 16 MiB".into()),
            })
        );
        let max_frame = check!(
            "GATEWAY_MAX_FRAME",
            num(&raw.max_frame).and_then(|n| if !(1024..=16 << 20).contains(&n) {
                Err("must be 1 KiB to 16 MiB".into())
            } else {
                Ok(n)
            })
        );
        let max_text = check!("GATEWAY_MAX_TEXT", num(&raw.max_text));
        // One message in JSON can be several times its text (escapes); a budget that a few
        // messages fill would cut readers that keep up.
        if let (Some(out), Some(text)) = (outbound_max_bytes, max_text) {
            if out < 8 * text {
                errs.push(format!(
                    "GATEWAY_OUTBOUND_MAX_BYTES: {out} holds fewer than 8 messages of \
                     GATEWAY_MAX_TEXT ({text} bytes); raise it to at least {}",
                    8 * text
                ));
            }
        }
        let visitor_token_ttl = check!("GATEWAY_VISITOR_TOKEN_TTL", dur(&raw.visitor_token_ttl));
        let http_header_timeout = check!(
            "GATEWAY_HTTP_HEADER_TIMEOUT",
            dur(&raw.http_header_timeout).and_then(positive)
        );
        let http_body_timeout = check!(
            "GATEWAY_HTTP_BODY_TIMEOUT",
            dur(&raw.http_body_timeout).and_then(positive)
        );
        let max_http_conns_per_ip = check!(
            "GATEWAY_MAX_HTTP_CONNS_PER_IP",
            nz(&raw.max_http_conns_per_ip).map(NonZeroU32::get)
        );
        let sessions_per_ip = check!("GATEWAY_SESSIONS_PER_IP", nz(&raw.sessions_per_ip));
        let starts_per_visitor = check!("GATEWAY_STARTS_PER_VISITOR", nz(&raw.starts_per_visitor));
        let starts_per_ip = check!("GATEWAY_STARTS_PER_IP", nz(&raw.starts_per_ip));
        let shutdown_deadline = check!(
            "GATEWAY_SHUTDOWN_DEADLINE",
            dur(&raw.shutdown_deadline).and_then(positive)
        );
        let visitor_renew_within = check!(
            "GATEWAY_VISITOR_RENEW_WITHIN",
            dur(&raw.visitor_renew_within)
        );
        let delivery_lease = check!(
            "GATEWAY_DELIVERY_LEASE",
            dur(&raw.delivery_lease).and_then(|d| if d < Duration::from_secs(15) {
                Err("at least 15s (a call may take 10s)".into())
            } else {
                Ok(d)
            })
        );
        let webhook_disable_after = check!(
            "GATEWAY_WEBHOOK_DISABLE_AFTER",
            dur(&raw.webhook_disable_after).and_then(|d| {
                let give_up = Duration::from_millis(crate::service::GIVE_UP_AFTER_MS);
                if d.is_zero() || d > give_up {
                    Err(format!(
                        "more than zero, and at most {} (an event is given up then)",
                        humantime::format_duration(give_up)
                    ))
                } else {
                    Ok(d)
                }
            })
        );
        let mail = match (&raw.smtp_url, &raw.mail_from) {
            (None, _) => None,
            (Some(_), None) => {
                errs.push("GATEWAY_MAIL_FROM: required with GATEWAY_SMTP_URL".into());
                None
            }
            (Some(url), Some(from)) => match crate::mail::SmtpConfig::parse(url) {
                Ok(smtp) => match crate::mail::Mailer::new(&smtp, from) {
                    Ok(_) => Some((smtp, from.clone())),
                    Err(e) => {
                        errs.push(e);
                        None
                    }
                },
                Err(e) => {
                    errs.push(format!("GATEWAY_SMTP_URL: {e}"));
                    None
                }
            },
        };
        let metrics_sites = check!(
            "GATEWAY_METRICS_SITES",
            num(&raw.metrics_sites).and_then(|n| if n > 1000 {
                Err("at most 1000 (each labelled site is a series per gauge)".into())
            } else {
                Ok(n)
            })
        );
        let max_log = check!(
            "GATEWAY_MAX_LOG",
            num(&raw.max_log).and_then(|n| if n == 0 {
                Err("must be at least 1".into())
            } else {
                Ok(n)
            })
        );
        let node_id = match &raw.node_id {
            Some(n)
                if n.is_empty()
                    || n.len() > 64
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                errs.push("GATEWAY_NODE_ID: 1 to 64 of [A-Za-z0-9_-]".into());
                None
            }
            other => Some(other.clone()),
        };
        let redis_cluster = check!(
            "GATEWAY_REDIS_CLUSTER",
            raw.redis_cluster.parse::<bool>().map_err(|e| e.to_string())
        );
        let redis_timeout = check!(
            "GATEWAY_REDIS_TIMEOUT",
            dur(&raw.redis_timeout).and_then(|d| if d < Duration::from_millis(50) {
                Err("must be at least 50ms".into())
            } else {
                Ok(d)
            })
        );
        let node_timeout = check!(
            "GATEWAY_NODE_TIMEOUT",
            dur(&raw.node_timeout).and_then(|d| if d < Duration::from_millis(500) {
                Err("must be at least 500ms".into())
            } else {
                Ok(d)
            })
        );
        let retention = check!("GATEWAY_RETENTION", dur(&raw.retention));
        let workers = match &raw.workers {
            None => Some(None),
            Some(w) => check!(
                "GATEWAY_WORKERS",
                w.parse::<usize>()
                    .map_err(|e| e.to_string())
                    .and_then(|n| if n == 0 {
                        Err("must be at least 1".to_owned())
                    } else {
                        Ok(Some(n))
                    })
            ),
        };
        let mut redis_urls = Vec::new();
        if let Some(url) = &raw.redis_url {
            for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if !(part.starts_with("redis://") || part.starts_with("rediss://")) {
                    errs.push(format!("GATEWAY_REDIS_URL: {part:?} is not a redis:// URL"));
                } else if let Err(e) = ::redis::IntoConnectionInfo::into_connection_info(part) {
                    errs.push(format!("GATEWAY_REDIS_URL: {part:?}: {e}"));
                } else {
                    redis_urls.push(part.to_owned());
                }
            }
            if redis_urls.is_empty() && errs.is_empty() {
                errs.push("GATEWAY_REDIS_URL: empty".into());
            }
            // Nodes that share a Redis serve one site: a token minted for one must open a
            // session on any other, so the key cannot be made up by each node on its own.
            if raw.jwt_secret.is_none() && raw.jwt_public_key.is_none() {
                errs.push(
                    "GATEWAY_JWT_SECRET: required with GATEWAY_REDIS_URL (every node must verify \
                     the same tokens; a generated secret is for a single in-memory node)"
                        .into(),
                );
            }
        }
        let data_dir = PathBuf::from(&raw.data_dir);
        let archive_on = check!("GATEWAY_ARCHIVE", on_off(&raw.archive));
        let keep_state = check!("GATEWAY_KEEP_STATE", on_off(&raw.keep_state));
        let archive = match (&raw.database_url, archive_on) {
            (_, Some(false)) | (_, None) => Some(ArchiveConfig::Off),
            (Some(url), Some(true)) => {
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Some(ArchiveConfig::Postgres(url.clone()))
                } else if let Some(path) = url.strip_prefix("sqlite://") {
                    Some(ArchiveConfig::Sqlite(PathBuf::from(path)))
                } else {
                    errs.push(
                        "GATEWAY_DATABASE_URL: expected postgres://… or sqlite://<file>".into(),
                    );
                    None
                }
            }
            // One node on the in-memory engine: SQLite in the data dir. Several nodes on Redis
            // need one database they share: without a URL there is no archive.
            (None, Some(true)) if redis_urls.is_empty() => {
                Some(ArchiveConfig::Sqlite(data_dir.join("archive.db")))
            }
            (None, Some(true)) => Some(ArchiveConfig::Off),
        };
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let redis_none = redis_urls.is_empty();
        let redis = (!redis_urls.is_empty()).then(|| RedisConfig {
            cluster: redis_urls.len() > 1 || redis_cluster.expect("checked"),
            urls: redis_urls,
            timeout: redis_timeout.expect("checked"),
        });
        Ok(Config {
            listen: listen.expect("checked"),
            metrics_listen: metrics_listen.expect("checked"),
            redis,
            node_timeout: node_timeout.expect("checked"),
            retention: retention.expect("checked"),
            jwt: jwt.expect("checked"),
            node_id: node_id.expect("checked"),
            sites: sites.expect("checked"),
            public_url: raw.public_url.clone(),
            hello_timeout: hello_timeout.expect("checked"),
            ping_interval: ping_interval.expect("checked"),
            drain_window: drain_window.expect("checked"),
            outbound_max_bytes: outbound_max_bytes.expect("checked"),
            rate_per_sec: rate_per_sec.expect("checked"),
            rate_burst: rate_burst.expect("checked"),
            api_rate_per_sec: api_rate_per_sec.expect("checked"),
            api_rate_burst: api_rate_burst.expect("checked"),
            max_conns_per_ip: max_conns_per_ip.expect("checked"),
            ws_read_buffer: ws_read_buffer.expect("checked"),
            ws_write_buffer: ws_write_buffer.expect("checked"),
            socket_send_buffer: socket_send_buffer.expect("checked"),
            max_frame: max_frame.expect("checked"),
            max_text: max_text.expect("checked"),
            visitor_token_ttl: visitor_token_ttl.expect("checked"),
            visitor_renew_within: visitor_renew_within.expect("checked"),
            http_header_timeout: http_header_timeout.expect("checked"),
            http_body_timeout: http_body_timeout.expect("checked"),
            max_http_conns_per_ip: max_http_conns_per_ip.expect("checked"),
            shutdown_deadline: shutdown_deadline.expect("checked"),
            abuse: crate::abuse::AbuseLimits {
                sessions_per_ip_minute: sessions_per_ip.expect("checked").get(),
                starts_per_visitor_hour: starts_per_visitor.expect("checked").get(),
                starts_per_ip_hour: starts_per_ip.expect("checked").get(),
            },
            max_log: max_log.expect("checked"),
            metrics_sites: metrics_sites.expect("checked"),
            country_header: raw.country_header.clone(),
            mail,
            webhook_hosts: raw
                .webhook_hosts
                .iter()
                .flat_map(|s| s.split(','))
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            webhook_disable_after: webhook_disable_after.expect("checked"),
            delivery_lease: delivery_lease.expect("checked"),
            workers: workers.expect("checked"),
            bounds,
            keep_state: (keep_state.expect("checked") && redis_none)
                .then(|| data_dir.join(STATE_FILE)),
            data_dir,
            archive: archive.expect("checked"),
        })
    }

    /// The defaults, with a fixed secret: for tests.
    pub fn for_tests(secret: &str) -> Config {
        let raw = RawConfig {
            listen: "127.0.0.1:0".into(),
            jwt_secret: Some(secret.into()),
            jwt_algorithm: "RS256".into(),
            hello_timeout: "10s".into(),
            ping_interval: "25s".into(),
            drain_window: "1s".into(),
            outbound_max_bytes: "262144".into(),
            rate_per_sec: "1000".into(),
            rate_burst: "1000".into(),
            api_rate_per_sec: "1000".into(),
            api_rate_burst: "1000".into(),
            max_conns_per_ip: "100000".into(),
            ws_read_buffer: "1024".into(),
            ws_write_buffer: "8192".into(),
            socket_send_buffer: "65536".into(),
            max_frame: "65536".into(),
            max_text: "8000".into(),
            visitor_token_ttl: "24h".into(),
            visitor_renew_within: "7d".into(),
            http_header_timeout: "10s".into(),
            http_body_timeout: "30s".into(),
            max_http_conns_per_ip: "1000".into(),
            shutdown_deadline: "30s".into(),
            // Tests start many conversations from one address; the abuse tests lower these.
            sessions_per_ip: "100000".into(),
            starts_per_visitor: "100000".into(),
            starts_per_ip: "100000".into(),
            webhook_disable_after: "24h".into(),
            delivery_lease: "2m".into(),
            max_log: "1000".into(),
            metrics_sites: "20".into(),
            allow_short_timers: "true".into(),
            redis_cluster: "false".into(),
            redis_timeout: "2s".into(),
            node_timeout: "10s".into(),
            retention: "24h".into(),
            data_dir: std::env::temp_dir().display().to_string(),
            archive: "off".into(),
            keep_state: "off".into(),
            ..RawConfig::default()
        };
        Config::from_raw(&raw).expect("test config is valid")
    }
}

#[cfg(test)]
mod tests;
