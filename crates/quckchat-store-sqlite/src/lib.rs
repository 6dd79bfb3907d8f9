//! The embedded SQLite store behind QuckChat's [`Store`] and [`CallStore`] ports.
//!
//! One file (or an in-memory database for tests) in WAL mode. Every write that reads
//! before it writes runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single
//! write lock up front and waits for it (the busy timeout) instead of failing: that is
//! what keeps `seq` gap-free and `clientMessageId` idempotent under concurrent appends.
//! The schema lives in `migrations/` and is applied by [`SqliteStore::connect`].

mod calls;
mod codec;
mod conversations;
mod messages;
mod pushes;
mod users;
mod writer;

pub use writer::Durability;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;

use quckchat_domain::store::{StoreHealth, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use crate::codec::db;

/// How long a statement waits for the write lock before failing with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in a file database's pool. Readers run in parallel (WAL); writers queue
/// for the one write lock.
const POOL_SIZE: u32 = 8;

/// The schema, applied at connect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// QuckChat's data in one SQLite database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one writer of appends, with group commit (file databases; an in-memory
    /// database lives in the pool's single connection, so it appends there).
    writer: Option<writer::Writer>,
}

impl SqliteStore {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// - `sqlite://PATH` (or `sqlite:PATH`): a file, created with its parent directories
    ///   when missing, in WAL mode with `synchronous=NORMAL`;
    /// - `sqlite::memory:`: a private in-memory database that lives as long as the store.
    ///   It is served by a single connection (an in-memory database exists per
    ///   connection), so concurrent callers take turns.
    ///
    /// Foreign keys are enforced and lock waits time out after five seconds.
    pub async fn connect(url: &str) -> anyhow::Result<SqliteStore> {
        Self::connect_with(url, Durability::default()).await
    }

    /// [`SqliteStore::connect`] with the durability of a commit chosen (file databases).
    pub async fn connect_with(url: &str, durability: Durability) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let mut writer_path = None;
        let pool = if is_in_memory(url) {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .context("opening the in-memory SQLite database")?
        } else {
            let synchronous = match durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            };
            // Checkpoints are the writer's checkpointer thread's job, never a commit's.
            let options = options.create_if_missing(true).synchronous(synchronous).pragma("wal_autocheckpoint", "0");
            let path = options.get_filename().to_path_buf();
            writer_path = Some(path.clone());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating the directory {}", parent.display()))?;
            }
            // Switch to WAL once, on a lone connection: the switch needs an exclusive lock
            // that the busy timeout does not wait for, so pooled connections opening
            // together could fail on it. The mode is stored in the file and stays.
            let first = SqliteConnection::connect_with(&options.clone().journal_mode(SqliteJournalMode::Wal))
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            first.close().await.context("closing the set-up connection")?;
            // No ping before handing out a connection: a connection to a local file does not
            // go stale, and the ping was a round trip to its worker thread on every call.
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .with_context(|| format!("opening {}", path.display()))?
        };

        MIGRATOR.run(&pool).await.context("applying the SQLite migrations")?;
        let writer = match writer_path {
            Some(path) => Some(writer::Writer::start(path, durability).context("starting the SQLite writer")?),
            None => None,
        };
        tracing::debug!(url, ?durability, "SQLite store ready");
        Ok(SqliteStore { pool, writer })
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls
    /// fail; an in-memory database is gone.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:`, `sqlite://:memory:`,
/// or `mode=memory`).
fn is_in_memory(url: &str) -> bool {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

#[async_trait]
impl StoreHealth for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_in_memory;

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:"));
        assert!(is_in_memory("sqlite://:memory:"));
        assert!(is_in_memory("sqlite://chat?mode=memory&cache=shared"));
        assert!(!is_in_memory("sqlite://data/quckchat.db"));
        assert!(!is_in_memory("sqlite:///var/lib/quckchat/memory.db"));
    }
}
