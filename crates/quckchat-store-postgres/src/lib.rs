//! The PostgreSQL store behind QuckChat's [`Store`] and [`CallStore`] ports, for several
//! server instances sharing one database.
//!
//! Everything that must hold across processes is enforced by PostgreSQL itself, never
//! by a lock in this process:
//!
//! - an append first increments its conversation's `last_seq` with an `UPDATE`, whose
//!   row lock queues concurrent appends to that conversation (from any connection of
//!   any process) until the holder commits; the seq it returns is therefore the next one,
//!   with no gap and no repeat. Only then does it look for an earlier message with the
//!   same `(sender, clientMessageId)`: under READ COMMITTED that statement sees a
//!   duplicate committed by whoever held the lock before, and a duplicate is answered by
//!   rolling back (which undoes the increment). A unique index on the pair catches the
//!   rest (the same id sent to two conversations at once) and the append is retried;
//! - a single conversation is unique per pair through a unique key of the sorted pair;
//! - push jobs are claimed with `FOR UPDATE SKIP LOCKED`, so concurrent workers take
//!   disjoint jobs;
//! - a call is saved with `UPDATE … WHERE version = $expected`, which re-checks the
//!   version after waiting for a concurrent save's row lock.
//!
//! Reads that span several statements (a message with its reactions and receipts, a
//! conversation with its participants) run in one `REPEATABLE READ, READ ONLY`
//! transaction, so they come from one snapshot. The schema lives in `migrations/` and is
//! applied by [`PostgresStore::connect`].

mod batch;
mod calls;
mod codec;
mod conversations;
mod messages;
mod pushes;
mod users;

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;

use quckchat_domain::store::{StoreHealth, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool, Postgres, Transaction};

use crate::codec::db;

/// Connections in the pool of one store (one server instance).
const POOL_SIZE: u32 = 16;

/// The schema, applied at connect.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// QuckChat's data in one PostgreSQL database (or one schema of it). Cheap to clone (a
/// pool handle).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Appends go through one writer that commits what queued meanwhile as one statement.
    batcher: batch::Batcher,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`) with a
    /// pool of 16 connections and brings its schema up to date. The tables live in the
    /// connection's default schema (usually `public`).
    pub async fn connect(url: &str) -> anyhow::Result<PostgresStore> {
        Self::open(url, None, POOL_SIZE).await
    }

    /// Connects with at most `pool_size` connections, in `schema` when given (see
    /// [`connect_in_schema`](Self::connect_in_schema)).
    pub async fn connect_with(url: &str, schema: Option<&str>, pool_size: u32) -> anyhow::Result<PostgresStore> {
        Self::open(url, schema, pool_size.max(1)).await
    }

    /// Like [`connect`](Self::connect), but keeps everything in `schema`, which is created
    /// when missing: every pooled connection gets `search_path` set to it. Several
    /// schemas in one database are fully separate stores (tests use one each).
    pub async fn connect_in_schema(url: &str, schema: &str) -> anyhow::Result<PostgresStore> {
        Self::open(url, Some(schema), POOL_SIZE).await
    }

    async fn open(url: &str, schema: Option<&str>, pool_size: u32) -> anyhow::Result<PostgresStore> {
        // Appends, saves and claims rely on READ COMMITTED (a statement that waited for a
        // row lock then sees what its holder committed), whatever the server's default.
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {url:?}"))?
            .options([("default_transaction_isolation", "read committed")]);
        let mut pool_options = PgPoolOptions::new().max_connections(pool_size);
        if let Some(schema) = schema {
            let quoted = quote_identifier(schema)?;
            create_schema(&options, &quoted).await?;
            let set_path = format!("SET search_path TO {quoted}");
            pool_options = pool_options.after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    conn.execute(AssertSqlSafe(set_path)).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await.context("connecting to PostgreSQL")?;
        MIGRATOR.run(&pool).await.context("applying the PostgreSQL migrations")?;
        tracing::debug!(schema, "PostgreSQL store ready");
        let batcher = batch::Batcher::start(pool.clone());
        Ok(PostgresStore { pool, batcher })
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls
    /// fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `name` as a quoted SQL identifier; refused when PostgreSQL could not keep it whole.
fn quote_identifier(name: &str) -> anyhow::Result<String> {
    // PostgreSQL truncates identifiers to 63 bytes: a longer name would silently
    // become another schema.
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 63 && !name.contains('\0'),
        "invalid schema name {name:?}: 1 to 63 bytes, no NUL"
    );
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// Creates the schema `quoted` unless it exists, on a connection of its own.
async fn create_schema(options: &PgConnectOptions, quoted: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(options).await.context("connecting to PostgreSQL")?;
    let created = conn.execute(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))).await;
    match created {
        Ok(_) => {}
        // Two instances creating it at once: one of them meets the other's catalog row.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {}
        Err(e) => return Err(e).with_context(|| format!("creating the schema {quoted}")),
    }
    conn.close().await.context("closing the set-up connection")?;
    Ok(())
}

/// A read-only transaction on one snapshot, for reads made of several statements.
pub(crate) async fn read_tx(pool: &PgPool) -> StoreResult<Transaction<'static, Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await.map_err(db)
}

#[async_trait]
impl StoreHealth for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quote_identifier;

    #[test]
    fn quotes_schema_names() {
        assert_eq!(quote_identifier("qc_test").unwrap(), "\"qc_test\"");
        assert_eq!(quote_identifier("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_identifier("").is_err());
        assert!(quote_identifier(&"x".repeat(64)).is_err());
    }
}
