//! The shared store conformance suite, once on a database file (a pool of connections,
//! so SQLite's own locking is exercised) and once in memory (one connection).

use std::sync::Arc;

use quckchat_store_sqlite::SqliteStore;

/// A fresh store on a new database file.
async fn file_store() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::connect(&crate::scratch::db_url()).await.expect("open a scratch database"))
}

/// A fresh in-memory store.
async fn memory_store() -> Arc<SqliteStore> {
    Arc::new(SqliteStore::connect("sqlite::memory:").await.expect("open an in-memory database"))
}

mod on_file {
    use super::*;

    quckchat_store_tests::conformance_suite!(file_store());
}

mod in_memory {
    use super::*;

    quckchat_store_tests::conformance_suite!(async { memory_store().await });
}
