//! The `gateway` binary: `gateway` (serve), `gateway token …` (mint a token), `gateway config`
//! (print the effective configuration), `gateway api-key …` (HTTP API keys).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::auth::{Auth, Claims};
use gateway::clock::now_ms;
use gateway::config::{Config, JwtConfig, RawConfig, SECRET_FILE};
use gateway::protocol::Role;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// jemalloc instead of the system allocator: a gateway allocates small, short-lived buffers for
/// every frame on several threads, where glibc's malloc (with its consolidation of freed
/// chunks) took about a fifth of the node's CPU under load. jemalloc cut the CPU per message
/// by 7-13% here at the same memory per idle socket; mimalloc cut more CPU but cost 1 KiB more
/// per socket (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A horizontally scalable real-time WebSocket live-chat gateway.
#[derive(Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    config: RawConfig,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve (the default).
    Serve,
    /// Mint an operator, supervisor or visitor token (HS256 with GATEWAY_JWT_SECRET or --secret).
    Token {
        /// The shared secret (default: GATEWAY_JWT_SECRET).
        #[arg(long)]
        secret: Option<String>,
        #[arg(long, default_value = "demo")]
        site: String,
        /// operator, supervisor or visitor.
        #[arg(long, default_value = "operator")]
        role: String,
        /// The user id.
        #[arg(long)]
        sub: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 8h.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Comma-separated queues the operator serves (default: all).
        #[arg(long)]
        queues: Option<String>,
        /// Overrides the site's max_chats for this operator.
        #[arg(long)]
        max_chats: Option<u32>,
    },
    /// Print the effective configuration (secrets hidden) and the default site settings.
    Config,
    /// Manage HTTP API keys (kept in the archive's database: GATEWAY_DATABASE_URL or the
    /// SQLite file in GATEWAY_DATA_DIR).
    ApiKey {
        #[command(subcommand)]
        action: KeyCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make a key and print it (the secret is shown this once).
    Create {
        /// The site the key belongs to.
        #[arg(long, required_unless_present = "root", conflicts_with = "root")]
        site: Option<String>,
        /// A root key: every site.
        #[arg(long)]
        root: bool,
        /// read, admin, bot, tokens (comma-separated or repeated).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// What the key is for.
        #[arg(long)]
        name: String,
    },
    /// List a site's keys (or the root keys), without secrets.
    List {
        #[arg(long, required_unless_present = "root", conflicts_with = "root")]
        site: Option<String>,
        #[arg(long)]
        root: bool,
    },
    /// Revoke a key at once, on every node.
    Revoke {
        #[arg(long, required_unless_present = "root", conflicts_with = "root")]
        site: Option<String>,
        #[arg(long)]
        root: bool,
        /// The key's id (`ck_<id>_…`).
        id: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Token {
            secret,
            site,
            role,
            sub,
            name,
            ttl,
            queues,
            max_chats,
        }) => {
            // A one-node install's generated secret is kept in its data dir.
            let kept = || {
                let path = std::path::Path::new(&cli.config.data_dir).join(SECRET_FILE);
                std::fs::read_to_string(path)
                    .ok()
                    .map(|s| s.trim().to_owned())
            };
            let secret = secret
                .or(cli.config.jwt_secret.clone())
                .or_else(kept)
                .context(
                    "--secret, GATEWAY_JWT_SECRET or a secret kept in GATEWAY_DATA_DIR is required",
                )?;
            // The gateway refuses a shorter one; a token it could never verify helps nobody.
            anyhow::ensure!(secret.len() >= 16, "the secret must be at least 16 bytes");
            let role: Role = serde_json::from_value(serde_json::Value::String(role.clone()))
                .ok()
                .filter(|r| !matches!(r, Role::System | Role::Bot))
                .with_context(|| format!("role {role:?} is not operator, supervisor or visitor"))?;
            let ttl = humantime::parse_duration(&ttl).context("--ttl")?;
            let claims = Claims {
                anon: false,
                sid: None,
                sub,
                site,
                role,
                name,
                exp: (now_ms() + ttl.as_millis() as u64) / 1000,
                iat: Some(now_ms() / 1000),
                queues: queues.map(|q| {
                    q.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                }),
                max_chats,
            };
            println!("{}", Auth::hs256(secret.as_bytes()).mint(&claims)?);
            Ok(())
        }
        Some(Cmd::Config) => {
            let cfg = Config::from_raw(&cli.config)?;
            println!("listen              {}", cfg.listen);
            println!(
                "engine              {}",
                match &cfg.redis {
                    Some(r) if r.cluster => format!("redis cluster {:?}", r.urls),
                    Some(r) => format!("redis {}", r.urls[0]),
                    None => "memory".to_owned(),
                }
            );
            println!(
                "tokens              {}",
                match &cfg.jwt {
                    JwtConfig::Secret {
                        generated: true, ..
                    } => "HS256, generated secret",
                    JwtConfig::Secret { .. } => "HS256",
                    JwtConfig::PublicKey { .. } => "public key",
                }
            );
            println!("hello_timeout       {:?}", cfg.hello_timeout);
            println!("ping_interval       {:?}", cfg.ping_interval);
            println!("drain_window        {:?}", cfg.drain_window);
            println!("outbound_max_bytes  {}", cfg.outbound_max_bytes);
            println!(
                "rate                {}/s burst {}",
                cfg.rate_per_sec, cfg.rate_burst
            );
            println!(
                "ws buffers          read {} write {} max frame {}",
                cfg.ws_read_buffer, cfg.ws_write_buffer, cfg.max_frame
            );
            for s in &cfg.sites {
                println!(
                    "site {} (widget key {}), queues {:?}\n{}",
                    s.id,
                    s.widget_key,
                    s.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
                    serde_json::to_string_pretty(&s.settings.to_json())?
                );
            }
            Ok(())
        }
        Some(Cmd::ApiKey { action }) => api_key(&cli.config, action),
        Some(Cmd::Serve) | None => serve(cli.config),
    }
}

/// `gateway api-key …`: against the archive the configuration names.
fn api_key(raw: &RawConfig, action: KeyCmd) -> anyhow::Result<()> {
    let cfg = Config::from_raw(raw)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = gateway::server::open_archive(&cfg)
            .await?
            .context("there is no archive to keep keys in (GATEWAY_ARCHIVE=off, or Redis without GATEWAY_DATABASE_URL)")?;
        // The sites file's sites, and those made at runtime (the registry).
        let (_, rows) = store
            .directory(&gateway::directory::sites::registry())
            .await?;
        let stored = gateway::directory::sites::records(&rows);
        let known = |site: &Option<String>| -> anyhow::Result<()> {
            if let Some(s) = site {
                // A site the registry holds is as it says (a deleted one stays deleted); one
                // it does not hold yet is seeded from the sites file at the next start.
                let live = match stored.iter().find(|r| &r.id == s) {
                    Some(r) => !r.is_deleted(),
                    None => cfg.sites.iter().any(|c| c.id.as_str() == s),
                };
                anyhow::ensure!(live, "no site {s:?} is configured");
            }
            Ok(())
        };
        match action {
            KeyCmd::Create {
                site, scopes, name, ..
            } => {
                known(&site)?;
                let scopes =
                    gateway::api::keys::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    !name.trim().is_empty() && name.chars().count() <= 100,
                    "--name: 1 to 100 characters"
                );
                let (rec, key) =
                    gateway::api::keys::create(&*store, site.as_deref(), name.trim(), &scopes)
                        .await?;
                eprintln!(
                    "key {} for {} with scopes {} (shown once; keep it safe):",
                    rec.id,
                    rec.site.as_deref().unwrap_or("every site"),
                    rec.scopes.join(",")
                );
                println!("{key}");
            }
            KeyCmd::List { site, .. } => {
                known(&site)?;
                for k in store.keys(site.as_deref()).await? {
                    println!(
                        "{}  {:<24}  {:<20}  created {}  last used {}",
                        k.id,
                        k.name,
                        k.scopes.join(","),
                        gateway::transcript::iso(k.created_at),
                        k.last_used_at
                            .map(gateway::transcript::iso)
                            .unwrap_or_else(|| "never".into())
                    );
                }
            }
            KeyCmd::Revoke { site, id, .. } => {
                known(&site)?;
                let id = id.strip_prefix("ck_").unwrap_or(&id);
                let id = id.split('_').next().unwrap_or(id);
                anyhow::ensure!(
                    store.revoke_key(site.as_deref(), id).await?,
                    "no such key"
                );
                eprintln!("key {id} revoked");
            }
        }
        anyhow::Ok(())
    })
}

fn serve(raw: RawConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = cfg.persist_generated_secret() {
        // Tokens would not survive a restart: say so, and go on.
        eprintln!(
            "the generated secret could not be kept in {}: {e}",
            cfg.data_dir.display()
        );
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(gateway::metrics::DELIVERY_LATENCY.to_owned()),
            &[
                // Messages carry millisecond times: 0 ms and 1 ms are the finest steps.
                0.0, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .install_recorder()
        .context("metrics recorder")?;
    gateway::metrics::describe();
    gateway::metrics::register();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.workers {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let public = cfg.public_url.clone();
        let deadline = cfg.shutdown_deadline;
        let generated = match &cfg.jwt {
            JwtConfig::Secret {
                secret,
                generated: true,
            } => Some(secret.clone()),
            _ => None,
        };
        match cfg.redis.clone() {
            None => {
                let running = gateway::server::start_memory(cfg, Some(metrics)).await?;
                announce(
                    &running.addr,
                    running.gw.node(),
                    "memory",
                    public,
                    generated,
                )?;
                shutdown_signal().await;
                stop_within(deadline, running.shutdown()).await;
            }
            Some(r) => {
                let running = gateway::server::start_redis(cfg, Some(metrics)).await?;
                let engine = if r.cluster { "redis cluster" } else { "redis" };
                announce(&running.addr, running.gw.node(), engine, public, generated)?;
                shutdown_signal().await;
                stop_within(deadline, running.shutdown()).await;
            }
        }
        anyhow::Ok(())
    })
}

/// Waits for the node to drain and stop, but not past `deadline` after the signal: a
/// connection that never finishes does not keep the process (and a rollout) waiting.
async fn stop_within(
    deadline: std::time::Duration,
    stopping: impl std::future::Future<Output = ()>,
) {
    if tokio::time::timeout(deadline, stopping).await.is_err() {
        tracing::warn!(?deadline, "the node did not stop in time; exiting anyway");
    }
}

/// Prints where the node listens and, with a generated secret, a ready console link.
fn announce(
    addr: &std::net::SocketAddr,
    node: &gateway::core::NodeId,
    engine: &str,
    public: Option<String>,
    generated: Option<String>,
) -> anyhow::Result<()> {
    {
        let base = public.unwrap_or_else(|| format!("http://{addr}"));
        println!("listening on http://{addr}");
        println!("  node {node}  engine {engine}");
        println!("  demo page         {base}/");
        if let Some(secret) = generated {
            let claims = Claims {
                anon: false,
                sid: None,
                sub: "demo-operator".into(),
                site: "demo".into(),
                role: Role::Operator,
                name: Some("Demo Operator".into()),
                exp: (now_ms() + Duration::from_secs(24 * 3600).as_millis() as u64) / 1000,
                iat: Some(now_ms() / 1000),
                queues: None,
                max_chats: None,
            };
            let token = Auth::hs256(secret.as_bytes()).mint(&claims)?;
            println!("  operator console  {base}/console#token={token}");
            println!(
                "  (no GATEWAY_JWT_SECRET was set: a random one was generated and kept in the data dir; `gateway token` uses it)"
            );
        } else {
            println!("  operator console  {base}/console  (mint a token: gateway token --role operator --sub alice)");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
