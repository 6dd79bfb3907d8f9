//! Scratch schemas in the test database: one per test, named after the time it was
//! made, so that a later run can drop what earlier runs left behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quckchat_store_postgres::PostgresStore;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// Where the tests run unless `DATABASE_URL_PG_TEST` says otherwise.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Every scratch schema's name starts so.
const PREFIX: &str = "qct_";

/// Schemas older than this are left over from runs that ended (or crashed).
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The test database's URL.
pub fn url() -> String {
    std::env::var("DATABASE_URL_PG_TEST").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh scratch schema name: `qct_<unix seconds>_<random>`.
pub fn schema_name() -> String {
    format!("{PREFIX}{}_{}", unix_secs(SystemTime::now()), uuid::Uuid::now_v7().simple())
}

/// A store in a fresh schema, for cases that cannot drop it afterwards (the conformance
/// suite): stale schemas of earlier runs are dropped first, once per run.
pub async fn fresh_store() -> PostgresStore {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT.get_or_init(drop_stale_schemas).await;
    PostgresStore::connect_in_schema(&url(), &schema_name())
        .await
        .expect("connect to the test database (is PostgreSQL up? see DATABASE_URL_PG_TEST)")
}

/// Drops scratch schemas made more than an hour ago. Failures are reported, not fatal:
/// another run may be sweeping the same schemas.
async fn drop_stale_schemas() {
    let mut conn = PgConnection::connect(&url()).await.expect("connect to the test database");
    let names: Vec<String> = sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)")
        .bind(PREFIX)
        .fetch_all(&mut conn)
        .await
        .expect("list scratch schemas");
    let cutoff = unix_secs(SystemTime::now() - STALE_AFTER);
    for name in names {
        let made =
            name.strip_prefix(PREFIX).and_then(|rest| rest.split('_').next()).and_then(|secs| secs.parse::<u64>().ok());
        if made.is_some_and(|secs| secs < cutoff)
            && let Err(e) = drop_schema_on(&mut conn, &name).await
        {
            eprintln!("could not drop the stale schema {name}: {e}");
        }
    }
    let _ = conn.close().await;
}

async fn drop_schema_on(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    assert!(name.starts_with(PREFIX) && !name.contains('"'));
    conn.execute(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))).await?;
    Ok(())
}

/// A scratch schema that a test drops itself when done with it.
pub struct Scratch {
    /// The schema's name.
    pub schema: String,
}

impl Scratch {
    /// A new, not yet created schema name.
    pub fn new() -> Self {
        Self { schema: schema_name() }
    }

    /// A store (one "server instance") on this schema, creating it the first time.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect_in_schema(&url(), &self.schema).await.expect("connect to the test database")
    }

    /// A plain connection with `search_path` set to this schema, to look at the tables.
    pub async fn connection(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&url()).await.expect("connect to the test database");
        conn.execute(AssertSqlSafe(format!("SET search_path TO \"{}\"", self.schema))).await.expect("set search_path");
        conn
    }

    /// Drops the schema and everything in it. Close the stores on it first.
    pub async fn drop(self) {
        let mut conn = PgConnection::connect(&url()).await.expect("connect to the test database");
        drop_schema_on(&mut conn, &self.schema).await.expect("drop the scratch schema");
        let _ = conn.close().await;
    }
}
