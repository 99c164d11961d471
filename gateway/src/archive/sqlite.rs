//! The archive in a SQLite file under the data dir: the embedded default, so that one node
//! needs nothing else. Write-ahead logging (readers never wait for the writer), and a busy
//! timeout so that the archiver and API requests share the file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::ConnectOptions;

use super::sql::{Dialect, SqlStore};
use super::ArchiveError;

/// Opens (creating it) the archive file and runs its migrations.
pub async fn open(path: &Path) -> Result<SqlStore, ArchiveError> {
    sqlx::any::install_default_drivers();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ArchiveError::Unavailable(sqlx::Error::Io(e)))?;
    }
    // WAL and the pragmas are set once on the file through the native options; the pool
    // goes through the `Any` driver with the same file.
    let native = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    drop(native.connect().await?);
    let url = format!("sqlite://{}", path.display());
    let opts = sqlx::any::AnyConnectOptions::from_str(&url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "PRAGMA busy_timeout = 10000").await?;
                sqlx::Executor::execute(&mut *conn, "PRAGMA synchronous = NORMAL").await?;
                sqlx::Executor::execute(&mut *conn, "PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    sqlx::migrate!("migrations/sqlite")
        .run(&pool)
        .await
        .map_err(ArchiveError::Migrate)?;
    Ok(SqlStore {
        pool,
        dialect: Dialect::Sqlite,
    })
}
