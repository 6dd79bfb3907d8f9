//! Scratch databases on the test server: one per test, named after the time it was
//! made, so that a later run can drop what earlier runs left behind.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mongodb::Client;
use mongodb::bson::doc;
use quckchat_store_mongo::MongoStore;
use tokio::sync::OnceCell;

/// Where the tests run unless `MONGODB_URL_TEST` says otherwise.
const DEFAULT_URL: &str = "mongodb://127.0.0.1:27017/?directConnection=true";

/// Every scratch database's name starts so.
const PREFIX: &str = "qct_";

/// Databases older than this are left over from runs that ended (or crashed).
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// The test server's URL.
pub fn url() -> String {
    std::env::var("MONGODB_URL_TEST").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A fresh scratch database name: `qct_<unix seconds>_<random>` (47 bytes, under
/// MongoDB's limit of 63).
pub fn database_name() -> String {
    format!("{PREFIX}{}_{}", unix_secs(SystemTime::now()), uuid::Uuid::new_v4().simple())
}

/// A store in a fresh database, for cases that cannot drop it afterwards (the
/// conformance suite): stale databases of earlier runs are dropped first, once per run.
pub async fn fresh_store() -> MongoStore {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT.get_or_init(drop_stale_databases).await;
    MongoStore::connect_to_database(&url(), &database_name())
        .await
        .expect("connect to the test server (is it up? see MONGODB_URL_TEST)")
}

async fn client() -> Client {
    Client::with_uri_str(url()).await.expect("a valid MONGODB_URL_TEST")
}

/// Drops scratch databases made more than an hour ago. Failures are reported, not
/// fatal: another run may be sweeping the same databases.
async fn drop_stale_databases() {
    let client = client().await;
    let names = client
        .list_database_names()
        .filter(doc! { "name": { "$regex": format!("^{PREFIX}") } })
        .await
        .expect("list scratch databases (is the test server up? see MONGODB_URL_TEST)");
    let cutoff = unix_secs(SystemTime::now() - STALE_AFTER);
    for name in names {
        let made =
            name.strip_prefix(PREFIX).and_then(|rest| rest.split('_').next()).and_then(|secs| secs.parse::<u64>().ok());
        if made.is_some_and(|secs| secs < cutoff)
            && let Err(e) = client.database(&name).drop().await
        {
            eprintln!("could not drop the stale database {name}: {e}");
        }
    }
    client.shutdown().await;
}

/// A scratch database that a test drops itself when done with it.
pub struct Scratch {
    /// The database's name.
    pub database: String,
}

impl Scratch {
    /// A new, not yet created database name.
    pub fn new() -> Self {
        Self { database: database_name() }
    }

    /// A store (one "server instance", with a client of its own) on this database.
    pub async fn store(&self) -> MongoStore {
        MongoStore::connect_to_database(&url(), &self.database).await.expect("connect to the test server")
    }

    /// Drops the database and everything in it.
    pub async fn drop(self) {
        let client = client().await;
        client.database(&self.database).drop().await.expect("drop the scratch database");
        client.shutdown().await;
    }
}
