//! The archive in PostgreSQL (`GATEWAY_DATABASE_URL=postgres://…`): what many nodes share.
//! Connections are retried while the database starts or restarts; every write is
//! idempotent, so the archiver simply retries what failed.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::sql::{Dialect, SqlStore};
use super::ArchiveError;

/// Connects to the database (waiting up to `wait` for it) and runs the migrations.
pub async fn open(url: &str, wait: Duration) -> Result<SqlStore, ArchiveError> {
    sqlx::any::install_default_drivers();
    let opts = sqlx::any::AnyConnectOptions::from_str(url)?;
    let deadline = std::time::Instant::now() + wait;
    let pool = loop {
        let attempt = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts.clone())
            .await;
        match attempt {
            Ok(p) => break p,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "the archive database is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    sqlx::migrate!("migrations/postgres")
        .run(&pool)
        .await
        .map_err(ArchiveError::Migrate)?;
    Ok(SqlStore {
        pool,
        dialect: Dialect::Postgres,
    })
}
