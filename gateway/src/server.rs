//! Starting and stopping a node: bind, serve HTTP and WebSocket, run the timer and ping tasks,
//! and drain on shutdown. `main` and the in-process tests both start nodes through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Auth;
use crate::bus::Control;
use crate::config::{Config, JwtConfig};
use crate::core::NodeId;
use crate::engine::memory::{MemoryConfig, MemoryEngine};
use crate::engine::redis::{RedisEngine, RedisOptions};
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::service::{Engine, Gateway};
use crate::ws;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("token key")]
    Auth(#[source] crate::auth::AuthError),
    #[error("no Redis configured")]
    NoRedis,
    #[error("cannot reach Redis")]
    Engine(#[source] crate::engine::EngineError),
    #[error("cannot open the archive")]
    Archive(#[source] crate::archive::ArchiveError),
}

/// How long a starting node waits for the archive's database.
const ARCHIVE_START_WAIT: Duration = Duration::from_secs(30);

/// Opens the archive the configuration names (`None`: no archive).
pub async fn open_archive(
    cfg: &Config,
) -> Result<Option<Arc<dyn crate::archive::Store>>, StartError> {
    use crate::config::ArchiveConfig;
    let store: Arc<dyn crate::archive::Store> = match &cfg.archive {
        ArchiveConfig::Off => return Ok(None),
        ArchiveConfig::Sqlite(path) => Arc::new(
            crate::archive::sqlite::open(path)
                .await
                .map_err(StartError::Archive)?,
        ),
        ArchiveConfig::Postgres(url) => Arc::new(
            crate::archive::postgres::open(url, ARCHIVE_START_WAIT)
                .await
                .map_err(StartError::Archive)?,
        ),
    };
    Ok(Some(store))
}

/// The token verifier the configuration asks for.
pub fn auth_from(cfg: &Config) -> Result<Auth, StartError> {
    match &cfg.jwt {
        JwtConfig::Secret { secret, .. } => Ok(Auth::hs256(secret.as_bytes())),
        JwtConfig::PublicKey { algorithm, pem } => {
            Auth::public_key(*algorithm, pem).map_err(StartError::Auth)
        }
    }
}

/// The node's id: configured, or random.
pub fn node_id(cfg: &Config) -> NodeId {
    match &cfg.node_id {
        Some(n) => NodeId(n.clone()),
        None => {
            use rand::Rng;
            NodeId(format!("n{:06x}", rand::rng().random::<u32>() & 0xff_ffff))
        }
    }
}

/// Connections the kernel queues for the node before it accepts them. Tokio's default (1,024)
/// overflows when thousands of clients reconnect at once (a node died, a deploy): the
/// overflowing ones wait for their SYN's retransmission, a whole second. The kernel caps it
/// at `net.core.somaxconn` (4,096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the client listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's own bind).
fn listen(at: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if at.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(at)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A running node.
pub struct Running<E: Engine> {
    pub addr: SocketAddr,
    /// Where `/metrics` is served on its own (`GATEWAY_METRICS_LISTEN`).
    pub metrics_addr: Option<SocketAddr>,
    pub gw: Arc<Gateway<E>>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl<E: Engine> Running<E> {
    /// Drains (1012 to every client over the drain window) and waits for the node to stop.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.done.await;
    }
}

/// Starts a node with the in-memory engine on `cfg.listen`.
pub async fn start_memory(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
) -> Result<Running<MemoryEngine>, StartError> {
    let hub = Hub::new();
    let engine = MemoryEngine::new(
        hub.clone(),
        MemoryConfig {
            max_log: cfg.max_log,
            retention: cfg.retention,
            archive: cfg.archive != crate::config::ArchiveConfig::Off,
            keep_state: cfg.keep_state.clone(),
        },
    );
    if let Some(path) = &cfg.keep_state {
        match engine.restore(path) {
            Ok(Some(kept)) => {
                tracing::info!(path = %path.display(), open = kept.open, logs = kept.logs, outbox = kept.outbox, "state of the last run restored")
            }
            Ok(None) => {}
            // The file was set aside: the node starts empty rather than not at all.
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "state of the last run not restored")
            }
        }
    }
    let node = node_id(&cfg);
    start(engine, hub, node, cfg, metrics).await
}

/// Starts a node with the Redis engine (`cfg.redis` must be set).
pub async fn start_redis(
    cfg: Config,
    metrics: Option<PrometheusHandle>,
) -> Result<Running<RedisEngine>, StartError> {
    let redis = cfg.redis.clone().ok_or(StartError::NoRedis)?;
    let hub = Hub::new();
    let node = node_id(&cfg);
    let sites = cfg.sites.iter().map(|s| s.id.clone()).collect();
    let engine = RedisEngine::connect(
        RedisOptions {
            redis,
            max_log: cfg.max_log,
            retention: cfg.retention,
            node_timeout: cfg.node_timeout,
            archive: cfg.archive != crate::config::ArchiveConfig::Off,
        },
        sites,
        hub.clone(),
        REDIS_START_WAIT,
    )
    .await
    .map_err(StartError::Engine)?;
    start(engine, hub, node, cfg, metrics).await
}

/// How long a starting node waits for Redis before giving up.
const REDIS_START_WAIT: Duration = Duration::from_secs(30);

/// Starts a node on any engine.
pub async fn start<E: Engine>(
    engine: E,
    hub: Arc<Hub>,
    node: NodeId,
    cfg: Config,
    metrics: Option<PrometheusHandle>,
) -> Result<Running<E>, StartError> {
    let listener = listen(cfg.listen).map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let metrics_listener = match cfg.metrics_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .map_err(|source| StartError::Bind { addr: at, source })?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let auth = auth_from(&cfg)?;
    // Node control events (a site's settings changed somewhere) are rare and each is handled
    // in one short step; the hub sends them from code that may not wait.
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    hub.set_control(control_tx);
    let archive = open_archive(&cfg).await?;
    let gw = Arc::new(Gateway::new(engine, archive, hub, auth, cfg, node));
    gw.load_sites().await;
    gw.reload_all_settings().await;
    gw.load_directories().await;
    // The first census before the first scrape: the per-site series exist from the start.
    gw.export_census().await;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(
        gw.clone(),
        listener,
        metrics_listener,
        metrics,
        control_rx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Ok(Running {
        addr,
        metrics_addr,
        gw,
        stop: Some(stop_tx),
        done,
    })
}

/// Serves until `shutdown` resolves, then drains.
async fn serve<E: Engine>(
    gw: Arc<Gateway<E>>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    metrics: Option<PrometheusHandle>,
    control: mpsc::UnboundedReceiver<Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let tasks = ws::tokio_util_tracker::Tracker::default();
    let timers = tokio::spawn(gw.clone().run_timers());
    let pinger = tokio::spawn(ws::run_pinger(gw.clone()));
    let control = tokio::spawn(gw.clone().run_control(control));
    let listings = tokio::spawn(gw.clone().run_listings());
    let retries = tokio::spawn(gw.clone().run_retries());
    let presence = tokio::spawn(gw.clone().run_presence(gw.config().node_timeout / 5));
    let archiver = tokio::spawn(gw.clone().run_archiver());
    let notes = tokio::spawn(gw.clone().run_message_notes());
    let census = tokio::spawn(gw.clone().run_census());
    let deliveries = tokio::spawn(gw.clone().run_deliveries());
    let shrink = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                gw.abuse.shrink();
            }
        })
    };
    // `/metrics` alone on its own listener, until the node stops.
    let scrape = metrics_listener.map(|l| {
        let handle = metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { http::render_metrics(handle.as_ref()) }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::warn!(error = %e, "metrics listener stopped");
            }
        })
    });
    let app = http::router(
        AppState {
            gw: gw.clone(),
            metrics,
        },
        tasks.clone(),
    );
    let (drained_tx, drained_rx) = oneshot::channel::<()>();
    let drain_gw = gw.clone();
    let drain_tasks = tasks.clone();
    let window = gw.config().drain_window;
    let graceful = async move {
        shutdown.await;
        tracing::info!(window = ?window, "draining");
        ws::drain(&drain_gw, window).await;
        if !drain_tasks.wait(Duration::from_secs(5)).await {
            tracing::warn!(
                left = drain_tasks.live(),
                "connections still open after the drain"
            );
        }
        let _ = drained_tx.send(());
    };
    let cfg = gw.config();
    let limits = http::serve::HttpLimits {
        header_timeout: cfg.http_header_timeout,
        body_timeout: cfg.http_body_timeout,
        max_conns_per_ip: cfg.max_http_conns_per_ip,
        close_wait: Duration::from_secs(5),
        send_buffer: cfg.socket_send_buffer,
    };
    let body_timeout = limits.body_timeout;
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        http::serve::body_deadline(body_timeout, req, next)
    }));
    let server = http::serve::serve(listener, app, limits, async move {
        let _ = drained_rx.await;
    });
    let drain = tokio::spawn(graceful);
    server.await;
    let _ = drain.await;
    presence.abort();
    census.abort();
    shrink.abort();
    if let Some(s) = scrape {
        s.abort();
    }
    deliveries.abort();
    gw.leave().await;
    // What was noted of the last messages leaves before the node does.
    gw.flush_notes().await;
    notes.abort();
    archiver.abort();
    gw.stopped().await;
    timers.abort();
    pinger.abort();
    control.abort();
    listings.abort();
    retries.abort();
}
